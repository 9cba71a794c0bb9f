"""Unit tests of mtl_src.theory.pivrg (the PIVRG theorem chapter's computations)."""

import math

import numpy as np
import pytest
import torch

from mtl_src.problems import quadratic
from mtl_src.theory import pivrg as pv
from mtl_src.train import train_toy


def R(j):
    return np.random.default_rng([7, j])


def test_eq8_direction_is_the_minimiser_and_matches_the_authors_solve():
    rng = R(1)
    for _ in range(5):
        G = pv.random_gradients(rng, 3, 7, 1.0)
        omega = pv.random_omega(rng, 3)
        x = pv.eq8_weights(G, omega)
        u = G @ G.T @ x
        np.testing.assert_allclose(u**2, omega / x, rtol=1e-8)          # Eq. 8
        np.testing.assert_allclose(pv.eq8_least_squares(G, omega), x, rtol=1e-7)
        d = G.T @ x
        dd = pv.direct_minimiser(G, omega, rng)
        assert pv.inverse_utility(G, omega, d) <= pv.inverse_utility(G, omega, dd) * (1 + 1e-12)
        assert 1 - d @ dd / np.linalg.norm(d) / np.linalg.norm(dd) < 1e-10


def test_inverse_utility_is_scale_free_and_infinite_off_the_cone():
    G = np.array([[1.0, 0.0], [0.0, 2.0]])
    w = np.array([0.5, 1.5])
    d = np.array([1.0, 1.0])
    assert pv.inverse_utility(G, w, 3 * d) == pytest.approx(pv.inverse_utility(G, w, d))
    assert pv.inverse_utility(G, w, np.array([1.0, -1.0])) == math.inf


def test_pivrg_with_omega_sets_the_weights_and_gives_the_eq8_direction():
    rng = R(2)
    omega = np.array([0.4, 1.1, 1.5])
    omega *= 3 / omega.sum()   # ratio 3.75 > the default bound 2
    agg = pv.pivrg_with_omega(omega, max_norm=0.0)
    np.testing.assert_allclose(agg.omega.numpy(), omega, rtol=1e-12)
    G = pv.random_gradients(rng, 3, 5, 1.0)
    d = agg.aggregate(torch.from_numpy(G)).numpy()
    np.testing.assert_allclose(d, 3 * G.T @ pv.eq8_weights(G, omega), rtol=1e-10)


def test_convexity_check_holds_in_the_cone_and_detects_the_outside():
    assert pv.convexity_segments(R(3), 20).holds
    assert not pv.convexity_segments(R(4), 20, outside=True).holds


def test_properties_and_proposition_1():
    props = pv.properties_check(R(5), 50)
    assert all(c.holds for c in props.values())
    assert pv.prop1_check(R(6), 50).holds
    assert not pv.prop1_check(R(7), 50, tau_factor=(0.2, 0.5)).holds
    assert pv.tau_rule_tightness(R(8), 50).holds


def test_prop2_error_closed_form_for_two_symmetric_tasks():
    # s = (-a, a): omega = 1 -+ tanh(a/tau), so tau^2 Var(omega) / Var(s) = (tanh(x)/x)^2, x = a/tau
    for x in (1e-3, 0.1, 0.7, 3.0):
        a, tau = 2.0, 2.0 / x
        expected = (math.tanh(x) / x) ** 2 - 1
        # omega'omega/K - 1 cancels: absolute rounding ~ eps / x^2
        assert pv.prop2_error(np.array([-a, a]), tau) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_prop2_threshold_and_checks():
    rhos = np.array([0.01, 0.05, 0.1, 0.5])
    assert pv.prop2_threshold({"a": np.array([0.01, 0.05, 0.09, 0.5])}, rhos) == 0.1
    assert pv.prop2_threshold({"a": np.array([0.2, 0.5, 0.9, 1.5])}, rhos) == 0.0
    assert pv.prop2_check(R(9), 50, (0.0, 0.01)).holds
    assert not pv.prop2_check(R(10), 50, (0.5, 0.7)).holds
    assert not pv.prop2_scale_invariance(R(11), 20).holds


def test_theorem1_run_decreases_and_reaches_pareto_stationarity():
    prob = quadratic.QuadraticTasks(np.stack([np.eye(2)] * 2), np.array([[1.0, 0.0], [-1.0, 0.0]]))
    r = pv.theorem1_run(prob, np.array([1.5, 1.0]), 300)
    assert np.all(np.diff(r["loss"]) <= 64 * pv.EPS * np.abs(r["loss"][:-1]))
    n = len(r["bound"])
    rnd = 64 * pv.EPS * (np.abs(r["loss"][:n]) + np.abs(r["loss"][1:n + 1]))   # rounding of a loss difference
    assert np.all(r["loss"][:n] - r["loss"][1:n + 1] >= r["bound"] - rnd)
    assert r["stationary"] or r["stalled"]
    assert r["minnorm2"][-1] <= 1e-10 * r["lam_max"][-1]
    assert r["lam_min"][-1] <= 1e-10 * r["lam_max"][-1]
    bad = pv.theorem1_draws(R(12), 3, T=20, L_scale=0.25)
    assert not bad["descent"].holds


def test_proof_inequalities_and_the_false_last_step():
    assert all(c.holds for c in pv.eq10_eq11_draws(R(13), 30).values())
    assert not pv.dependence_vs_stationarity(R(14), 30).holds
    unb = pv.unbounded_run(50)
    assert not unb["check"].holds and unb["final loss"] < -10


def test_constrained_ls():
    G = np.array([[1.0, 0.2], [0.8, 1.0]])          # LS gives both tasks a positive utility
    d0 = pv.constrained_ls(G)
    np.testing.assert_allclose(d0, G.sum(0) / np.linalg.norm(G.sum(0)), rtol=1e-12)
    G = np.array([[1.0, 0.0], [-3.0, 0.5]])         # LS (-2, 0.5) hurts task 1
    d0 = pv.constrained_ls(G)
    assert np.all(G @ d0 >= -1e-12) and np.linalg.norm(d0) == pytest.approx(1.0)
    rng = R(15)
    for _ in range(200):  # no feasible unit direction beats it
        v = rng.standard_normal(2)
        v /= np.linalg.norm(v)
        if np.all(G @ v >= 0):
            assert G.sum(0) @ v <= G.sum(0) @ d0 + 1e-12


def test_fair_family_and_limits():
    fam = pv.fair_family(R(16), 10)
    assert fam["alpha=1 Nash"].holds and fam["alpha=2 PIVRG omega=1"].holds and fam["alpha=0 LS"].holds
    assert not fam["PIVRG omega"].holds
    lim = pv.fair_limits(R(17), 6, small=(1.0, 0.1), large=(2.0, 20.0))
    assert lim["MGDA limit"].holds and lim["constrained LS limit"].holds
    np.testing.assert_array_equal(~lim["LS limit"].ok, lim["conflict"])


def test_toy_drops_and_the_pivrg_toy_runner():
    fs = pv.toy_single_task_optima()
    assert fs.shape == (2,) and np.all(fs < -19.9)
    np.testing.assert_allclose(pv.toy_drops(fs), 0.0, atol=1e-12)
    assert np.all(pv.toy_drops(np.array([0.0, 5.0])) > 0)
    fast = pv.train_toy_pivrg(4, refresh_every=3)
    slow = train_toy(pv.ToyPerformanceFeed(refresh_every=3), iterations=4, fast=False)
    np.testing.assert_allclose(fast.xs, slow.xs, atol=1e-7)
    assert fast.hyperparameters["omega_history"].shape == (2, 5, 2)
    plain = train_toy("pivrg", iterations=4)     # before any feedback omega = 1: pivrg = fairgrad alpha = 2
    assert np.abs(plain.xs - fast.xs).max() > 0   # the drops change the run


def test_prop2_on_table():
    t = pv.prop2_on_table("pivrg_t1", 2.0, 10.0)
    assert "PIVRG" in t.index and np.all(t["spread/tau"] <= math.log(2.0) + 1e-12)
    np.testing.assert_allclose(t.loc["LS", "Var over metrics"], 259.13, atol=0.01)   # Table 9's printed value


def test_theorem1_draws_counts_unjudged_runs_and_refuses_a_vacuous_check():
    thm = pv.theorem1_draws(R(40), 3, T=40)
    assert thm["descent"].info["unjudged runs"] == 0 and thm["descent"].holds
    # the sum check's tolerance is the summed per-step rounding: tiny, not a fixed 1e-9
    assert np.all(thm["sum"].tol < 1e-10) and thm["sum"].holds
    with pytest.raises(ValueError, match="never checked"):
        pv.theorem1_draws(R(41), 2, T=0)        # no step taken: nothing to judge


def test_fair_limit_values_detect_a_plateau():
    lim = pv.fair_limits(R(42), 8, small=(0.1, 0.05), large=(50.0, 100.0))
    assert lim["MGDA limit value"].holds
    assert lim["LS limit value"].n + lim["LS limit value, conflicting draws"].n == 8
    if lim["LS limit value"].n:
        assert lim["LS limit value"].holds
    if lim["LS limit value, conflicting draws"].n:
        assert not lim["LS limit value, conflicting draws"].holds
