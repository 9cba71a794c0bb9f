"""Unit tests of mtl_src.theory.stgu (the STGU theorem chapter's computations)."""

import numpy as np
import pytest
import torch

from mtl_src.theory import stgu as st


def R(j):
    return np.random.default_rng([11, j])


def _fd_grads(prob, s, h, eps=1e-6):
    gs, gh = np.zeros((prob.K, prob.Ps)), np.zeros((prob.K, prob.Ph))
    for p in range(prob.Ps):
        e = np.zeros(prob.Ps)
        e[p] = eps
        gs[:, p] = (prob.losses(s + e, h) - prob.losses(s - e, h)) / (2 * eps)
    for q in range(prob.Ph):
        e = np.zeros_like(h)
        e[:, q] = eps
        gh[:, q] = (prob.losses(s, h + e) - prob.losses(s, h - e)) / (2 * eps)
    return gs, gh


@pytest.mark.parametrize("make", [st.random_lsq, st.random_indefinite, st.random_bilinear])
def test_gradients_match_finite_differences(make):
    rng = R(1)
    prob = make(rng, 3)
    s, h = st.random_state(rng, prob)
    gs, gh = prob.grads(s, h)
    fs, fh = _fd_grads(prob, s, h)
    np.testing.assert_allclose(gs, fs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gh, fh, rtol=1e-6, atol=1e-6)


def test_lsq_smoothness_is_the_squared_norm_of_the_design_and_losses_are_least_squares():
    rng = R(2)
    prob = st.random_lsq(rng, 2, Ps=3, Ph=2, n=7)
    for k in range(2):  # A_k = J_k^T J_k: its largest eigenvalue is the exact Lipschitz constant
        assert prob.H_tasks[k] == pytest.approx(np.linalg.eigvalsh(prob.A[k]).max(), rel=1e-12)
    s, h = st.random_state(rng, prob)
    assert (prob.losses(s, h) >= 0).all()
    assert (np.linalg.eigvalsh(prob.A) >= -1e-12).all()  # convex


def test_group_step_moves_only_the_group_heads_and_A_equals_B_off_the_group():
    rng = R(3)
    prob = st.random_lsq(rng, 3)
    s, h = st.random_state(rng, prob)
    s1, h1 = st.group_step(prob, s, h, (0, 2), 0.1 / prob.H)
    assert np.array_equal(h1[1], h[1]) and not np.allclose(h1[0], h[0])
    gs, _ = prob.grads(s, h)
    np.testing.assert_allclose(s1, s - 0.1 / prob.H * (gs[0] + gs[2]), rtol=1e-14)
    A = st.affinity(prob, s, h, (0, 2), 0.1 / prob.H, kind="A")
    B = st.affinity(prob, s, h, (0, 2), 0.1 / prob.H, kind="B")
    assert A[1] == B[1] and A[0] != B[0]


def test_two_step_affinity_telescopes_only_with_own_step_denominators():
    rng = R(4)
    prob = st.random_lsq(rng, 3)
    s, h = st.random_state(rng, prob)
    prod, direct = st.two_step_affinity(prob, s, h, [(1,), (0, 2)], 0.5 / prob.H)
    np.testing.assert_allclose(prod, direct, rtol=1e-12, atol=1e-12)
    bad, _ = st.two_step_affinity(prob, s, h, [(1,), (0, 2)], 0.5 / prob.H, pairing="batch_start")
    assert np.abs(bad - direct).max() > 1e-3


def test_definition_checks_pass_and_catch_the_wrong_denominator():
    dc = st.definition_checks(R(5), 20)
    assert dc["A=B"].holds and dc["Eq. 67-68"].holds and not dc["Eq. 67 batch-start"].holds


def test_eq12_expansion_is_exact_and_a_near_optimal_head_breaks_eq12():
    assert st.eq12_expansion(R(6), 30).holds
    near = st.eq12_check(R(7), 30, head_near_optimum=True)
    assert near.failures > 0
    assert st.eq12_check(R(8), 30, head_at_new_shared=True).holds
    assert not st.eq12_check(R(9), 60, eta_max=4.0, head_at_new_shared=True).holds


def test_theorems_1_2_hold_below_eta_star_and_flip_above():
    below = st.order_draws(R(10), 40, "below")
    above = st.order_draws(R(11), 40, "above")
    assert st.theorem1_check(below, "b").holds and st.theorem2_check(below, "b").holds
    assert st.theorem1_check(above, "a").failures == 40 and st.theorem2_check(above, "a").failures == 40
    # the exact quadratic form: L_k(A_i - A_j) = eta Delta - eta^2 c
    lhs = below["Lk"] * (below["Ai"] - below["Aj"])
    rhs = below["eta"] * below["Delta"] - below["eta"] ** 2 * below["c"]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6, atol=1e-12 * below["Lk"].max())


def test_slope_fit_tells_second_from_first_order():
    ok, info = st.taylor_slopes(R(12), 8, "theorem3")
    bad, _ = st.taylor_slopes(R(12), 8, "theorem3", first_order=False)
    assert ok.holds and bad.failures == bad.n and len(info["curves"]) == 8
    assert st.taylor_slopes(R(13), 8, "theorem5_seq2")[0].holds


def test_theorem3_exact_form_and_the_near_optimum_counterexample():
    assert st.theorem3_expansion(R(14), 30).holds
    assert st.theorem3_check(R(15), 30).holds
    assert not st.theorem3_check(R(16), 30, "fixed", near_optimum=True).holds


def test_theorem4_holds_within_the_bound_and_is_tight():
    c, info = st.theorem4_check(R(17), 40)
    assert c.holds and info["sub-steps"] >= 40
    assert st.theorem4_check(R(18), 40, bound="shared_only")[0].holds
    for K in (2, 3, 5):
        t = st.theorem4_tight(K, (1.0, 1.05))
        assert t.ok[0] and abs(t.margins[0]) < 1e-10 and not t.ok[1]


def test_theorem5_gap_has_the_sign_of_c2_and_the_hypotheses_hold():
    dr = st.theorem5_draws(R(19), 25)
    assert len(dr["L"]) == 25
    checks = st.theorem5_checks(dr)
    assert checks["c2 sign"].holds


def test_hand_case_registered_stgu_uses_own_step_losses():
    hc = st.hand_case(beta=0.5)
    np.testing.assert_allclose(hc["tracked"], hc["own"], atol=1e-12)
    assert hc["s_end"] == pytest.approx(0.35)
    assert hc["own"][1, 0] == pytest.approx(0.5 * (1 - 0.21125 / 0.125))
    bad = st.hand_case(method=st.BatchStartSTGU(grouping="singletons", order="forward", beta=0.5), beta=0.5)
    np.testing.assert_allclose(bad["tracked"], bad["batch_start"], atol=1e-12)
    assert bad["tracked"][1, 0] > 0 > hc["tracked"][1, 0]   # the wrong pairing flips the conflicting pair's sign


def test_algorithm1_recovers_planted_groups_quickly():
    torch.set_num_threads(1)
    run = st.run_stgu(st.planted_problem(3), iterations=80, warmup=20, seed=1)
    assert run.groups[0] == ((0,), (1,), (2,))   # warm-up: singletons
    assert run.groups[-1] == ((0, 1), (2,))
    assert run.affinity.shape == (80, 3, 3) and run.affinity[-1, 2, 0] < 0 < run.affinity[-1, 0, 1]
    ctrl = st.run_stgu(st.planted_problem(4, signs=(1, 1, 1)), iterations=80, warmup=20, seed=1)
    assert ctrl.groups[-1] == ((0, 1, 2),)


def test_hand_case3_tells_the_own_step_pairing_from_both_wrong_ones():
    reg = st.hand_case3()
    exp = reg["expected"]
    np.testing.assert_allclose(reg["tracked"], exp["own"], atol=1e-12)
    assert reg["s_end"] == pytest.approx(reg["s_end_numpy"], abs=1e-12)
    # the third group's row separates all three pairings (two groups could not: one-early = batch-start there)
    for p, q in (("own", "batch_start"), ("own", "one_early"), ("batch_start", "one_early")):
        assert np.abs(exp[p][2] - exp[q][2]).min() > 1e-3
    for p in st.PAIRINGS:
        h = st.hand_case3(method=st.PairingSTGU(grouping="singletons", order="forward", beta=0.5, pairing=p))
        np.testing.assert_allclose(h["tracked"], exp[p], atol=1e-12)
        if p != "own":
            assert np.abs(h["tracked"][2] - exp["own"][2]).min() > 1e-3
    # first group: every pairing agrees (nothing stepped before it)
    np.testing.assert_allclose(exp["batch_start"][0], exp["own"][0])
    with pytest.raises(ValueError, match="pairing"):
        st.PairingSTGU(pairing="late")


def test_eta_grid_rules_use_the_same_states():
    a = st.order_draws(R(20), 30, "rel", eta_rel=1.0)
    b = st.order_draws(R(20), 30, "rel", eta_rel=1e-6)
    np.testing.assert_array_equal(a["Delta"], b["Delta"])
    assert st.theorem1_check(b, "tiny").holds and st.theorem2_check(b, "tiny").holds
    assert st.theorem3_check(R(21), 30, "rel", eta_rel=1e-6).holds
    with pytest.raises(ValueError, match="eta_rule"):
        st.order_draws(R(20), 3, "nope")


def test_grouping_slack_and_beta_effect():
    A = np.array([[1.0, 0.5, -0.3], [0.4, 1.0, -0.2], [-0.1, -0.6, 1.0]])
    assert st.grouping_slack(A, ((0, 1), (2,))) > 0
    assert st.grouping_slack(A, ((0, 1, 2),)) < 0
    torch.set_num_threads(1)
    runs = {b: [st.run_stgu(st.planted_problem(3), iterations=60, warmup=20, seed=1, beta=b)] for b in (0.01, 0.5)}
    be = st.beta_effect(runs, warmup=20)
    assert be["rougher"].holds and be["rougher"].n == 1
    assert set(be["table"].columns) >= {"beta", "roughness", "grouping changes"}
