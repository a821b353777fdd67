"""Sample weights: integer weights repeat rows, zero weights remove them, every solver.

The equivalences are exact up to round-off: a weighted sum and the sum over
repeated rows differ in the order of their terms only, and every start the
search generates is a function of the weighted empirical distribution (and of
random draws whose number does not depend on the rows).  The tolerances
(1e-6 on the parameters) leave room for the optimisers stopping one iteration
apart after round-off differences; the fits themselves differ far less.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import moelearn
from moelearn import ChunkedDataset, MixtureOfExpertsRegressor, make_moe, sample
from moelearn import _validation as validation_module
from moelearn import solvers as solvers_module
from moelearn.moments import MomentAccumulator

TOL = 1e-6


@pytest.fixture(scope="module")
def problem():
    p = make_moe(3, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 400, random_state=1)
    return X, y


@pytest.fixture(scope="module")
def counts():
    return np.random.default_rng(2).integers(0, 4, size=400)


def _fit(X, y=None, sample_weight=None, **kw):
    kw.setdefault("random_state", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MixtureOfExpertsRegressor(2, **kw).fit(X, y, sample_weight=sample_weight)


def _assert_same_fit(a, b, tol=TOL):
    for name in ("experts_", "expert_bias_", "gating_", "gating_bias_", "noise_std_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=tol)
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"refine": "em", "prior_strength": 0},  # the maximum-likelihood path's option
        {"noise": "shared"},
        {"n_init": 1},
        {"solver": "landscape"},
        {"solver": "tensor"},
        # EM stops on a relative change of tol, at a distance from the optimum that can
        # exceed the 1e-6 compared here where it converges slowly (the gate); at 1e-12
        # both fits stand on the optimum
        {"solver": "em", "n_init": 2, "tol": 1e-12},
        {"solver": "gd-nll"},
        {"solver": "gd-l2"},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_integer_weights_equal_repeated_rows(problem, counts, kw):
    X, y = problem
    weighted = _fit(X, y, counts, **kw)
    repeated = _fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), **kw)
    _assert_same_fit(weighted, repeated)
    assert weighted.init_method_ == repeated.init_method_


def test_integer_weights_equal_repeated_rows_nonlinear_link(counts):
    # non-linear candidates are screened by the sequential EM of moelearn.refine
    p = make_moe(3, 2, link="sigmoid", noise_std=0.1, random_state=0)
    X, y = sample(p, 400, random_state=1)
    weighted = _fit(X, y, counts, link="sigmoid")
    repeated = _fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), link="sigmoid")
    _assert_same_fit(weighted, repeated)


def test_zero_weight_equals_row_removed(problem):
    X, y = problem
    w = np.ones(len(y))
    w[::7] = 0.0
    _assert_same_fit(_fit(X, y, w), _fit(X[w > 0], y[w > 0]))


def test_weights_are_scale_invariant(problem):
    # by maximum likelihood only: the prior counts lambda rows against the total weight,
    # so weights are frequencies and tripling them is tripling the data, the prior's
    # share falling to a third (lambda = 1 on 3 w equals lambda = 1/3 on w)
    X, y = problem
    w = np.random.default_rng(3).uniform(0.2, 2.0, size=len(y))
    _assert_same_fit(_fit(X, y, w, prior_strength=0.0), _fit(X, y, 3.0 * w, prior_strength=0.0))
    _assert_same_fit(
        _fit(X, y, w, prior_strength=1.0 / 3.0), _fit(X, y, 3.0 * w, prior_strength=1.0)
    )


def test_unit_weights_equal_no_weights_with_subsampling(problem, monkeypatch):
    # the start search and the moment start's subsample draw rows; the weights travel along
    monkeypatch.setattr(validation_module, "SEARCH_ROWS", 150)
    monkeypatch.setattr(validation_module, "SEARCH_ROWS_PER_PARAMETER", 0)
    monkeypatch.setattr(solvers_module, "SEARCH_ROWS", 150)
    monkeypatch.setattr(solvers_module, "_INIT_SUBSAMPLE", 200)
    X, y = problem
    _assert_same_fit(_fit(X, y, np.ones(len(y))), _fit(X, y))


def test_log_likelihood_is_the_weighted_mean(problem, counts):
    X, y = problem
    est = _fit(X, y, counts, n_init=1)
    expected = np.average(est.log_density(X, y), weights=counts)
    assert est.log_likelihood_ == pytest.approx(expected, rel=1e-12)


def test_weights_change_the_fit(problem):
    # weights are used: putting all the mass on one half of the rows fits that half
    X, y = problem
    w = (X[:, 0] > 0).astype(float)
    weighted = _fit(X, y, w, n_init=1)
    assert not np.allclose(weighted.experts_, _fit(X, y, n_init=1).experts_, atol=1e-3)
    _assert_same_fit(weighted, _fit(X[w > 0], y[w > 0], n_init=1))


def test_standard_errors_treat_weights_as_frequencies(problem, counts):
    X, y = problem
    weighted = _fit(X, y, counts, n_init=1, compute_standard_errors=True)
    repeated = _fit(
        np.repeat(X, counts, axis=0),
        np.repeat(y, counts),
        n_init=1,
        compute_standard_errors=True,
    )
    np.testing.assert_allclose(
        weighted.standard_errors_.experts, repeated.standard_errors_.experts, rtol=1e-5
    )


def test_moment_accumulator_weights_equal_repeated_rows(problem, counts):
    X, y = problem
    a = MomentAccumulator("linear", 3).update(X, y, counts.astype(float))
    b = MomentAccumulator("linear", 3).update(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    assert a.n_samples == b.n_samples == counts.sum()
    np.testing.assert_allclose(a.second_moment, b.second_moment, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.first_moment, b.first_moment, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ out of core
@pytest.fixture(scope="module")
def float_weights():
    w = np.random.default_rng(4).uniform(0.0, 2.0, size=400)
    w[:25] = 0.0
    return w


@pytest.fixture(scope="module")
def in_memory(problem, float_weights):
    X, y = problem
    return _fit(X, y, float_weights)


def _memmap(tmp_path, name, a):
    out = np.lib.format.open_memmap(tmp_path / name, mode="w+", shape=a.shape)
    out[:] = a
    out.flush()
    return out


@pytest.fixture(scope="module")
def memmapped(problem, float_weights, tmp_path_factory):
    X, y = problem
    folder = tmp_path_factory.mktemp("weights")
    return _fit(_memmap(folder, "X.npy", X), y, _memmap(folder, "w.npy", float_weights))


def _assert_out_of_core_fit(fit, memmapped, in_memory):
    # Every out-of-core source runs the same passes in the same blocks: round-off only.
    _assert_same_fit(fit, memmapped, 1e-8)
    # The in-memory fit refines the search on the data itself, an out-of-core one first
    # on an in-memory copy at tolerance 1e-7: the tolerances of tests/test_scale.py.
    np.testing.assert_allclose(fit.experts_, in_memory.experts_, atol=1e-7)
    np.testing.assert_allclose(fit.gating_, in_memory.gating_, atol=1e-6)
    assert fit.init_method_ == in_memory.init_method_


def test_memmap_weighted_equals_in_memory(problem, float_weights, memmapped, in_memory, tmp_path):
    X, y = problem
    # weights in memory with a memory-mapped X give the memory-mapped weights' fit
    fit = _fit(_memmap(tmp_path, "X.npy", X), y, float_weights)
    _assert_out_of_core_fit(fit, memmapped, in_memory)


def test_dask_weighted_equals_in_memory(problem, float_weights, memmapped, in_memory):
    da = pytest.importorskip("dask.array")
    X, y = problem
    fit = _fit(
        da.from_array(X, chunks=(150, 3)),
        da.from_array(y, chunks=150),
        da.from_array(float_weights, chunks=150),
    )
    _assert_out_of_core_fit(fit, memmapped, in_memory)


def test_chunked_dataset_weighted_equals_in_memory(problem, float_weights, memmapped, in_memory):
    X, y = problem
    w = float_weights

    def chunks():
        for start in range(0, len(y), 130):
            stop = start + 130
            yield X[start:stop], y[start:stop], w[start:stop]

    _assert_out_of_core_fit(_fit(ChunkedDataset(chunks)), memmapped, in_memory)


# ------------------------------------------------------------------ bad weights
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda n: -np.ones(n), "sample_weight"),
        (lambda n: np.r_[np.nan, np.ones(n - 1)], "sample_weight"),
        (lambda n: np.r_[np.inf, np.ones(n - 1)], "sample_weight"),
        (lambda n: np.ones(n - 1), "sample_weight"),
        (lambda n: np.ones((n, 2)), "sample_weight"),
        (lambda n: np.zeros(n), "sample_weight"),
        (lambda n: 2.0, "sample_weight"),
    ],
    ids=["negative", "nan", "inf", "length", "2d", "all-zero", "scalar"],
)
def test_bad_weights_raise(problem, make, match):
    X, y = problem
    with pytest.raises(ValueError, match=match):
        MixtureOfExpertsRegressor(2).fit(X, y, sample_weight=make(len(y)))


@pytest.mark.parametrize(
    "values",
    [lambda n: -np.ones(n), lambda n: np.r_[np.nan, np.ones(n - 1)], lambda n: np.zeros(n)],
    ids=["negative", "nan", "all-zero"],
)
def test_bad_out_of_core_weights_raise(problem, tmp_path, values):
    X, y = problem
    Xm = _memmap(tmp_path, "X.npy", X)
    wm = _memmap(tmp_path, "w.npy", values(len(y)))
    with pytest.raises(ValueError, match="sample_weight"):
        MixtureOfExpertsRegressor(2).fit(Xm, y, sample_weight=wm)
    with pytest.raises(ValueError, match="sample_weight"):
        MixtureOfExpertsRegressor(2).fit(ChunkedDataset(lambda: [(X, y, np.asarray(wm))]))


def test_bad_chunks_raise(problem, tmp_path):
    X, y = problem
    mixed = ChunkedDataset(lambda: [(X[:200], y[:200], np.ones(200)), (X[200:], y[200:])])
    with pytest.raises(ValueError, match="sample_weight"):
        MixtureOfExpertsRegressor(2).fit(mixed)
    with pytest.raises(ValueError, match="sample_weight"):
        MixtureOfExpertsRegressor(2).fit(ChunkedDataset(lambda: [(X, y, np.ones(5))]))
    with pytest.raises(ValueError, match="sample_weight"):
        MixtureOfExpertsRegressor(2).fit(ChunkedDataset(lambda: [(X, y)]), None, np.ones(len(y)))
    Xm = _memmap(tmp_path, "X.npy", X)
    with pytest.raises(ValueError, match="sample_weight"):
        MixtureOfExpertsRegressor(2).fit(Xm, y, sample_weight=_memmap(tmp_path, "w.npy", y[:-1]))


def test_weights_are_not_modified(problem, counts):
    X, y = problem
    w = counts.astype(float)
    before = w.copy()
    _fit(X, y, w, n_init=1)
    np.testing.assert_array_equal(w, before)


@pytest.mark.parametrize("family", ["gaussian", "poisson", "classifier"])
def test_weighted_summary_is_that_of_repeated_rows(family):
    # after a weighted fit, summary() without data counts the weights as frequencies, as
    # standard_errors_ does: its standard errors, log-likelihood, BIC and ICL are those of
    # the rows repeated (the same parameters; rounding level apart)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((250, 2))
    w = rng.integers(1, 4, 250)
    if family == "classifier":
        y = (X[:, 0] + rng.standard_normal(250) > 0).astype(int)
        est = moelearn.MixtureOfExpertsClassifier(2, random_state=0)
    else:
        y = X[:, 0] + 2.0 * (rng.random(250) < 0.5) + 0.3 * rng.standard_normal(250)
        if family == "poisson":
            y = rng.poisson(np.exp(0.3 * X[:, 0] + 1.5 * (rng.random(250) < 0.5))).astype(float)
        est = moelearn.MixtureOfExpertsRegressor(2, family=family, random_state=0)
    est.fit(X, y, sample_weight=w)
    weighted = est.summary()
    repeated = est.summary(np.repeat(X, w, 0), np.repeat(y, w))
    assert weighted.total_weight == w.sum() and repeated.total_weight is None
    assert weighted.n_samples == 250 and repeated.n_samples == w.sum()
    for name in ("log_likelihood", "bic", "aic", "icl", "entropy"):
        assert getattr(weighted, name) == pytest.approx(getattr(repeated, name), rel=1e-10)
    np.testing.assert_allclose(
        weighted.standard_errors.experts, repeated.standard_errors.experts, rtol=1e-8
    )
    given = est.summary(X, y, sample_weight=w)
    assert given.bic == pytest.approx(weighted.bic, rel=1e-12)
    assert "Weights (frequencies)" in str(weighted)
    np.testing.assert_allclose(
        est.standard_errors(X, y, sample_weight=w).experts,
        weighted.standard_errors.experts,
        rtol=1e-10,
    )
    with pytest.raises(ValueError, match="sample_weight= goes with X and y"):
        est.summary(sample_weight=w)


@pytest.mark.parametrize(
    "values",
    [lambda n: -np.ones(n), lambda n: np.r_[np.nan, np.ones(n - 1)], lambda n: np.zeros(n)],
    ids=["negative", "nan", "all-zero"],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda: MixtureOfExpertsRegressor(2, family="poisson"),
        lambda: MixtureOfExpertsRegressor(2, gating_features=[0]),
        lambda: moelearn.MixtureOfExpertsClassifier(2),
    ],
    ids=["poisson", "gaussian-roles", "classifier"],
)
def test_bad_out_of_core_weights_raise_for_every_family(tmp_path, values, make):
    # the likelihood engine's own pass refuses them by name, as the Gaussian path does
    # (not a NumPy error from the sums it would otherwise divide by)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 2))
    counts = rng.poisson(np.exp(0.3 * X[:, 0])).astype(float)
    y = (
        np.minimum(counts, 1.0)
        if isinstance(make(), moelearn.MixtureOfExpertsClassifier)
        else counts
    )
    Xm = _memmap(tmp_path, "X.npy", X)
    wm = _memmap(tmp_path, "w.npy", values(len(y)))
    with pytest.raises(ValueError, match="sample_weight"):
        make().fit(Xm, y, sample_weight=wm)
    with pytest.raises(ValueError, match="sample_weight"):
        make().fit(ChunkedDataset(lambda: [(X, y, np.asarray(wm))]))
