"""Out-of-core, streamed and Dask fits give the in-memory answer."""

import warnings

import numpy as np
import pytest

from moelearn import ChunkedDataset, MixtureOfExpertsRegressor, make_moe, sample


@pytest.fixture(scope="module")
def problem():
    p = make_moe(8, 3, noise_std=0.2, random_state=5)
    X, y = sample(p, 30_000, random_state=6)
    return p, X, y


def _fit(X, y=None, **kw):
    return MixtureOfExpertsRegressor(3, random_state=0, **kw).fit(X, y)


@pytest.fixture(scope="module")
def in_memory(problem):
    _, X, y = problem
    return _fit(X, y)


@pytest.fixture
def memmapped(problem, tmp_path):
    _, X, y = problem
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


@pytest.mark.parametrize("chunk_size", [1000, 7777, 30_000, 50_000])
def test_memmap_fit_equals_in_memory(memmapped, in_memory, chunk_size):
    X, y = memmapped
    est = _fit(X, y, chunk_size=chunk_size)
    np.testing.assert_allclose(est.experts_, in_memory.experts_, atol=1e-8)
    assert est.init_method_ == in_memory.init_method_
    assert "unavailable" not in est.init_method_
    np.testing.assert_allclose(est.gating_, in_memory.gating_, atol=1e-6)
    assert est.log_likelihood_ == pytest.approx(in_memory.log_likelihood_, abs=1e-10)


@pytest.mark.parametrize("solver", ["em", "tensor", "gd-l2"])
def test_memmap_other_solvers(memmapped, problem, solver):
    _, Xm, ym = problem
    X, y = memmapped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _fit(X, y, solver=solver, chunk_size=4096, max_iter=20)
        b = _fit(Xm, ym, solver=solver, max_iter=20)
    np.testing.assert_allclose(a.experts_, b.experts_, atol=1e-7)


def test_stream_of_chunks_equals_in_memory(problem, in_memory):
    _, X, y = problem
    passes = []

    def chunks():
        passes.append(1)
        for start in range(0, len(y), 6000):
            yield X[start : start + 6000], y[start : start + 6000]

    est = _fit(ChunkedDataset(chunks))
    np.testing.assert_allclose(est.experts_, in_memory.experts_, atol=1e-8)
    assert est.init_method_ == in_memory.init_method_
    assert "unavailable" not in est.init_method_
    assert len(passes) > 3  # read again for every pass, never held in memory


def test_stream_rejects_bad_chunks():
    def chunks():
        yield np.ones((5, 2)), np.ones(4)

    with pytest.raises(ValueError, match="each chunk"):
        _fit(ChunkedDataset(chunks))
    with pytest.raises(TypeError):
        ChunkedDataset([1, 2])


def test_out_of_core_validation(tmp_path):
    X = np.random.default_rng(0).standard_normal((500, 3))
    X[10, 1] = np.nan
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="NaN"):
        _fit(Xm, np.arange(500.0))
    X[10, 1] = 0.0
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="constant"):
        _fit(Xm, np.ones(500))
    with pytest.raises(ValueError, match="inconsistent"):
        _fit(Xm, np.arange(400.0))
    with pytest.raises(ValueError, match="requires y"):
        _fit(Xm)


@pytest.fixture(scope="module")
def dask_arrays(problem):
    da = pytest.importorskip("dask.array")
    _, X, y = problem
    return da.from_array(X, chunks=(7000, 8)), da.from_array(y, chunks=7000)


def test_dask_synchronous_equals_in_memory(dask_arrays, in_memory):
    import dask

    X, y = dask_arrays
    with dask.config.set(scheduler="synchronous"):
        est = _fit(X, y)
    np.testing.assert_allclose(est.experts_, in_memory.experts_, atol=1e-8)
    assert est.init_method_ == in_memory.init_method_
    assert "unavailable" not in est.init_method_


def test_dask_local_cluster_equals_in_memory(dask_arrays, in_memory):
    distributed = pytest.importorskip("distributed")
    X, y = dask_arrays
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
    ):
        est = _fit(X, y)
    np.testing.assert_allclose(est.experts_, in_memory.experts_, atol=1e-8)
    assert est.init_method_ == in_memory.init_method_
    assert "unavailable" not in est.init_method_


def test_recover_experts_on_a_memory_map(memmapped, problem):
    from moelearn import recover_experts

    _, X, y = problem
    Xm, ym = memmapped
    a = recover_experts(X, y, 3, method="tensor", random_state=0)
    b = recover_experts(Xm, ym, 3, method="tensor", random_state=0, chunk_size=5000)
    np.testing.assert_allclose(a, b, atol=1e-10)
