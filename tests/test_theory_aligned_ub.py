"""Unit tests of mtl_src.theory.aligned_ub (the second Aligned-MTL theory chapter's computations)."""

import math

import numpy as np
import pytest
import torch

from mtl_src import methods
from mtl_src.problems import quadratic, toy
from mtl_src.theory import aligned_ub as ub
from mtl_src.theory.aligned import random_gradients, svd_aligned
from mtl_src.train import train_toy


def R(j):
    return np.random.default_rng([11, j])


def test_z_aligned_equals_theta_aligned_for_an_isometric_jacobian_only():
    rng = R(1)
    GZ = random_gradients(rng, 3, 8, 2.0)
    w = np.array([1.0, 2.0, 0.5])
    J = ub.isometric_jacobian(rng, 8, 20, lam=3.0)
    np.testing.assert_allclose(J @ J.T, 9.0 * np.eye(8), atol=1e-12)
    d, _ = ub.z_aligned(GZ, J, w)
    np.testing.assert_allclose(d, svd_aligned(GZ @ J, w), rtol=1e-9, atol=1e-12)
    Jb = random_gradients(rng, 8, 20, 1.5)
    db, _ = ub.z_aligned(GZ, Jb, w)
    assert np.linalg.norm(db - svd_aligned(GZ @ Jb, w)) > 1e-3 * np.linalg.norm(db)


def test_z_alignment_draws_verdicts():
    iso = ub.z_alignment_draws(R(2), 40)
    gen = ub.z_alignment_draws(R(3), 40, (0.3, 2.0))
    assert all(c.holds for c in iso.values())
    assert gen["D <= cond(J)"].holds and not gen["Eq. 6"].holds and not gen["Eq. 8"].holds


def test_theorem2_counterexample_goes_uphill_and_matches_first_order_formula():
    s, w1, rho = 0.01, 0.1, 0.5
    cex = ub.theorem2_counterexample(s, w1, rho)
    # <g0, d> = u^T J J^T v with u = (w1, s), v = s (w1, 1): s (w1^2 + s - rho w1 (1 + s))
    assert cex["<g0, d>"] == pytest.approx(s * (w1**2 + s - rho * w1 * (1 + s)), rel=1e-12)
    assert cex["decrease"] < 0 < cex["Eq. 25 bound"]
    assert cex["cond(J)"] == pytest.approx(math.sqrt(3.0))
    # with an isometric J (rho = 0) the same system descends
    assert ub.theorem2_counterexample(s, w1, 0.0)["decrease"] > 0


def test_theorem2_identity_draws_hold_and_adversarial_draws_fail():
    ok = ub.theorem2_checks(ub.theorem2_draws(R(4), 60, "identity"))
    assert ok["Eq. 25"].holds and ok["descent"].holds
    bad = ub.theorem2_checks(ub.theorem2_draws(R(5), 200, "adversarial"))
    assert not bad["Eq. 25"].holds
    with pytest.raises(ValueError):
        ub.theorem2_draws(R(6), 1, "nonsense")


def test_lemma2_weights_reproduce_library_aligned_mtl():
    rng = R(7)
    G = random_gradients(rng, 4, 10, 2.0)
    w = np.array([1.0, 0.5, 2.0, 1.0])
    wp = ub.lemma2_weights(G, w)
    d = methods.make("aligned_mtl", w=list(w)).aggregate(torch.from_numpy(G)).numpy()
    np.testing.assert_allclose(G.T @ wp, d, rtol=1e-8, atol=1e-12)
    assert not np.allclose(G.T @ ub.lemma2_weights(G, w, inverted=True), d)
    np.testing.assert_array_equal(ub.lemma2_weights(np.zeros((2, 3)), np.ones(2)), np.zeros(2))
    c = ub.lemma2_draws(R(8), 30, "Z")
    assert c.holds and not ub.lemma2_draws(R(9), 30, inverted=True).holds


def test_heavy_ball_matrix_spectral_radius_and_norm():
    a, b, rho = ub.hb_params(1.0, 100.0)
    assert b == pytest.approx(rho) and rho == pytest.approx(9 / 11)
    H = np.diag([1.0, 10.0, 100.0])
    T = ub.hb_matrix(H, a, b)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(T)), math.sqrt(b), rtol=1e-9)
    assert np.linalg.norm(T, 2) >= 1.0
    chk = ub.theorem3_matrix_draws(R(10), 30)
    assert chk["sqrt"].holds and not chk["Eq. 36"].holds


def test_heavy_ball_single_task_rate_is_sqrt_rho_and_polyak_is_rho():
    rng = R(11)
    prob = quadratic.random_tasks(1, 4, rng, cond=50.0)
    th0 = prob.c[0] + rng.standard_normal(4)
    paper = ub.heavy_ball(prob, th0, 200, "paper")
    polyak = ub.heavy_ball(prob, th0, 200, "polyak")
    rho = paper["rho"].max()
    assert ub._fit_rate(paper["E"]) == pytest.approx(math.sqrt(rho), rel=2e-2)
    assert ub._fit_rate(polyak["E"]) <= rho * 1.05
    runs = ub.theorem3_runs(R(12), 5, 150, K_range=(2, 3), common_minimum=False)
    assert not runs["converged"].holds


def test_pair_statistics_and_ratio_bound():
    G = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    st = ub.pair_statistics(G)
    assert st["dominance"] == pytest.approx(3.0) and st["max norm ratio"] == pytest.approx(3.0)
    assert st["min cos"] == pytest.approx(0.0) and st["GMS"] == pytest.approx(0.6)
    assert ub.bound_ratio_draws(R(13), 50).holds
    assert not ub.bound_ratio_draws(R(14), 50, tall=True).holds


def test_toy_aligned_batch_matches_train_toy():
    starts = toy.START_POINTS.numpy()
    xs = ub.toy_aligned_batch([[0.2, 0.8], [0.5, 0.5]], starts, 40)
    for k, w in enumerate([[0.2, 0.8], [0.5, 0.5]]):
        ref = train_toy("aligned_mtl", iterations=40, w=w).xs
        np.testing.assert_allclose(xs[k], ref, rtol=0, atol=1e-12)
    opt = ub.toy_weighted_optimum([0.5, 0.5])
    f, G = toy.losses_and_jacobian_np(opt[None])
    assert np.linalg.norm(G[0].T @ np.array([0.5, 0.5])) < 1e-4


class _TinyBench:
    """Two regression tasks on a linear encoder: enough for the training and snapshot helpers."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 5, generator=g)
        self.y = torch.randn(32, 2, generator=g)

    def build_model(self):
        from mtl_src.benchmarks.base import MTLModel

        enc = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh())
        return MTLModel(enc, [torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)])

    def losses(self, outs, batch):
        return torch.stack([((o[:, 0] - batch[1][:, i]) ** 2).mean() for i, o in enumerate(outs)])

    def datasets(self):
        return {"train": torch.utils.data.TensorDataset(self.x, self.y)}


def test_network_snapshot_chain_rule_and_dominance_training():
    b = _TinyBench()
    torch.manual_seed(0)
    model = b.build_model()
    snap = ub.network_snapshot(b, model, (b.x[:3], b.y[:3]))
    assert snap["m"] == 12 and snap["P"] == 24
    assert snap["chain_rule_err"] < 1e-5 and snap["dead"] == 0.0
    rec, _ = ub.dominance_training(b, "aligned_mtl", 4, batch_size=8)
    sys = rec[rec.system == "system"]
    np.testing.assert_allclose(sys["dominance"], 1.0, atol=1e-5)
    rec_ub, _ = ub.dominance_training(b, "aligned_mtl_ub", 3, batch_size=8)
    assert set(rec_ub.system) == {"raw", "system"}
    tab = ub.summarise_dominance(rec)
    assert list(tab.columns) == ["method", "system", "mean", "std", "max", "min"]


def test_z_alignment_bound_is_attained_and_detects_a_generic_U():
    att = ub.z_alignment_attained(R(30), 30)
    assert att.holds and att.worst > -1e-10
    # a generic G_Z (U not holding J's extreme directions) stays strictly below cond(J)
    gen = ub.z_alignment_draws(R(31), 30, (0.5, 2.0))["D <= cond(J)"]
    assert gen.holds and np.median(gen.margins) > 1e-3


def test_eq16_printed_form_scales_like_c_cubed_and_fails_for_large_gradients():
    r = [ub.eq16_scaling(c) for c in (1.0, 2.0, 10.0)]
    for x in r:  # the tight case: the bound without s_1^2 equals the decrease
        assert x["Eq. 16 without s_1^2"] == pytest.approx(x["decrease"], rel=1e-12)
    assert r[2]["Eq. 16 printed"] / r[0]["Eq. 16 printed"] == pytest.approx(1000.0, rel=1e-12)
    assert r[1]["Eq. 16 printed"] > r[1]["decrease"]
    chk = ub.theorem2_checks(ub.theorem2_draws(R(32), 80, "identity"))
    big = chk["Eq. 16 as printed"].info["s_R s_1"] > 2
    assert chk["Eq. 16"].holds and big.any() and not chk["Eq. 16 as printed"].ok[big].any()


def test_theorem2_trajectories_isometric_hold_and_refuse_when_nothing_is_judged():
    r = ub.theorem2_trajectories(R(33), 6, 40, "isometric")
    assert r["Eq. 26 every step"].holds and r["Eq. 26 every step"].info["unjudged runs"] == 0
    assert r["min C_s"].shape == (6,)
    with pytest.raises(ValueError):
        ub.theorem2_trajectories(R(34), 2, 0, "isometric")   # no step: nothing checked
    with pytest.raises(ValueError):
        ub.theorem2_trajectories(R(35), 1, 5, "nonsense")


def test_fit_rate_tolerance_bounds_the_fit_error_for_one_task():
    runs = ub.theorem3_runs(R(36), 8, 300, K_range=(1, 1))
    assert np.all(np.isfinite(runs["fit tol"])) and np.all(runs["fit tol"] > 0)
    assert np.all(np.abs(runs["fit error"]) <= runs["fit tol"])
    assert ub.fit_rate_tolerance(None, np.arange(10)) == math.inf
    assert ub.fit_rate_tolerance(np.eye(2) * 0.5, None) == math.inf
    # a normal T (cond(X) = 1): the fit is exact, tolerance 0
    assert ub.fit_rate_tolerance(np.diag([0.5, -0.5]), np.arange(10, 20)) == pytest.approx(0.0, abs=1e-12)


def test_polyak_momentum_gives_spectral_radius_rho():
    chk = ub.theorem3_matrix_draws(R(37), 40)
    assert chk["polyak"].holds
    a, b, rho = ub.hb_params(1.0, 100.0)
    T = ub.hb_matrix(np.diag([1.0, 30.0, 100.0]), a, b * b)
    assert np.abs(np.linalg.eigvals(T)).max() == pytest.approx(rho, rel=1e-6)


def test_summed_bound_margins_match_the_closed_form_above_one_over_lambda():
    # one task L = 1/2 |Z|^2, J = I, a = 1.5 (a Lam = 1.5): Z contracts by q = -1/2, the aligned step is
    # the gradient step, C = C_l = eps = 1; sum_{t<T'} |g0_t|^2 / (2 L0_0 / a) = (1 - q^(2T')) / (2 - a Lam)
    prob = quadratic.QuadraticTasks(np.eye(2)[None], np.zeros((1, 2)))
    run = ub._z_run(np.eye(2), prob.jacobian, prob.losses, np.ones(1), 1.5, 10, np.array([1.0, -2.0]), 0.0, 1.0)
    tel, _, summed, _ = ub.summed_bound_margins(run, 1.5, 1.0, 1.0, 0.0)
    assert summed == pytest.approx(1.0 - (1.0 - 0.25**10) / 0.5, rel=1e-12)
    assert tel < summed < 0
    run_ok = ub._z_run(np.eye(2), prob.jacobian, prob.losses, np.ones(1), 0.5, 10, np.array([1.0, -2.0]), 0.0, 1.0)
    assert ub.summed_bound_margins(run_ok, 0.5, 1.0, 1.0, 0.0)[2] == pytest.approx(1.0 - (1.0 - 0.25**10) / 1.5, rel=1e-12)
    assert not ub.summed_bound_step_size(R(40), 6, 20).holds
    assert ub.summed_bound_step_size(R(41), 6, 20, (0.2, 1.0)).holds


def test_summed_bound_along_identity_and_random_runs():
    ident = ub.theorem2_trajectories(R(42), 6, 60, "identity")
    assert ident["Eq. 26 every step"].holds and ident["summed"].holds and ident["telescoped"].holds
    assert ident["linear (PL)"].holds
    assert "Eq. 18" in ident["summed"].name
    rand = ub.theorem2_trajectories(R(43), 6, 60, "random")
    assert "Eq. 26" in rand["summed"].name and rand["summed"].margins.shape == (6,)
    cex = ub.theorem2_counterexample_run(100)
    assert cex["L0_T"] > cex["L0_0"] > cex["L0*"]            # uphill steps: the loss goes up
    assert cex["telescoped margin"] < 0 < cex["summed margin"]  # telescoped sum fails, the L0* form is vacuous
    assert cex["min C_s"] < 1e-10


def test_quartic_loss_is_c2_and_linear_rate_fails():
    z = np.array([1 - 1e-7, 1 + 1e-7, -1 - 1e-7, -1 + 1e-7])
    f, g = ub.quartic_loss(z)
    assert abs(f[0] - f[1]) < 1e-6 and abs(g[0] - g[1]) < 1e-6 and abs(g[2] - g[3]) < 1e-6
    assert ub.quartic_loss(np.zeros(1))[0][0] == 0.0
    q = ub.linear_rate_quartic(R(44), 6, 300)
    assert q["Eq. 25"].holds and q["sandwich"].holds and q["summed"].holds
    assert q["linear at the initial rate"].failures == 6
    assert np.all((q["T (1 - r_T)"] > 1.5) & (q["T (1 - r_T)"] < 2.5))   # r_t ~ 1 - 2/t
    assert np.all(q["mu_T / mu_0"] < 0.1)


def test_tall_jacobian_draws_and_stall():
    df = ub.theorem2_draws(R(45), 80, "tall")
    assert np.all(df["P"] < df["m"])
    ta = ub.tall_alignment_draws(R(46), 60)
    assert not ta["Eq. 6"].holds and ta["Eq. 6"].failures == ta["Eq. 6"].n
    assert not ta["D <= cond(J)"].holds
    st = ub.tall_stall_example()
    assert st["|d|"] < 1e-15 * st["|grad L0|"] and st["|grad L0|"] == pytest.approx(0.75 / math.sqrt(2))
    assert st["decrease"] == 0.0 < st["Eq. 25 bound"] and st["cond(J)"] == 1.0 and st["steps that moved"] == 0
    assert ub.tall_stall_example(1.0)["|grad L0|"] < 1e-15   # equal singular values: the point is stationary
