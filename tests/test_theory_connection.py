"""Fast tests of mtl_src.theory.connection (the Connection-Strength theory chapter)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl_src.theory import connection as cs


def rng(j: int) -> np.random.Generator:
    return np.random.default_rng([12345, j])


def _finite_diff_grads(prob: cs.LinearMTL, ts: np.ndarray, th: np.ndarray, h: float = 1e-6):
    G = np.empty((prob.K, prob.P))
    for p in range(prob.P):
        e = np.zeros(prob.P)
        e[p] = h
        G[:, p] = (prob.losses(ts + e, th) - prob.losses(ts - e, th)) / (2 * h)
    Gh = np.empty((prob.K, prob.m))
    for k in range(prob.K):
        for j in range(prob.m):
            E = np.zeros_like(th)
            E[k, j] = h
            Gh[k, j] = (prob.losses(ts, th + E)[k] - prob.losses(ts, th - E)[k]) / (2 * h)
    return G, Gh


def test_linear_model_gradients_and_smoothness():
    r = rng(0)
    prob = cs.random_problem(r)
    ts, th = r.standard_normal(prob.P), r.standard_normal((prob.K, prob.m))
    G, Gh = prob.grads(ts, th)
    Gf, Ghf = _finite_diff_grads(prob, ts, th)
    assert np.allclose(G, Gf, rtol=1e-5, atol=1e-6) and np.allclose(Gh, Ghf, rtol=1e-5, atol=1e-6)
    # H is the largest curvature: a step of 2/H along the top eigenvector of the worst task does not decrease it
    k = int(np.argmax([np.linalg.eigvalsh(prob.hessian(k))[-1] for k in range(prob.K)]))
    lam, V = np.linalg.eigh(prob.hessian(k))
    assert math.isclose(lam[-1], prob.H, rel_tol=1e-12)
    v = V[:, -1]
    f = lambda z: prob.losses(z[:prob.P], np.where(np.arange(prob.K)[:, None] == k, z[prob.P:][None], th))[k]  # noqa: E731
    z0 = np.concatenate([ts, th[k]])
    quad = f(z0 + v) - f(z0) - (np.concatenate([G[k], Gh[k]]) @ v)
    assert math.isclose(quad, 0.5 * prob.H, rel_tol=1e-8)


def test_minimum_is_the_infimum():
    r = rng(1)
    prob = cs.random_problem(r)
    w = cs.random_weights(r, prob.K)
    Lstar = prob.minimum(w)
    for _ in range(20):
        ts, th = r.standard_normal(prob.P), r.standard_normal((prob.K, prob.m))
        assert w @ prob.losses(ts, th) >= Lstar - 1e-12
    # gradient descent gets there
    ts, th = np.zeros(prob.P), np.zeros((prob.K, prob.m))
    eta = 1.0 / prob.H
    for _ in range(20000):
        G, Gh = prob.grads(ts, th)
        ts, th = ts - eta * (w @ G), th - eta * w[:, None] * Gh
    assert w @ prob.losses(ts, th) == pytest.approx(Lstar, rel=1e-6, abs=1e-9)


def test_blocks_and_weights():
    r = rng(2)
    b = cs.random_blocks(r, 9, 4)
    assert sorted(set(b.tolist())) == [0, 1, 2, 3] and min(np.bincount(b)) >= 2
    with pytest.raises(ValueError):
        cs.random_blocks(r, 5, 3)
    assert cs.random_weights(r, 4).sum() == pytest.approx(1.0)
    assert cs.random_weights(r, 4, "manual").tolist() == [1, 1, 10, 50]
    with pytest.raises(ValueError):
        cs.random_weights(r, 3, "bogus")


def test_phase2_direction_matches_library_and_rules():
    assert cs.library_agreement(rng(3), 30).holds
    # two tasks, one block owned by task 0, conflicting gradients: task 1 is projected off task 0
    G = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = np.array([1.0, 1.0])
    d = cs.phase2_direction(G, w, np.array([0, 0]))
    assert np.allclose(d, [1.0, 1.0])
    # non-conflicting: the authors' rule leaves it, Eq. 66 projects anyway
    G2 = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert np.allclose(cs.phase2_direction(G2, w, np.array([0, 0])), [2.0, 1.0])
    assert np.allclose(cs.phase2_direction(G2, w, np.array([0, 0]), always=True), [1.0, 1.0])


def test_theorem1_checks_have_power():
    assert cs.theorem1_first_order(rng(4), 40, "gradient").holds
    assert not cs.theorem1_first_order(rng(5), 40, "worst").holds
    assert cs.theorem1_identity(rng(6), 40).holds
    assert not cs.theorem1_identity(rng(7), 40, "ones").holds


def test_phase1_inequalities():
    assert cs.eq45_check(rng(8), 60).holds
    assert not cs.eq45_check(rng(9), 60, weights="manual", eta_rule="1/H").holds
    assert cs.eq56_check(rng(10), 60).holds
    assert not cs.eq56_check(rng(11), 60, weights="ones").holds


def test_phase1_cycle_is_a_fixed_point_and_breaks_eq57():
    r = rng(12)
    prob = cs.random_problem(r, K=2, P=6, m=1, n=20)
    w = cs.random_weights(r, 2)
    eta = 1.0 / prob.H
    c = cs.phase1_cycle(prob, w, eta)
    assert c["rho"] < 1 and c["moved"] < 1e-10 and c["delta"] > 0
    run = cs.phase1_run(prob, w, eta, 3, c["theta_s"], c["theta_h"])
    assert np.allclose(run["head2"], c["delta"], rtol=1e-8)     # started on the cycle, it stays there
    # from a far start the iterates approach the cycle point
    far = cs.phase1_run(prob, w, eta, 4000, np.zeros(prob.P), np.zeros((2, prob.m)))
    assert np.allclose(far["theta_s"], c["theta_s"], atol=1e-6)


def test_eq76_counterexample_and_protection():
    ce = cs.eq76_counterexample(1.0)
    assert ce["L after"] > ce["L before"] and ce["first-order change"] > 0 and ce["L_1 change"] < 0
    assert cs.top_task_protected(rng(13), 40).holds
    assert not cs.top_task_protected(rng(14), 40, task="other").holds


def test_gradient_floor():
    r = rng(15)
    prob = cs.random_problem(r, K=2)
    w = cs.random_weights(r, 2)
    c = cs.gradient_floor(prob, w)
    assert c > 0
    for _ in range(20):
        ts, th = r.standard_normal(prob.P), r.standard_normal((2, prob.m))
        G, _ = prob.grads(ts, th)
        assert np.sum(w**2 * np.sum(G**2, axis=1)) >= c * (1 - 1e-9)
    # tasks with identical data share their stationary points: c = 0
    same = cs.LinearMTL(prob.X, np.stack([prob.Z[0]] * 2), np.stack([prob.y[0]] * 2))
    assert cs.gradient_floor(same, w) < 1e-20


def test_eq76_rhs_cosines():
    G = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.0]])
    block = np.array([0, 0, 1, 1])
    dec, fac, cosjc = cs._eq76_rhs(G, np.array([0.5, 0.5]), block, eta=2.0)
    # block 0: top task 0, cos = 1/sqrt(2); block 1: g_1 = (0, 2), g_0 = 0 there -> cos 0
    assert cosjc == pytest.approx(1 / math.sqrt(2)) and fac == pytest.approx(0.5)
    expected = 0.25 * 1 + 0.25 * 2 * 0.5 + 0.25 * 0 + 0.25 * 4 * 1.0
    assert dec == pytest.approx(expected)


def test_uw_and_strength_checks():
    assert cs.uw_stationarity(rng(16), 20).holds and not cs.uw_stationarity(rng(17), 20, offset=0.1).holds
    assert cs.strength_check(rng(18), 5).holds and not cs.strength_check(rng(19), 5, ignore_variance=True).holds


def test_dwa_recompute_on_a_synthetic_frame():
    import pandas as pd

    K, T = 3, 2.0
    losses = np.array([[1.0, 2.0, 3.0], [0.9, 1.5, 2.9], [0.8, 1.4, 2.0], [0.7, 1.0, 1.9]])
    rows = []
    for e in range(len(losses)):
        if e < 2:
            lam = np.ones(K)
        else:
            r = losses[e - 1] / losses[e - 2]
            lam = K * np.exp(r / T) / np.exp(r / T).sum()
        rows += [{"split": "train", "epoch": e + 1, "metric": f"loss_t{k}", "value": losses[e, k]} for k in range(K)]
        rows += [{"split": "diagnostics", "epoch": e + 1, "metric": f"lambda_{k}", "value": lam[k]} for k in range(K)]
    f = pd.DataFrame(rows)
    assert cs.dwa_recompute(f, K).holds
    assert not cs.dwa_recompute(f, K, T=1.0).holds


def test_tiny_benchmark_trains_and_reports_shares():
    torch.set_num_threads(1)
    bench = cs.TinyTaskBN(n_train=64, n_test=32)
    runs = cs.train_runs(bench, {"cs": ("connection_strength", {})}, epochs=2, batch_size=32)
    f = runs[("cs", 0)]
    shares = cs.top_shares(f, bench.K)
    assert set(shares) == {0, 1} and all(np.allclose(S.sum(1), 1) for S in shares.values())
    err = cs.final_test(f, bench)
    assert err.shape == (bench.K,) and np.isfinite(err).all()
    lw = cs.train_runs(bench, {"m": ("manual", {"w": [1, 1, 10, 50]})}, epochs=1, batch_size=32)
    assert np.allclose(cs.weight_trajectories(lw[("m", 0)], bench.K), [[1, 1, 10, 50]])


def test_trained_priority_check_runs(tmp_path):
    torch.set_num_threads(1)
    bench = cs.TinyTaskBN(n_train=64, n_test=32)
    c = cs.trained_priority_check(bench, epochs=1, checkpoint=str(tmp_path / "ck.pt"))
    assert c.n == sum(bench.channels) and np.isfinite(c.margins).all()
    assert (c.margins <= 1 + 1e-12).all()    # (g_t . g - |g|^2) / (|g| max |g_k|) <= 1 by Cauchy-Schwarz


def test_theorem1_first_order_comes_from_the_losses():
    # the loss-based slope agrees with its first-order expansion (g_hat - g) . g on a quadratic
    c = cs.theorem1_first_order(rng(30), 20, "gradient")
    assert c.holds and c.worst > 0
    assert not cs.theorem1_first_order(rng(31), 40, "gradient", weights="ones").holds   # needs sum w = 1
    prob = cs.random_problem(rng(32))
    w = cs.random_weights(rng(33), prob.K)
    ts, th = rng(34).standard_normal(prob.P), rng(35).standard_normal((prob.K, prob.m))
    G, _ = prob.grads(ts, th)
    g, gh = w @ G, G[0]
    HL = float(np.linalg.eigvalsh(prob.shared_hessian())[-1])
    eta = 1e-6 / HL
    L = lambda d: float(w @ prob.losses(ts - d, th))  # noqa: E731
    D = lambda e: (L(e * g) - L(e * gh)) / e          # noqa: E731
    assert 2 * D(eta) - D(2 * eta) == pytest.approx((gh - g) @ g, rel=1e-5, abs=1e-8 * (g @ g + gh @ gh))


def test_order_permutation_test_is_exact_and_detects_a_planted_effect():
    r = cs.order_permutation_test([1.0, 1.1, 2.0, 2.1, 3.0, 3.1], ["a", "a", "b", "b", "c", "c"])
    assert r["assignments"] == 90 and r["p"] == pytest.approx(6 / 90) and r["p_min"] == pytest.approx(6 / 90)
    r = cs.order_permutation_test([1.0, 3.0, 2.0, 2.0, 3.0, 1.0], ["a", "a", "b", "b", "c", "c"])
    assert r["p"] == 1.0                                   # identical order means: nothing to explain
    with pytest.raises(ValueError, match="two orders"):
        cs.order_permutation_test([1.0, 2.0], ["a", "a"])
    alt = cs.phase1_order_runs(rng(36), ["0123", "3210", "1302"], 3, 300)
    assert cs.order_permutation_test(list(alt.values()), [k[0] for k in alt])["p"] < 0.05


def test_priority_settling():
    S0 = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.62, 0.38], [0.6, 0.4]])
    S1 = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    ep = cs.priority_settling({0: S0, 1: S1}, tol=0.05)
    assert ep == {0: 3, 1: 5}
    chk = cs.settling_checks([{0: S0, 1: S1}], tol=0.05)
    assert chk["differs"].holds and chk["settles"].failures == 1   # layer 1 moves in the last epoch
