import numpy as np
import pytest

from moelearn import make_moe, sample, select_n_experts


@pytest.mark.parametrize("criterion", ["bic", "cv"])
def test_select_n_experts_finds_three(criterion):
    p = make_moe(6, 3, noise_std=0.2, gating_scale=2.0, random_state=0)
    X, y = sample(p, 6000, random_state=1)
    sel = select_n_experts(X, y, candidates=[1, 2, 3, 4], criterion=criterion, cv=3)
    assert sel.n_experts == 3, sel.scores
    assert sel.estimator.n_experts == 3


def test_select_n_experts_bad_arguments():
    X = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ValueError, match="criterion"):
        select_n_experts(X, X[:, 0], criterion="aic")
    with pytest.raises(ValueError, match="candidates"):
        select_n_experts(X, X[:, 0], candidates=[0, 1])
