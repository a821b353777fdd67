import pytest

import moelearn


@pytest.fixture(scope="session")
def theory_linear():
    """Theory-regime problem (d=10, k=3, sigma=0.2) with 10^5 samples."""
    params = moelearn.make_moe(10, 3, link="linear", noise_std=0.2, random_state=0)
    X, y = moelearn.sample(params, 100_000, random_state=1)
    return params, X, y
