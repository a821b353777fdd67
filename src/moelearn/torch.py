"""PyTorch layer and losses for gated networks (optional extra ``moelearn[torch]``).

* :class:`MoE` - a mixture-of-experts layer with parameters ``experts``,
  ``gating``, their biases and the experts' log-dispersions, for every family
  of :mod:`moelearn.families` (Gaussian with a link, Student-t, Poisson,
  Gamma, Bernoulli, Multinomial) and optional covariate roles (the columns
  that the gate and the experts read, DESIGN §13).  Classification layers
  convert to and from :class:`~moelearn.MixtureOfExpertsClassifier`.
* :class:`ExpertLoss` - the landscape-designed loss ``L_4`` (DESIGN §4a) on a
  batch, raw or whitened; an unbiased mini-batch estimate of the population
  loss, so it works with SGD/Adam.  Gaussian experts only.
* :class:`GatingLoss` - ``L_log`` with the experts frozen (DESIGN §5): the
  negative log-likelihood as a function of the gate.
* :func:`train_two_stage` - experts by ExpertLoss, gating by GatingLoss,
  then optional joint fine-tuning on the likelihood (Gaussian experts).
* :func:`train_likelihood` - every parameter by Adam on the negative
  log-likelihood (any family).

The core package never imports this module.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .families import (
    Bernoulli,
    Family,
    Gamma,
    Gaussian,
    Multinomial,
    NegativeBinomial,
    Poisson,
    StudentT,
    get_family,
)
from .family_fit import resolve_roles
from .links import get_link
from .model import MoEParams
from .transforms import output_transform

__all__ = [
    "MoE",
    "ExpertLoss",
    "GatingLoss",
    "train_two_stage",
    "train_likelihood",
    "torch_link",
]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_PI = math.log(math.pi)

_TORCH_LINKS = {
    "linear": lambda t: t,
    "relu": torch.relu,
    "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.1),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": torch.nn.functional.softplus,
}

# the families with a torch log-density below (subclasses of these work too)
_TORCH_FAMILIES = (Gaussian, StudentT, Poisson, Gamma, NegativeBinomial, Bernoulli, Multinomial)


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


def _class_codes(y, n_classes):
    """Class codes ``0..n_classes-1`` (integer or integral float tensor) as a long tensor."""
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"class codes must be an integer or float tensor, got {y.dtype}")
    if y.is_floating_point():
        if not bool(torch.all(y == torch.round(y))):
            raise ValueError(f"class codes must be whole numbers 0..{n_classes - 1}")
    if y.numel() and not bool(torch.all((y >= 0) & (y < n_classes))):
        raise ValueError(f"class codes must lie in 0..{n_classes - 1}")
    return y.long()


def _multinomial_log_proba(eta):
    """Class log-probabilities ``log softmax(eta, 0)``: (n, k, C-1) -> (n, k, C)."""
    full = torch.cat([eta, eta.new_zeros(eta.shape[:-1] + (1,))], dim=-1)
    return torch.log_softmax(full, dim=-1)


def _log_density(family: Family, link, y, eta, log_disp):
    """``log f(y_n | eta_ni, phi_i)`` with torch ops, shape (n, k).

    ``log_disp`` (k, m) holds the logarithms of the family's natural
    dispersion parameters (``family.dispersion_names``); ``link`` is the torch
    link of a Gaussian family.  Multinomial experts take ``eta`` of shape
    (n, k, C-1) and class codes ``y``.  The formulas are those of
    :meth:`moelearn.families.Family.log_density`.
    """
    if isinstance(family, Multinomial):
        codes = _class_codes(y, family.n_classes)
        logp = _multinomial_log_proba(eta)
        idx = codes[:, None, None].expand(logp.shape[0], logp.shape[1], 1)
        return logp.gather(-1, idx)[..., 0]
    yc = y[:, None]
    if isinstance(family, Gaussian):
        log_sigma = log_disp[:, 0]
        r = (yc - link(eta)) / log_sigma.exp()
        return -0.5 * r**2 - log_sigma - 0.5 * _LOG_2PI
    if isinstance(family, StudentT):
        log_sigma, log_nu = log_disp[:, 0], log_disp[:, 1]
        nu = log_nu.exp()
        r = (yc - eta) / log_sigma.exp()
        return (
            torch.lgamma(0.5 * (nu + 1))
            - torch.lgamma(0.5 * nu)
            - 0.5 * (log_nu + _LOG_PI)
            - log_sigma
            - 0.5 * (nu + 1) * torch.log1p(r**2 / nu)
        )
    if isinstance(family, Poisson):
        eta = torch.clamp(eta, max=700.0)
        return yc * eta - eta.exp() - torch.lgamma(yc + 1.0)
    if isinstance(family, Gamma):
        log_a = log_disp[:, 0]
        a = log_a.exp()
        return (
            a * log_a - torch.lgamma(a) + (a - 1) * torch.log(yc) - a * eta - a * yc * (-eta).exp()
        )
    if isinstance(family, NegativeBinomial):
        log_t = log_disp[:, 0]
        theta = log_t.exp()
        eta = torch.clamp(eta, max=700.0)
        log_tm = torch.logaddexp(log_t, eta)  # log(theta + mu)
        return (
            torch.lgamma(yc + theta)
            - torch.lgamma(theta)
            - torch.lgamma(yc + 1.0)
            + theta * (log_t - log_tm)
            + yc * (eta - log_tm)
        )
    if isinstance(family, Bernoulli):
        logsig = torch.nn.functional.logsigmoid
        return yc * logsig(eta) + (1 - yc) * logsig(-eta)
    raise ValueError(f"family {family!r} has no torch implementation")  # pragma: no cover


def _family_mean(family: Family, link, eta):
    """``E[y | expert]`` from the linear predictors ``eta`` (n, k).

    Multinomial experts: the class probabilities (n, k, C) from ``eta`` (n, k, C-1).
    """
    if isinstance(family, Multinomial):
        return _multinomial_log_proba(eta).exp()
    if isinstance(family, Gaussian):
        return link(eta)
    if isinstance(family, StudentT):
        return eta  # the location (the mean when nu > 1, the median always)
    if isinstance(family, (Poisson, NegativeBinomial)):
        return torch.clamp(eta, max=700.0).exp()
    if isinstance(family, Gamma):
        return eta.exp()
    return torch.sigmoid(eta)


def _resolve_family(family, link, n_classes=None):
    """The moelearn Family of a layer and the link name/callable its experts use."""
    if isinstance(family, str) and family.lower() == "multinomial":
        if n_classes is None:
            raise ValueError("family='multinomial' needs n_classes (the number of classes, >= 2)")
        fam = Multinomial(n_classes)
    elif isinstance(family, Family):
        fam = family
    elif isinstance(family, str):
        fam = get_family(family)
    else:
        raise TypeError(f"family must be a string or a Family, got {type(family).__name__}")
    if not isinstance(fam, _TORCH_FAMILIES):
        raise ValueError(
            f"family {fam!r} has no torch implementation; use one of "
            "'gaussian', 'student-t', 'poisson', 'gamma', 'negative-binomial', 'bernoulli', "
            "'multinomial'"
        )
    if n_classes is not None:
        expected = fam.n_classes if isinstance(fam, Multinomial) else None
        expected = 2 if isinstance(fam, Bernoulli) else expected
        if expected is None:
            raise ValueError(
                f"n_classes applies to classification layers only, not family={fam.name!r}"
            )
        if int(n_classes) != expected:
            raise ValueError(f"n_classes={n_classes} contradicts the family's {expected} classes")
    if isinstance(fam, Gaussian):
        if isinstance(family, Gaussian):
            own = fam.link.name
            if link in (None, "linear"):
                link = own
            elif _link_name(link) != own:
                raise ValueError(
                    f"link={_link_name(link)!r} contradicts the Gaussian family's link {own!r}"
                )
        link = "linear" if link is None else link
        if isinstance(link, str):
            fam = Gaussian(link) if not isinstance(family, Gaussian) else fam
        return fam, link
    if link is not None and not (isinstance(link, str) and get_link(link).is_linear):
        raise ValueError(
            f"family={fam.name!r} has a fixed link; link={_link_name(link)!r} applies to the "
            "Gaussian family only"
        )
    return fam, "linear"


def _role_index(spec, n_features, name):
    """Sorted column indices from an index list or a boolean mask (None: all columns)."""
    if isinstance(spec, torch.Tensor):
        spec = spec.detach().cpu().tolist()
    elif isinstance(spec, np.ndarray):
        spec = spec.tolist()
    mask = resolve_roles(spec, n_features, None, name)
    return np.flatnonzero(mask)


class MoE(nn.Module):
    """Mixture-of-experts layer: ``forward(x) = sum_i p_i(x) E[y | x, expert i]``.

    Expert ``i`` has the linear predictor ``eta_i = <a_i, x_E> + b_i`` and the
    distribution ``f(y | eta_i, phi_i)`` of ``family``; the gate is
    ``p_i(x) = softmax_i(<w_i, x_G> + c_i)`` (DESIGN §13).  Multinomial
    experts have ``C - 1`` predictors each, the log-odds of classes
    ``0..C-2`` against the last class, and ``forward`` returns the mixture's
    class probabilities (n, C); a Bernoulli layer's ``forward`` returns
    ``P(y = 1 | x)`` (n,).  Both have :meth:`predict_proba` (n, C) and convert
    to and from :class:`~moelearn.MixtureOfExpertsClassifier`
    (:meth:`to_classifier`, :meth:`from_classifier`).

    Parameters
    ----------
    in_features : int
        Columns of ``x``.
    n_experts : int
    link : str or callable, default "linear"
        The expert non-linearity of Gaussian experts (other families have
        their canonical link: identity for Student-t, log for Poisson,
        Gamma and the negative binomial, logit for Bernoulli).
    bias : bool, default True
        Learn expert and gating intercepts.
    per_expert_noise : bool, default False
        One dispersion (``sigma`` or the Gamma shape) per expert instead of a
        shared one.  Student-t degrees of freedom are always per expert.
    family : str or Family, default "gaussian"
        ``"gaussian"``, ``"student-t"``, ``"poisson"``, ``"gamma"``,
        ``"negative-binomial"``, ``"bernoulli"``, ``"multinomial"`` or a :mod:`moelearn.families`
        instance of those types.
    gating_features, expert_features : index list or boolean mask, optional
        The columns that the gate and the experts read (None: all).  ``gating``
        then has shape (k, number of gate columns) and ``experts`` (k, number
        of expert columns), in increasing column order; an empty gate gives
        constant weights ``softmax(gating_bias)``.
    n_classes : int, optional
        The number of classes of ``family="multinomial"`` (required there;
        elsewhere only 2 with a Bernoulli family is accepted).
    dtype, device : optional

    Attributes
    ----------
    experts, gating, expert_bias, gating_bias : Parameter
        ``experts`` (k, d_E) and ``expert_bias`` (k,); for multinomial experts
        (k, C-1, d_E) and (k, C-1).
    log_noise : Parameter of shape (1,) or (k,), or None
        ``log sigma`` (Gaussian noise level, Student-t scale).
    log_df : Parameter of shape (k,), or None
        ``log nu`` of Student-t experts.
    log_shape : Parameter of shape (1,) or (k,), or None
        ``log alpha`` of Gamma experts (coefficient of variation ``alpha**-0.5``).
    gating_index, expert_index : buffer (long) or None
        The columns read by the gate and the experts when roles are set.
    family_object : moelearn.families.Family
    """

    def __init__(
        self,
        in_features,
        n_experts,
        link="linear",
        bias=True,
        per_expert_noise=False,
        family="gaussian",
        gating_features=None,
        expert_features=None,
        n_classes=None,
        dtype=None,
        device=None,
    ):
        super().__init__()
        if in_features < 1 or n_experts < 1:
            raise ValueError("in_features and n_experts must be >= 1")
        self.in_features, self.n_experts = int(in_features), int(n_experts)
        self.family_object, link = _resolve_family(family, link, n_classes)
        self.family = self.family_object.name
        self.link_name = _link_name(link)
        self.link = torch_link(link)
        k, d = self.n_experts, self.in_features
        kw = dict(dtype=dtype, device=device)
        if gating_features is None and expert_features is None:
            g_idx = e_idx = None
            n_g = n_e = d
        else:
            g_idx = _role_index(gating_features, d, "gating_features")
            e_idx = _role_index(expert_features, d, "expert_features")
            n_g, n_e = len(g_idx), len(e_idx)
        for name, idx in (("gating_index", g_idx), ("expert_index", e_idx)):
            idx = None if idx is None else torch.as_tensor(idx, dtype=torch.long, device=device)
            self.register_buffer(name, idx)
        # (k,) per-expert shape of the predictors: () or (C-1,) for multinomial experts
        q_shape = (self.n_predictors,) if self.is_multinomial else ()
        experts = torch.randn(k, *q_shape, n_e, **kw)
        if n_e:
            experts = experts / experts.norm(dim=-1, keepdim=True)
        self.experts = nn.Parameter(experts)
        self.gating = nn.Parameter(torch.zeros(k, n_g, **kw))
        if bias:
            self.expert_bias = nn.Parameter(torch.zeros(k, *q_shape, **kw))
            self.gating_bias = nn.Parameter(torch.zeros(k, **kw))
        else:
            self.register_buffer("expert_bias", torch.zeros(k, *q_shape, **kw))
            self.register_buffer("gating_bias", torch.zeros(k, **kw))
        names = self.family_object.dispersion_names
        m = k if per_expert_noise else 1
        self.log_noise = nn.Parameter(torch.zeros(m, **kw)) if "sigma" in names else None
        self.log_df = (
            nn.Parameter(torch.full((k,), math.log(10.0), **kw)) if "nu" in names else None
        )
        self.log_shape = nn.Parameter(torch.zeros(m, **kw)) if "shape" in names else None

    # ----------------------------------------------------------- structure
    @property
    def is_multinomial(self) -> bool:
        """Whether the experts are multinomial (``C - 1`` predictors each)."""
        return isinstance(self.family_object, Multinomial)

    @property
    def is_classifier(self) -> bool:
        """Whether the layer models class labels (Bernoulli or multinomial experts)."""
        return isinstance(self.family_object, (Bernoulli, Multinomial))

    @property
    def n_predictors(self) -> int:
        """Linear predictors per expert (``C - 1`` for multinomial experts, else 1)."""
        return int(self.family_object.n_predictors)

    @property
    def n_classes(self):
        """The number of classes of a classification layer (None otherwise)."""
        if self.is_multinomial:
            return self.family_object.n_classes
        return 2 if isinstance(self.family_object, Bernoulli) else None

    @property
    def has_roles(self) -> bool:
        """Whether the gate and the experts read chosen columns."""
        return self.expert_index is not None

    def _mask(self, idx):
        mask = np.zeros(self.in_features, dtype=bool)
        mask[idx.cpu().numpy()] = True
        return mask

    @property
    def gating_features(self):
        """Boolean mask of the gate's columns (numpy), or None without roles."""
        return None if self.gating_index is None else self._mask(self.gating_index)

    @property
    def expert_features(self):
        """Boolean mask of the experts' columns (numpy), or None without roles."""
        return None if self.expert_index is None else self._mask(self.expert_index)

    def _check_x(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (n, {self.in_features}), got {tuple(x.shape)}")
        return x

    def _gate_x(self, x):
        return x if self.gating_index is None else x.index_select(1, self.gating_index)

    def _expert_x(self, x):
        return x if self.expert_index is None else x.index_select(1, self.expert_index)

    def log_dispersion(self):
        """Logarithms of the natural dispersion parameters, shape (k, m).

        Columns follow ``family_object.dispersion_names`` (``sigma``, ``nu``,
        ``shape``); m = 0 for Poisson and Bernoulli experts.
        """
        k = self.n_experts
        cols = []
        for name in self.family_object.dispersion_names:
            p = {"sigma": self.log_noise, "nu": self.log_df, "shape": self.log_shape}[name]
            cols.append(p.expand(k))
        if not cols:
            return self.experts.new_zeros((k, 0))
        return torch.stack(cols, dim=1)

    def dispersion(self):
        """The natural dispersion parameters, shape (k, m) (as ``MoEParams.dispersion()``)."""
        return self.log_dispersion().exp()

    # ------------------------------------------------------------- model
    def gating_log_proba(self, x):
        """``log p_i(x)``, shape (n, k)."""
        x = self._check_x(x)
        return torch.log_softmax(self._gate_x(x) @ self.gating.T + self.gating_bias, dim=1)

    def gating_proba(self, x):
        """Gating probabilities, shape (n, k)."""
        return self.gating_log_proba(x).exp()

    def _predictors(self, x, experts, bias):
        x_e = self._expert_x(self._check_x(x))
        if experts.ndim == 3:
            return torch.einsum("nd,kqd->nkq", x_e, experts) + bias
        return x_e @ experts.T + bias

    def expert_predictors(self, x):
        """Linear predictors ``<a_i, x_E> + b_i``, shape (n, k) ((n, k, C-1) multinomial)."""
        return self._predictors(x, self.experts, self.expert_bias)

    def expert_outputs(self, x):
        """Each expert's mean ``E[y | x, expert i]`` (``g(<a_i, x> + b_i)``), shape (n, k).

        Multinomial experts: each expert's class probabilities, shape (n, k, C).
        """
        return _family_mean(self.family_object, self.link, self.expert_predictors(x))

    def forward(self, x):
        """Mixture mean, shape (n,); the class probabilities (n, C) of multinomial experts."""
        if self.is_multinomial:
            return self.predict_log_proba(x).exp()
        return (self.gating_proba(x) * self.expert_outputs(x)).sum(dim=1)

    def predict_log_proba(self, x):
        """Log of the mixture's class probabilities, shape (n, C) (classification layers).

        Column ``c`` is ``log sum_i p_i(x) P_i(y = c | x)``; a Bernoulli layer
        has the columns ``y = 0`` and ``y = 1``.
        """
        if not self.is_classifier:
            raise ValueError(
                f"predict_log_proba needs Bernoulli or multinomial experts, not "
                f"family={self.family!r}: use forward for the mixture mean"
            )
        eta = self.expert_predictors(x)
        if self.is_multinomial:
            logp = _multinomial_log_proba(eta)
        else:
            logsig = torch.nn.functional.logsigmoid
            logp = torch.stack([logsig(-eta), logsig(eta)], dim=-1)
        return torch.logsumexp(self.gating_log_proba(x)[:, :, None] + logp, dim=1)

    def predict_proba(self, x):
        """The mixture's class probabilities, shape (n, C) (classification layers).

        For a Bernoulli layer the columns are ``P(y = 0)`` and ``P(y = 1)``.
        """
        return self.predict_log_proba(x).exp()

    def log_likelihood(self, x, y):
        """Per-sample ``log p(y | x)``, shape (n,).

        Multinomial experts take class codes ``0..C-1`` (an integer tensor or
        whole floats).
        """
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
        logf = _log_density(
            self.family_object, self.link, y, self.expert_predictors(x), self.log_dispersion()
        )
        return torch.logsumexp(self.gating_log_proba(x) + logf, dim=1)

    def _project_dispersion(self):
        """Clip log-dispersions into the family's bounds (Student-t nu, Gamma shape)."""
        low, high = self.family_object.dispersion_bounds()
        with torch.no_grad():
            for name, lo, hi in zip(self.family_object.dispersion_names, low, high, strict=True):
                if np.isfinite(lo) or np.isfinite(hi):
                    p = {"sigma": self.log_noise, "nu": self.log_df, "shape": self.log_shape}[name]
                    p.clamp_(min=float(lo), max=float(hi))

    # ---------------------------------------------------------- conversion
    def to_params(self) -> MoEParams:
        """The layer's parameters as a :class:`~moelearn.MoEParams` (float64, CPU).

        Multinomial layers have no MoEParams form: use :meth:`to_classifier`.
        """
        if self.is_multinomial:
            raise ValueError(
                "a multinomial layer has no MoEParams form; use to_classifier(classes)"
            )

        def arr(t):
            return t.detach().cpu().double().numpy().copy()

        def scalar_or_vector(v):
            return float(v[0]) if v.size == 1 else v

        fam = self.family_object
        noise, df = None, None
        if self.log_noise is not None:
            noise = scalar_or_vector(np.exp(arr(self.log_noise)))
        if self.log_shape is not None:
            noise = scalar_or_vector(np.exp(-0.5 * arr(self.log_shape)))
        if self.log_df is not None:
            df = np.exp(arr(self.log_df))
        if isinstance(fam, Gaussian):
            family = "gaussian"
            link = self.link_name if self.link_name in _TORCH_LINKS else "linear"
        else:
            family, link = fam, "linear"
        return MoEParams(
            arr(self.experts),
            arr(self.gating),
            arr(self.expert_bias),
            arr(self.gating_bias),
            noise,
            link,
            family,
            df,
            self.gating_features,
            self.expert_features,
        )

    @classmethod
    def from_params(cls, params: MoEParams, dtype=torch.float64, device=None) -> MoE:
        """A layer holding ``params`` (a MoEParams or a fitted estimator)."""
        if hasattr(params, "params_"):
            params = params.params_
        if not isinstance(params, MoEParams):
            raise TypeError(f"params must be a MoEParams or a fitted estimator, got {params!r}")
        fam = params.family_object
        noise = None if params.noise_std is None else np.atleast_1d(params.noise_std)
        layer = cls(
            params.n_features,
            params.n_experts,
            link=params.link_function.name if isinstance(fam, Gaussian) else "linear",
            bias=True,
            per_expert_noise=noise is not None and noise.size > 1,
            family=fam,
            gating_features=params.gating_features if params.has_roles else None,
            expert_features=params.expert_features if params.has_roles else None,
            dtype=dtype,
            device=device,
        )
        with torch.no_grad():
            for name in ("experts", "gating", "expert_bias", "gating_bias"):
                getattr(layer, name).copy_(torch.as_tensor(getattr(params, name)))
            if layer.log_noise is not None:
                layer.log_noise.copy_(torch.as_tensor(np.log(noise)))
            if layer.log_shape is not None:
                layer.log_shape.copy_(torch.as_tensor(-2.0 * np.log(noise)))
            if layer.log_df is not None:
                layer.log_df.copy_(torch.as_tensor(np.log(params.df)))
        return layer

    def to_estimator(self):
        """A fitted :class:`~moelearn.MixtureOfExpertsRegressor` with these parameters."""
        from .estimator import MixtureOfExpertsRegressor

        if self.is_multinomial:
            raise ValueError("a multinomial layer is a classifier; use to_classifier(classes)")
        params = self.to_params()
        # "bernoulli" is not among the estimator's family names; the Family instance is
        kw = {"family": params.family_object} if isinstance(params.family_object, Bernoulli) else {}
        return MixtureOfExpertsRegressor.from_params(params, **kw)

    @classmethod
    def from_classifier(cls, classifier, dtype=torch.float64, device=None) -> MoE:
        """A layer holding a fitted :class:`~moelearn.MixtureOfExpertsClassifier`'s model.

        Two classes give a Bernoulli layer (``P(y = 1)`` is the probability
        of ``classes_[1]``), more give a multinomial layer over the codes
        ``0..C-1`` of ``classes_``; the classifier's gate and expert columns
        become the layer's roles.
        """
        from sklearn.utils.validation import check_is_fitted

        from .classifier import MixtureOfExpertsClassifier

        if not isinstance(classifier, MixtureOfExpertsClassifier):
            raise TypeError(
                f"classifier must be a MixtureOfExpertsClassifier, got {type(classifier).__name__}"
            )
        check_is_fitted(classifier)
        n_classes = len(classifier.classes_)
        gmask = np.asarray(classifier.params_.gating_features, dtype=bool)
        emask = np.asarray(classifier.params_.expert_features, dtype=bool)
        roles = not (gmask.all() and emask.all())
        experts = np.asarray(classifier.experts_, dtype=float)
        bias = np.asarray(classifier.expert_bias_, dtype=float)
        if n_classes == 2:  # one row: the log-odds of classes_[1], the Bernoulli convention
            family, experts, bias = Bernoulli(), experts[:, 0], bias[:, 0]
        else:
            family = Multinomial(n_classes)
        layer = cls(
            int(classifier.n_features_in_),
            experts.shape[0],
            family=family,
            gating_features=gmask if roles else None,
            expert_features=emask if roles else None,
            dtype=dtype,
            device=device,
        )
        with torch.no_grad():
            layer.experts.copy_(torch.as_tensor(experts))
            layer.expert_bias.copy_(torch.as_tensor(bias))
            layer.gating.copy_(torch.as_tensor(np.asarray(classifier.gating_, dtype=float)))
            layer.gating_bias.copy_(
                torch.as_tensor(np.asarray(classifier.gating_bias_, dtype=float))
            )
        return layer

    def to_classifier(self, classes=None):
        """A fitted :class:`~moelearn.MixtureOfExpertsClassifier` with the layer's model.

        Parameters
        ----------
        classes : array-like of shape (n_classes,), optional
            The labels of the class codes ``0..C-1``, sorted and distinct (as
            ``np.unique`` returns them); default ``0..C-1``.

        Returns
        -------
        MixtureOfExpertsClassifier
            Its ``predict_proba`` equals the layer's; the gate is stored
            centred over the experts, as the classifier's fit stores it.  The
            training summaries it cannot know (``log_likelihood_``, ``n_iter_``)
            are NaN and 0.
        """
        from .classifier import MixtureOfExpertsClassifier

        if not self.is_classifier:
            raise ValueError(
                f"to_classifier needs Bernoulli or multinomial experts, not family={self.family!r}"
            )
        n_classes = self.n_classes
        classes = np.arange(n_classes) if classes is None else np.asarray(classes)
        if classes.ndim != 1 or len(classes) != n_classes:
            raise ValueError(
                f"classes must list the layer's {n_classes} class labels, got shape {classes.shape}"
            )
        if not np.array_equal(np.unique(classes), classes):
            raise ValueError("classes must be sorted and distinct (as np.unique returns them)")

        def arr(t):
            return t.detach().cpu().double().numpy().copy()

        experts, bias = arr(self.experts), arr(self.expert_bias)
        if self.is_multinomial and n_classes == 2:
            # Multinomial(2) holds the log-odds of class 0; the classifier's row is class 1's
            experts, bias = -experts[:, 0, :], -bias[:, 0]
        family = Bernoulli() if n_classes == 2 else Multinomial(n_classes)
        d = self.in_features
        gmask = np.ones(d, bool) if self.gating_features is None else self.gating_features
        emask = np.ones(d, bool) if self.expert_features is None else self.expert_features
        params = MoEParams(
            experts,
            arr(self.gating),
            bias,
            arr(self.gating_bias),
            None,
            family=family,
            gating_features=np.asarray(gmask, dtype=bool),
            expert_features=np.asarray(emask, dtype=bool),
        )
        clf = MixtureOfExpertsClassifier.from_params(
            params, classes, fit_intercept=isinstance(self.expert_bias, nn.Parameter)
        )
        clf.converged_ = False
        clf.init_method_ = "from a torch MoE layer"
        return clf


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
    family : str, Family or MoE, default "gaussian"
        The experts' family (or a layer, whose family is taken).  The loss is
        consistent for Gaussian experts only (DESIGN §13); any other family
        raises ``ValueError``.

    Call as ``loss(directions, x, y)`` (raw form: rows of ``directions`` are
    the experts in R^d) or ``loss(u, z, y, gram=G)`` (whitened form: ``z = x
    P^T`` and ``G = P P^T``; rows of ``u`` are normalised in R^k).
    """

    def __init__(self, link, noise_std, mu=0.5, *, family="gaussian"):
        super().__init__()
        fam = family.family_object if isinstance(family, MoE) else get_family(family)
        if not isinstance(fam, Gaussian):
            raise ValueError(
                f"ExpertLoss is the moment loss of Gaussian experts; family={fam.name!r} has "
                "none here (DESIGN §13): train such a layer with train_likelihood"
            )
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

    Call as ``loss(layer, x, y)``: the mean over the batch of
    ``-log sum_i p_i(x) f(y | eta_i, phi_i)`` with the experts (and their
    dispersions) detached, so that only the gate receives gradients.

    Parameters
    ----------
    link : str or callable, optional
    noise_std : float, optional
        Given: the Gaussian ``L_log`` of DESIGN §5, with the experts' noise
        fixed at ``noise_std`` and ``link`` (default "linear") as the
        non-linearity; a layer of another family raises ``ValueError``.
        Both omitted: the layer's own family and current dispersions (any
        family).
    """

    def __init__(self, link=None, noise_std=None):
        super().__init__()
        self.gaussian = link is not None or noise_std is not None
        if self.gaussian:
            if noise_std is None or noise_std <= 0:
                raise ValueError("GatingLoss needs noise_std > 0")
            self.link = torch_link("linear" if link is None else link)
            self.noise_std = float(noise_std)
        else:
            self.link = self.noise_std = None

    def forward(self, layer: MoE, x, y):
        eta = layer._predictors(x, layer.experts.detach(), layer.expert_bias.detach())
        if self.gaussian:
            if not isinstance(layer.family_object, Gaussian):
                raise ValueError(
                    f"GatingLoss(link, noise_std) is the loss of Gaussian experts; the layer has "
                    f"family={layer.family!r}: use GatingLoss() (its own family and dispersion)"
                )
            resid = (y[:, None] - self.link(eta)) / self.noise_std
            logf = -0.5 * resid**2 - math.log(self.noise_std) - 0.5 * _LOG_2PI
        else:
            logf = _log_density(
                layer.family_object, layer.link, y, eta, layer.log_dispersion().detach()
            )
        return -torch.logsumexp(layer.gating_log_proba(x) + logf, dim=1).mean()


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


def _check_xy(layer, x, y):
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError("x must be (n, d) and y (n,) with the same n")
    layer._check_x(x)
    layer.family_object.check_y(y.detach().cpu().double().numpy())


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
       whitening and the sign come from the data's second and first moments
       (of the expert columns when the layer has covariate roles).  Gaussian
       experts only: a layer of another family raises ``ValueError`` unless
       ``expert_steps=0`` (use :func:`train_likelihood` for those).
    2. Gating: ``GatingLoss`` with the experts frozen, by Adam (for another
       family, with the layer's own dispersions).
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

    _check_xy(layer, x, y)
    gaussian = isinstance(layer.family_object, Gaussian)
    if expert_steps > 0:
        ExpertLoss(layer.link_name, 0.0, family=layer)  # refuses other families
    gen = torch.Generator().manual_seed(int(random_state))
    link = layer.link_name
    history = {"experts": [], "gating": [], "finetune": []}
    x_e = layer._expert_x(x)
    if expert_steps > 0 or (gating_steps > 0 and gaussian):
        x_np = x_e.detach().cpu().double().numpy()
        y_np = y.detach().cpu().double().numpy()
        acc = MomentAccumulator(link, x_e.shape[1]).fit(x_np, y_np)
        sigma = acc.noise_std() if noise_std is None else float(noise_std)
    if expert_steps > 0:
        _train_experts(
            layer,
            x_e,
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
        gating_fn = GatingLoss(link, sigma) if gaussian else GatingLoss()
        _train_gating(layer, x, y, gating_fn, gating_steps, batch_size, lr, gen, history)
    if finetune_steps > 0:
        history["finetune"] = _adam_likelihood(layer, x, y, finetune_steps, batch_size, lr / 4, gen)
    return history


def train_likelihood(
    layer: MoE, x, y, *, steps=1000, lr=0.02, batch_size=4096, random_state=0
) -> list:
    """Train every parameter of a :class:`MoE` layer on the negative log-likelihood.

    Adam over mini-batches (reshuffled every epoch) with the step annealed to
    zero by a cosine schedule; after each step the Student-t degrees of
    freedom and the Gamma shape are clipped into their family's range
    (``[nu_min, nu_max]``, ``[1e-3, shape_max]``).  Works for every family and
    covariate role; the starting point is the layer's current parameters.

    Parameters
    ----------
    layer : MoE
    x : Tensor of shape (n, in_features)
    y : Tensor of shape (n,)
    steps : int, default 1000
        Optimiser steps (mini-batches).
    lr : float, default 0.02
        Adam's initial step.
    batch_size : int, default 4096
    random_state : int, default 0
        Seeds the mini-batch order.

    Returns
    -------
    list of float
        The mini-batch mean negative log-likelihood at each step.
    """
    _check_xy(layer, x, y)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(int(random_state))
    return _adam_likelihood(layer, x, y, steps, batch_size, lr, gen)


def _train_experts(
    layer, x, y, acc, loss_fn, sigma, link, expert_steps, batch_size, lr, restarts, gen, history
):
    from .experts import resolve_signs

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
    A = resolve_signs(A, acc.first_moment, c1)
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


def _adam_likelihood(layer, x, y, steps, batch_size, lr, gen):
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    # annealing the step to zero removes most of the mini-batch noise at the end
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    history = []
    for idx in _batches(x.shape[0], min(batch_size, x.shape[0]), steps, gen):
        opt.zero_grad()
        loss = -layer.log_likelihood(x[idx], y[idx]).mean()
        loss.backward()
        opt.step()
        sched.step()
        layer._project_dispersion()
        history.append(loss.item())
    return history
