"""The likelihood engine with every family: recovery, monotone EM, exact gradient, out of core."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import expit, softmax

from helpers import pass_log_likelihood_gradient
from moelearn.data import Data
from moelearn.engine import (
    Design,
    EngineFit,
    State,
    canonical,
    em,
    pass_statistics,
    polish,
    search,
    state_from_responsibilities,
)
from moelearn.families import get_family
from moelearn.family_fit import fit_engine

# the gate reads column 0, the experts columns 0 and 1 (separate designs)
DESIGN = Design(np.array([0]), np.array([0, 1]), True)
GATE = np.array([[0.3, 1.5], [0.0, 0.0]])

# well separated experts: coef (k, 1, 1 + 2), log-dispersion (k, m)
TRUTH = {
    "gaussian": ([[1.0, 2.0, -1.0], [-1.0, -1.0, 1.5]], np.log([[0.3], [0.5]])),
    "student-t": ([[1.0, 2.0, -1.0], [-1.0, -1.0, 1.5]], np.log([[0.3, 4.0], [0.5, 10.0]])),
    "poisson": ([[2.0, 0.5, -0.3], [0.0, -0.4, 0.6]], np.zeros((2, 0))),
    "gamma": ([[1.0, 0.5, -0.3], [-1.0, -0.4, 0.6]], np.log([[5.0], [10.0]])),
    "bernoulli": ([[2.0, 2.0, -1.0], [-2.0, -1.0, 2.0]], np.zeros((2, 0))),
}
FAMILIES = list(TRUTH)


def _truth(name, gate=GATE):
    coef, log_disp = TRUTH[name]
    return State(np.asarray(coef, dtype=float)[:, None, :], np.array(log_disp), gate.copy())


def _sample(family, design, state, n, seed, d=2):
    """Draws of the mixture of experts with ``state``'s parameters."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    eta = design.expert_matrix(X) @ state.coef[:, 0].T
    p = softmax(design.gate_matrix(X) @ state.gate.T, axis=1)
    z = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    y = family.sample(eta, np.exp(state.log_disp), rng)[np.arange(n), z]
    return X, y


def _flat_grad(family, design, data, state):
    st = pass_statistics(family, design, data, state, "grad")
    k = state.n_experts
    parts = [st["g_coef"].ravel(), st["g_disp"].ravel()]
    if k > 1:
        parts.append(st["g_gate"][: k - 1].ravel())
    return np.concatenate(parts)


def _observed_information(family, design, data, state):
    """Minus the Hessian of the summed log-likelihood: central differences of the exact gradient."""
    theta = state.flat()
    H = np.zeros((theta.size, theta.size))
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = 1e-5 * max(1.0, abs(theta[j]))
        up = _flat_grad(family, design, data, state.with_flat(theta + step))
        down = _flat_grad(family, design, data, state.with_flat(theta - step))
        H[:, j] = (up - down) / (2 * step[j])
    return -0.5 * (H + H.T)


def _relabel(truth, estimate):
    """The true parameters relabelled to the estimate's experts (last gate row zero)."""
    cost = ((estimate.coef[:, None, 0] - truth.coef[None, :, 0]) ** 2).sum(axis=-1)
    rows, cols = linear_sum_assignment(cost)
    order = cols[np.argsort(rows)]
    gate = truth.gate[order] - truth.gate[order][-1]
    return State(truth.coef[order], truth.log_disp[order], gate)


def _bernoulli_mean(design, state, X):
    p = softmax(design.gate_matrix(X) @ state.gate.T, axis=1)
    return (p * expit(design.expert_matrix(X) @ state.coef[:, 0].T)).sum(axis=1)


@pytest.mark.parametrize("name", FAMILIES)
def test_search_recovers_the_truth(name):
    """The search reaches the maximum likelihood and lands within 5 standard errors of the truth.

    Standard errors are the square roots of the diagonal of the inverse observed information
    (exact gradient, differenced) at the estimate; with n = 3000 the MLE is close to normal, so
    |estimate - truth| <= 5 SE fails with probability < 1e-5 per parameter. For Bernoulli
    experts one binary response per x identifies little (coefficient SEs 0.3 - 0.9 at this n and
    the MLE is visibly non-normal), so there the fitted success probability P(y = 1 | x) is
    compared with the true one at 20 points, within 5 delta-method standard errors.
    """
    family = get_family(name)
    truth = _truth(name)
    X, y = _sample(family, DESIGN, truth, 3000, seed=0)
    data = Data(X, y)
    fit, _ = search(
        family,
        DESIGN,
        data,
        X,
        y,
        2,
        n_candidates=10,
        log_floor=np.log(1e-3),
        random_state=np.random.default_rng(1),
    )
    assert fit.converged
    assert not fit.collapsed
    # non-decreasing mean log-likelihood over the EM and polish iterations
    assert np.all(np.diff(fit.history) >= -1e-10)
    # the global maximum: at least the local maximum next to the truth
    at_truth = polish(family, DESIGN, data, truth)
    assert fit.log_likelihood >= at_truth.log_likelihood - 1e-6

    cov = np.linalg.inv(_observed_information(family, DESIGN, data, fit.state))
    target = _relabel(truth, fit.state)
    if name != "bernoulli":
        se = np.sqrt(np.diag(cov))
        z = (fit.state.flat() - target.flat()) / se
        assert np.all(np.abs(z) <= 5.0), z
        # and the test has teeth: every coefficient is known to better than 0.1
        assert se[: fit.state.coef.size].max() < 0.1
        return
    grid = np.random.default_rng(2).standard_normal((20, 2))
    theta = fit.state.flat()
    jac = np.empty((len(grid), theta.size))
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = 1e-6
        jac[:, j] = (
            _bernoulli_mean(DESIGN, fit.state.with_flat(theta + step), grid)
            - _bernoulli_mean(DESIGN, fit.state.with_flat(theta - step), grid)
        ) / 2e-6
    se = np.sqrt(np.einsum("np,pq,nq->n", jac, cov, jac))
    diff = _bernoulli_mean(DESIGN, fit.state, grid) - _bernoulli_mean(DESIGN, target, grid)
    assert np.all(np.abs(diff) <= 5.0 * se), (diff, se)
    assert se.max() < 0.1


def _random_state(family, k, p_gate, p_expert, rng):
    coef = 0.5 * rng.standard_normal((k, 1, p_expert))
    log_disp = {
        "gaussian": np.log([[0.8]]),
        "student-t": np.log([[0.8, 5.0]]),
        "gamma": np.log([[3.0]]),
    }.get(family.name, np.zeros((1, 0)))
    log_disp = np.repeat(log_disp, k, axis=0) + 0.2 * rng.standard_normal((k, log_disp.shape[1]))
    gate = rng.standard_normal((k, p_gate))
    gate[-1] = 0.0
    return State(coef, log_disp, gate)


@pytest.mark.parametrize("name", FAMILIES)
def test_em_is_monotone_from_poor_starts(name):
    family = get_family(name)
    truth = _truth(name)
    X, y = _sample(family, DESIGN, truth, 2000, seed=3)
    data = Data(X, y)
    rng = np.random.default_rng(4)
    starts = [_random_state(family, 2, DESIGN.n_gate, DESIGN.n_expert, rng)]
    post = rng.dirichlet(np.ones(2), size=len(y))
    starts.append(state_from_responsibilities(family, DESIGN, X, y, post))
    for start in starts:
        fit = em(family, DESIGN, data, start, max_iter=300, tol=1e-10)
        history = np.asarray(fit.history)
        assert np.all(np.diff(history) >= -1e-10), np.diff(history).min()
        assert history[-1] > history[0] + 1e-3  # it moved
        assert len(history) > 2


DESIGNS = {
    "separate": Design(np.array([0]), np.array([1, 2]), True),
    "same": Design(np.array([0, 1, 2]), np.array([0, 1, 2]), True),
    "empty-gate": Design(np.array([], int), np.array([0, 2]), True),
    "intercept-only-experts": Design(np.array([1, 2]), np.array([], int), True),
    "no-intercept": Design(np.array([2]), np.array([0, 1]), False),
}


@pytest.mark.parametrize("design_name", list(DESIGNS))
@pytest.mark.parametrize("name", FAMILIES + ["gaussian-sigmoid"])
def test_engine_gradient_matches_finite_differences(name, design_name):
    family = (
        get_family("gaussian", link="sigmoid") if name == "gaussian-sigmoid" else get_family(name)
    )
    design = DESIGNS[design_name]
    rng = np.random.default_rng(5)
    k = 3
    generating = _random_state(family, k, design.n_gate, design.n_expert, rng)
    X, y = _sample(family, design, generating, 300, seed=6, d=3)
    data = Data(X, y)
    state = _random_state(family, k, design.n_gate, design.n_expert, rng)  # away from the MLE
    grad = _flat_grad(family, design, data, state)
    assert grad.size == state.flat().size
    fd = pass_log_likelihood_gradient(family, design, data, state)
    # central differences of a sum of 300 smooth terms: error O(h^2) ~ 1e-8 of the scale
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    # the same gradient from the "hess" pass
    st = pass_statistics(family, design, data, state, "hess")
    np.testing.assert_allclose(st["g_coef"].ravel(), grad[: state.coef.size])


def test_empty_gate_has_constant_weights():
    """With only the intercept in the gate, the weights do not depend on x."""
    family = get_family("poisson")
    design = DESIGNS["empty-gate"]
    state = State(np.zeros((2, 1, 3)), np.zeros((2, 0)), np.array([[np.log(3.0)], [0.0]]))
    X = np.random.default_rng(7).standard_normal((50, 3))
    y = np.zeros(50)
    # with equal experts, the gate cancels: ll = log f(y | eta = 0) for every row
    st = pass_statistics(family, design, Data(X, y), state, "value")
    assert st["ll"] == pytest.approx(-50.0)
    np.testing.assert_allclose(st["share"], [37.5, 12.5])  # weights 3/4, 1/4


@pytest.mark.parametrize("name", FAMILIES)
def test_em_out_of_core_equals_in_memory(name, tmp_path):
    family = get_family(name)
    truth = _truth(name)
    X, y = _sample(family, DESIGN, truth, 2000, seed=8)
    mm = np.memmap(tmp_path / "X.dat", dtype=float, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.memmap(tmp_path / "X.dat", dtype=float, mode="r", shape=X.shape)
    start = _random_state(family, 2, DESIGN.n_gate, DESIGN.n_expert, np.random.default_rng(9))
    on_disk = Data(mm, y, chunk_size=137)
    assert on_disk.kind == "memmap"
    a = em(family, DESIGN, Data(X, y), start, max_iter=10, tol=0.0)
    b = em(family, DESIGN, on_disk, start, max_iter=10, tol=0.0)
    assert a.n_iter == b.n_iter
    np.testing.assert_allclose(b.history, a.history, rtol=1e-10, atol=1e-10)
    for field in ("coef", "log_disp", "gate"):
        np.testing.assert_allclose(
            getattr(b.state, field), getattr(a.state, field), rtol=1e-8, atol=1e-8
        )


def test_polish_with_one_expert():
    family = get_family("gamma")
    design = Design(np.array([0]), np.array([0, 1]), True)
    truth = State(np.array([[[0.5, 0.3, -0.2]]]), np.log([[4.0]]), np.zeros((1, 2)))
    X, y = _sample(family, design, truth, 500, seed=10)
    fit = polish(family, design, Data(X, y), truth)
    assert fit.converged
    assert fit.log_likelihood >= em(family, design, Data(X, y), truth).log_likelihood - 1e-8


@pytest.mark.parametrize("name", ["student-t", "gamma"])
def test_degenerate_fit_is_canonical_and_weights_act_as_repeated_rows(name):
    """12 rows, 20 columns: every expert reproduces every row with its spread at its bound.

    The likelihood is flat along the gate there; the canonical point (one
    minimum-norm expert repeated, the gate zero) makes integer weights and
    repeated rows agree to rounding, where the optimisers alone stop at
    points whose predictions differ by 1e-4 (Gamma) to 1.7 (Student-t),
    relative, on these rows.
    """
    rng = np.random.default_rng(0)
    X = rng.random((12, 20))
    y = rng.integers(1, 4, 12).astype(float)
    w = rng.integers(0, 4, 12).astype(float)
    order = rng.permutation(12)
    family = get_family(name)
    every = np.ones(20, dtype=bool)

    def fit(X_fit, y_fit, w=None):
        """The fit, and its experts' means on all 12 rows."""
        res = fit_engine(
            Data(X_fit, y_fit),
            family,
            2,
            every,
            every,
            sample_weight=w,
            alpha=(1e-6, 0.0),
            random_state=np.random.default_rng(1),
        )
        Xs = (X - res.x_mean) / res.x_scale
        eta = res.design.expert_matrix(Xs) @ res.fit.state.coef[:, 0].T
        mean = res.y_scale * family.mean(eta, np.exp(res.fit.state.log_disp))
        return res.fit, mean + res.y_mean  # original units (y_mean is 0 for Gamma)

    repeated, mean_r = fit(X.repeat(w.astype(int), axis=0), y.repeat(w.astype(int)))
    weighted, mean_w = fit(X[order], y[order], w[order])
    for f in (repeated, weighted):
        assert f.collapsed
        np.testing.assert_array_equal(f.state.gate, 0.0)
        np.testing.assert_array_equal(f.state.coef[0], f.state.coef[1])
    # the expert passes through every row of positive weight
    np.testing.assert_allclose(mean_r[w > 0, 0], y[w > 0], rtol=1e-9)
    # rounding only: the sums run over other rows in another order
    np.testing.assert_allclose(mean_w, mean_r, rtol=1e-9, atol=1e-12)
    # and the spread's floor (a weighted interquartile range) is the same too.  At a
    # spread's bound a row's log-density is a difference of terms of the size of the
    # bound (a Gamma shape of 1e8: a*log(a) - lgamma(a) ~ 1.8e9 before it cancels), so
    # summing in another order moves it by up to about eps times that size per unit of
    # weight (9e-9 of 8.36 seen for the Gamma, NumPy 2.4): the tolerance is that bound
    size = np.exp(np.abs(repeated.state.log_disp)).max() * (1.0 + np.abs(np.log(y)).max())
    floor = 16 * np.finfo(float).eps * w.sum() * size
    assert weighted.log_likelihood == pytest.approx(repeated.log_likelihood, rel=1e-9, abs=floor)


def test_canonical_point_replaces_an_expert_switched_off_by_the_gate():
    """One expert through every row with its spread at the floor, the other switched off.

    The gate gives the second expert a share of 1e-14, so the likelihood is the first
    expert's alone and nothing determines the second one's parameters (weights
    against repeated rows left its spread apart by 1e-5 in scikit-learn's checks):
    the fit stands on the plateau and gets its canonical point.
    """
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 20))
    b = rng.standard_normal(21)
    y = b[0] + X @ b[1:]
    design = Design(np.array([0]), np.arange(20), True)
    family = get_family("gaussian")
    floor = np.log(1e-3)
    coef = np.stack([rng.standard_normal((1, 21)), b[None]])
    state = State(coef, np.array([[np.log(0.5)], [floor]]), np.array([[-31.0, 0.0], [0, 0]]))
    data = Data(X, y)
    ll = pass_statistics(family, design, data, state, "value")["ll"] / 12
    out = canonical(family, design, data, EngineFit(state, ll, 5, True, [ll]), log_floor=floor)
    np.testing.assert_array_equal(out.state.gate, 0.0)
    np.testing.assert_array_equal(out.state.coef[0], out.state.coef[1])
    np.testing.assert_array_equal(out.state.log_disp, floor)
    np.testing.assert_allclose(design.expert_matrix(X) @ out.state.coef[0, 0], y, atol=1e-9)
    assert out.log_likelihood == pytest.approx(ll, rel=1e-9)
    assert out.history[-1] == out.log_likelihood


def test_canonical_leaves_other_fits_alone():
    """A well-posed fit, and floored experts that one predictor cannot reproduce, stay as found."""
    family = get_family("gaussian")
    truth = _truth("gaussian")
    X, y = _sample(family, DESIGN, truth, 300, seed=11)
    data = Data(X, y)
    ll = pass_statistics(family, DESIGN, data, truth, "value")["ll"] / 300
    fit = EngineFit(truth, ll, 1, True)
    assert canonical(family, DESIGN, data, fit, log_floor=np.log(1e-3)) is fit
    floored = State(truth.coef, np.full((2, 1), np.log(1e-3)), truth.gate)
    ll = pass_statistics(family, DESIGN, data, floored, "value")["ll"] / 300
    fit = EngineFit(floored, ll, 1, True)
    assert canonical(family, DESIGN, data, fit, log_floor=np.log(1e-3)) is fit
    # one expert floored (a spike), the other sound: no single predictor has the fit's value
    spike = State(truth.coef, np.array([[np.log(1e-3)], [np.log(0.5)]]), truth.gate)
    ll = pass_statistics(family, DESIGN, data, spike, "value")["ll"] / 300
    fit = EngineFit(spike, ll, 1, True)
    assert canonical(family, DESIGN, data, fit, log_floor=np.log(1e-3)) is fit


# ------------------------------------------------------- batched screening (class labels)
def _class_problem(n_classes, seed, n=300):
    """Standardised rows with labels 0..C-1 from a two-expert mixture (the gate on column 0)."""
    from moelearn.families import Bernoulli, Multinomial

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    family = Bernoulli() if n_classes == 2 else Multinomial(n_classes)
    gate = softmax(np.c_[2.0 * X[:, 0], np.zeros(n)], axis=1)
    z = rng.random(n) > gate[:, 0]
    logits = np.where(z[:, None], 2.0 * X[:, 1:2], -2.0 * X[:, 2:3]) * np.arange(n_classes)
    u = rng.random(n)
    y = (u[:, None] > np.cumsum(softmax(logits, axis=1), axis=1)).sum(axis=1).astype(float)
    return family, Design(np.array([0, 1, 2]), np.array([0, 1, 2]), True), X, y


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("alpha", [0.0, 1e-3])
def test_batched_em_equals_the_engine_em_candidate_by_candidate(n_classes, alpha):
    # The batched screen is the engine's EM (one scoring step per block of Q, step
    # halving), run for many candidates at once: from the same starts both reach the
    # same parameters and log-likelihood, to round-off (1e-8 after 15 iterations).
    from moelearn.screening import batched_em

    family, design, X, y = _class_problem(n_classes, seed=11)
    rng = np.random.default_rng(12)
    posts = softmax(3.0 * rng.standard_normal((4, len(y), 2)), axis=2)
    coef, gate, obj, shares, _ = batched_em(
        family, design, X, y, posts=posts, n_iter=15, tol=0.0, alpha=alpha
    )
    for c in range(len(posts)):
        start = state_from_responsibilities(family, design, X, y, posts[c])
        ref = em(family, design, Data(X, y), start, max_iter=15, tol=0.0, alpha=alpha)
        assert abs(ref.log_likelihood - obj[c]) < 1e-8
        assert np.allclose(ref.state.coef, coef[c], atol=1e-6)
        assert np.allclose(ref.state.gate, gate[c], atol=1e-6)
        assert np.allclose(ref.shares, shares[c], atol=1e-8)


def _regression_problem(family, seed, n=400):
    """Standardised rows of a two-expert mixture of ``family`` (the gate on column 0)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    z = rng.random(n) > softmax(np.c_[2.0 * X[:, 0], np.zeros(n)], axis=1)[:, 0]
    eta = np.where(z, 0.8 * X[:, 1] + 0.3, -0.6 * X[:, 2] - 0.2)
    y = {
        "gaussian": eta + 0.4 * rng.standard_normal(n),
        "student-t": eta + 0.4 * rng.standard_t(5, n),
        "poisson": rng.poisson(np.exp(eta)).astype(float),
        "gamma": rng.gamma(3.0, np.exp(eta) / 3.0),
    }[family]
    return get_family(family), Design(np.array([0]), np.array([1, 2]), True), X, y


@pytest.mark.parametrize(
    ("tied", "shared"),
    [(False, ()), (True, ()), (False, (2,)), (True, (1, 2))],
    ids=["per-expert", "shared-noise", "shared-coef", "shared-both"],
)
@pytest.mark.parametrize("name", ["gaussian", "student-t", "poisson", "gamma"])
def test_batched_em_equals_the_engine_em_for_every_family(name, tied, shared):
    # The batched screen of families with dispersions: from the same responsibilities
    # (or the same parameters) every candidate follows the engine's EM (joint scoring
    # step of the experts' coefficients and log-dispersions with the shared ones as one
    # coordinate each, the noise floor, step halving) to round-off: 1e-8 after 12
    # iterations.
    from dataclasses import replace

    from moelearn.engine import _bounds, tied_parameters
    from moelearn.screening import batched_em

    family, design, X, y = _regression_problem(name, seed=21)
    design = replace(design, shared_columns=shared)
    log_floor = np.log(1e-3)
    ties = tied_parameters(family, design, 2, tied)
    rng = np.random.default_rng(22)
    posts = softmax(2.0 * rng.standard_normal((3, len(y), 2)), axis=2)
    opts = dict(n_iter=12, tol=0.0, bounds=_bounds(family, 2, log_floor), tied=ties)
    coef, gate, obj, shares, log_disp = batched_em(family, design, X, y, posts=posts, **opts)
    starts = [
        state_from_responsibilities(family, design, X, y, posts[c], log_floor, tied=ties)
        for c in range(len(posts))
    ]
    again = batched_em(
        family,
        design,
        X,
        y,
        coef=np.stack([st.coef for st in starts]),
        gate=np.stack([st.gate for st in starts]),
        log_disp=np.stack([st.log_disp for st in starts]),
        **opts,
    )
    for c, start in enumerate(starts):
        ref = em(
            family, design, Data(X, y), start, max_iter=12, tol=0.0, log_floor=log_floor, tied=ties
        )
        for got in ((coef, gate, obj, shares, log_disp), again):
            assert abs(ref.log_likelihood - got[2][c]) < 1e-8
            assert np.allclose(ref.state.coef, got[0][c], atol=1e-6)
            assert np.allclose(ref.state.gate, got[1][c], atol=1e-6)
            assert np.allclose(ref.state.log_disp, got[4][c], atol=1e-6)
            assert np.allclose(ref.shares, got[3][c], atol=1e-8)
            if ties is not None and ties.dispersion is not None:
                assert np.ptp(got[4][c][:, ties.dispersion]) == 0.0
            for p in design.shared_positions():
                assert np.ptp(got[0][c][:, 0, p]) == 0.0
                assert np.ptp(ref.state.coef[:, 0, p]) == 0.0


@pytest.mark.parametrize("n_classes", [2, 3])
def test_accelerated_batched_em_ascends_and_outruns_plain_em(n_classes):
    # SQUAREM keeps an extrapolated point only where it ends above the two plain
    # iterations it extrapolates: after one cycle (three iterations) every candidate
    # is at least where two plain iterations take it.  And it pays: 20 hashed
    # partitions of n = 300 rows (fixed seeds) reach a median objective after 60
    # accelerated iterations above that of 180 plain ones (measured -148.87 against
    # -149.37 nats for two classes, -218.37 against -218.62 for three).
    from moelearn.screening import batched_em, hashed_partitions

    family, design, X, y = _class_problem(n_classes, seed=11)
    parts = hashed_partitions(np.c_[X, y], 2, 20, np.random.default_rng(3))
    opts = dict(posts=parts, tol=0.0)
    two = batched_em(family, design, X, y, n_iter=2, **opts)[2]
    fast_opts = dict(opts, accelerate=True, min_step=1.0)  # the class-label screen's
    cycle = batched_em(family, design, X, y, n_iter=3, **fast_opts)[2]
    assert np.all(cycle >= two - 1e-12)
    assert np.sum(cycle > two + 1e-9) >= 10  # the extrapolation is taken, not only allowed
    plain = batched_em(family, design, X, y, n_iter=180, **opts)[2]
    fast = batched_em(family, design, X, y, n_iter=60, **fast_opts)[2]
    assert np.median(fast) >= np.median(plain)


@pytest.mark.parametrize("name", ["poisson", "gamma", "student-t"])
def test_accelerated_em_reaches_the_same_optimum_in_fewer_iterations(name):
    # SQUAREM cycles in the engine's EM keep it monotone and converge to the optimum
    # plain EM reaches from the same start (both to tol = 1e-10: measured within 2e-7
    # nats of each other) in fewer iterations (measured 33 against 76 for Poisson, 22
    # against 46 for Gamma, 21 against 32 for Student-t: the slower EM is, the more
    # the extrapolation saves).
    family, design, X, y = _regression_problem(name, seed=21)
    post = softmax(0.3 * np.random.default_rng(22).standard_normal((len(y), 2)), axis=1)
    start = state_from_responsibilities(family, design, X, y, post)
    opts = dict(max_iter=2000, tol=1e-10)
    plain = em(family, design, Data(X, y), start, **opts)
    fast = em(family, design, Data(X, y), start, accelerate=True, **opts)
    assert plain.converged and fast.converged
    assert abs(fast.log_likelihood - plain.log_likelihood) * len(y) < 1e-5
    assert np.all(np.diff(fast.history) >= -1e-12)
    assert fast.n_iter < plain.n_iter
    if name == "poisson":
        assert fast.n_iter <= plain.n_iter / 2


def test_batched_em_weights_act_as_repeated_rows():
    # integer weights and repeated rows give the same screen: the hashed partitions
    # depend on the rows' values only, and the sums weight each row by its count
    from moelearn.screening import batched_em, hashed_partitions

    family, design, X, y = _class_problem(2, seed=13, n=120)
    w = np.random.default_rng(14).integers(0, 4, len(y))
    Xr, yr = np.repeat(X, w, axis=0), np.repeat(y, w)
    parts = hashed_partitions(np.c_[X, y], 2, 6, np.random.default_rng(15))
    parts_r = hashed_partitions(np.c_[Xr, yr], 2, 6, np.random.default_rng(15))
    assert parts.shape == (6, len(y), 2)
    assert np.array_equal(parts.sum(axis=2), np.ones((6, len(y))))
    assert np.array_equal(np.repeat(parts, w, axis=1), parts_r)
    # both groups are used in every partition, in roughly equal numbers (binomial(120, 1/2))
    assert np.all(np.abs(parts[..., 0].mean(axis=1) - 0.5) < 0.2)
    a = batched_em(family, design, X, y, posts=parts, n_iter=10, weights=w.astype(float))
    b = batched_em(family, design, Xr, yr, posts=parts_r, n_iter=10)
    for u, v in zip(a, b, strict=True):
        assert np.allclose(u, v, atol=1e-8)


def test_every_family_is_screened_in_one_batch(monkeypatch):
    # every family's candidates are screened in one batch; the class-label screen (random hard
    # partitions among the starts, a longer screen of the best) serves class labels only
    import moelearn.engine as engine
    import moelearn.screening as screening

    calls, discrete = [], []
    original, original_discrete = screening.batched_em, engine._screen_discrete

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    def counting_discrete(*args, **kwargs):
        discrete.append(args[0].name)
        return original_discrete(*args, **kwargs)

    monkeypatch.setattr(screening, "batched_em", counting)
    monkeypatch.setattr(engine, "_screen_discrete", counting_discrete)
    family, design, X, y = _class_problem(2, seed=16, n=200)
    rng = np.random.default_rng(0)
    fit, kind = search(family, design, Data(X, y), X, y, 2, n_candidates=5, random_state=rng)
    assert calls and set(calls) == {"bernoulli"} and discrete == ["bernoulli"]
    assert np.isfinite(fit.log_likelihood)
    calls.clear()
    pois = get_family("poisson")
    state = _truth("poisson")
    Xp, yp = _sample(pois, DESIGN, state, 300, seed=17)
    fit, _ = engine.search(pois, DESIGN, Data(Xp, yp), Xp, yp, 2, n_candidates=5, random_state=rng)
    # the candidates in one batch and the finalists' runs in one more; each round of split
    # moves screens the moves of every start in one batch and runs their best in one more
    most = 2 + 2 * engine.MOVE_ROUNDS
    assert set(calls) == {"poisson"} and 1 <= len(calls) <= most
    assert discrete == ["bernoulli"]
    assert np.isfinite(fit.log_likelihood)


def test_tail_move_gives_the_freed_slot_the_worst_fitted_rows_of_an_expert():
    # A "tail" move frees expert 0 (its rows go to the others in proportion to their
    # responsibilities) and gives it the rows that expert 1 fits worst: those whose
    # absolute residual is above the weighted (1 - TAIL_SHARE) quantile of expert 1's
    # mass; the other experts keep their renormalised shares, and the rows sum to one.
    from moelearn.engine import TAIL_SHARE, _move

    rng = np.random.default_rng(3)
    n, k = 400, 3
    post = softmax(rng.standard_normal((n, k)), axis=1)
    resid = rng.standard_normal((n, k)) * np.array([1.0, 2.0, 0.5])
    w = rng.integers(1, 4, n).astype(float)
    new = _move(post, resid, np.ones((n, 1)), 0, 1, "tail", rng, w)
    np.testing.assert_allclose(new.sum(axis=1), 1.0, rtol=1e-12)
    rest = post[:, 1:] / post[:, 1:].sum(axis=1, keepdims=True)
    raw = (new - 0.05 / k) / 0.95
    np.testing.assert_allclose(raw[:, 2], rest[:, 1], atol=1e-12)
    np.testing.assert_allclose(raw[:, 0] + raw[:, 1], rest[:, 0], atol=1e-12)
    side = raw[:, 0] > 1e-12
    assert np.all(raw[side, 1] < 1e-12)  # a row goes to one side or the other
    a = np.abs(resid[:, 1])
    assert a[side].min() > a[~side].max()  # the largest residuals, and only those
    mass = rest[:, 0] * w
    # the tail holds TAIL_SHARE of expert 1's mass, to within the largest row's mass
    assert abs(mass[side].sum() / mass.sum() - TAIL_SHARE) <= mass.max() / mass.sum()


def test_finalists_of_a_subsample_search_are_ranked_on_all_rows():
    # After a search on a subsample the finalists are ranked by the objective on all
    # the rows (engine.reranked): the subsample's order is replaced, a collapsed fit
    # stays below every sound one whatever its value, equal values keep the order, and
    # a finalist at the subsample value of a better one (the same optimum, to 1e-6)
    # stays behind it whatever its value on all the rows.
    from types import SimpleNamespace

    from moelearn.engine import reranked

    fits = [SimpleNamespace(state=name) for name in "abcde"]
    entries = [
        ((False, -3.0), "moments", fits[0], 0),  # the subsample's best
        ((False, -3.0 + 1e-7), "gate", fits[4], 4),  # its optimum again
        ((False, -2.0), "joint", fits[1], 1),
        ((True, -1.0), "partition", fits[2], 2),
        ((False, -1.5), "projection", fits[3], 3),
    ]
    on_all_rows = {"a": -1.40, "b": -1.37, "c": -1.0, "d": -1.37, "e": -1.2}
    out = reranked(entries, on_all_rows.get)
    kinds = [kind for _, kind, _, _ in out]
    assert kinds == ["joint", "projection", "moments", "partition", "gate"]
    assert out[0][0] == (False, 1.37)


def test_polish_reports_the_newton_steps_that_precede_lbfgs():
    # From far (random responsibilities, n = 20 000) the exact Newton steps that polish
    # takes first do not converge in their 12 steps and L-BFGS-B goes on from their
    # last point; the fit still reports every step: its history starts at the start's
    # objective, rises, ends at the answer, and has one entry per iteration after it.
    family, design, X, y = _regression_problem("poisson", seed=21, n=20_000)
    post = softmax(0.3 * np.random.default_rng(22).standard_normal((len(y), 2)), axis=1)
    start = state_from_responsibilities(family, design, X, y, post)
    data = Data(X, y)
    fit = polish(family, design, data, start)
    first = pass_statistics(family, design, data, start, "value")["ll"] / len(y)
    assert fit.converged
    assert fit.history[0] == pytest.approx(first, abs=1e-12)
    assert fit.history[-1] == pytest.approx(fit.log_likelihood, abs=1e-12)
    assert len(fit.history) == fit.n_iter + 1 and fit.n_iter > 12
    assert np.all(np.diff(fit.history) >= -1e-12)


@pytest.mark.parametrize("bound", ["work", "rows"])
def test_polish_beyond_the_exact_work_takes_newton_steps_with_a_subsample_hessian(
    monkeypatch, bound
):
    # Where the exact Hessian of all the rows costs too much (10^7 rows, d = 10, k = 3), or
    # the rows are more than _NEWTON_SUB_ROWS, polish takes its Newton steps with the
    # Hessian of evenly spaced rows and the exact gradient; the chord steps reach the
    # optimum of the exact Newton steps (objective to 1e-12, gradient 1e-10) in at most a
    # third of the passes that L-BFGS-B alone takes.  Here the work bound, or the row
    # bound, is lowered so that 6 000 rows fall beyond it.
    import moelearn.engine as engine
    from moelearn.data import Data as _Data

    family, design, X, y = _regression_problem("poisson", seed=3, n=6_000)
    post = softmax(2.0 * np.random.default_rng(4).standard_normal((len(y), 2)), axis=1)
    start = em(family, design, Data(X, y), state_from_responsibilities(family, design, X, y, post))
    passes = []
    original = _Data.map_reduce

    def counted(self, fn, *args, **kwargs):
        passes.append(self.n_samples)
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(_Data, "map_reduce", counted)
    exact = polish(family, design, Data(X, y), start.state)
    exact_passes = passes.count(len(y))
    st = exact.state
    p = st.coef.size + st.log_disp.size + st.gate[:-1].size
    if bound == "work":
        monkeypatch.setattr(engine, "_NEWTON_WORK_EXACT", st.n_experts * p * p * 3_000)
    else:
        monkeypatch.setattr(engine, "_NEWTON_SUB_ROWS", 3_000)
    assert not engine.exact_newton_applies(start.state, len(y))
    assert engine.newton_rows(start.state, len(y)) == 3_000  # the Hessian of 3 000 rows
    passes.clear()
    sub = polish(family, design, Data(X, y), start.state)
    sub_passes = passes.count(len(y))
    monkeypatch.setattr(engine, "_NEWTON_WORK_EXACT", 0)  # no Newton steps: L-BFGS-B
    assert engine.newton_rows(start.state, len(y)) == 0
    passes.clear()
    plain = polish(family, design, Data(X, y), start.state)
    assert exact.converged and sub.converged
    assert sub.log_likelihood == pytest.approx(exact.log_likelihood, abs=1e-12)
    # (here 3 passes exact, 7 with the subsample's Hessian, 28 by L-BFGS-B)
    assert exact_passes <= sub_passes <= passes.count(len(y)) / 3
    assert plain.log_likelihood == pytest.approx(exact.log_likelihood, abs=1e-8)


def test_midway_polish_reaches_the_same_optimum_in_memory_and_out_of_core(tmp_path, monkeypatch):
    """A subsample search polishes its best fit on 8 x 2 500 rows before all of them.

    50 000 weighted Poisson rows: the fit with the midway stage ends where the fit
    without it does (both run exact Newton steps on all the rows to a gradient of
    1e-10, so their values agree to rounding), and a memory map with its weights
    gives the in-memory answer to 1e-8 (the midway rows are drawn and read alike).
    """
    import moelearn.engine as engine
    from moelearn import MixtureOfExpertsRegressor

    rng = np.random.default_rng(5)
    n = 50_000
    X = rng.standard_normal((n, 2))
    z = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 0]))
    y = rng.poisson(np.exp(np.where(z, 1.0 + 0.5 * X[:, 1], -0.5 * X[:, 1]))).astype(float)
    w = rng.integers(1, 4, n).astype(float)

    def fit(X, y, w):
        return MixtureOfExpertsRegressor(2, family="poisson", random_state=0).fit(
            X, y, sample_weight=w
        )

    calls = []
    midway = engine._midway
    monkeypatch.setattr(engine, "_midway", lambda *a, **k: calls.append(1) or midway(*a, **k))
    with_mid = fit(X, y, w)
    assert calls == [1]  # the stage ran
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "w.npy", w)
    out = fit(*(np.load(tmp_path / f"{a}.npy", mmap_mode="r") for a in "Xyw"))
    np.testing.assert_allclose(out.experts_, with_mid.experts_, atol=1e-8)
    np.testing.assert_allclose(out.gating_, with_mid.gating_, atol=1e-8)
    monkeypatch.setattr(engine, "MIDWAY_FACTOR", 0)
    without = fit(X, y, w)
    assert with_mid.log_likelihood_ == pytest.approx(without.log_likelihood_, rel=1e-10)
    np.testing.assert_allclose(with_mid.experts_, without.experts_, atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_observed_pass_in_blocks_equals_one_block_and_central_differences(name):
    # observed_statistics sums _block_observed over blocks (fewer rows where the per-row
    # working Hessian is large, weighted or not): the blocks' sum must not depend on
    # their size, and its Hessian is the log-likelihood's
    from moelearn.engine import _block_observed, observed_block_rows, observed_statistics

    family = get_family(name)
    design = DESIGNS["separate"]
    rng = np.random.default_rng(11)
    k = 3
    generating = _random_state(family, k, design.n_gate, design.n_expert, rng)
    X, y = _sample(family, design, generating, 700, seed=12, d=3)
    state = _random_state(family, k, design.n_gate, design.n_expert, rng)
    w = rng.random(len(y)) + 0.5
    whole = _block_observed(family, design, X, y, state)
    whole_w = _block_observed(family, design, X, y, state, w)
    data = Data(X, y)
    data.block_rows = 64  # many blocks, the last one short
    assert observed_block_rows(state, data.block_rows) <= 64
    for got, want in (
        (observed_statistics(family, design, data, state), whole),
        (observed_statistics(family, design, data, state, weights=w), whole_w),
    ):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-10)
    # central differences of the exact gradient (error O(h^2), about 1e-8 of the scale)
    fd = -_observed_information(family, design, data, state)
    np.testing.assert_allclose(whole["hess"], fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())
    # a large per-row Hessian takes smaller blocks than the source's: 7 experts with
    # two dispersion parameters, g = 7 * 3 + 6 = 27 working coordinates per row
    big = State(np.zeros((7, 1, 6)), np.zeros((7, 2)), np.zeros((7, 6)))
    assert observed_block_rows(big, 8192) == 262_144 // 27**2
    assert observed_block_rows(big, 100) == 100


def test_newton_finish_keeps_its_start_when_a_difference_step_overflows():
    # a forward-difference step of the Hessian that leaves the domain (a gradient that
    # overflows to NaN just past the start, as an extreme fit's can) ended the finish
    # with LAPACK's "SVD did not converge" escaping from a fit; now the finish stops
    # and keeps its starting point, L-BFGS-B's answer
    from moelearn.engine import _newton_finish

    start = np.array([0.5, -0.3])

    def fun(theta):
        g = 2.0 * theta
        if theta[0] > start[0]:
            g = np.full(2, np.nan)
        return float(theta @ theta), g

    value, jac = fun(start)
    lb, ub = np.full(2, -np.inf), np.full(2, np.inf)
    theta, out, _, steps = _newton_finish(fun, start.copy(), value, jac, lb, ub, [])
    assert steps == 0
    np.testing.assert_array_equal(theta, start)
    assert out == value


def test_search_rows_grow_with_the_parameters():
    # The start search screens SEARCH_ROWS rows, or 30 per free parameter where that is
    # more: a Gaussian mixture of 8 experts on 10 columns has 8 x 12 + 7 x 11 = 173.
    from moelearn._validation import SEARCH_ROWS, search_rows
    from moelearn.engine import n_free_parameters

    gaussian = get_family("gaussian")
    small = Design(np.arange(2), np.arange(2), True)
    assert n_free_parameters(gaussian, small, 2) == 2 * 4 + 3
    assert search_rows(n_free_parameters(gaussian, small, 2)) == SEARCH_ROWS
    wide = Design(np.arange(10), np.arange(10), True)
    assert n_free_parameters(gaussian, wide, 8) == 173
    assert search_rows(173) == 30 * 173


def test_the_fit_screens_on_search_rows(monkeypatch):
    # fit_engine draws search_rows(...) rows for the search: with the floor lowered to 100
    # and 100 rows per parameter, a two-expert Gaussian mixture on two columns
    # (2 x 4 + 3 = 11 parameters) is screened on 1 100 of its 3 000 rows, not on 100.
    import moelearn._validation as validation
    import moelearn.family_fit as family_fit
    from moelearn import MixtureOfExpertsRegressor

    seen = []
    search = family_fit.search
    monkeypatch.setattr(
        family_fit, "search", lambda *a, **k: seen.append(len(a[4])) or search(*a, **k)
    )
    monkeypatch.setattr(validation, "SEARCH_ROWS", 100)
    monkeypatch.setattr(validation, "SEARCH_ROWS_PER_PARAMETER", 100)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3_000, 2))
    z = rng.random(3_000) < expit(2.0 * X[:, 0])  # a soft gate
    y = np.where(z, X[:, 1], -X[:, 1]) + 0.3 * rng.standard_normal(3_000)
    MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    assert seen == [1_100]
