"""Families of experts: derivatives, Fisher information, moments, CDF, normalisation, checks.

Monte Carlo comparisons draw N = 200 000 samples from the family's own sampler
(fixed seeds) and allow 5 standard errors of the mean, estimated from the same
draws: a correct implementation misses one comparison with probability
about 6e-7 by the CLT, and every summand below has a finite variance (the
cases whose variance is infinite are skipped, e.g. the sample variance of a
Student-t with nu <= 4).
"""

import numpy as np
import pytest
from scipy import integrate

from helpers import standard_error_bound
from moelearn.families import (
    Bernoulli,
    Binomial,
    Family,
    Gamma,
    Gaussian,
    NegativeBinomial,
    Poisson,
    StudentT,
    available_families,
    get_family,
)

N_DRAWS = 200_000
N_SIGMA = 5.0

# (id, family, eta, natural dispersion)
CASES = [
    ("gaussian-linear", Gaussian("linear"), 0.3, [0.7]),
    ("gaussian-linear-wide", Gaussian("linear"), -1.2, [2.5]),
    ("gaussian-sigmoid", Gaussian("sigmoid"), 0.5, [0.2]),
    ("gaussian-tanh", Gaussian("tanh"), -0.8, [0.4]),
    ("student-t-nu1", StudentT(), -0.4, [1.3, 1.0]),
    ("student-t-nu4", StudentT(), 0.2, [0.8, 4.0]),
    ("student-t-nu50", StudentT(), 1.1, [1.5, 50.0]),
    ("poisson-small", Poisson(), -1.0, []),
    ("poisson-mid", Poisson(), 0.5, []),
    ("poisson-large", Poisson(), 2.5, []),
    ("gamma-shape0.5", Gamma(), 0.4, [0.5]),
    ("gamma-shape3", Gamma(), -0.7, [3.0]),
    ("gamma-shape50", Gamma(), 1.3, [50.0]),
    ("negbin-shape0.7", NegativeBinomial(), 0.5, [0.7]),
    ("negbin-shape3", NegativeBinomial(), 1.5, [3.0]),
    ("negbin-shape1e4", NegativeBinomial(), 2.0, [1e4]),
    # binomial experts bound to a number of trials common to the rows
    ("binomial-n1", Binomial().at_rows(1), 0.7, []),
    ("binomial-n12", Binomial().at_rows(12), -0.6, []),
    ("binomial-n200", Binomial().at_rows(200), 2.0, []),
    ("bernoulli-neg", Bernoulli(), -2.0, []),
    ("bernoulli-pos", Bernoulli(), 0.3, []),
]
IDS = [c[0] for c in CASES]


def _params(family, eta, disp, n):
    """``eta`` of shape (n, 1) and ``disp`` of shape (1, m) for one expert."""
    m = len(family.dispersion_names)
    return np.full((n, 1), float(eta)), np.asarray(disp, dtype=float).reshape(1, m)


def _draws(family, eta, disp, seed, n=N_DRAWS):
    e, d = _params(family, eta, disp, n)
    y = family.sample(e, d, np.random.default_rng(seed))[:, 0]
    return y, e, d


@pytest.mark.parametrize(("name", "family", "eta", "disp"), CASES, ids=IDS)
def test_gradient_matches_finite_differences(name, family, eta, disp):
    # central differences with step h have error O(h^2 f''') ~ 1e-10 here, far below 1e-6
    y, e, d = _draws(family, eta, disp, seed=1, n=40)
    logf, grad, _ = family.derivatives(y, e, d)
    np.testing.assert_allclose(logf, family.log_density(y, e, d), rtol=1e-12, atol=1e-12)
    h = 1e-5
    fd = [(family.log_density(y, e + h, d) - family.log_density(y, e - h, d)) / (2 * h)]
    for j in range(d.shape[1]):
        step = np.zeros_like(d)
        step[:, j] = h
        up = family.log_density(y, e, d * np.exp(step))
        down = family.log_density(y, e, d * np.exp(-step))
        fd.append((up - down) / (2 * h))
    fd = np.stack(fd, axis=-1)
    assert grad.shape == fd.shape
    # relative 1e-6, with an absolute floor of 1e-6 of the gradient's scale for entries near 0
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * (1.0 + np.abs(fd).max()))


@pytest.mark.parametrize(("name", "family", "eta", "disp"), CASES, ids=IDS)
def test_hessian_matches_differences_of_the_gradient(name, family, eta, disp):
    # the base class's central differences of the analytic gradient (step 1e-5,
    # error O(h^2) ~ 1e-10 relative) against each family's exact formula
    y, e, d = _draws(family, eta, disp, seed=6, n=40)
    exact = family.hessian(y, e, d)
    numeric = Family.hessian(family, y, e, d)
    assert exact.shape == numeric.shape
    np.testing.assert_allclose(exact, numeric, rtol=1e-5, atol=1e-6 * (1.0 + np.abs(numeric).max()))
    # the mean of minus the Hessian over draws is the expected information
    # (checked against the Fisher information at 5 standard errors)
    y, e, d = _draws(family, eta, disp, seed=7)
    minus = -family.hessian(y, e, d)[:, 0]
    fisher = family.derivatives(y, e, d)[2][:, 0]
    bound = standard_error_bound(minus - fisher, N_SIGMA)
    assert np.all(np.abs((minus - fisher).mean(axis=0)) <= bound + 1e-9)


@pytest.mark.parametrize(("name", "family", "eta", "disp"), CASES, ids=IDS)
def test_fisher_is_mean_outer_product_of_the_score(name, family, eta, disp):
    y, e, d = _draws(family, eta, disp, seed=2)
    _, grad, fisher = family.derivatives(y, e, d)
    g = grad[:, 0, :]
    outer = g[:, :, None] * g[:, None, :]  # (N, Q, Q)
    if family.exact_fisher:
        expected = fisher[0, 0]
        # every row has the same parameters, so the Fisher information is one matrix
        np.testing.assert_allclose(fisher[:, 0], np.broadcast_to(expected, fisher[:, 0].shape))
    else:
        # an estimate per row (the squared score where the expectation has no closed
        # form): its mean over the draws estimates the information
        expected = fisher[:, 0].mean(axis=0)
        assert np.all(np.linalg.eigvalsh(fisher[:, 0]).min(axis=-1) >= -1e-12)
    bound = standard_error_bound(outer, N_SIGMA)
    diff = np.abs(outer.mean(axis=0) - expected)
    assert np.all(diff <= bound + 1e-12), (expected, outer.mean(axis=0), bound)
    # the score has mean zero (same tolerance)
    assert np.all(np.abs(g.mean(axis=0)) <= standard_error_bound(g, N_SIGMA))
    # positive semi-definite (the scoring M-step relies on it)
    assert np.linalg.eigvalsh(expected).min() >= -1e-12


@pytest.mark.parametrize(("name", "family", "eta", "disp"), CASES, ids=IDS)
def test_mean_and_variance_match_samples(name, family, eta, disp):
    y, e, d = _draws(family, eta, disp, seed=3)
    mean = family.mean(e[:1], d)[0, 0]
    var = family.variance(e[:1], d)[0, 0]
    nu = d[0, 1] if isinstance(family, StudentT) else np.inf
    if nu <= 1:  # no mean: NaN, or the location (the median) as a point prediction
        assert np.isnan(mean) or mean == pytest.approx(eta)
    else:
        assert abs(y.mean() - mean) <= standard_error_bound(y, N_SIGMA)
    if nu <= 2:
        assert np.isinf(var)
    elif nu > 4:  # the sample variance has a finite variance only when E[y^4] exists
        sq = (y - mean) ** 2
        assert abs(sq.mean() - var) <= standard_error_bound(sq, N_SIGMA)
    else:
        assert var == pytest.approx(d[0, 0] ** 2 * nu / (nu - 2))


@pytest.mark.parametrize(("name", "family", "eta", "disp"), CASES, ids=IDS)
def test_cdf_matches_empirical_cdf(name, family, eta, disp):
    y, e, d = _draws(family, eta, disp, seed=4)
    if family.discrete:
        points = np.unique(np.concatenate([[-0.5], np.quantile(y, [0.1, 0.5, 0.9]), [1.0]]))
    else:
        points = np.quantile(y, [0.05, 0.3, 0.5, 0.8, 0.97])
    cdf = family.cdf(points, np.full((len(points), 1), float(eta)), d)[:, 0]
    empirical = (y[:, None] <= points).mean(axis=0)
    # binomial standard error of an empirical CDF at a point
    bound = N_SIGMA * np.sqrt(np.maximum(cdf * (1 - cdf), 1e-12) / len(y))
    assert np.all(np.abs(empirical - cdf) <= bound + 1e-12), (points, cdf, empirical)
    assert np.all(np.diff(cdf) >= 0)


@pytest.mark.parametrize(("name", "family", "eta", "disp"), CASES, ids=IDS)
def test_density_is_normalised(name, family, eta, disp):
    e, d = _params(family, eta, disp, 1)
    if isinstance(family, (Poisson, NegativeBinomial)):
        y = np.arange(0.0, 400.0)
        total = np.exp(family.log_density(y, np.full((len(y), 1), float(eta)), d)).sum()
    elif isinstance(family, Bernoulli):
        total = np.exp(family.log_density(np.array([0.0, 1.0]), np.full((2, 1), eta), d)).sum()
    elif isinstance(family, Binomial):
        y = np.arange(0.0, float(family.trials) + 1.0)
        total = np.exp(family.log_density(y, np.full((len(y), 1), float(eta)), d)).sum()
    else:

        def density(t):
            return float(np.exp(family.log_density(np.array([t]), e, d))[0, 0])

        lo = 0.0 if isinstance(family, Gamma) else -np.inf
        centre = float(family.mean(e, d)[0, 0]) if not isinstance(family, StudentT) else eta
        total = sum(
            integrate.quad(density, a, b, limit=200, epsabs=1e-11, epsrel=1e-10)[0]
            for a, b in [(lo, centre), (centre, np.inf)]
        )
    assert total == pytest.approx(1.0, abs=1e-7)


def test_negative_binomial_quantiles_of_huge_counts_return():
    # scipy's discrete quantile search does not return at means near 1e18 (a degenerate
    # expert of a fit): the family answers with the rate's Gamma quantile there, and
    # with scipy's exact quantile below, continuously across the switch
    family = NegativeBinomial()
    levels = np.array([0.1, 0.5, 0.9])
    eta = np.log([[1e12, 5e20]])
    disp = np.array([[1e6], [1e6]])
    q = family.ppf(levels, eta, disp)[0]
    from scipy import stats

    for j, mu in enumerate([1e12, 5e20]):
        ref = mu * stats.gamma.ppf(levels, 1e6) / 1e6
        np.testing.assert_allclose(q[j], ref, rtol=1e-6)


def test_several_experts_broadcast_like_single_ones():
    """Columns of ``eta`` with per-expert dispersion rows agree with one-expert calls."""
    rng = np.random.default_rng(5)
    for family, disp in [
        (Gaussian("sigmoid"), [[0.3], [1.2]]),
        (StudentT(), [[0.5, 2.0], [1.5, 30.0]]),
        (Gamma(), [[0.7], [9.0]]),
        (NegativeBinomial(), [[0.8], [20.0]]),
        (Poisson(), np.zeros((2, 0))),
        (Bernoulli(), np.zeros((2, 0))),
        (Binomial().at_rows(np.arange(30) % 7), np.zeros((2, 0))),
    ]:
        disp = np.asarray(disp, dtype=float)
        eta = rng.normal(size=(30, 2))
        y = family.sample(eta, disp, rng)[:, 0]
        logf, grad, fisher = family.derivatives(y, eta, disp)
        for i in range(2):
            one = family.derivatives(y, eta[:, i : i + 1], disp[i : i + 1])
            np.testing.assert_allclose(logf[:, i], one[0][:, 0])
            np.testing.assert_allclose(grad[:, i], one[1][:, 0])
            np.testing.assert_allclose(fisher[:, i], one[2][:, 0])
            for method in ("mean", "variance"):
                np.testing.assert_allclose(
                    getattr(family, method)(eta, disp)[:, i],
                    getattr(family, method)(eta[:, i : i + 1], disp[i : i + 1])[:, 0],
                )


@pytest.mark.parametrize(
    ("family", "bad"),
    [
        (Poisson(), [1.0, -1.0, 3.0]),
        (NegativeBinomial(), [1.0, -1.0, 3.0]),
        (NegativeBinomial(), [np.inf, 1.0]),
        (Gamma(), [1.0, 0.0, 2.0]),
        (Gamma(), [1.0, -2.0]),
        (Bernoulli(), [0.0, 0.5, 1.0]),
        (Bernoulli(), [0.0, 2.0]),
        (Gaussian(), [0.0, np.nan]),
        (StudentT(), [np.inf, 1.0]),
        (Poisson(), [np.nan, 1.0]),
        (Gamma(), [np.nan, 1.0]),
        (Bernoulli(), [np.nan, 1.0]),
        (Binomial(), [0.0, 0.5]),
        (Binomial(), [-1.0, 2.0]),
        (Binomial().at_rows([3, 3]), [1.0, 4.0]),
        (Binomial().at_rows(2), [np.inf, 1.0]),
    ],
)
def test_check_y_refuses_invalid_responses(family, bad):
    with pytest.raises(ValueError, match=family.name):
        family.check_y(bad)


@pytest.mark.parametrize(
    ("family", "good"),
    [
        (Gaussian(), [-3.0, 0.0, 2.5]),
        (StudentT(), [-3.0, 0.0, 2.5]),
        (Poisson(), [0.0, 1.0, 2.5]),  # non-integer counts: the quasi-likelihood
        (NegativeBinomial(), [0.0, 1.0, 2.5]),
        (Gamma(), [1e-8, 2.0]),
        (Bernoulli(), [0, 1, 1]),
        (Binomial().at_rows([0, 3, 5]), [0, 3, 2]),
    ],
)
def test_check_y_accepts_valid_responses(family, good):
    out = family.check_y(good)
    assert out.dtype == float
    np.testing.assert_array_equal(out, np.asarray(good, dtype=float))


def test_get_family_names_and_instances():
    expected = {
        "gaussian": Gaussian,
        "normal": Gaussian,
        "student-t": StudentT,
        "t": StudentT,
        "poisson": Poisson,
        "gamma": Gamma,
        "negative-binomial": NegativeBinomial,
        "nb": NegativeBinomial,
        "bernoulli": Bernoulli,
        "binomial": Binomial,
        "Poisson": Poisson,
        "GAUSSIAN": Gaussian,
    }
    for name, cls in expected.items():
        assert type(get_family(name)) is cls
    for name in available_families():
        assert isinstance(get_family(name), Family)
    family = StudentT(nu_min=1.0)
    assert get_family(family) is family
    assert get_family("gaussian").link.name == "linear"
    assert get_family("gaussian", link="sigmoid").link.name == "sigmoid"
    assert type(get_family("poisson", link="linear")) is Poisson


def test_get_family_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown family"):
        get_family("beta-binomial")
    for name in ("poisson", "gamma", "negative-binomial", "bernoulli", "student-t"):
        with pytest.raises(ValueError, match="Gaussian family only"):
            get_family(name, link="sigmoid")
    with pytest.raises(ValueError, match="Gaussian family only"):
        get_family("poisson", link=np.tanh)
    with pytest.raises(TypeError, match="family must be a string"):
        get_family(3)
    with pytest.raises(TypeError, match="family must be a string"):
        get_family(None)
    with pytest.raises(ValueError, match="nu_min"):
        StudentT(nu_min=2.0, nu_max=1.0)


def test_family_is_abstract_and_multinomial_cdf_accumulates():
    from moelearn.families import Family, Multinomial

    with pytest.raises(TypeError):
        Family()
    fam = Multinomial(3)
    eta = np.random.default_rng(0).normal(size=(4, 2, 2))
    p = np.exp(fam.log_proba(eta))
    cdf = fam.cdf(np.array([0.0, 1.0, 2.0, -1.0]), eta, None)
    np.testing.assert_allclose(cdf[0], p[0, :, 0])
    np.testing.assert_allclose(cdf[1], p[1, :, 0] + p[1, :, 1])
    np.testing.assert_allclose(cdf[2], 1.0)
    np.testing.assert_allclose(cdf[3], 0.0)


@pytest.mark.parametrize("family", [Poisson(), NegativeBinomial()], ids=["poisson", "nb"])
def test_count_draws_of_huge_rates_are_finite_and_centred(family):
    # NumPy's Poisson sampler refuses rates above about 9.2e18; rates of 1e20 and 1e150
    # (an extrapolated log-rate) are drawn from the normal approximation instead.  Each
    # draw lies within 6 of the law's standard deviations of its mean (a failure rate
    # of 2e-9 per draw), and rates the sampler accepts give NumPy's own draws.
    eta = np.log(np.array([[1e20], [1e150], [3.0]]))
    disp = np.ones((1, len(family.dispersion_names))) * 1e6
    draws = family.sample(
        np.repeat(eta, 200, axis=1).T.reshape(-1, 1), disp, np.random.default_rng(0)
    )
    draws = draws.reshape(200, 3)
    assert np.all(np.isfinite(draws))
    mean = family.mean(eta.T, disp)[0]
    sd = np.sqrt(family.variance(eta.T, disp)[0])
    assert np.all(np.abs(draws - mean) <= 6 * sd)
    small = Poisson().sample(
        np.log(np.full((50, 1), 3.0)), np.ones((1, 0)), np.random.default_rng(1)
    )
    assert np.array_equal(small, np.random.default_rng(1).poisson(np.full((50, 1), 3.0)))


def _moments(U, t, r):
    gram = np.einsum("nb,np,nq->bpq", r, U, U)
    return gram, (r * t[:, None]).T @ U, t**2 @ r, r.sum(axis=0)


def _expected_q(U, t, r, coef, log_sigma, ridge):
    # each block's weighted Gaussian log-likelihood less the ridge
    resid = t[:, None] - U @ coef.T
    sigma = np.exp(log_sigma[:, 0])
    logf = -0.5 * (resid / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    return np.sum(r * logf, axis=0) - 0.5 * (coef**2 @ ridge)


def test_gaussian_closed_m_step_is_the_exact_weighted_maximiser():
    # Weighted least squares and the weighted residual variance: the exact maximiser of
    # each block's weighted log-likelihood (to solver round-off and the 1e-10 relative
    # stabilising ridge: 1e-9); with a ridge the
    # coefficients maximise at the current sigma and the step never lowers the penalised
    # objective; pooled blocks share sigma^2 = (total weighted squared residual) / (total
    # weight).
    rng = np.random.default_rng(3)
    n, p, B = 200, 3, 4
    U = np.c_[np.ones(n), rng.standard_normal((n, p - 1))]
    t = U @ np.array([0.5, -1.0, 2.0]) + 0.7 * rng.standard_normal(n)
    r = rng.random((n, B))
    log_sigma = np.log(rng.uniform(0.3, 3.0, (B, 1)))
    family = get_family("gaussian")
    assert family.closed_m_step
    coef, new = family.weighted_m_step(_moments(U, t, r), log_sigma)
    for b in range(B):
        sw = np.sqrt(r[:, b])
        ref = np.linalg.lstsq(U * sw[:, None], t * sw, rcond=None)[0]
        assert np.allclose(coef[b], ref, atol=1e-9)
        var = np.sum(r[:, b] * (t - U @ ref) ** 2) / r[:, b].sum()
        assert abs(new[b, 0] - 0.5 * np.log(var)) < 1e-9
    ridge = np.array([0.0, 30.0, 30.0])
    coef, new = family.weighted_m_step(_moments(U, t, r), log_sigma, ridge=ridge)
    sigma2 = np.exp(2 * log_sigma[:, 0])
    grad = (r * (t[:, None] - U @ coef.T)).T @ U / sigma2[:, None] - coef * ridge
    # zero up to the step's relative stabilising ridge (1e-10 of the Gram's trace)
    assert np.max(np.abs(grad)) < 1e-9 * np.max(np.abs((r * t[:, None]).T @ U / sigma2[:, None]))
    before = _expected_q(U, t, r, np.zeros((B, p)), log_sigma, ridge)
    after = _expected_q(U, t, r, coef, new, ridge)
    assert np.all(after >= before)
    pool = np.array([0, 0, 1, 1])
    coef, new = family.weighted_m_step(_moments(U, t, r), log_sigma, pool=pool)
    sse = np.sum(r * (t[:, None] - U @ coef.T) ** 2, axis=0)
    for g in (0, 1):
        both = pool == g
        assert np.allclose(new[both, 0], 0.5 * np.log(sse[both].sum() / r[:, both].sum()))
    # a block without rows keeps its sigma
    r[:, 0] = 0.0
    new = family.weighted_m_step(_moments(U, t, r), log_sigma)[1]
    assert new[0, 0] == log_sigma[0, 0]


@pytest.mark.parametrize("name", ["poisson", "student-t", "gamma", "bernoulli"])
def test_families_without_a_closed_m_step_say_so(name):
    family = get_family(name)
    assert not family.closed_m_step
    moments = (np.eye(2)[None], np.ones((1, 2)), np.ones(1), np.ones(1))
    assert family.weighted_m_step(moments, np.zeros((1, 1))) is None
    assert not get_family("gaussian", "relu").closed_m_step
    assert get_family("gaussian", "relu").weighted_m_step(moments, np.zeros((1, 1))) is None
