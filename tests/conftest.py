import pytest

import moelearn


@pytest.fixture(scope="session")
def theory_linear():
    """Theory-regime problem (d=10, k=3, sigma=0.2) with 10^5 samples."""
    params = moelearn.make_moe(10, 3, link="linear", noise_std=0.2, random_state=0)
    X, y = moelearn.sample(params, 100_000, random_state=1)
    return params, X, y


@pytest.fixture(scope="session")
def two_experts():
    """Two Gaussian experts on two features, 3000 rows: ``(params, X, y, labels)``."""
    p = moelearn.make_moe(
        2,
        2,
        noise_std=0.3,
        intercept_scale=0.5,
        per_expert_noise=True,
        orthogonal_gating=False,
        gating_scale=2.0,
        random_state=3,
    )
    X, y, z = moelearn.sample(p, 3000, random_state=4, return_labels=True)
    return p, X, y, z
