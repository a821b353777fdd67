"""PyTorch layer and losses for gated networks (optional extra ``moelearn[torch]``).

* :class:`MoE` - a mixture-of-experts layer with parameters ``experts``,
  ``gating`` (k, d), their biases and a log noise level.
* :class:`ExpertLoss` - the landscape-designed loss ``L_4`` (DESIGN §4a) on a
  batch, raw or whitened; an unbiased mini-batch estimate of the population
  loss, so it works with SGD/Adam.
* :class:`GatingLoss` - ``L_log`` with the experts frozen (DESIGN §5).
* :func:`train_two_stage` - experts by ExpertLoss, gating by GatingLoss,
  then optional joint fine-tuning on the likelihood.

The core package never imports this module.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .links import get_link
from .model import MoEParams
from .transforms import output_transform

__all__ = ["MoE", "ExpertLoss", "GatingLoss", "train_two_stage", "torch_link"]

_TORCH_LINKS = {
    "linear": lambda t: t,
    "relu": torch.relu,
    "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.1),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": torch.nn.functional.softplus,
}


def torch_link(link):
    """The torch version of a link: a registry name, or a callable acting on tensors."""
    if isinstance(link, str):
        try:
            return _TORCH_LINKS[link]
        except KeyError:
            get_link(link)  # raises the standard "unknown link" error
            raise ValueError(
                f"link {link!r} has no torch implementation; pass a callable that acts on tensors"
            ) from None
    if callable(link):
        return link
    raise TypeError(f"link must be a name or a callable, got {type(link).__name__}")


def _link_name(link):
    return link if isinstance(link, str) else getattr(link, "__name__", "custom")


class MoE(nn.Module):
    """Mixture-of-experts layer: ``forward(x) = sum_i p_i(x) g(<a_i, x> + b_i)``.

    Parameters
    ----------
    in_features : int
    n_experts : int
    link : str or callable, default "linear"
    bias : bool, default True
        Learn expert and gating intercepts.
    per_expert_noise : bool, default False
    dtype, device : optional
    """

    def __init__(
        self,
        in_features,
        n_experts,
        link="linear",
        bias=True,
        per_expert_noise=False,
        dtype=None,
        device=None,
    ):
        super().__init__()
        if in_features < 1 or n_experts < 1:
            raise ValueError("in_features and n_experts must be >= 1")
        self.in_features, self.n_experts = int(in_features), int(n_experts)
        self.link_name = _link_name(link)
        self.link = torch_link(link)
        kw = dict(dtype=dtype, device=device)
        experts = torch.randn(n_experts, in_features, **kw)
        self.experts = nn.Parameter(experts / experts.norm(dim=1, keepdim=True))
        self.gating = nn.Parameter(torch.zeros(n_experts, in_features, **kw))
        if bias:
            self.expert_bias = nn.Parameter(torch.zeros(n_experts, **kw))
            self.gating_bias = nn.Parameter(torch.zeros(n_experts, **kw))
        else:
            self.register_buffer("expert_bias", torch.zeros(n_experts, **kw))
            self.register_buffer("gating_bias", torch.zeros(n_experts, **kw))
        self.log_noise = nn.Parameter(torch.zeros(n_experts if per_expert_noise else 1, **kw))

    def gating_log_proba(self, x):
        return torch.log_softmax(x @ self.gating.T + self.gating_bias, dim=1)

    def gating_proba(self, x):
        """Gating probabilities, shape (n, k)."""
        return self.gating_log_proba(x).exp()

    def expert_outputs(self, x):
        """``g(<a_i, x> + b_i)``, shape (n, k)."""
        return self.link(x @ self.experts.T + self.expert_bias)

    def forward(self, x):
        """Mixture mean, shape (n,)."""
        return (self.gating_proba(x) * self.expert_outputs(x)).sum(dim=1)

    def log_likelihood(self, x, y):
        """Per-sample ``log p(y | x)``, shape (n,)."""
        sigma = self.log_noise.exp()
        resid = (y[:, None] - self.expert_outputs(x)) / sigma
        log_normal = -0.5 * resid**2 - self.log_noise - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(self.gating_log_proba(x) + log_normal, dim=1)

    # ---------------------------------------------------------- conversion
    def to_params(self) -> MoEParams:
        """The layer's parameters as a :class:`~moelearn.MoEParams` (float64, CPU)."""

        def arr(t):
            return t.detach().cpu().double().numpy().copy()

        noise = np.exp(arr(self.log_noise))
        return MoEParams(
            arr(self.experts),
            arr(self.gating),
            arr(self.expert_bias),
            arr(self.gating_bias),
            float(noise[0]) if noise.size == 1 else noise,
            self.link_name if self.link_name in _TORCH_LINKS else "linear",
        )

    @classmethod
    def from_params(cls, params: MoEParams, dtype=torch.float64, device=None) -> MoE:
        """A layer holding ``params`` (a MoEParams or a fitted estimator)."""
        if hasattr(params, "params_"):
            params = params.params_
        link = params.link_function.name
        noise = np.atleast_1d(np.asarray(params.noise_std, dtype=float))
        layer = cls(
            params.n_features,
            params.n_experts,
            link=link,
            bias=True,
            per_expert_noise=noise.size > 1,
            dtype=dtype,
            device=device,
        )
        with torch.no_grad():
            for name in ("experts", "gating", "expert_bias", "gating_bias"):
                getattr(layer, name).copy_(torch.as_tensor(getattr(params, name)))
            layer.log_noise.copy_(torch.as_tensor(np.log(noise)))
        return layer

    def to_estimator(self):
        """A fitted :class:`~moelearn.MixtureOfExpertsRegressor` with these parameters."""
        from .estimator import MixtureOfExpertsRegressor

        return MixtureOfExpertsRegressor.from_params(self.to_params())


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------
def _q_weights(link, noise_std, order, y):
    q = output_transform(get_link(link) if isinstance(link, str) else link, noise_std, order)
    coef = torch.tensor(np.array(q.coefficients), dtype=y.dtype, device=y.device)
    out = torch.zeros_like(y)
    for c in coef.flip(0):  # Horner
        out = out * y + c
    return out, q.constant


def _s4_pairs(t, gram):
    """Per-sample ``S_4(x)(a_i,a_i,a_j,a_j)`` for directions with Gram matrix ``gram``.

    ``t`` (n, k) holds ``<a_i, x>``; returns (n, k, k).  DESIGN §2.
    """
    norms = torch.diagonal(gram)
    t2 = t * t
    return (
        t2[:, :, None] * t2[:, None, :]
        - norms[None, None, :] * t2[:, :, None]
        - norms[None, :, None] * t2[:, None, :]
        - 4.0 * gram[None] * t[:, :, None] * t[:, None, :]
        + (norms[:, None] * norms[None, :] + 2.0 * gram**2)[None]
    )


class ExpertLoss(nn.Module):
    """The landscape-designed loss ``L_4`` on a batch (DESIGN §4a).

    ``L = sum_{i != j} T(a_i,a_i,a_j,a_j) - mu sum_i T(a_i,a_i,a_i,a_i)`` with
    ``T = E[Q_4(y) S_4(x)] / c_4`` estimated by the batch mean, and the
    directions ``a_i`` normalised to the unit sphere.

    Parameters
    ----------
    link : str or Link
        Must be a registry name or a moelearn Link (the output transform is
        computed by quadrature).
    noise_std : float
    mu : float, default 0.5

    Call as ``loss(directions, x, y)`` (raw form: rows of ``directions`` are
    the experts in R^d) or ``loss(u, z, y, gram=G)`` (whitened form: ``z = x
    P^T`` and ``G = P P^T``; rows of ``u`` are normalised in R^k).
    """

    def __init__(self, link, noise_std, mu=0.5):
        super().__init__()
        if noise_std is None or noise_std < 0:
            raise ValueError(
                "ExpertLoss needs noise_std >= 0 (estimate it with "
                "moelearn.MomentAccumulator(...).noise_std())"
            )
        self.link, self.noise_std, self.mu = link, float(noise_std), float(mu)

    def forward(self, directions, x, y, gram=None):
        k = directions.shape[0]
        u = directions / directions.norm(dim=1, keepdim=True)
        t = x @ u.T
        g = u @ u.T if gram is None else u @ gram @ u.T
        w, c4 = _q_weights(self.link, self.noise_std, 4, y)
        K = torch.ones(k, k, dtype=x.dtype, device=x.device)
        K = K - (1.0 + self.mu) * torch.eye(k, dtype=x.dtype, device=x.device)
        per_sample = (_s4_pairs(t, g) * K).sum(dim=(1, 2))
        return (w * per_sample).mean() / c4


class GatingLoss(nn.Module):
    """``L_log``: the negative log-likelihood as a function of the gating alone.

    Call as ``loss(layer, x, y)``; the experts are detached (frozen) and the
    noise is fixed at ``noise_std``.
    """

    def __init__(self, link, noise_std):
        super().__init__()
        if noise_std is None or noise_std <= 0:
            raise ValueError("GatingLoss needs noise_std > 0")
        self.link = torch_link(link)
        self.noise_std = float(noise_std)

    def forward(self, layer: MoE, x, y):
        mu = self.link(x @ layer.experts.detach().T + layer.expert_bias.detach())
        resid = (y[:, None] - mu) / self.noise_std
        log_normal = -0.5 * resid**2 - math.log(self.noise_std) - 0.5 * math.log(2 * math.pi)
        return -torch.logsumexp(layer.gating_log_proba(x) + log_normal, dim=1).mean()


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
def _batches(n, batch_size, steps, generator):
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]
            done += 1
            if done >= steps:
                return


def train_two_stage(
    layer: MoE,
    x,
    y,
    noise_std=None,
    *,
    expert_steps=2000,
    gating_steps=1000,
    finetune_steps=0,
    batch_size=4096,
    lr=0.02,
    mu=0.5,
    restarts=3,
    random_state=0,
):
    """Train a :class:`MoE` layer by the two consistent losses, then optionally fine-tune.

    Every stage runs Adam over mini-batches with a cosine-annealed step.

    1. Experts: whitened ``ExpertLoss`` minimised by Adam over mini-batches
       (``restarts`` random starts, the lowest full-data loss kept); the
       whitening and the sign come from the data's second and first moments.
    2. Gating: ``GatingLoss`` with the experts frozen, by Adam.
    3. Fine-tuning (``finetune_steps > 0``): every parameter on the negative
       log-likelihood, by Adam.

    A stage with zero steps is skipped (e.g. fine-tune an already trained layer
    with ``expert_steps=0, gating_steps=0``).

    Returns
    -------
    dict
        Loss histories ``"experts"``, ``"gating"``, ``"finetune"`` (lists of floats).
    """
    from .moments import MomentAccumulator

    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError("x must be (n, d) and y (n,) with the same n")
    gen = torch.Generator().manual_seed(int(random_state))
    link = layer.link_name
    history = {"experts": [], "gating": [], "finetune": []}
    if expert_steps > 0 or gating_steps > 0:
        x_np = x.detach().cpu().double().numpy()
        y_np = y.detach().cpu().double().numpy()
        acc = MomentAccumulator(link, x.shape[1]).fit(x_np, y_np)
        sigma = acc.noise_std() if noise_std is None else float(noise_std)
    if expert_steps > 0:
        _train_experts(
            layer,
            x,
            y,
            acc,
            ExpertLoss(link, sigma, mu),
            sigma,
            link,
            expert_steps,
            batch_size,
            lr,
            restarts,
            gen,
            history,
        )
    if gating_steps > 0:
        _train_gating(
            layer, x, y, GatingLoss(link, sigma), gating_steps, batch_size, lr, gen, history
        )
    if finetune_steps > 0:
        _finetune(layer, x, y, finetune_steps, batch_size, lr, gen, history)
    return history


def _train_experts(
    layer, x, y, acc, loss_fn, sigma, link, expert_steps, batch_size, lr, restarts, gen, history
):
    from .experts import _resolve_signs

    k = layer.n_experts
    wh = acc.whitening(k)
    P = torch.as_tensor(wh.matrix, dtype=x.dtype, device=x.device)
    z = x @ P.T
    gram = P @ P.T
    best, best_loss = None, math.inf
    for _ in range(restarts):
        u = torch.randn(k, k, generator=gen, dtype=x.dtype).to(x.device).requires_grad_(True)
        opt = torch.optim.Adam([u], lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(expert_steps, 1))
        for idx in _batches(x.shape[0], min(batch_size, x.shape[0]), expert_steps, gen):
            opt.zero_grad()
            loss = loss_fn(u, z[idx], y[idx], gram=gram)
            loss.backward()
            opt.step()
            sched.step()
            history["experts"].append(loss.item())
        with torch.no_grad():
            full = float(loss_fn(u, z, y, gram=gram))
        if full < best_loss:
            best, best_loss = u.detach().clone(), full
    U = best / best.norm(dim=1, keepdim=True)
    A = wh.unwhiten(U.cpu().double().numpy())
    try:
        c1 = output_transform(link, sigma, 1).constant
    except ValueError:
        c1 = 0.0
    A = _resolve_signs(A, acc.first_moment, c1)
    with torch.no_grad():
        layer.experts.copy_(torch.as_tensor(A, dtype=layer.experts.dtype))
        layer.expert_bias.zero_()
        layer.log_noise.fill_(math.log(sigma))


def _train_gating(layer, x, y, gating_fn, gating_steps, batch_size, lr, gen, history):
    params = [layer.gating] + (
        [layer.gating_bias] if isinstance(layer.gating_bias, nn.Parameter) else []
    )
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(gating_steps, 1))
    for idx in _batches(x.shape[0], min(batch_size, x.shape[0]), gating_steps, gen):
        opt.zero_grad()
        loss = gating_fn(layer, x[idx], y[idx])
        loss.backward()
        opt.step()
        sched.step()
        history["gating"].append(loss.item())


def _finetune(layer, x, y, finetune_steps, batch_size, lr, gen, history):
    opt = torch.optim.Adam(layer.parameters(), lr=lr / 4)
    # annealing the step to zero removes most of the mini-batch noise at the end
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, finetune_steps)
    for idx in _batches(x.shape[0], min(batch_size, x.shape[0]), finetune_steps, gen):
        opt.zero_grad()
        loss = -layer.log_likelihood(x[idx], y[idx]).mean()
        loss.backward()
        opt.step()
        sched.step()
        history["finetune"].append(loss.item())
