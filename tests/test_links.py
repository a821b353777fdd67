import numpy as np
import pytest

from moelearn import available_links, get_link, output_transform, register_link


def test_registry_has_the_documented_links():
    assert set(available_links()) >= {"linear", "relu", "leaky_relu", "sigmoid", "tanh", "softplus"}


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softplus"])
def test_derivatives_match_finite_differences(name):
    link = get_link(name)
    t = np.linspace(-4, 4, 101) + 0.013  # avoid the kink at 0 exactly
    h = 1e-6
    numeric = (link(t + h) - link(t - h)) / (2 * h)
    np.testing.assert_allclose(link.grad(t), numeric, atol=1e-6)


def test_softplus_does_not_overflow():
    with np.errstate(over="raise"):
        assert np.isfinite(get_link("softplus")(np.array([1e3, -1e3]))).all()


def test_user_callable_with_and_without_derivative():
    link = get_link(lambda t: t**3)
    np.testing.assert_allclose(link.grad(np.array([2.0])), [12.0], rtol=1e-6)
    link2 = get_link((np.sin, np.cos))
    np.testing.assert_allclose(link2.grad(np.array([0.3])), np.cos([0.3]))


def test_unknown_link_and_bad_types():
    with pytest.raises(ValueError, match="unknown link"):
        get_link("swish")
    with pytest.raises(TypeError):
        get_link(3)
    with pytest.raises(ValueError, match="finite"):
        get_link(lambda t: np.log(t))  # NaN for negative t


def test_register_link():
    link = register_link("cube_test", lambda t: t**3, lambda t: 3 * t**2)
    assert get_link("cube_test") is link
    assert output_transform("cube_test", 0.1, 2).constant > 0
