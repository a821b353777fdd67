"""Families of experts: the distribution of ``y`` given an expert's linear predictor.

A :class:`Family` is a loss object in the spirit of scikit-learn's: it knows
the log-density of ``y`` given the linear predictor ``eta`` of an expert and
the expert's dispersion parameters, its derivatives in those coordinates, its
mean, variance, CDF and sampler, and nothing about optimisers.  The fitting
engine (:mod:`moelearn.engine`) combines any family with the softmax gate.

Coordinates.  An expert has ``n_predictors`` linear predictors (1 for every
regression family; ``C - 1`` for a multinomial expert) and
``len(dispersion_names)`` dispersion parameters, which the engine handles on
the log scale (``log sigma``, ``log nu``, ``log shape``).  :meth:`Family.derivatives`
returns, per sample and expert, the gradient of the log-density in
``(eta_1..eta_q, log phi_1..log phi_m)`` and its expected (Fisher) information
there (or, where that has no closed form, an estimate whose mean is: see
:attr:`Family.exact_fisher`), which is positive semi-definite for every family, so that a scoring
step on the expected complete-data log-likelihood of EM always ascends.

Families: :class:`Gaussian` (any link, DESIGN §1), :class:`StudentT` (robust
experts, degrees of freedom per expert), :class:`Poisson` (log link, counts),
:class:`Gamma` (log link, positive responses), :class:`NegativeBinomial`
(log link, overdispersed counts), :class:`Binomial` (logit link, successes
out of each row's known number of trials) and :class:`Bernoulli` (logit link,
0/1 responses).  Which of them admit the consistent moment start is
derived in DESIGN §13.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import numpy as np
from scipy import stats
from scipy.special import betaln, digamma, expit, gammaln, log_expit, ndtri, polygamma

from .links import Link, get_link

__all__ = [
    "Family",
    "Gaussian",
    "StudentT",
    "Poisson",
    "Gamma",
    "NegativeBinomial",
    "Binomial",
    "Bernoulli",
    "Multinomial",
    "ZeroInflated",
    "ZeroInflatedPoisson",
    "ZeroInflatedNegativeBinomial",
    "get_family",
    "available_families",
]

_LOG_2PI = np.log(2.0 * np.pi)
# NumPy's Poisson sampler refuses rates above about 9.2e18 (its int64 range): above this
# rate the draws come from the normal approximation N(lam, lam), whose error relative to
# the Poisson law's spread is of order lam^(-1/2) < 1e-7 there.
_POISSON_MAX = 1e15


# the largest scale of a Gaussian or Student-t expert (on the fit's scale of y): a bound
# against overflow, far above any scale the data support
_SIGMA_MAX = 1e12


def _poisson_draws(rng, lam):
    """Poisson draws of rates ``lam`` (any shape, finite), as floats."""
    lam = np.asarray(lam, dtype=float)
    big = lam > _POISSON_MAX
    if not big.any():
        return rng.poisson(lam).astype(float)
    out = np.empty(lam.shape)
    out[~big] = rng.poisson(lam[~big])
    root = np.sqrt(lam[big])
    out[big] = np.maximum(np.round(lam[big] + root * rng.standard_normal(root.shape)), 0.0)
    return out


class Family(ABC):
    """Distribution of ``y`` given an expert's linear predictor (base class).

    Subclasses set the class attributes and implement the abstract methods below.
    Arrays: ``y`` has shape (n,); ``eta`` (n, k) for one predictor per expert;
    ``disp`` (k, m) holds the natural dispersion parameters (``sigma``,
    ``nu``, ``shape``), never their logarithms.

    Attributes
    ----------
    name : str
    dispersion_names : tuple of str
        Per-expert dispersion parameters besides the linear predictor.
    n_predictors : int
        Linear predictors per expert.
    location_scale : bool
        Whether ``a + b y`` stays in the family with the predictor mapped
        linearly (then the estimator standardises ``y``).
    scale_family : bool
        Whether ``b y`` stays in the family with ``log b`` added to the
        predictor (a log-link family on positive data).
    moment_start : str or None
        Which consistent moment start seeds these experts on all columns
        (:func:`moelearn.moment_starts.family_moment_start`): ``"gaussian"``
        (DESIGN §3-§6: the Gaussian solver's own start, and a candidate of the
        likelihood engine's search where that fits Gaussian experts on all
        columns, as with shared coefficients), ``"gaussian-scale"``,
        ``"count"``, ``"log-gaussian"`` (DESIGN §13); None where none exists.
    noise_parameter : str or None
        The dispersion that ``MoEParams.noise_std`` holds and that
        ``noise="shared"`` ties across the experts (``"sigma"``, ``"shape"``),
        None for families without one.
    discrete : bool
        Whether ``y`` takes integer values (counts, class codes).
    y_min : float
        The lower end of the support of ``y`` (``-inf``: the real line).
    link_label : str
        The link as ``summary()`` names it.
    noise_row : tuple of str or None
        ``(group, label)`` of the noise parameter's rows in ``summary()``.
    log_link : bool
        Whether the mean is ``exp(eta)`` (an offset then enters as ``log``
        exposure).
    closed_m_step : bool
        Whether :meth:`weighted_m_step` gives the experts' exact M-step in closed
        form (Gaussian experts with the identity link).
    exact_fisher : bool
        Whether :meth:`derivatives` returns the expected information itself
        (False: a positive semi-definite estimate whose mean over draws of
        ``y`` is the expected information, where that has no closed form).
    point_masses : int
        How many leading experts are point masses at zero, without parameters
        (1 for :class:`ZeroInflated`, 0 otherwise): their coefficients and
        dispersions are not counted, estimated or shown.
    penalty_metric : ndarray of shape (n_predictors, n_predictors) or None
        The quadratic form of the ridge and the prior over an expert's
        predictors, per column (None: the identity).  :class:`Multinomial`
        penalises the centred class logits, so that the fit does not depend
        on the reference class.
    screen_steps : tuple of int or None
        ``(expert, gate)`` M-steps per iteration of the batched screen of
        random hard partitions (:func:`moelearn.engine.search`) for class-label
        experts; None where the family is not screened that way.
    needs_trials : bool
        Whether the distribution of a row depends on a known number of trials
        read from a column of ``X`` (the binomial): the family's hooks then
        act on :meth:`at_rows`' copy bound to those rows' trials.
    dispersion_prior_text : str or None
        What :meth:`dispersion_prior` is, for a summary, with ``{lam}`` for the
        strength (None: the family has none).
    collapse_ends : tuple of (str, str)
        ``(dispersion name, "low" or "high")``: the ends of a dispersion's
        range at which an expert has collapsed onto (nearly) tied responses,
        where the likelihood grows without bound (a Gaussian ``sigma`` at its
        floor, a Gamma ``shape`` at its cap); empty where no end is degenerate.
    y_scaling : str or None
        How the parameters follow ``y -> c y`` for ``c > 0`` exactly:
        ``"multiply"`` (coefficients, intercepts and the scale times ``c``),
        ``"log"`` (``log c`` added to the intercepts), None where no exact map
        exists (counts, class labels, a link that is not homogeneous).
    """

    name = "family"
    dispersion_names: tuple = ()
    n_predictors = 1
    # the ridge's metric over an expert's predictors (None: the identity), see Multinomial
    penalty_metric = None
    location_scale = False
    scale_family = False
    moment_start: str | None = None
    noise_parameter: str | None = None
    discrete = False
    # the lower end of the support of y (-inf: the real line)
    y_min = -np.inf
    y_scaling: str | None = None
    collapse_ends: tuple[tuple[str, str], ...] = ()
    dispersion_prior_text: str | None = None
    needs_trials = False
    exact_fisher = True
    link_label = "identity"
    noise_row: tuple[str, str] | None = None
    log_link = False
    screen_steps: tuple[int, int] | None = None
    closed_m_step = False
    # whether a weighted least-squares fit of working_response(y) is a sensible
    # first guess of the coefficients (not for class labels)
    least_squares_start = True
    point_masses = 0

    def with_experts(self, n_experts) -> Family:
        """This family for a mixture of ``n_experts`` experts (itself, but for
        :class:`ZeroInflated`, whose first expert is a point mass)."""
        return self

    # ------------------------------------------------------------ row context
    def at_rows(self, trials) -> Family:
        """This family given the rows' known number of trials, shape (n,) or scalar.

        Families whose rows need no such context (every one but the binomial,
        see :attr:`needs_trials`) return themselves.
        """
        return self

    def take(self, rows) -> Family:
        """This family restricted to ``rows`` of the rows it is bound to (itself if unbound)."""
        return self

    # -------------------------------------------------------------- validation
    def check_y(self, y) -> np.ndarray:
        """Validate a response vector; raise ``ValueError`` naming the problem."""
        y = np.asarray(y, dtype=float)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"y contains NaN or infinite values (family={self.name!r})")
        return y

    # --------------------------------------------------------------- density
    @abstractmethod
    def log_density(self, y, eta, disp) -> np.ndarray:
        """``log f(y_n | eta_ni, disp_i)``, shape (n, k)."""

    @abstractmethod
    def derivatives(self, y, eta, disp):
        """Log-density, gradient and Fisher information in working coordinates.

        Returns
        -------
        logf : (n, k)
        grad : (n, k, q + m)
            Derivatives in ``(eta, log disp)``.
        fisher : (n, k, q + m, q + m)
            Expected information (positive semi-definite) in the same coordinates.
        """

    def gradient(self, y, eta, disp):
        """``(logf, grad)`` of :meth:`derivatives` without the information.

        A gradient pass (L-BFGS-B) needs no more; families whose information costs
        much beside the gradient override this.
        """
        logf, grad, _ = self.derivatives(y, eta, disp)
        return logf, grad

    def hessian(self, y, eta, disp) -> np.ndarray:
        """Second derivatives of the log-density in working coordinates, (n, k, Q, Q).

        The coordinates are those of :meth:`derivatives`, ``(eta_1..eta_q, log
        phi_1..log phi_m)``; with them the engine forms the exact observed
        information of the mixture in one pass.  This default takes central
        differences of the analytic gradient of :meth:`derivatives`, entry by
        entry (``2 Q`` evaluations, no pass over the data); families override
        it with the exact formula.
        """
        eta = np.asarray(eta, dtype=float)
        disp = np.asarray(disp, dtype=float)
        q = self.n_predictors
        multi = eta.ndim == 3
        m = disp.shape[1]
        size = q + m
        H = np.empty(eta.shape[:2] + (size, size))
        for c in range(size):
            if c < q:
                h = 1e-5 * np.maximum(1.0, np.abs(eta[..., c] if multi else eta))
                up, down = eta.copy(), eta.copy()
                if multi:
                    up[..., c] += h
                    down[..., c] -= h
                else:
                    up += h
                    down -= h
                g_up = self.derivatives(y, up, disp)[1]
                g_down = self.derivatives(y, down, disp)[1]
            else:
                h = 1e-5
                d_up, d_down = disp.copy(), disp.copy()
                d_up[:, c - q] *= np.exp(h)
                d_down[:, c - q] *= np.exp(-h)
                g_up = self.derivatives(y, eta, d_up)[1]
                g_down = self.derivatives(y, eta, d_down)[1]
            if g_up.ndim == eta.ndim and not multi:
                g_up, g_down = g_up[..., None], g_down[..., None]
            H[..., :, c] = (g_up - g_down) / (2.0 * (h[..., None] if np.ndim(h) else h))
        return 0.5 * (H + np.swapaxes(H, -1, -2))

    @abstractmethod
    def mean(self, eta, disp) -> np.ndarray:
        """``E[y | expert]``, shape of ``eta`` (n, k)."""

    @abstractmethod
    def variance(self, eta, disp) -> np.ndarray:
        """``Var[y | expert]``, shape (n, k) (``inf`` where it does not exist)."""

    @abstractmethod
    def cdf(self, y, eta, disp) -> np.ndarray:
        """``P(Y <= y | expert)`` for each row's ``y``, shape (n, k)."""

    def std(self, eta, disp) -> np.ndarray:
        """``sqrt(Var[y | expert])``, shape (n, k); families override it where the
        variance of a small scale underflows."""
        return np.sqrt(self.variance(eta, disp))

    def ppf(self, q, eta, disp) -> np.ndarray | None:
        """Each expert's ``q``-quantiles, shape (n, k, m) for levels ``q`` of shape (m,).

        For a count family the smallest integer ``y`` with ``F(y) >= q``.  The
        quantile of a mixture lies between its components' quantiles, so these
        bracket :func:`moelearn.predict_quantiles`' root search.  None (this
        default) where the family has no quantile function; the search then
        grows a bracket from the mixture's mean and spread.
        """
        return None

    @abstractmethod
    def sample(self, eta, disp, rng) -> np.ndarray:
        """One draw per entry of ``eta`` (n, k): shape (n, k)."""

    def sample_chosen(self, eta, disp, chosen, rng) -> np.ndarray:
        """One draw per row from the expert ``chosen[n]`` of each row: shape (n,).

        ``eta`` has shape (n, k) (or (n, k, q)); the default draws every expert
        and keeps the chosen one, so that the random stream is the one of
        :meth:`sample`.
        """
        draws = self.sample(eta, disp, rng)
        return np.take_along_axis(draws, chosen[:, None], axis=1)[:, 0]

    # ------------------------------------------------------------- fitting aid
    def working_response(self, y) -> np.ndarray:
        """``y`` on the predictor's scale (for clustering starts), shape (n,)."""
        return np.asarray(y, dtype=float)

    def initial_dispersion(self, y, eta=None) -> np.ndarray:
        """A starting value for each dispersion parameter, shape (m,)."""
        return np.ones(len(self.dispersion_names))

    def weighted_m_step(self, moments, log_disp, *, ridge=None, pool=None, prior=None):
        """The experts' exact M-step in closed form, or None where there is none.

        Maximises each block's weighted complete-data log-likelihood
        ``sum_n r_nb log f(y_n | <beta_b, u_n>, phi_b)`` (block ``b``: one expert
        of one candidate, ``r`` its responsibilities times the row weights) over
        the coefficients at the current dispersions, then over the dispersions
        at the new coefficients: one conditional-maximisation (ECM) step, which
        never lowers it.  This default returns None; the caller then takes a
        scoring step (DESIGN §13).

        Parameters
        ----------
        moments : tuple of ndarrays
            The blocks' weighted moments of the expert design ``u`` and the
            response ``t`` (``y`` less any offset): ``(sum r u u' (B, p, p),
            sum r u t (B, p), sum r t^2 (B,), sum r (B,))``, sums over the rows
            that a pass over the data reduces block by block.
        log_disp : ndarray (B, m)
            The blocks' current log-dispersions.
        ridge : ndarray (p,) or None
            A penalty ``ridge_j beta_j^2 / 2`` on the coefficients, on the scale
            of the log-likelihood.
        pool : ndarray (B,) of int or None
            Blocks with equal labels share the noise dispersion (``noise="shared"``).
        prior : (float, float) or None
            ``(strength, reference)``: the dispersion prior of
            :meth:`dispersion_prior` with weight ``strength`` on the scale of the
            log-likelihood (once per pool of shared dispersions).

        Returns
        -------
        (coef (B, p), log_disp (B, m)) or None
        """
        return None

    def dispersion_prior(self, log_disp, reference):
        """The log-prior of each expert's dispersions, per unit of strength, or None.

        The prior that keeps the likelihood bounded where a dispersion can
        shrink onto a few rows (DESIGN §13): as much information as one row
        whose squared residual is ``reference``, the family's reference
        dispersion on the fit's scale (the squared robust spread of the residuals
        of the one-expert least-squares fit of :meth:`working_response`, over
        ``k**2``).  This default has none.

        Parameters
        ----------
        log_disp : ndarray (k, m)
            The experts' log-dispersions (the engine's coordinates).
        reference : float
            The reference dispersion.

        Returns
        -------
        (value, gradient, curvature), each of shape (k, m), or None
            The log-prior of each coordinate, its first derivative and its
            negated second derivative (``>= 0``: the prior is concave in the
            log-dispersions), in ``log_disp``.
        """
        return None

    @property
    def has_dispersion_prior(self) -> bool:
        """Whether :meth:`dispersion_prior` gives a prior (:attr:`dispersion_prior_text`
        then says which)."""
        m = len(self.dispersion_names)
        return m > 0 and self.dispersion_prior(np.zeros((1, m)), 1.0) is not None

    def dispersion_bounds(self, y_scale=1.0):
        """Bounds ``(low, high)`` on the log-dispersion, arrays of shape (m,)."""
        m = len(self.dispersion_names)
        return np.full(m, -np.inf), np.full(m, np.inf)

    def get_config(self) -> dict:
        """The constructor arguments that rebuild this family (JSON-able; {} when none).

        The Gaussian family's link is not among them: a model records its
        link on its own.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# The Student-t degrees of freedom's prior: Gamma(2, rate 0.1) (Juarez & Steel 2010,
# J. Business & Economic Statistics 28, 52-60), whose mode is 10 and whose mean is 20.
_NU_PRIOR_RATE = 0.1


def _variance_prior(log_disp, reference, column=0):
    """The log-prior ``-(log s2 + reference / s2) / 2`` of ``s2 = exp(2 log_disp[:, column])``
    (one row's worth of an inverse-gamma prior), with its derivative and curvature in
    ``log_disp``; zero in the other columns."""
    value, grad, curv = (np.zeros_like(log_disp, dtype=float) for _ in range(3))
    t = log_disp[:, column]
    ratio = reference * np.exp(-2.0 * t)
    value[:, column] = -t - 0.5 * ratio
    grad[:, column] = ratio - 1.0
    curv[:, column] = 2.0 * ratio
    return value, grad, curv


def _as_disp(disp, k, m):
    disp = np.asarray(disp, dtype=float)
    return disp.reshape(k, m) if m else np.zeros((k, 0))


class Gaussian(Family):
    """``y = g(eta) + N(0, sigma^2)``: the Gaussian expert with any link (DESIGN §1).

    Parameters
    ----------
    link : str, Link or callable, default "linear"
    """

    name = "gaussian"
    collapse_ends = (("sigma", "low"),)
    dispersion_names = ("sigma",)
    dispersion_prior_text = (
        "inverse gamma on each sigma^2 (weight {lam} at the one-expert residual variance / k^2)"
    )
    noise_parameter = "sigma"
    moment_start = "gaussian"
    noise_row = ("noise", "sigma")

    def __init__(self, link="linear"):
        self.link = get_link(link)
        self.location_scale = self.link.is_linear
        self.y_scaling = "multiply" if self.link.homogeneous else None
        self.link_label = self.link.name
        self.closed_m_step = self.link.is_linear

    def log_density(self, y, eta, disp):
        sigma = disp[:, 0]
        r = (y[:, None] - self.link(eta)) / sigma
        return -0.5 * r**2 - np.log(sigma) - 0.5 * _LOG_2PI

    def gradient(self, y, eta, disp):
        return self._terms(y, eta, disp)[:2]

    def derivatives(self, y, eta, disp):
        logf, grad, dmu = self._terms(y, eta, disp)
        fisher = np.zeros(eta.shape + (2, 2))
        fisher[..., 0, 0] = dmu**2 / disp[:, 0] ** 2
        fisher[..., 1, 1] = 2.0
        return logf, grad, fisher

    def _terms(self, y, eta, disp):
        sigma = disp[:, 0]
        mu = self.link(eta)
        dmu = self.link.grad(eta)
        r = (y[:, None] - mu) / sigma
        logf = -0.5 * r**2 - np.log(sigma) - 0.5 * _LOG_2PI
        return logf, np.stack([r * dmu / sigma, r**2 - 1.0], axis=-1), dmu

    def hessian(self, y, eta, disp):
        sigma = disp[:, 0]
        mu, dmu = self.link(eta), self.link.grad(eta)
        r = (y[:, None] - mu) / sigma
        H = np.empty(eta.shape + (2, 2))
        H[..., 0, 0] = -(dmu**2) / sigma**2
        if not self.link.is_linear:
            H[..., 0, 0] += r * self.link.grad2(eta) / sigma
        H[..., 0, 1] = H[..., 1, 0] = -2.0 * r * dmu / sigma
        H[..., 1, 1] = -2.0 * r**2
        return H

    def mean(self, eta, disp):
        return self.link(eta)

    def variance(self, eta, disp):
        return np.broadcast_to(disp[:, 0] ** 2, np.shape(eta)).copy()

    def cdf(self, y, eta, disp):
        return stats.norm.cdf((y[:, None] - self.link(eta)) / disp[:, 0])

    def std(self, eta, disp):
        return np.broadcast_to(disp[:, 0], np.shape(eta)).copy()

    def ppf(self, q, eta, disp):
        z = ndtri(np.asarray(q, dtype=float))
        return self.link(eta)[..., None] + disp[:, 0][:, None] * z

    def sample(self, eta, disp, rng):
        return self.link(eta) + disp[:, 0] * rng.standard_normal(np.shape(eta))

    def sample_chosen(self, eta, disp, chosen, rng):
        # one standard normal per row: the chosen expert's mean plus its noise
        rows = np.take_along_axis(eta, chosen[:, None], axis=1)[:, 0]
        return self.link(rows) + disp[chosen, 0] * rng.standard_normal(len(chosen))

    def initial_dispersion(self, y, eta=None):
        return np.array([max(float(np.std(y)), 1e-12)])

    def dispersion_bounds(self, y_scale=1.0):
        # sigma <= 1e12 (on the fit's scale of y) floors against overflow, as in DESIGN §12
        return np.array([-np.inf]), np.array([np.log(_SIGMA_MAX)])

    def dispersion_prior(self, log_disp, reference):
        # an inverse-gamma prior on sigma^2: one row's worth with squared residual s,
        # -(log sigma^2 + s / sigma^2) / 2 (Chen, Tan & Zhang 2008; DESIGN §13)
        return _variance_prior(log_disp, reference)

    def weighted_m_step(self, moments, log_disp, *, ridge=None, pool=None, prior=None):
        # identity link: weighted least squares, then the weighted residual variance
        if not self.link.is_linear:
            return None
        gram, cross, square, mass = moments
        p = gram.shape[1]
        scale = np.maximum(np.trace(gram, axis1=1, axis2=2) / p, 1e-300)
        lhs = gram + (1e-10 * scale)[:, None, None] * np.eye(p)
        if ridge is not None:  # the ridge at the current sigma: sigma^2 ridge on the Gram
            lhs = lhs + np.exp(2.0 * log_disp[:, 0])[:, None, None] * np.diag(ridge)
        coef = np.linalg.solve(lhs, cross[..., None])[..., 0]
        fitted = np.einsum("bp,bpq,bq->b", coef, gram, coef)
        sse = np.maximum(square - 2.0 * np.einsum("bp,bp->b", coef, cross) + fitted, 0.0)
        if pool is not None:
            sse = np.bincount(pool, sse)[pool]
            mass = np.bincount(pool, mass)[pool]
        if prior is not None:  # the mode of the inverse-gamma posterior of sigma^2
            strength, reference = prior
            sse, mass = sse + strength * reference, mass + strength
        # a block without rows keeps its dispersion; one on tied responses goes to
        # the caller's floor
        spread = np.maximum(sse, 1e-300) / np.maximum(mass, 1e-300)
        new = np.where(mass > 0, 0.5 * np.log(spread), log_disp[:, 0])
        return coef, new[:, None]

    def __repr__(self):
        return f"Gaussian(link={self.link.name!r})"


class StudentT(Family):
    """``y = eta + sigma t_nu``: a robust expert with its own degrees of freedom.

    ``nu`` is estimated per expert within ``[nu_min, nu_max]`` (default
    ``[0.5, 200]``; at 200 the expert is Gaussian to within a few percent of
    a nat per sample).
    """

    name = "student-t"
    collapse_ends = (("sigma", "low"),)
    dispersion_names = ("sigma", "nu")
    dispersion_prior_text = (
        "inverse gamma on each sigma^2 (weight {lam} at the one-expert residual "
        "variance / k^2); Gamma(2, 0.1) on each nu, to the power {lam}"
    )
    noise_parameter = "sigma"
    moment_start = "gaussian-scale"
    location_scale = True
    y_scaling = "multiply"
    link_label = "t (identity)"
    noise_row = ("dispersion", "scale")

    def __init__(self, nu_min=0.5, nu_max=200.0):
        if not 0 < nu_min < nu_max:
            raise ValueError(f"need 0 < nu_min < nu_max, got {nu_min}, {nu_max}")
        self.nu_min, self.nu_max = float(nu_min), float(nu_max)

    def get_config(self):
        return {"nu_min": self.nu_min, "nu_max": self.nu_max}

    def log_density(self, y, eta, disp):
        sigma, nu = disp[:, 0], disp[:, 1]
        r = (y[:, None] - eta) / sigma
        return (
            gammaln(0.5 * (nu + 1))
            - gammaln(0.5 * nu)
            - 0.5 * np.log(nu * np.pi)
            - np.log(sigma)
            - 0.5 * (nu + 1) * np.log1p(r**2 / nu)
        )

    def gradient(self, y, eta, disp):
        sigma, nu = disp[:, 0], disp[:, 1]
        r = (y[:, None] - eta) / sigma
        r2 = r**2
        logf = self.log_density(y, eta, disp)
        u = (nu + 1) / (nu + r2)  # the E-step weight of the scale-mixture representation
        d_eta = u * r / sigma
        d_logsigma = u * r2 - 1.0
        d_nu = 0.5 * (
            digamma(0.5 * (nu + 1)) - digamma(0.5 * nu) - 1.0 / nu - np.log1p(r2 / nu) + u * r2 / nu
        )
        return logf, np.stack([d_eta, d_logsigma, nu * d_nu], axis=-1)

    def derivatives(self, y, eta, disp):
        sigma, nu = disp[:, 0], disp[:, 1]
        logf, grad = self.gradient(y, eta, disp)
        i_nu = 0.25 * (polygamma(1, 0.5 * nu) - polygamma(1, 0.5 * (nu + 1))) - (nu + 5) / (
            2 * nu * (nu + 1) * (nu + 3)
        )
        fisher = np.zeros(eta.shape + (3, 3))
        fisher[..., 0, 0] = (nu + 1) / ((nu + 3) * sigma**2)
        fisher[..., 1, 1] = 2 * nu / (nu + 3)
        fisher[..., 1, 2] = fisher[..., 2, 1] = -2 * nu / ((nu + 1) * (nu + 3))
        fisher[..., 2, 2] = nu**2 * np.maximum(i_nu, 0.0)
        return logf, grad, fisher

    def hessian(self, y, eta, disp):
        sigma, nu = disp[:, 0], disp[:, 1]
        r = (y[:, None] - eta) / sigma
        r2 = r**2
        D = nu + r2
        D2 = D**2
        g = 0.5 * (
            digamma(0.5 * (nu + 1)) - digamma(0.5 * nu) - 1.0 / nu - np.log1p(r2 / nu)
        ) + 0.5 * (nu + 1) * r2 / (nu * D)
        dg = 0.5 * (
            0.5 * polygamma(1, 0.5 * (nu + 1))
            - 0.5 * polygamma(1, 0.5 * nu)
            + 1.0 / nu**2
            + r2 / (nu * D)
            - r2 * (D + nu * (nu + 1)) / (nu**2 * D2)
        )
        H = np.empty(eta.shape + (3, 3))
        H[..., 0, 0] = -(nu + 1) * (nu - r2) / (sigma**2 * D2)
        H[..., 0, 1] = H[..., 1, 0] = -2 * nu * (nu + 1) * r / (sigma * D2)
        H[..., 1, 1] = -2 * nu * (nu + 1) * r2 / D2
        H[..., 0, 2] = H[..., 2, 0] = nu * r * (r2 - 1) / (sigma * D2)
        H[..., 1, 2] = H[..., 2, 1] = nu * r2 * (r2 - 1) / D2
        H[..., 2, 2] = nu * g + nu**2 * dg
        return H

    def mean(self, eta, disp):
        # the location: the mean when nu > 1, the median always (a point
        # prediction that exists for every nu)
        return np.array(eta, dtype=float, copy=True)

    def variance(self, eta, disp):
        sigma, nu = disp[:, 0], disp[:, 1]
        v = np.where(nu > 2, sigma**2 * nu / np.maximum(nu - 2, 1e-300), np.inf)
        return np.broadcast_to(v, np.shape(eta)).copy()

    def cdf(self, y, eta, disp):
        return stats.t.cdf((y[:, None] - eta) / disp[:, 0], disp[:, 1])

    def std(self, eta, disp):
        sigma, nu = disp[:, 0], disp[:, 1]
        s = np.where(nu > 2, sigma * np.sqrt(nu / np.maximum(nu - 2, 1e-300)), np.inf)
        return np.broadcast_to(s, np.shape(eta)).copy()

    def ppf(self, q, eta, disp):
        t = stats.t.ppf(np.asarray(q, dtype=float), disp[:, 1][:, None])  # (k, m)
        return np.asarray(eta, dtype=float)[..., None] + disp[:, 0][:, None] * t

    def sample(self, eta, disp, rng):
        shape = np.shape(eta)
        return eta + disp[:, 0] * rng.standard_t(np.broadcast_to(disp[:, 1], shape))

    def initial_dispersion(self, y, eta=None):
        return np.array([max(float(np.std(y)), 1e-12), 10.0])

    def dispersion_prior(self, log_disp, reference):
        # sigma^2 as the Gaussian's; nu ~ Gamma(2, 0.1), log nu - 0.1 nu, so that nu is
        # estimated between its ends rather than pinned at one (DESIGN §13)
        value, grad, curv = _variance_prior(log_disp, reference)
        nu = np.exp(log_disp[:, 1])
        value[:, 1] = log_disp[:, 1] - _NU_PRIOR_RATE * nu
        grad[:, 1] = 1.0 - _NU_PRIOR_RATE * nu
        curv[:, 1] = _NU_PRIOR_RATE * nu
        return value, grad, curv

    def dispersion_bounds(self, y_scale=1.0):
        return (
            np.array([-np.inf, np.log(self.nu_min)]),
            np.array([np.log(_SIGMA_MAX), np.log(self.nu_max)]),
        )


class Poisson(Family):
    """``y ~ Poisson(exp(eta))``: count experts with the log link.

    Non-integer ``y >= 0`` is accepted (the Poisson quasi-likelihood, as
    scikit-learn's ``PoissonRegressor`` does).
    """

    name = "poisson"
    discrete = True
    y_min = 0.0
    link_label = "poisson (log)"
    log_link = True
    moment_start = "count"

    def check_y(self, y):
        y = super().check_y(y)
        if np.any(y < 0):
            raise ValueError("family='poisson' needs y >= 0 (counts)")
        return y

    def log_density(self, y, eta, disp):
        eta = np.minimum(eta, 700.0)
        return y[:, None] * eta - np.exp(eta) - gammaln(y + 1.0)[:, None]

    def derivatives(self, y, eta, disp):
        eta = np.minimum(eta, 700.0)
        mu = np.exp(eta)
        logf = y[:, None] * eta - mu - gammaln(y + 1.0)[:, None]
        return logf, (y[:, None] - mu)[..., None], mu[..., None, None]

    def hessian(self, y, eta, disp):
        # the canonical link: the observed information is the expected one
        return -np.exp(np.minimum(eta, 700.0))[..., None, None]

    def mean(self, eta, disp):
        return np.exp(np.minimum(eta, 700.0))

    def variance(self, eta, disp):
        return self.mean(eta, disp)

    def cdf(self, y, eta, disp):
        return stats.poisson.cdf(y[:, None], self.mean(eta, disp))

    def ppf(self, q, eta, disp):
        return stats.poisson.ppf(np.asarray(q, dtype=float), self.mean(eta, disp)[..., None])

    def sample(self, eta, disp, rng):
        return _poisson_draws(rng, self.mean(eta, disp))

    def working_response(self, y):
        return np.log(np.asarray(y, dtype=float) + 0.5)


class Gamma(Family):
    """``y ~ Gamma(shape, mean = exp(eta))``: positive responses with the log link.

    The dispersion is the shape ``alpha`` (coefficient of variation
    ``1 / sqrt(alpha)``), one per expert.
    """

    name = "gamma"
    collapse_ends = (("shape", "high"),)
    y_min = 0.0
    dispersion_names = ("shape",)
    dispersion_prior_text = (
        "inverse gamma on each 1 / shape (weight {lam} at the one-expert residual "
        "variance of log y / k^2)"
    )
    noise_parameter = "shape"
    moment_start = "log-gaussian"
    scale_family = True
    y_scaling = "log"
    link_label = "gamma (log)"
    noise_row = ("dispersion", "cv")
    log_link = True

    def __init__(self, shape_max=1e8):
        if not shape_max > 0:
            raise ValueError(f"need shape_max > 0, got {shape_max}")
        self.shape_max = float(shape_max)

    def get_config(self):
        return {"shape_max": self.shape_max}

    def check_y(self, y):
        y = super().check_y(y)
        if np.any(y <= 0):
            raise ValueError("family='gamma' needs y > 0")
        return y

    def dispersion_prior(self, log_disp, reference):
        # the Gaussian's prior on the squared coefficient of variation 1 / shape (the
        # variance of log y within an expert, about): -(log(1/a) + s a) / 2
        a = np.exp(log_disp[:, 0])
        value, grad, curv = (np.zeros_like(log_disp, dtype=float) for _ in range(3))
        value[:, 0] = 0.5 * (log_disp[:, 0] - reference * a)
        grad[:, 0] = 0.5 * (1.0 - reference * a)
        curv[:, 0] = 0.5 * reference * a
        return value, grad, curv

    def log_density(self, y, eta, disp):
        a = disp[:, 0]
        yc = y[:, None]
        return a * np.log(a) - gammaln(a) + (a - 1) * np.log(yc) - a * eta - a * yc * np.exp(-eta)

    def derivatives(self, y, eta, disp):
        a = disp[:, 0]
        yc = y[:, None]
        ratio = yc * np.exp(-eta)  # y / mu
        logy = np.log(yc)
        logf = a * np.log(a) - gammaln(a) + (a - 1) * logy - a * eta - a * ratio
        d_eta = a * (ratio - 1.0)
        d_loga = a * (np.log(a) + 1.0 - digamma(a) + logy - eta - ratio)
        grad = np.stack([d_eta, d_loga], axis=-1)
        fisher = np.zeros(eta.shape + (2, 2))
        fisher[..., 0, 0] = a
        fisher[..., 1, 1] = a**2 * np.maximum(polygamma(1, a) - 1.0 / a, 0.0)
        return logf, grad, fisher

    def hessian(self, y, eta, disp):
        a = disp[:, 0]
        yc = y[:, None]
        ratio = yc * np.exp(-eta)
        score_a = np.log(a) + 1.0 - digamma(a) + np.log(yc) - eta - ratio
        H = np.empty(eta.shape + (2, 2))
        H[..., 0, 0] = -a * ratio
        H[..., 0, 1] = H[..., 1, 0] = a * (ratio - 1.0)
        H[..., 1, 1] = a * score_a + a - a**2 * polygamma(1, a)
        return H

    def mean(self, eta, disp):
        return np.exp(eta)

    def variance(self, eta, disp):
        return np.exp(2 * eta) / disp[:, 0]

    def cdf(self, y, eta, disp):
        a = disp[:, 0]
        return stats.gamma.cdf(y[:, None] * a * np.exp(-eta), a)

    def std(self, eta, disp):
        return np.exp(eta) / np.sqrt(disp[:, 0])

    def ppf(self, q, eta, disp):
        a = disp[:, 0][:, None]  # (k, 1)
        return stats.gamma.ppf(np.asarray(q, dtype=float), a) * np.exp(eta)[..., None] / a

    def sample(self, eta, disp, rng):
        a = np.broadcast_to(disp[:, 0], np.shape(eta))
        return rng.gamma(a, np.exp(eta) / a)

    def working_response(self, y):
        return np.log(np.asarray(y, dtype=float))

    def initial_dispersion(self, y, eta=None):
        cv2 = float(np.var(y) / max(np.mean(y) ** 2, 1e-300))
        return np.array([1.0 / max(cv2, 1e-3)])

    def dispersion_bounds(self, y_scale=1.0):
        return np.array([np.log(1e-3)]), np.array([np.log(self.shape_max)])


class NegativeBinomial(Family):
    """``y ~ NB2(mean = exp(eta), shape theta)``: overdispersed counts with the log link.

    The variance is ``mu + mu**2 / theta``: a Poisson count whose rate carries a
    Gamma frailty of mean one and shape ``theta`` (coefficient of variation
    ``1 / sqrt(theta)``, which ``MoEParams.noise_std`` holds; Stata's ``alpha``
    is its square, R's ``MASS::glm.nb`` reports ``theta``).  One shape per
    expert, estimated within ``[1e-3, shape_max]`` (default ``1e6``); at
    ``shape_max`` the expert is Poisson to within ``mu / shape_max`` of its variance (the Poisson
    limit, a sound fit, not a collapse).  Non-integer ``y >= 0`` is accepted
    as for :class:`Poisson`.

    The expected information of ``log theta`` has no closed form (it is a
    series over the support); the scoring steps of EM use the squared score of
    each row in its place (a consistent estimate of it, positive
    semi-definite, and ascent is checked by step halving), and the observed
    information of :meth:`hessian` is exact.
    """

    name = "negative-binomial"
    discrete = True
    y_min = 0.0
    dispersion_names = ("shape",)
    noise_parameter = "shape"
    exact_fisher = False
    link_label = "negative binomial (log)"
    noise_row = ("dispersion", "cv")
    log_link = True
    moment_start = "count"

    def __init__(self, shape_max=1e6):
        if not shape_max > 1e-3:
            raise ValueError(f"need shape_max > 1e-3, got {shape_max}")
        self.shape_max = float(shape_max)

    def get_config(self):
        return {"shape_max": self.shape_max}

    def check_y(self, y):
        y = super().check_y(y)
        if np.any(y < 0):
            raise ValueError("family='negative-binomial' needs y >= 0 (counts)")
        return y

    @staticmethod
    def _terms(y, eta, disp):
        theta = disp[:, 0]
        eta = np.minimum(eta, 700.0)
        mu = np.exp(eta)
        yc = y[:, None]
        log_tm = np.log(theta + mu)  # log(theta + mu), (n, k)
        # log Gamma(y + theta) - log Gamma(theta) - log Gamma(y + 1) = -log B(theta, y + 1)
        # - log(theta + y), stable for theta far above y (the Poisson limit)
        logf = (
            -betaln(theta, yc + 1.0)
            - np.log(theta + yc)
            - theta * np.log1p(mu / theta)
            + yc * (eta - log_tm)
        )
        return theta, mu, yc, logf

    def log_density(self, y, eta, disp):
        return self._terms(y, eta, disp)[3]

    def _score_theta(self, theta, mu, yc):
        # d log f / d theta
        return (
            digamma(yc + theta) - digamma(theta) - np.log1p(mu / theta) + (mu - yc) / (theta + mu)
        )

    def derivatives(self, y, eta, disp):
        theta, mu, yc, logf = self._terms(y, eta, disp)
        d_eta = theta * (yc - mu) / (theta + mu)
        d_logt = theta * self._score_theta(theta, mu, yc)
        grad = np.stack([d_eta, d_logt], axis=-1)
        fisher = np.zeros(np.shape(eta) + (2, 2))
        fisher[..., 0, 0] = theta * mu / (theta + mu)
        fisher[..., 1, 1] = d_logt**2  # the squared score: see the class docstring
        return logf, grad, fisher

    def hessian(self, y, eta, disp):
        theta = disp[:, 0]
        mu = np.exp(np.minimum(eta, 700.0))
        yc = y[:, None]
        tm = theta + mu
        second = (
            polygamma(1, yc + theta) - polygamma(1, theta) + mu / (theta * tm) - (mu - yc) / tm**2
        )
        H = np.empty(np.shape(eta) + (2, 2))
        H[..., 0, 0] = -theta * mu * (theta + yc) / tm**2
        H[..., 0, 1] = H[..., 1, 0] = theta * mu * (yc - mu) / tm**2
        H[..., 1, 1] = theta * self._score_theta(theta, mu, yc) + theta**2 * second
        return H

    def mean(self, eta, disp):
        return np.exp(np.minimum(eta, 700.0))

    def variance(self, eta, disp):
        mu = self.mean(eta, disp)
        return mu + mu**2 / disp[:, 0]

    def _p(self, eta, disp):
        # scipy's and numpy's success probability theta / (theta + mu)
        theta = disp[:, 0]
        return theta, expit(np.log(theta) - np.minimum(eta, 700.0))

    def cdf(self, y, eta, disp):
        theta, p = self._p(eta, disp)
        return stats.nbinom.cdf(y[:, None], theta, p)

    def ppf(self, q, eta, disp):
        q = np.asarray(q, dtype=float)
        theta, p = self._p(eta, disp)
        theta = np.broadcast_to(theta, p.shape)
        mu = self.mean(eta, disp)
        with np.errstate(over="ignore"):
            # scipy's (Boost's) discrete quantile search does not return where the
            # counts pass about 2**50 (not every integer is a float there); the rate's
            # Gamma quantile, whose Poisson noise is then below one part in 1e7 of it,
            # brackets the mixture's quantile as well
            big = ~(mu + 40.0 * np.sqrt(mu + mu**2 / theta) < 2.0**50)
        out = np.empty(p.shape + q.shape)
        safe = ~big
        out[safe] = stats.nbinom.ppf(q, theta[safe][:, None], p[safe][:, None])
        t = theta[big][:, None]
        out[big] = np.floor(mu[big][:, None] * stats.gamma.ppf(q, t) / t)
        return out

    def sample(self, eta, disp, rng):
        theta, p = self._p(eta, disp)
        n = np.broadcast_to(theta, np.shape(eta))
        # the Poisson-Gamma representation: numpy's negative_binomial needs p > 0
        rate = rng.gamma(n, 1.0 / n) * self.mean(eta, disp)
        return _poisson_draws(rng, rate)

    def working_response(self, y):
        return np.log(np.asarray(y, dtype=float) + 0.5)

    def initial_dispersion(self, y, eta=None):
        y = np.asarray(y, dtype=float)
        mean, var = float(np.mean(y)), float(np.var(y))
        excess = var - mean
        theta = mean**2 / excess if excess > 1e-12 * max(mean, 1e-300) else 100.0
        return np.array([float(np.clip(theta, 0.1, 100.0))])

    def dispersion_bounds(self, y_scale=1.0):
        return np.array([np.log(1e-3)]), np.array([np.log(self.shape_max)])


class ZeroInflated(Family):
    """Count experts of ``base`` whose first expert is a point mass at zero.

    A mixture of ``k`` experts in which expert 0 puts all its mass on
    ``y = 0`` and experts ``1 .. k-1`` are ``base`` count experts: with
    ``k = 2`` the zero-inflated Poisson or negative binomial (Lambert 1992;
    flexmix's ``FLXMRziglm``, Stata's ``fmm: pointmass``, pscl's
    ``zeroinfl``), whose gate (on ``gating_features``) is the zero model's
    logistic regression.  The point mass has no parameters; the engine sees
    its log-density ``0`` at zero and ``-inf`` elsewhere, and zero gradient
    and information for its (unused) coordinates, which stay at zero.

    Arrays of experts laid out expert-major, ``k c`` columns for ``c``
    candidates (the batched screen), keep the first ``c`` columns as the point
    mass, so the family is bound to the number of experts
    (:meth:`with_experts`).

    Parameters
    ----------
    base : Family
        A discrete family of counts (``y_min = 0``).
    n_experts : int or None
        The number of experts, the point mass included (None: unbound).
    """

    point_masses = 1
    moment_start = None
    y_scaling = None
    location_scale = False
    scale_family = False

    def __init__(self, base, n_experts=None):
        if not (isinstance(base, Family) and base.discrete and base.y_min == 0.0):
            raise ValueError(f"a point mass at zero needs a count family, got {base!r}")
        self.base = base
        self.n_experts = None
        self.name = f"zero-inflated-{base.name}"
        for attr in (
            "dispersion_names",
            "n_predictors",
            "noise_parameter",
            "discrete",
            "y_min",
            "collapse_ends",
            "exact_fisher",
            "noise_row",
            "log_link",
        ):
            setattr(self, attr, getattr(base, attr))
        self.link_label = f"zero-inflated {base.link_label}"
        if n_experts is not None:
            self.n_experts = self.with_experts(n_experts).n_experts

    def with_experts(self, n_experts):
        if self.n_experts == n_experts:
            return self
        if int(n_experts) < 2:
            raise ValueError(
                f"family={self.name!r} needs n_experts >= 2 (expert 0 is the point mass at "
                f"zero), got {n_experts}"
            )
        out = copy.copy(self)
        out.n_experts = int(n_experts)
        return out

    def get_config(self):
        return self.base.get_config()

    def __repr__(self):
        return f"{type(self).__name__}({self.base!r})"

    def _mass(self, columns):
        """The point-mass columns among ``columns`` expert-major ones, a boolean mask."""
        k = self.n_experts
        if k is None:
            raise ValueError(f"{self!r} is not bound to a number of experts (with_experts)")
        if columns % k:
            raise ValueError(f"{self!r}: {columns} expert columns for {k} experts")
        return np.arange(columns) < columns // k

    def check_y(self, y):
        return self.base.check_y(y)

    def log_density(self, y, eta, disp):
        out = np.array(self.base.log_density(y, eta, disp), dtype=float)
        mass = self._mass(out.shape[1])
        out[:, mass] = np.where(np.asarray(y) == 0, 0.0, -np.inf)[:, None]
        return out

    def derivatives(self, y, eta, disp):
        logf, grad, fisher = (np.array(a, dtype=float) for a in self.base.derivatives(y, eta, disp))
        mass = self._mass(logf.shape[1])
        logf[:, mass] = np.where(np.asarray(y) == 0, 0.0, -np.inf)[:, None]
        grad[:, mass] = 0.0
        fisher[:, mass] = 0.0
        return logf, grad, fisher

    def hessian(self, y, eta, disp):
        H = np.array(self.base.hessian(y, eta, disp), dtype=float)
        H[:, self._mass(H.shape[1])] = 0.0
        return H

    def _zero(self, values, fill=0.0):
        values = np.array(values, dtype=float)
        values[:, self._mass(values.shape[1])] = fill
        return values

    def mean(self, eta, disp):
        return self._zero(self.base.mean(eta, disp))

    def variance(self, eta, disp):
        return self._zero(self.base.variance(eta, disp))

    def std(self, eta, disp):
        return self._zero(self.base.std(eta, disp))

    def cdf(self, y, eta, disp):
        out = np.array(self.base.cdf(y, eta, disp), dtype=float)
        out[:, self._mass(out.shape[1])] = (np.asarray(y) >= 0).astype(float)[:, None]
        return out

    def ppf(self, q, eta, disp):
        out = self.base.ppf(q, eta, disp)
        return None if out is None else self._zero(out)

    def sample(self, eta, disp, rng):
        return self._zero(self.base.sample(eta, disp, rng))

    def working_response(self, y):
        return self.base.working_response(y)

    def initial_dispersion(self, y, eta=None):
        return self.base.initial_dispersion(y, eta)

    def dispersion_bounds(self, y_scale=1.0):
        return self.base.dispersion_bounds(y_scale)


class ZeroInflatedPoisson(ZeroInflated):
    """Zero-inflated Poisson experts (``family="zero-inflated-poisson"``): expert 0 is a
    point mass at zero, the others :class:`Poisson` (see :class:`ZeroInflated`)."""

    def __init__(self, n_experts=None):
        super().__init__(Poisson(), n_experts)

    def get_config(self):
        return {}


class ZeroInflatedNegativeBinomial(ZeroInflated):
    """Zero-inflated negative binomial experts (``family="zero-inflated-negative-binomial"``):
    expert 0 is a point mass at zero, the others :class:`NegativeBinomial`."""

    def __init__(self, shape_max=1e6, n_experts=None):
        super().__init__(NegativeBinomial(shape_max), n_experts)

    def get_config(self):
        return {"shape_max": self.base.shape_max}


class Binomial(Family):
    """``y ~ Binomial(n, expit(eta))``: successes out of each row's ``n`` trials.

    The number of trials is known per row (flexmix's ``cbind(successes,
    failures)``, a column of ``X`` named by the estimator's ``trials``); the
    family's hooks act on the copy that :meth:`at_rows` binds to the rows'
    trials.  A mixture of binomial experts is a mixture over rows, so unlike
    Bernoulli rows weighted by their counts it captures overdispersion
    between rows.  With one trial per row it is the Bernoulli family.
    """

    name = "binomial"
    discrete = True
    y_min = 0.0
    link_label = "logit"
    needs_trials = True

    def __init__(self):
        self.trials = None

    def at_rows(self, trials):
        trials = np.asarray(trials, dtype=float)
        if trials.ndim > 1:
            raise ValueError(f"the trials must be one value per row, got shape {trials.shape}")
        if not np.all(np.isfinite(trials) & (trials >= 0) & (trials == np.round(trials))):
            raise ValueError(
                "family='binomial' needs the number of trials of every row as an integer >= 0"
            )
        bound = Binomial()
        bound.trials = trials
        return bound

    def take(self, rows):
        if self.trials is None or self.trials.ndim == 0:
            return self
        return self.at_rows(self.trials[rows])

    def _n(self, rows):
        """The trials as a column broadcasting against ``(rows, ...)`` arrays."""
        if self.trials is None:
            raise ValueError(
                "binomial experts need each row's number of trials: use "
                "Binomial().at_rows(trials), or the estimator's trials= column"
            )
        if self.trials.ndim == 0:
            return self.trials
        if len(self.trials) != rows:
            raise ValueError(f"the family holds the trials of {len(self.trials)} rows, not {rows}")
        return self.trials[:, None]

    def check_y(self, y):
        y = super().check_y(y)
        if np.any(y < 0) or np.any(y != np.round(y)):
            raise ValueError("family='binomial' needs y to count successes (integers >= 0)")
        if self.trials is not None and np.any(y[:, None] > self._n(len(y))):
            raise ValueError("family='binomial' needs y <= the row's number of trials")
        return y

    def log_density(self, y, eta, disp):
        n, yc = self._n(len(y)), y[:, None]
        choose = gammaln(n + 1.0) - gammaln(yc + 1.0) - gammaln(n - yc + 1.0)
        return choose + yc * log_expit(eta) + (n - yc) * log_expit(-eta)

    def derivatives(self, y, eta, disp):
        n, p = self._n(len(y)), expit(eta)
        return (
            self.log_density(y, eta, disp),
            (y[:, None] - n * p)[..., None],
            (n * p * (1 - p))[..., None, None],
        )

    def hessian(self, y, eta, disp):
        # the canonical link: the observed information is the expected one
        p = expit(eta)
        return -(self._n(len(eta)) * p * (1 - p))[..., None, None]

    def mean(self, eta, disp):
        return self._n(len(eta)) * expit(eta)

    def variance(self, eta, disp):
        p = expit(eta)
        return self._n(len(eta)) * p * (1 - p)

    def cdf(self, y, eta, disp):
        return stats.binom.cdf(y[:, None], self._n(len(eta)), expit(eta))

    def ppf(self, q, eta, disp):
        n = self._n(len(eta))
        q = np.asarray(q, dtype=float)
        return stats.binom.ppf(q, np.asarray(n)[..., None], expit(eta)[..., None])

    def sample(self, eta, disp, rng):
        n = np.broadcast_to(self._n(len(eta)), np.shape(eta))
        return rng.binomial(n.astype(np.int64), expit(eta)).astype(float)

    def working_response(self, y):
        # the empirical logit, defined at 0 and n successes
        n = self._n(len(y))
        n = n[:, 0] if np.ndim(n) else n
        y = np.asarray(y, dtype=float)
        return np.log(y + 0.5) - np.log(n - y + 0.5)

    def __repr__(self):
        return "Binomial()" if self.trials is None else f"Binomial() at {np.size(self.trials)} rows"


class Bernoulli(Family):
    """``y ~ Bernoulli(expit(eta))``: 0/1 responses with the logit link."""

    name = "bernoulli"
    discrete = True
    y_min = 0.0
    link_label = "logit"
    # two expert steps per M-step speed the binary screen (measured: moelearn.engine)
    screen_steps = (2, 1)
    least_squares_start = False

    def check_y(self, y):
        y = super().check_y(y)
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("family='bernoulli' needs y in {0, 1}")
        return y

    def log_density(self, y, eta, disp):
        yc = y[:, None]
        return yc * log_expit(eta) + (1 - yc) * log_expit(-eta)

    def derivatives(self, y, eta, disp):
        p = expit(eta)
        return (
            self.log_density(y, eta, disp),
            (y[:, None] - p)[..., None],
            (p * (1 - p))[..., None, None],
        )

    def hessian(self, y, eta, disp):
        p = expit(eta)
        return -(p * (1 - p))[..., None, None]

    def log_proba(self, eta):
        """Class log-probabilities ``(log P(0), log P(1))``, shape (n, k, 2)."""
        eta = np.asarray(eta, dtype=float)
        if eta.ndim == 3:
            eta = eta[..., 0]
        return np.stack([log_expit(-eta), log_expit(eta)], axis=-1)

    def mean(self, eta, disp):
        return expit(eta)

    def variance(self, eta, disp):
        p = expit(eta)
        return p * (1 - p)

    def cdf(self, y, eta, disp):
        p = expit(eta)
        yc = y[:, None]
        return np.where(yc < 0, 0.0, np.where(yc < 1, 1 - p, 1.0))

    def ppf(self, q, eta, disp):
        # 0 while q <= P(y = 0) = 1 - p, else 1
        return (np.asarray(q, dtype=float) > 1.0 - expit(eta)[..., None]).astype(float)

    def sample(self, eta, disp, rng):
        return (rng.random(np.shape(eta)) < expit(eta)).astype(float)

    def working_response(self, y):
        return np.asarray(y, dtype=float)


class Multinomial(Family):
    """``y ~ Categorical(softmax(eta_1, ..., eta_{C-1}, 0))``: class labels ``0..C-1``.

    Each expert has ``C - 1`` linear predictors, the log-odds of classes
    ``0..C-2`` against the last class (the reference).

    Parameters
    ----------
    n_classes : int, >= 2
    """

    name = "multinomial"
    discrete = True
    y_min = 0.0
    link_label = "multinomial (log)"
    # one expert step per M-step: two left deeper optima unreached (moelearn.engine)
    screen_steps = (1, 1)
    least_squares_start = False

    def __init__(self, n_classes):
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.n_classes = int(n_classes)
        self.n_predictors = self.n_classes - 1
        # The ridge (and prior) on the log-odds against the last class penalises the
        # centred class logits, sum_c ||eta_c - mean_c eta||^2 over all C classes (the last
        # one's are zero), as scikit-learn's multinomial LogisticRegression: symmetric in
        # the classes, so the fit does not depend on which class is the reference.  In
        # the C - 1 free rows its matrix is I - 11'/C.  Two classes use the one log-odds
        # vector's plain ridge, as scikit-learn's binary LogisticRegression (Bernoulli).
        q = self.n_predictors
        self.penalty_metric = np.eye(q) - 1.0 / self.n_classes if q > 1 else None

    def get_config(self):
        return {"n_classes": self.n_classes}

    def check_y(self, y):
        y = super().check_y(y)
        if not np.all((y >= 0) & (y < self.n_classes) & (y == np.round(y))):
            raise ValueError(f"family='multinomial' needs labels 0..{self.n_classes - 1}")
        return y

    def _eta(self, eta):
        eta = np.asarray(eta, dtype=float)
        return eta[..., None] if eta.ndim == 2 else eta

    def log_proba(self, eta):
        """Class log-probabilities, shape (n, k, C)."""
        eta = self._eta(eta)
        full = np.concatenate([eta, np.zeros(eta.shape[:-1] + (1,))], axis=-1)
        top = full.max(axis=-1, keepdims=True)
        return full - top - np.log(np.exp(full - top).sum(axis=-1, keepdims=True))

    def log_density(self, y, eta, disp):
        logp = self.log_proba(eta)
        idx = np.asarray(y, dtype=int)[:, None, None]
        return np.take_along_axis(logp, np.broadcast_to(idx, logp.shape[:2] + (1,)), -1)[..., 0]

    def derivatives(self, y, eta, disp):
        logp = self.log_proba(eta)
        p = np.exp(logp)
        q = self.n_predictors
        onehot = np.eye(self.n_classes)[np.asarray(y, dtype=int)][:, None, :]
        logf = np.sum(onehot * logp, axis=-1)
        grad = (onehot - p)[..., :q]
        pq = p[..., :q]
        fisher = -pq[..., :, None] * pq[..., None, :]
        idx = np.arange(q)
        fisher[..., idx, idx] += pq
        return logf, grad, fisher

    def hessian(self, y, eta, disp):
        # the canonical link: minus the expected information
        return -self.derivatives(y, eta, disp)[2]

    def mean(self, eta, disp):
        """Class probabilities, shape (n, k, C)."""
        return np.exp(self.log_proba(eta))

    def variance(self, eta, disp):
        p = self.mean(eta, disp)
        return p * (1 - p)

    def cdf(self, y, eta, disp):
        """``P(Y <= y | expert)`` over the class codes, shape (n, k)."""
        cumulative = np.cumsum(self.mean(eta, disp), axis=-1)
        idx = np.clip(np.floor(np.asarray(y, dtype=float)), -1, self.n_classes - 1).astype(int)
        picked = np.take_along_axis(
            cumulative,
            np.broadcast_to(np.maximum(idx, 0)[:, None, None], cumulative.shape[:2] + (1,)),
            -1,
        )[..., 0]
        return np.where(idx[:, None] < 0, 0.0, picked)

    def ppf(self, q, eta, disp):
        """The smallest class code ``c`` with ``P(Y <= c) >= q``, shape (n, k, m)."""
        cumulative = np.cumsum(self.mean(eta, disp), axis=-1)  # (n, k, C)
        q = np.asarray(q, dtype=float)
        below = cumulative[..., None, :] < q[:, None]  # (n, k, m, C)
        return np.minimum(below.sum(axis=-1), self.n_classes - 1).astype(float)

    def sample(self, eta, disp, rng):
        logp = self.log_proba(eta)
        return np.argmax(logp + rng.gumbel(size=logp.shape), axis=-1).astype(float)

    def __repr__(self):
        return f"Multinomial(n_classes={self.n_classes})"


# the families MixtureOfExpertsRegressor takes by name (the classifier's are its own)
REGRESSION_FAMILIES = (
    "gaussian",
    "student-t",
    "poisson",
    "gamma",
    "negative-binomial",
    "binomial",
    "zero-inflated-poisson",
    "zero-inflated-negative-binomial",
)

_FAMILIES = {
    "gaussian": Gaussian,
    "normal": Gaussian,
    "student-t": StudentT,
    "t": StudentT,
    "poisson": Poisson,
    "gamma": Gamma,
    "negative-binomial": NegativeBinomial,
    "nb": NegativeBinomial,
    "binomial": Binomial,
    "bernoulli": Bernoulli,
    "zero-inflated-poisson": ZeroInflatedPoisson,
    "zip": ZeroInflatedPoisson,
    "zero-inflated-negative-binomial": ZeroInflatedNegativeBinomial,
    "zinb": ZeroInflatedNegativeBinomial,
}


def family_config(family: Family) -> dict | None:
    """The arguments of ``family`` that :func:`family_from_config` rebuilds it from.

    None where ``family`` is not an instance of the class moelearn registers
    under its name (a user's subclass, which a saved model cannot name).
    """
    if type(family) is not _FAMILIES.get(family.name):
        return None
    return family.get_config()


def family_from_config(name: str, config: dict, link=None) -> Family:
    """The family registered as ``name``, built from ``config`` (see :func:`family_config`).

    Raises ``ValueError`` for an unknown name or arguments the family refuses.
    """
    family = get_family(name, link)
    if not config:
        return family
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        raise ValueError(f"the arguments of family {name!r} must be a dict, got {config!r}")
    try:
        return type(family)(**config)
    except TypeError as exc:
        raise ValueError(f"bad arguments {config!r} for family {name!r} ({exc})") from None


def available_families() -> list[str]:
    """Names accepted by :func:`get_family` (besides Family instances)."""
    names = list(REGRESSION_FAMILIES)
    names.insert(names.index("binomial") + 1, "bernoulli")  # the classifier's
    return names


def get_family(family: str | Family, link: str | Link | None = None) -> Family:
    """A :class:`Family` from a name or an instance.

    Parameters
    ----------
    family : str or Family
    link : str, Link, callable or None
        The expert non-linearity of a Gaussian family (other families have
        their canonical link and refuse any other).
    """
    if isinstance(family, Family):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a string or a Family, got {type(family).__name__}")
    key = family.lower()
    if key not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}; available: {available_families()}")
    cls = _FAMILIES[key]
    if cls is Gaussian:
        return Gaussian("linear" if link is None else link)
    if link is not None and not (isinstance(link, (str, Link)) and get_link(link).is_linear):
        raise ValueError(
            f"family={family!r} has a fixed link; link={link!r} applies to the Gaussian family only"
        )
    return cls()
