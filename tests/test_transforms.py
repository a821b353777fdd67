import numpy as np
import pytest

from moelearn import get_link, output_transform


@pytest.mark.parametrize("s", [0.0, 0.01, 0.04, 0.25])
def test_linear_closed_forms(s):
    sigma = np.sqrt(s)
    q2 = output_transform("linear", sigma, 2)
    q3 = output_transform("linear", sigma, 3)
    q4 = output_transform("linear", sigma, 4)
    np.testing.assert_allclose(q2.coefficients, [0, 0, 1], atol=1e-8)
    np.testing.assert_allclose(q3.coefficients, [0, -3 * (1 + s), 0, 1], atol=1e-8)
    np.testing.assert_allclose(q4.coefficients, [0, 0, -6 * (1 + s), 0, 1], atol=1e-8)
    assert q2.constant == pytest.approx(2, abs=1e-8)
    assert q3.constant == pytest.approx(6, abs=1e-8)
    assert q4.constant == pytest.approx(24, abs=1e-8)
    y = np.array([-1.5, 0.2, 3.0])
    np.testing.assert_allclose(q4(y), y**4 - 6 * (1 + s) * y**2, rtol=1e-12)


@pytest.mark.parametrize(
    "link, order, value",
    [
        ("sigmoid", 2, 0.0624),
        ("sigmoid", 4, 0.0094),
        ("relu", 2, 0.363),
        ("relu", 3, 0.372),
        ("relu", 4, 0.501),
        ("tanh", 2, 0.364),
        ("tanh", 3, 0.234),
        ("tanh", 4, 0.157),
    ],
)
def test_quadrature_constants_match_design(link, order, value):
    # DESIGN §3 lists three significant digits, measured at sigma = 0.1
    assert output_transform(link, 0.1, order).constant == pytest.approx(value, rel=6e-3)


@pytest.mark.parametrize("link", ["relu", "tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_constants_do_not_depend_on_noise(link, order):
    c = [output_transform(link, s, order).constant for s in (0.0, 0.1, 0.5)]
    np.testing.assert_allclose(c, c[0], rtol=1e-7)


@pytest.mark.parametrize("link", ["relu", "tanh", "sigmoid", "softplus", "leaky_relu"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_transform_cancels_lower_hermite_coefficients(link, order):
    """E[Q_m(y) He_r(t)] = 0 for r < m, by Monte Carlo on n = 2e6 draws of (t, y).

    Each sample mean must lie within 6 of its standard errors of zero (a correct
    transform misses that with probability < 1e-8 per comparison).
    """
    rng = np.random.default_rng(0)
    n = 2_000_000
    sigma = 0.2
    t = rng.standard_normal(n)
    y = get_link(link)(t) + sigma * rng.standard_normal(n)
    q = output_transform(link, sigma, order)(y)
    he = [np.ones(n), t, t**2 - 1, t**3 - 3 * t]
    for r in range(1, order):
        terms = q * he[r]
        bound = 6 * terms.std() / np.sqrt(n)
        assert abs(terms.mean()) <= bound, (r, terms.mean(), bound)


def test_invalid_links_raise_clearly():
    even = get_link(lambda t: t**2)
    with pytest.raises(ValueError, match="not valid at order 1"):
        output_transform(even, 0.1, 1)
    with pytest.raises(ValueError, match="not valid at order 3"):
        output_transform(even, 0.1, 3)
    with pytest.raises(ValueError, match="order must be between"):
        output_transform("linear", 0.1, 5)
    with pytest.raises(ValueError, match="noise_std"):
        output_transform("linear", -1.0, 2)
    with pytest.raises(TypeError):
        output_transform("linear", 0.1, 2.5)


def test_transforms_are_cached():
    assert output_transform("relu", 0.3, 4) is output_transform("relu", 0.3, 4)
