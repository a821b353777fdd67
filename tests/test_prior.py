"""``prior_strength``: the maximum a posteriori fit of the engine (DESIGN §13).

A Gaussian prior of precision ``lambda`` on every standardised slope, carrying
``lambda`` rows' worth of information: per sample a ridge of ``lambda / W``
(``W`` the total weight).  The tests check that it is exactly that ridge, that
its pull vanishes as ``n`` grows, that it makes a separating gate finite, and
that the reported log-likelihood stays the plain one.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from moelearn import (
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    load,
    make_moe,
    sample,
)
from moelearn.exceptions import GateSeparationWarning
from moelearn.families import available_families, get_family
from moelearn.family_fit import prior_alpha


def _fit(X, y, sample_weight=None, k=2, **kw):
    # maximum likelihood unless a test sets the prior
    kw.setdefault("random_state", 0)
    kw.setdefault("prior_strength", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", GateSeparationWarning)
        return MixtureOfExpertsRegressor(k, **kw).fit(X, y, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def problem():
    p = make_moe(3, 2, noise_std=0.3, random_state=0)
    X, y = sample(p, 300, random_state=1)
    return X, y


def test_prior_alpha_is_lambda_rows_worth():
    # the expert slopes' ridge and the gate's Cauchy prior each get lambda / W per sample;
    # the gate's ridge stays alpha's own (a Gaussian gate prior: added to it)
    assert prior_alpha(0.0, 0.0, 10.0) == 0.0
    pen = prior_alpha((1e-6, 0.0), 2.0, 400.0)
    assert (pen.expert, pen.gate, pen.gate_prior) == (1e-6 + 0.005, 0.0, 0.005)
    pen = prior_alpha(1e-4, 1.0, 100.0)
    assert (pen.expert, pen.gate, pen.gate_prior) == (1e-4 + 0.01, 1e-4, 0.01)
    pen = prior_alpha(1e-4, 1.0, 100.0, gate_prior="normal")
    assert (pen.expert, pen.gate, pen.gate_prior) == (1e-4 + 0.01, 1e-4 + 0.01, 0.0)
    with pytest.raises(ValueError, match="gate_prior"):
        prior_alpha(0.0, 1.0, 10.0, gate_prior="laplace")


def test_objective_is_the_log_likelihood_less_the_penalty(problem):
    X, y = problem
    plain = _fit(X, y)
    # maximum likelihood, up to the engine's ridge of 1e-6 per row on the standardised
    # expert slopes (family_fit.RIDGE; slopes of order one here): |ridge| < 1e-5
    assert 0 <= plain.log_likelihood_ - plain.objective_ < 1e-5
    est = _fit(X, y, prior_strength=1.0)
    # the reported log-likelihood is the plain one at the fitted parameters
    assert est.log_likelihood_ == pytest.approx(np.mean(est.log_density(X, y)), abs=1e-10)
    assert est.objective_ < est.log_likelihood_
    # the penalty is at most lambda/2 |slopes|^2 / n on the standardised scale plus the
    # engine's 1e-6 ridge: positive and small here (1 row's worth against 300)
    assert 0 < est.log_likelihood_ - est.objective_ < 0.05
    # the MAP fit's likelihood is below the ML fit's, by little (tolerance: a weak
    # prior moves a well-posed optimum by O(lambda / n) nats per sample)
    assert est.log_likelihood_ <= plain.log_likelihood_ + 1e-9
    assert est.log_likelihood_ > plain.log_likelihood_ - 0.02


def test_pull_vanishes_as_n_grows():
    # the same model at n = 200 and n = 20 000: the change the prior makes to the
    # coefficients falls roughly like 1 / n (a 100-fold drop bounded by 10-fold with
    # room for the fits' own noise)
    p = make_moe(3, 2, noise_std=0.3, random_state=3)
    change = []
    for n in (200, 20_000):
        X, y = sample(p, n, random_state=4)
        a, b = _fit(X, y, prior_strength=0.0), _fit(X, y, prior_strength=2.0)
        order = np.argsort(a.expert_bias_)
        b_order = np.argsort(b.expert_bias_)
        change.append(np.max(np.abs(a.experts_[order] - b.experts_[b_order])))
    assert change[1] < change[0] / 10
    assert change[1] < 1e-2


def test_separating_gate_becomes_a_finite_maximum():
    # two experts on two halves of x with no overlap: the plain likelihood rises as
    # the gate steepens without bound; the prior's maximum is finite and moderate
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(-1, 1, 120))
    y = np.where(x < 0, 3.0 + 0.2 * rng.standard_normal(120), -3.0 + 0.2 * rng.standard_normal(120))
    X = x[:, None]
    slopes = []
    for lam in (0.0, 1.0):
        est = _fit(X, y, prior_strength=lam, gating_features=[0])
        slopes.append(np.max(np.abs(est.gating_)))
    assert np.isfinite(slopes[1])
    # the gate's prior is Cauchy (Gelman et al. 2008): heavy-tailed, so its maximum is
    # steeper than a Gaussian prior's (a standardised slope of 20.7 against 4.05) but
    # finite: at it the likelihood's gain from steepening, about sum_n d_n exp(-v d_n)
    # over the rows nearest the gap (standardised distances d_n of order 0.01), falls to
    # the prior's marginal cost 2 / v.  Bound: 50, against 835 by maximum likelihood
    assert slopes[1] * np.std(x) < 50
    assert slopes[1] < slopes[0] / 10


def test_integer_weights_equal_repeated_rows_under_the_prior(problem):
    # W is the total weight: weights count as frequencies
    X, y = problem
    counts = np.random.default_rng(2).integers(0, 4, size=len(y))
    a = _fit(X, y, counts, prior_strength=1.0)
    b = _fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), prior_strength=1.0)
    for name in ("experts_", "expert_bias_", "gating_", "gating_bias_", "noise_std_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-9)


@pytest.mark.parametrize("solver", ["landscape", "tensor", "gd-l2"])
def test_refused_by_solvers_without_a_likelihood(problem, solver):
    X, y = problem
    with pytest.raises(ValueError, match="prior_strength=0.5 applies to the likelihood"):
        MixtureOfExpertsRegressor(2, solver=solver, prior_strength=0.5).fit(X, y)


@pytest.mark.parametrize("bad", [-1.0, "strong"])
def test_invalid_strength_is_refused(problem, bad):
    X, y = problem
    with pytest.raises(ValueError, match="prior_strength"):
        MixtureOfExpertsRegressor(2, prior_strength=bad).fit(X, y)


def test_other_families_and_baselines_take_it(problem):
    X, y = problem
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * X[:, 0]))
    for kw in ({"family": "poisson"}, {"solver": "em"}, {"solver": "gd-nll"}):
        yy = counts if kw.get("family") == "poisson" else y
        est = _fit(X, yy, prior_strength=1.0, **kw)
        assert est.objective_ < est.log_likelihood_


def test_summary_states_the_prior_and_persistence_keeps_it(problem, tmp_path):
    X, y = problem
    est = _fit(X, y, prior_strength=0.5)
    text = str(est.summary())
    assert "Prior" in text and "precision 0.5" in text
    assert "Prior" not in str(_fit(X, y).summary())
    est.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.prior_strength == 0.5
    assert back.objective_ == est.objective_
    assert back.log_likelihood_ == est.log_likelihood_


def test_classifier_prior_is_lambda_over_n_added_to_alpha():
    # the classifier's prior is Gaussian on every slope, experts' and gate's: the ridge
    # lambda / n
    rng = np.random.default_rng(6)
    X = rng.standard_normal((250, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(250) > 0).astype(int)
    a = MixtureOfExpertsClassifier(2, alpha=1e-4, prior_strength=2.0, random_state=0).fit(X, y)
    b = MixtureOfExpertsClassifier(
        2, alpha=1e-4 + 2.0 / 250, prior_strength=0.0, random_state=0
    ).fit(X, y)
    np.testing.assert_allclose(a.experts_, b.experts_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.gating_, b.gating_, rtol=0, atol=1e-10)
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-12)
    assert a.objective_ < a.log_likelihood_


def test_classifier_summary_states_its_prior_and_the_default_is_one_row():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((250, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(250) > 0).astype(int)
    default = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    assert default.prior_strength == 1.0 and default.alpha == 0.0
    text = str(default.summary())
    assert "Prior" in text and "precision 1 on standardised slopes" in text
    # the penalty is one row's worth: lambda / (2 n) times the squared standardised slopes
    assert default.log_likelihood_ - default.objective_ > 0
    plain = MixtureOfExpertsClassifier(2, alpha=0.0, prior_strength=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain.fit(X, y)
    assert "Prior" not in str(plain.summary())
    assert plain.objective_ == plain.log_likelihood_


@pytest.mark.parametrize("loader", ["iris", "breast_cancer"])
def test_one_expert_default_is_logistic_regression_and_ignores_the_class_order(loader):
    # One expert with the default prior (one row's worth on the standardised slopes) is
    # LogisticRegression() on standardised columns: binary with one log-odds vector,
    # multinomial with the centred (class-symmetric) penalty, so relabelling the classes
    # gives the same probabilities.  Both optima are unique (strictly concave); the
    # tolerance is that of the two optimisers at tol=1e-12 (measured 8e-8 and 5e-7).
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{loader}")(return_X_y=True)
    ref = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=100_000))
    ref.fit(X, y)
    one = MixtureOfExpertsClassifier(1, tol=1e-12, random_state=0).fit(X, y)
    np.testing.assert_allclose(one.predict_proba(X), ref.predict_proba(X), atol=5e-6)
    classes = np.unique(y)
    relabel = np.roll(classes, 1)  # class c becomes relabel[c]
    other = MixtureOfExpertsClassifier(1, tol=1e-12, random_state=0).fit(X, relabel[y])
    np.testing.assert_allclose(other.predict_proba(X)[:, relabel], one.predict_proba(X), atol=1e-9)


def test_multinomial_penalty_derivatives_match_its_value():
    # the class-symmetric ridge in flat coordinates: gradient and Hessian against central
    # differences of its value (a quadratic: exact up to rounding)
    from moelearn.engine import State, _flat_penalty
    from moelearn.families import Multinomial

    rng = np.random.default_rng(0)
    family = Multinomial(4)
    gate = rng.standard_normal((2, 4))
    gate[-1] = 0.0  # the reference row
    state = State(rng.standard_normal((2, 3, 4)), np.zeros((2, 0)), gate)
    value, grad, hess = _flat_penalty(state, 0.3, True, 1.0, None, family)
    theta = state.flat()
    h = 1e-5
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = h
        up = _flat_penalty(state.with_flat(theta + e), 0.3, True, 1.0, None, family)
        down = _flat_penalty(state.with_flat(theta - e), 0.3, True, 1.0, None, family)
        assert (up[0] - down[0]) / (2 * h) == pytest.approx(grad[j], abs=1e-8)
        np.testing.assert_allclose((up[1] - down[1]) / (2 * h), hess[:, j], atol=1e-8)
    # the centred class logits: adding the same vector to every class's (and the
    # reference's zero) logits, i.e. nothing to the probabilities, leaves it unchanged
    B = state.coef[..., 1:]
    full = np.concatenate([B, np.zeros((2, 1, 3))], axis=1)
    centred = full - full.mean(axis=1, keepdims=True)
    experts_only = _flat_penalty(state, (0.3, 0.0), True, 1.0, None, family)[0]
    assert -experts_only == pytest.approx(0.5 * 0.3 * np.sum(centred**2), rel=1e-12)


def _one_extreme_response(family, seed):
    """300 rows of counts 0-10 (Poisson) or values in [0.2, 7.2] (Gamma), one of them
    extreme: a count of 1000, or a value of 1e-10."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, 2))
    if family == "poisson":
        y = rng.poisson(np.exp(0.5 + 0.5 * X[:, 0])).astype(float).clip(0, 10)
        y[7] = 1000.0
    else:
        g = rng.gamma(4.0, np.exp(0.3 * X[:, 0]) / 4.0)
        y = 0.2 + 7.0 * (g - g.min()) / (g.max() - g.min())
        y[5] = 1e-10
    return X, y


@pytest.mark.parametrize("family", ["poisson", "gamma"])
def test_one_extreme_response_does_not_make_predictions_explode_under_the_prior(family):
    # By maximum likelihood an expert follows the one extreme row with a steep slope:
    # measured on data seeds 0-4, largest means on the training inputs 1e3-1.4e14 for
    # the counts and 3.2-1.5e44 for the Gamma values.  Under the default prior (lambda =
    # 0.5) every prediction stays within the range of the responses (measured at most
    # 366 and 4.43; at lambda = 1, 119 and 4.43).  A tenth of a row is not enough for the
    # counts: the row of 1000 is worth about 3 600 nats to an expert that follows it, and
    # at lambda = 0.1 seeds 2 and 3 reach 3.3e3 and 1.4e6.
    for seed in range(5):
        X, y = _one_extreme_response(family, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the extreme row's own expert may collapse
            est = MixtureOfExpertsRegressor(2, family=family, random_state=0).fit(X, y)
        pred = est.predict(X)
        assert np.all(np.isfinite(pred))
        assert pred.max() <= y.max() and pred.min() >= 0.0, (seed, pred.min(), pred.max())


# ------------------------------------------------------------------ dispersion priors


@pytest.mark.parametrize("name", available_families())
def test_a_family_with_a_dispersion_prior_says_which(name):
    # the fit adds the prior when the hook gives one, the summary states its text: one
    # without the other would fit one objective and report another
    family = get_family(name)
    assert family.has_dispersion_prior == (family.dispersion_prior_text is not None)
    if family.has_dispersion_prior:
        assert "{lam}" in family.dispersion_prior_text


@pytest.mark.parametrize("name", ["gaussian", "student-t", "gamma"])
def test_dispersion_prior_derivatives_and_mode(name):
    # the log-prior's gradient and curvature (its negated second derivative) against
    # central differences of its value, its concavity, and its mode alone: sigma^2 at
    # the reference (Gaussian, Student-t), shape 1 / reference (Gamma), nu at 10
    from moelearn.families import get_family

    family = get_family(name)
    m = len(family.dispersion_names)
    rng = np.random.default_rng(0)
    log_disp, reference, h = rng.normal(0.0, 0.7, (4, m)), 0.37, 1e-5
    value, grad, curv = family.dispersion_prior(log_disp, reference)
    assert np.all(curv >= 0)
    for j in range(m):
        e = np.zeros_like(log_disp)
        e[:, j] = h
        up, down = (family.dispersion_prior(log_disp + s * e, reference) for s in (1, -1))
        np.testing.assert_allclose((up[0] - down[0])[:, j] / (2 * h), grad[:, j], atol=1e-8)
        np.testing.assert_allclose(-(up[1] - down[1])[:, j] / (2 * h), curv[:, j], atol=1e-7)
    mode = {"gaussian": [0.5 * np.log(reference)], "gamma": [-np.log(reference)]}
    mode["student-t"] = [0.5 * np.log(reference), np.log(10.0)]
    at_mode = family.dispersion_prior(np.array([mode[name]]), reference)[1]
    np.testing.assert_allclose(at_mode, 0.0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_gate_prior_derivatives_and_minorant(k):
    # the Cauchy prior on the centred gate slopes in the gate's flat coordinates: its
    # gradient and exact Hessian against central differences of its value; the
    # scoring step's curvature is that of a quadratic minorant: it touches the prior at
    # the current gate and lies below it elsewhere (so the M-step still ascends)
    from moelearn.engine import State, _flat_penalty
    from moelearn.penalties import Penalty, centred_blocks, gate_prior_terms

    rng = np.random.default_rng(k)
    pen = Penalty(gate_prior=0.3)
    gate = 3.0 * rng.standard_normal((k, 3))
    gate[-1] = 0.0
    state = State(np.zeros((k, 1, 2)), np.zeros((k, 1)), gate)
    value, grad, hess = _flat_penalty(state, pen, True, 10.0)
    theta, h = state.flat(), 1e-5
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = h
        up, down = (_flat_penalty(state.with_flat(theta + s * e), pen, True, 10.0) for s in (1, -1))
        assert (up[0] - down[0]) / (2 * h) == pytest.approx(grad[j], abs=1e-7)
        np.testing.assert_allclose((up[1] - down[1]) / (2 * h), hess[:, j], atol=1e-6)
    mask = np.array([0.0, 1.0, 1.0])  # the intercept is free
    v0, g0, w0, _ = gate_prior_terms(gate, mask, pen, 10.0)
    W = centred_blocks(w0)
    g_flat = g0[: k - 1].ravel()
    for _ in range(20):
        other = gate.copy()
        other[: k - 1] += rng.normal(0.0, 2.0, (k - 1, 3))
        d = (other - gate)[: k - 1].ravel()
        minorant = v0 + g_flat @ d - 0.5 * d @ W @ d
        assert gate_prior_terms(other, mask, pen, 10.0)[0] >= minorant - 1e-12
    # two experts: exactly Cauchy(0, 1.25) on the log-odds slope v (Gelman et al. 2008), so
    # heavy-tailed: a tenfold steeper gate costs about 2 log 10 nats more, not 100 times more
    one = State(np.zeros((2, 1, 2)), np.zeros((2, 1)), np.array([[0.0, 5.0], [0.0, 0.0]]))
    ten = State(np.zeros((2, 1, 2)), np.zeros((2, 1)), np.array([[0.0, 50.0], [0.0, 0.0]]))
    cost = [-_flat_penalty(s, Penalty(gate_prior=1.0), True, 1.0)[0] for s in (one, ten)]
    assert cost[0] == pytest.approx(np.log1p((5.0 / 1.25) ** 2), rel=1e-12)
    assert cost[1] - cost[0] == pytest.approx(2 * np.log(10), abs=0.1)


def test_penalty_with_a_dispersion_prior_in_flat_coordinates():
    # the engine's flat penalty (Newton's) carries the prior's gradient and curvature in
    # the log-dispersion coordinates; a shared dispersion is one parameter with one prior
    from moelearn.engine import State, Ties, _flat_penalty
    from moelearn.families import StudentT
    from moelearn.penalties import Penalty

    rng = np.random.default_rng(1)
    family, pen = StudentT(), Penalty(0.2, 0.1, 0.05, 0.8)
    gate = rng.standard_normal((3, 2))
    gate[-1] = 0.0
    state = State(rng.standard_normal((3, 1, 3)), rng.normal(0, 0.5, (3, 2)), gate)
    value, grad, hess = _flat_penalty(state, pen, True, 10.0, None, family)
    theta, h = state.flat(), 1e-5
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = h
        up, down = (
            _flat_penalty(state.with_flat(theta + s * e), pen, True, 10.0, None, family)
            for s in (1, -1)
        )
        assert (up[0] - down[0]) / (2 * h) == pytest.approx(grad[j], abs=1e-7)
        np.testing.assert_allclose((up[1] - down[1]) / (2 * h), hess[:, j], atol=1e-6)
    state.log_disp[:, 0] = 0.3  # sigma shared by the three experts
    shared = _flat_penalty(state, Penalty(0.0, 0.0, 0.05, 0.8), True, 10.0, Ties(0), family)[0]
    alone = family.dispersion_prior(np.array([[0.3, 0.0]]), 0.8)[0][0, 0]
    nu = family.dispersion_prior(state.log_disp, 0.8)[0][:, 1].sum()
    assert shared == pytest.approx(0.05 * 10.0 * (alone + nu), rel=1e-12)


def test_gaussian_noise_cannot_collapse_onto_a_few_rows():
    # four experts on 21 rows: under the prior each expert's sigma^2 is, at a stationary
    # point, (RSS_j + s) / (n_j + 1) >= s / (n + 1), s the residual variance of the
    # least-squares fit over k^2 (one row's worth of an inverse-gamma prior): a bound
    # derived, not tuned, checked with 1% slack for the optimiser's tolerance.  By
    # maximum likelihood an expert's sigma can shrink below it onto a few rows (seed 0:
    # 2.7% of std(y) against the bound's 3.5%), so the bound is not vacuous
    below = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((21, 2))
        y = X @ [1.0, -1.0] + rng.standard_normal(21)
        U = np.column_stack([np.ones(21), X])
        s = np.mean((y - U @ np.linalg.lstsq(U, y, rcond=None)[0]) ** 2)
        plain = _fit(X, y, k=4, random_state=seed, prior_strength=0.0)
        est = _fit(X, y, k=4, random_state=seed, prior_strength=1.0)
        bound = np.sqrt(s / 4**2 / 22)
        below.append(plain.noise_std_.min() < bound)
        assert est.noise_std_.min() >= 0.99 * bound
    assert any(below)


def test_student_t_degrees_of_freedom_are_estimated_not_pinned():
    # Gaussian noise: by maximum likelihood nu runs to its cap of 200 (seed 0); under the
    # Gamma(2, 0.1) prior it is estimated, about (20 n_j 3/4)^(1/3) ~ 15 for n_j ~ 150
    # rows (the likelihood's 3 n_j / (4 nu^2) against the prior's 1/10 - 1/nu): within
    # [4, 60] with room for the sampling noise of nu's weak likelihood
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 2))
    y = X @ [1.0, -1.0] + 0.5 * rng.standard_normal(300)
    plain = _fit(X, y, family="student-t", prior_strength=0.0)
    est = _fit(X, y, family="student-t", prior_strength=1.0)
    assert plain.params_.dispersion()[:, 1].max() == pytest.approx(200.0)
    nu = est.params_.dispersion()[:, 1]
    assert np.all((nu > 4) & (nu < 60))
    # heavy tails (t with 3 df, one expert): the prior moves nu by little, well within its
    # standard error at n = 300 (about 0.6)
    y3 = X @ [1.0, -1.0] + 0.5 * rng.standard_t(3, 300)
    nus = [
        _fit(X, y3, k=1, family="student-t", prior_strength=lam).params_.dispersion()[0, 1]
        for lam in (0.0, 1.0)
    ]
    assert abs(nus[1] - nus[0]) < 0.3
    assert 2.0 < nus[1] < 5.0


def test_gamma_shape_stays_finite_on_tied_responses():
    # ten rows with one response value, which the gate can isolate: by maximum likelihood
    # their expert's shape runs to 1e4 - 1e8 (coefficient of variation -> 0); under the
    # prior the shape's stationarity, with the likelihood's slope below n_j / a, gives
    # a <= (2 n + 1) / r, r = s / k^2 (s: the residual variance of log y on x)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X = rng.uniform(0, 1, (150, 1))
        y = rng.gamma(4.0, np.exp(0.5 + X[:, 0]) / 4.0)
        X[:10, 0], y[:10] = rng.uniform(2.0, 2.5, 10), 2.0
        t, U = np.log(y), np.column_stack([np.ones(150), X])
        s = np.mean((t - U @ np.linalg.lstsq(U, t, rcond=None)[0]) ** 2)
        plain = _fit(X, y, family="gamma", random_state=seed, prior_strength=0.0)
        est = _fit(X, y, family="gamma", random_state=seed, prior_strength=1.0)
        assert plain.params_.dispersion()[:, 0].max() > 1e4
        assert est.params_.dispersion()[:, 0].max() <= (2 * 150 + 1) * 2**2 / s


def test_auto_is_half_a_row_for_likelihood_solvers_and_none_for_the_paper_pipelines(problem):
    from moelearn.estimator import DEFAULT_PRIOR_STRENGTH

    X, y = problem
    assert MixtureOfExpertsRegressor().prior_strength == "auto"
    assert DEFAULT_PRIOR_STRENGTH == 0.5
    default = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    explicit = MixtureOfExpertsRegressor(2, prior_strength=0.5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(default.experts_, explicit.experts_)
    assert default.objective_ < default.log_likelihood_
    assert "precision 0.5" in str(default.summary())
    for solver in ("tensor", "landscape", "gd-l2"):  # no likelihood: no prior
        est = MixtureOfExpertsRegressor(2, solver=solver, random_state=0).fit(X, y)
        assert est.objective_ == est.log_likelihood_
        assert "Prior:" not in str(est.summary())
    for name, value in (("refine", "em"), ("moment_method", "landscape")):
        MixtureOfExpertsRegressor(2, prior_strength=0, random_state=0, **{name: value}).fit(X, y)


def test_refine_and_moment_method_act_on_every_fit_through_the_engine(problem, monkeypatch):
    # refine="em" finishes the search's winner by EM alone, which stops when an iteration
    # gains less than tol (relative) and so ends just below the Newton / L-BFGS-B finish of
    # the same start: EM's linear rate r leaves about tol / (1 - r) per row, far under 1e-4
    import moelearn.engine as engine

    finishes, original = [], engine.refine_fit

    def spy(*args, finish="lbfgs", **kwargs):
        finishes.append(finish)
        return original(*args, finish=finish, **kwargs)

    monkeypatch.setattr(engine, "refine_fit", spy)
    X, y = problem
    lbfgs = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    em = MixtureOfExpertsRegressor(2, random_state=0, refine="em").fit(X, y)
    # the option reaches the search's last step (and only that one)
    assert finishes == ["lbfgs", "em"]
    assert em.init_method_ == lbfgs.init_method_
    assert lbfgs.objective_ - 1e-4 <= em.objective_ <= lbfgs.objective_ + 1e-9
    assert em.converged_
    # moment_method picks the moment start's recovery of the directions, for the families
    # whose start takes it, and names it; the count start takes the tensor method only
    for family in ("gaussian", "student-t"):
        est = MixtureOfExpertsRegressor(
            2, family=family, moment_method="landscape", n_init=1, random_state=0
        )
        est.fit(X, y)
        assert "landscape" in est.init_method_
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * X[:, 0]))
    with pytest.raises(ValueError, match="moment_method='landscape'.*poisson.*'tensor'"):
        MixtureOfExpertsRegressor(2, family="poisson", moment_method="landscape").fit(X, counts)
