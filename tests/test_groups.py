"""Grouped rows (``groups=``): every row of a group comes from one expert (``y ~ x | g``)."""

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp, softmax

from helpers import pass_log_likelihood_gradient
from moelearn import (
    ChunkedDataset,
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    select_n_experts,
)
from moelearn.cli import main
from moelearn.data import Data
from moelearn.engine import Design, State, pass_statistics
from moelearn.families import get_family
from moelearn.grouping import check_groups, from_codes, group_joint, group_posterior

TRUE_SLOPES = np.array([2.0, -1.0])
TRUE_BIAS = np.array([0.5, -0.5])
SIGMA = 0.5


def _grouped_sample(n_groups, size, seed, gate=(0.0, 0.0)):
    """Groups of ``size`` rows; the gate reads a group-level covariate (column 1)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    zg = rng.standard_normal(n_groups)
    p1 = 1.0 / (1.0 + np.exp(-(gate[0] + gate[1] * zg)))
    expert = (rng.random(n_groups) < p1).astype(int)[g]  # 1: the second expert
    x = rng.standard_normal(n_groups * size)
    y = TRUE_SLOPES[expert] * x + TRUE_BIAS[expert] + SIGMA * rng.standard_normal(len(x))
    return np.column_stack([x, zg[g]]), y, g


def _by_slope(est):
    order = np.argsort(-est.params_.experts[:, 0])
    return est.params_.experts[order, 0], est.params_.expert_bias[order], order


# ----------------------------------------------------------------- the likelihood
def test_group_likelihood_matches_a_direct_sum():
    rng = np.random.default_rng(0)
    codes = rng.integers(5, size=40)
    log_gate = np.log(softmax(rng.standard_normal((5, 3)), axis=1))[codes]
    logf = rng.standard_normal((40, 3))
    groups = from_codes(codes)
    total, per_group, post = group_posterior(group_joint(log_gate, logf, groups), groups)
    direct = [logsumexp(log_gate[codes == c][0] + logf[codes == c].sum(axis=0)) for c in range(5)]
    np.testing.assert_allclose(per_group, direct, rtol=1e-12)
    assert total == pytest.approx(sum(direct), rel=1e-12)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", ["gaussian", "poisson", "bernoulli"])
def test_grouped_gradient_matches_finite_differences(name):
    family = get_family(name)
    design = Design(np.array([1]), np.array([0, 1]), True)
    rng = np.random.default_rng(3)
    n = 240
    X = rng.standard_normal((n, 2))
    codes = rng.integers(60, size=n)
    X[:, 1] = rng.standard_normal(60)[codes]  # the gate's column is constant within a group
    k = 3
    m = len(family.dispersion_names)
    state = State(
        0.5 * rng.standard_normal((k, 1, 3)),
        np.log(rng.uniform(0.5, 1.5, size=(k, m))),
        np.vstack([rng.standard_normal((k - 1, 2)), np.zeros((1, 2))]),  # the reference row
    )
    eta = design.expert_matrix(X) @ state.coef[:, 0].T
    y = family.sample(eta, np.exp(state.log_disp), rng)[np.arange(n), rng.integers(k, size=n)]
    w = rng.uniform(0.5, 2.0, size=60)[codes]  # a weight per group
    data = Data(X, y, groups=from_codes(codes), sample_weight=w)
    st = pass_statistics(family, design, data, state, "grad")
    grad = np.concatenate([st["g_coef"].ravel(), st["g_disp"].ravel(), st["g_gate"][:-1].ravel()])
    fd = pass_log_likelihood_gradient(family, design, data, state)
    # central differences of a smooth sum over 60 groups: error O(h^2) ~ 1e-9 of the scale
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


# ------------------------------------------------------------------- the estimator
def test_single_row_groups_equal_the_ungrouped_fit():
    X, y, _ = _grouped_sample(100, 3, seed=1)
    kw = dict(n_experts=2, random_state=0, gating_features=[1], expert_features=[0])
    plain = MixtureOfExpertsRegressor(**kw).fit(X, y)
    grouped = MixtureOfExpertsRegressor(**kw).fit(X, y, groups=np.arange(len(y)))
    # the same likelihood, the same optimum (both searches start from the ungrouped one)
    assert grouped.log_likelihood_ == pytest.approx(plain.log_likelihood_, abs=1e-6)
    np.testing.assert_allclose(
        grouped.log_density(X, y, groups=np.arange(len(y))), plain.log_density(X, y), atol=1e-8
    )
    assert grouped.n_groups_ == len(y)
    assert grouped.bic(X, y, groups=np.arange(len(y))) == pytest.approx(plain.bic(X, y))


def test_grouped_fit_recovers_the_truth():
    # 200 groups of 5 rows, the gate on a group covariate (logit 0.3 + 1.5 z)
    X, y, g = _grouped_sample(200, 5, seed=2, gate=(0.3, 1.5))
    est = MixtureOfExpertsRegressor(
        n_experts=2,
        random_state=0,
        gating_features=[1],
        expert_features=[0],
        compute_standard_errors=True,
    ).fit(X, y, groups=g)
    slopes, bias, order = _by_slope(est)
    se = est.standard_errors_
    # about 500 rows per expert with sigma 0.5: slope and intercept errors near 0.5/sqrt(500)
    # = 0.022; 5 standard errors leave a false alarm below 1e-6 per coordinate
    np.testing.assert_allclose(slopes, TRUE_SLOPES, atol=5 * 0.023)
    np.testing.assert_allclose(bias, TRUE_BIAS, atol=5 * 0.023)
    np.testing.assert_allclose(se.experts[order, 0], 0.5 / np.sqrt(500), rtol=0.25)
    # the gate is identified from 200 groups only: its slope error ~ 0.25 (1.5 + 0.25 spread)
    gate = est.params_.gating[order, 0]  # the one gate column (X[:, 1])
    assert gate[1] - gate[0] == pytest.approx(1.5, abs=5 * 0.25)
    # the posterior is one per group: every row of a group agrees, and it is near certain
    r = est.predict_responsibilities(X, y, groups=g)
    assert np.allclose(r, r[np.searchsorted(g, g)])
    assert np.mean(r.max(axis=1) > 0.99) > 0.9


def test_grouped_standard_errors_count_groups_not_rows():
    # no covariates in the gate: its intercept is a proportion estimated from 150 groups,
    # so its centred standard error is 1 / (2 sqrt(G p (1 - p))), not that of 600 rows
    X, y, g = _grouped_sample(150, 4, seed=4)
    est = MixtureOfExpertsRegressor(
        n_experts=2, random_state=0, gating_features=[], expert_features=[0]
    ).fit(X, y, groups=g)
    p = est.predict_gating(X[:1])[0, 0]
    se = est.standard_errors(X, y, groups=g)
    expected = 1.0 / (2.0 * np.sqrt(150 * p * (1 - p)))
    # the experts are nearly certain per group (5 standard errors apart in every row sum),
    # so the observed information of the gate is that of the 150 labels within 2%
    assert se.gating_bias[0] == pytest.approx(expected, rel=0.02)
    table = est.summary()
    assert table.n_groups == 150 and "Groups: 150" in str(table)
    assert table.log_likelihood == pytest.approx(est.log_density(X, y, groups=g).sum())
    assert table.standard_errors.gating_bias[0] == pytest.approx(se.gating_bias[0], rel=1e-8)


def test_group_log_density_sums_to_the_fit():
    X, y, g = _grouped_sample(80, 3, seed=5)
    labels = np.array([f"patient-{c:03d}" for c in g])
    est = MixtureOfExpertsRegressor(
        n_experts=2, random_state=1, gating_features=[1], expert_features=[0]
    ).fit(X, y, groups=labels)
    ld = est.log_density(X, y, groups=labels)
    assert ld.shape == (80,)
    assert ld.sum() == pytest.approx(est.log_likelihood_ * len(y), rel=1e-10)
    # BIC counts rows (as flexmix), ICL adds the entropy of the groups' labels
    p = est.n_parameters_
    assert est.bic(X, y, groups=labels) == pytest.approx(-2 * ld.sum() + p * np.log(len(y)))
    assert est.aic(X, y, groups=labels) == pytest.approx(-2 * ld.sum() + 2 * p)
    assert est.icl(X, y, groups=labels) >= est.bic(X, y, groups=labels)
    # labels in any order and a DataFrame with a pandas Series of groups give the same fit
    perm = np.random.default_rng(0).permutation(len(y))
    frame = pd.DataFrame(X[perm], columns=["x", "z"])
    again = MixtureOfExpertsRegressor(
        n_experts=2, random_state=1, gating_features=["z"], expert_features=["x"]
    ).fit(frame, y[perm], groups=pd.Series(labels[perm]))
    assert again.log_likelihood_ == pytest.approx(est.log_likelihood_, abs=1e-6)


def test_integer_group_weights_equal_repeated_groups():
    X, y, g = _grouped_sample(60, 3, seed=6)
    w_group = np.random.default_rng(1).integers(1, 3, size=60)
    # each group of weight 2 once more, under a new label
    twice = np.flatnonzero(w_group[g] == 2)
    Xr = np.vstack([X, X[twice]])
    yr = np.concatenate([y, y[twice]])
    gr = np.concatenate([g, g[twice] + 1000])
    kw = dict(n_experts=2, random_state=0, gating_features=[1], expert_features=[0])
    weighted = MixtureOfExpertsRegressor(**kw).fit(X, y, sample_weight=w_group[g], groups=g)
    repeated = MixtureOfExpertsRegressor(**kw).fit(Xr, yr, groups=gr)
    ll_w = w_group[g][np.searchsorted(g, np.unique(g))] @ weighted.log_density(X, y, groups=g)
    assert ll_w == pytest.approx(repeated.log_density(Xr, yr, groups=gr).sum(), abs=1e-5)
    np.testing.assert_allclose(
        np.sort(weighted.params_.experts[:, 0]),
        np.sort(repeated.params_.experts[:, 0]),
        atol=1e-5,
    )


def test_grouped_fit_pickles_and_keeps_its_groups_for_summary():
    X, y, g = _grouped_sample(50, 4, seed=7)
    est = MixtureOfExpertsRegressor(
        n_experts=2, random_state=0, gating_features=[], expert_features=[0]
    ).fit(X, y, groups=g)
    first = est.summary()
    assert first.log_likelihood == pytest.approx(est.log_density(X, y, groups=g).sum())
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(back.log_density(X, y, groups=g), est.log_density(X, y, groups=g))
    with pytest.raises(ValueError, match="summary\\(\\) without data"):
        back.summary()
    assert back.summary(X, y, groups=g).log_likelihood == pytest.approx(first.log_likelihood)


# ------------------------------------------------------------------------ bad input
def test_bad_groups_get_clear_errors(tmp_path):
    X, y, g = _grouped_sample(30, 3, seed=8)
    est = MixtureOfExpertsRegressor(
        n_experts=2, random_state=0, gating_features=[1], expert_features=[0]
    )
    with pytest.raises(ValueError, match="groups has 89 labels for 90 rows"):
        est.fit(X, y, groups=g[:-1])
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X, y, groups=np.where(g == 3, np.nan, g))
    with pytest.raises(ValueError, match="missing labels"):
        est.fit(X, y, groups=np.array([None] + list(g[1:]), dtype=object))
    with pytest.raises(ValueError, match="one label per row"):
        est.fit(X, y, groups=np.column_stack([g, g]))
    varying = X.copy()
    varying[4, 1] += 1.0  # row 4 of group 1
    with pytest.raises(ValueError, match="constant within a group: row 4 of group 1"):
        est.fit(varying, y, groups=g)
    w = np.ones(len(y))
    w[5] = 2.0
    with pytest.raises(ValueError, match="sample_weight must be constant within a group"):
        est.fit(X, y, sample_weight=w, groups=g)
    path = tmp_path / "X.npy"
    np.save(path, varying)
    with pytest.raises(ValueError, match="constant within a group: group 1 has rows"):
        est.fit(np.load(path, mmap_mode="r"), y, groups=g)  # checked in one read out of core
    est.fit(X, y, groups=g)
    with pytest.raises(ValueError, match="groups has"):
        est.log_density(X, y, groups=g[:10])
    with pytest.raises(ValueError, match="groups= goes with X and y"):
        est.summary(groups=g)


def test_check_groups_codes_are_dense_and_sorted():
    groups = check_groups(np.array(["b", "a", "b", "c"]), 4)
    assert list(groups.labels) == ["a", "b", "c"]
    np.testing.assert_array_equal(groups.codes, [1, 0, 1, 2])
    np.testing.assert_array_equal(groups.first, [1, 0, 3])
    np.testing.assert_array_equal(groups.sizes, [1, 2, 1])


# ------------------------------------------------------- the classifier, selection, CLI
def test_grouped_classifier(tmp_path):
    rng = np.random.default_rng(9)
    n_groups, size = 200, 6
    g = np.repeat(np.arange(n_groups), size)
    z = rng.integers(2, size=n_groups)[g]
    x = rng.standard_normal(n_groups * size)
    y = (rng.random(len(x)) < 1.0 / (1.0 + np.exp(-np.where(z == 0, 3.0, -3.0) * x))).astype(int)
    X = x[:, None]
    kw = dict(n_experts=2, random_state=0, gating_features=[])
    plain = MixtureOfExpertsClassifier(**kw).fit(X, y)
    single = MixtureOfExpertsClassifier(**kw).fit(X, y, groups=np.arange(len(y)))
    assert single.log_likelihood_ == pytest.approx(plain.log_likelihood_, abs=1e-6)
    grouped = MixtureOfExpertsClassifier(**kw).fit(X, y, groups=g)
    assert grouped.n_groups_ == n_groups
    ld = grouped.log_density(X, y, groups=g)
    assert ld.sum() == pytest.approx(grouped.log_likelihood_ * len(y), rel=1e-10)
    # the experts' log-odds slopes are +-3: ungrouped rows cannot tell the experts apart
    # (a mixture of two logistic curves of one x is nearly one curve), grouped rows can;
    # about 600 rows per expert give a slope error near 0.25, and the ridge shrinks a little
    np.testing.assert_allclose(np.sort(grouped.experts_.ravel()), [-3.0, 3.0], atol=1.0)
    assert grouped.summary().log_likelihood == pytest.approx(ld.sum())
    # out of core: the same fit from a memory map read in blocks of 200 rows
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y.astype(float))
    ooc = MixtureOfExpertsClassifier(chunk_size=200, **kw).fit(
        np.load(tmp_path / "X.npy", mmap_mode="r"),
        np.load(tmp_path / "y.npy", mmap_mode="r"),
        groups=g,
    )
    assert ooc.log_likelihood_ == pytest.approx(grouped.log_likelihood_, abs=1e-8)
    assert ooc.log_density(X, y, groups=g).sum() == pytest.approx(ld.sum(), abs=1e-6)


def test_select_n_experts_with_groups():
    X, y, g = _grouped_sample(80, 4, seed=10, gate=(0.3, 1.5))
    kw = dict(gating_features=[1], expert_features=[0])
    result = select_n_experts(X, y, candidates=[1, 2, 3], groups=g, **kw)
    assert result.n_experts == 2  # truth 2, separated by 5 noise sds per row
    row = result.rows[1]
    est = result.estimator
    assert row.log_likelihood == pytest.approx(est.log_density(X, y, groups=g).sum())
    assert row.bic == pytest.approx(est.bic(X, y, groups=g))
    with pytest.warns(UserWarning, match="the largest candidate"):
        cv = select_n_experts(X, y, candidates=[1, 2], groups=g, criterion="cv", cv=4, **kw)
    assert cv.n_experts == 2
    with pytest.raises(ValueError, match="groups has"):
        select_n_experts(X, y, candidates=[1, 2], groups=g[:-1], **kw)


def test_command_line_groups(tmp_path, capsys):
    X, y, g = _grouped_sample(40, 4, seed=11, gate=(0.3, 1.5))
    path = tmp_path / "panel.csv"
    pd.DataFrame({"x": X[:, 0], "z": X[:, 1], "patient": [f"p{c}" for c in g], "y": y}).to_csv(
        path, index=False
    )
    model = tmp_path / "model.npz"
    fit = ["fit", str(path), "--target", "y", "--gating-features", "z", "--expert-features", "x"]
    fit += ["--experts", "2", "--output", str(model)]
    assert main([*fit, "--groups", "patient"]) == 0
    out = capsys.readouterr().out
    assert "in 40 groups" in out
    est = MixtureOfExpertsRegressor(
        n_experts=2, random_state=0, gating_features=[1], expert_features=[0]
    ).fit(X, y, groups=g)
    assert f"log-likelihood {est.log_likelihood_ * len(y):.6g}" in out
    assert main(["summary", str(model), str(path)]) == 0
    assert f"Log-likelihood: {est.log_likelihood_ * len(y):.3f}" in capsys.readouterr().out
    assert main(["predict", str(model), str(path)]) == 0  # the groups column is not a feature
    assert main([*fit, "--groups", "ward", "--force"]) == 2
    assert "--groups 'ward' is not a column" in capsys.readouterr().err


# ------------------------------------------------------------------------ out of core
def test_out_of_core_groups_equal_in_memory(tmp_path):
    X, y, g = _grouped_sample(150, 4, seed=12, gate=(0.3, 1.5))
    perm = np.random.default_rng(3).permutation(len(y))  # a group's rows scattered
    X, y, g = X[perm], y[perm], g[perm]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    # one pass: the two reads of the memory map (blocks of 64 rows) give the in-memory sums
    family = get_family("gaussian")
    design = Design(np.array([1]), np.array([0]), True)
    state = State(
        np.array([[[0.4, 1.8]], [[-0.6, -0.9]]]),
        np.log([[0.6], [0.4]]),
        np.array([[0.2, 1.0], [0.0, 0.0]]),
    )
    groups = check_groups(g, len(y))
    memory = pass_statistics(family, design, Data(X, y, groups=groups), state, "hess")
    streamed = Data(Xm, ym, chunk_size=64, groups=groups)
    chunked = pass_statistics(family, design, streamed, state, "hess")
    for key, value in memory.items():
        np.testing.assert_allclose(chunked[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    # the fit: out of core it starts from the ungrouped fit only, and reaches the optimum
    # of the in-memory search (a well-separated case) to 1e-8 per row
    kw = dict(n_experts=2, random_state=0, gating_features=[1], expert_features=[0])
    mem = MixtureOfExpertsRegressor(**kw).fit(X, y, groups=g)
    ooc = MixtureOfExpertsRegressor(chunk_size=64, **kw).fit(Xm, ym, groups=g)
    assert ooc.log_likelihood_ == pytest.approx(mem.log_likelihood_, abs=1e-8)
    assert ooc.log_density(X, y, groups=g).sum() == pytest.approx(
        mem.log_density(X, y, groups=g).sum(), abs=1e-6
    )
    assert ooc.n_groups_ == 150
    # the labels themselves out of core (a memory map read by slices): the same fit
    np.save(tmp_path / "g.npy", g)
    labels = np.load(tmp_path / "g.npy", mmap_mode="r")
    lazy = MixtureOfExpertsRegressor(chunk_size=64, **kw).fit(Xm, ym, groups=labels)
    assert lazy.log_likelihood_ == pytest.approx(ooc.log_likelihood_, abs=1e-12)

    # a ChunkedDataset: the labels in the order its chunks yield the rows
    def chunks():
        for start in range(0, len(y), 100):
            yield X[start : start + 100], y[start : start + 100]

    streamed = MixtureOfExpertsRegressor(**kw).fit(ChunkedDataset(chunks), groups=g)
    assert streamed.log_likelihood_ == pytest.approx(mem.log_likelihood_, abs=1e-8)
    with pytest.raises(ValueError, match="groups has 599 labels for 600 rows"):
        MixtureOfExpertsRegressor(**kw).fit(ChunkedDataset(chunks), groups=g[:-1])


def test_groups_out_of_core_match_in_memory(tmp_path, monkeypatch):
    import moelearn.grouping as grouping

    monkeypatch.setattr(grouping, "_LABEL_ROWS", 7)  # many slices of the labels
    labels = np.random.default_rng(0).integers(100, 140, size=50)
    np.save(tmp_path / "g.npy", labels)
    lazy = grouping.groups_out_of_core(np.load(tmp_path / "g.npy", mmap_mode="r"), 50)
    ref = check_groups(labels, 50)
    np.testing.assert_array_equal(lazy.labels, ref.labels)
    np.testing.assert_array_equal(lazy.codes[0:50], ref.codes)
    np.testing.assert_array_equal(lazy.codes[13:29], ref.codes[13:29])
    np.testing.assert_array_equal(lazy.sizes, ref.sizes)
    np.testing.assert_array_equal(lazy.first, ref.first)
    bad = labels.astype(float)
    bad[30] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        grouping.groups_out_of_core(np.load(tmp_path / "bad.npy", mmap_mode="r"), 50)
    with pytest.raises(ValueError, match="groups has 50 labels for 49 rows"):
        grouping.groups_out_of_core(labels, 49)
