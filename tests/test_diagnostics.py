from moelearn import diagnose, make_moe, sample


def test_diagnose_gaussian_theory_regime():
    p = make_moe(8, 3, noise_std=0.2, random_state=0)
    X, y = sample(p, 100_000, random_state=1)
    dg = diagnose(X, y, n_experts=3)
    assert dg.inputs_gaussian and dg.trust_moments
    assert dg.supported_experts == 3
    assert abs(dg.noise_std - 0.2) < 0.02
    assert "trust" in str(dg) and dg.to_dict()["supported_experts"] == 3


def test_diagnose_flags_problems():
    p = make_moe(8, 3, noise_std=0.2, random_state=0)
    X, y = sample(p, 100_000, random_state=1, inputs="uniform")
    dg = diagnose(X, y, n_experts=3)
    assert not dg.inputs_gaussian and not dg.trust_moments
    X, y = sample(p, 100_000, random_state=1)
    assert not diagnose(X, y, n_experts=6).trust_moments  # M2 supports 3
    dg = diagnose(X, y, link=lambda t: t**2)  # even: orders 1 and 3 carry nothing
    assert "invalid" in dg.link_orders[1] and "invalid" in dg.link_orders[3]
    assert dg.link_orders[4].startswith("c_4")
