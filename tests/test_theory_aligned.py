"""Unit tests of mtl_src.theory.aligned (the first Aligned-MTL theory chapter's computations), on
cases small enough to check by hand. Each test would fail if the function computed something else."""

import math

import numpy as np
import pytest
import torch

from mtl_src import methods
from mtl_src.problems import quadratic
from mtl_src.theory import aligned as al


def R(j):
    return np.random.default_rng([23, j])


def test_haar_and_random_gradients_have_the_promised_shape_and_spectrum():
    Q = al.haar(R(1), 6, 3)
    np.testing.assert_allclose(Q.T @ Q, np.eye(3), atol=1e-13)
    G = al.random_gradients(R(2), 3, 7, 2.0)
    s = np.linalg.svd(G, compute_uv=False)
    assert G.shape == (3, 7)
    assert s[0] / s[-1] == pytest.approx(100.0, rel=1e-10)      # exactly 10**log10_cond
    g1 = al.random_gradients(R(3), 1, 4, 2.0)                    # one row: dominance 1
    assert np.linalg.matrix_rank(g1) == 1


def test_authors_rtol_is_sqrt_K_eps():
    assert al.authors_rtol(4) == pytest.approx(math.sqrt(4 * np.finfo(np.float64).eps))
    assert al.authors_rtol(2, torch.float32) == pytest.approx(math.sqrt(2 * np.finfo(np.float32).eps))


def test_aligned_parts_on_a_diagonal_system():
    # G = diag(3, 1) in R^{2x3}: V = I, U = first two coordinate axes, s = (3, 1), s_R = 1
    G = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    d, C, eps = al.aligned_parts(G, np.array([1.0, 2.0]))
    np.testing.assert_allclose(d, [1.0, 2.0, 0.0], atol=1e-14)  # s_R U V^T w = w on the axes
    assert C == pytest.approx(1.0 / 3.0) and eps == pytest.approx(math.sqrt(5.0))
    # a singular value below the cutoff is dropped: rank 1, d = s_1 u_1 (v_1^T w)
    Gd = np.array([[3.0, 0.0], [0.0, 1e-9]])
    d, C, eps = al.aligned_parts(Gd, np.ones(2), rtol=1e-6)
    np.testing.assert_allclose(d, [3.0, 0.0], atol=1e-14)
    assert C == pytest.approx(1.0) and eps == pytest.approx(1.0)
    # batched over a leading axis, the same as one at a time
    Gs = np.stack([G[:, :2], np.array([[1.0, 1.0], [0.0, 2.0]])])
    db = al.aligned_parts(Gs)[0]
    for j in range(2):
        np.testing.assert_allclose(db[j], al.svd_aligned(Gs[j]), atol=1e-13)


def test_library_eigen_solver_equals_the_svd_form():
    G = al.random_gradients(R(4), 3, 5, 1.5)
    w = np.array([1.0, 0.5, 2.0])
    np.testing.assert_allclose(al._library_aligned(G, w), al.svd_aligned(G, w, al.authors_rtol(3)), rtol=1e-9)
    assert al.eigen_vs_svd(R(5), 20).holds


def test_dominance_invariances_and_the_per_task_scale_counter_case():
    for t in ("global scale", "parameter rotation", "task permutation"):
        assert al.dominance_invariance(R(6), 15, t).holds, t
    assert not al.dominance_invariance(R(7), 15, "per-task scale").holds
    with pytest.raises(ValueError):
        al.dominance_invariance(R(8), 1, "nonsense")


def test_procrustes_beats_gram_schmidt_and_aligned_system_has_dominance_one():
    assert al.procrustes_optimality(R(9), 5, n_random=5).holds
    assert not al.gram_schmidt_optimality(R(10), 10).holds
    assert al.aligned_unit_dominance(R(11), 10).holds


def test_corollaries_on_hand_checked_angles():
    assert al._cor2_formula(math.pi / 3) == pytest.approx(1.0 / math.tan(math.pi / 6))   # a/2 < pi/4: cot
    assert al._cor2_formula(2.0) == pytest.approx(math.tan(1.0))                         # a/2 > pi/4: tan
    assert math.isnan(al._cor2_formula(math.pi / 2))                                      # boundary
    assert al.corollary1(R(12), 10, P=20).holds
    assert not al.corollary1(R(13), 10, P=20, angle=math.pi / 3).holds
    assert al.corollary2(R(14), 10, P=20).holds
    assert not al.corollary2(R(15), 10, P=20, norm_ratio=3.0).holds
    b = al.corollary2_boundary(R(16), P=10)
    assert b["a = pi/2"] == pytest.approx(1.0) and b["a = 0"] > 1e8


def test_lemma1_holds_and_fails_with_an_underestimated_constant():
    assert al.lemma1_quadratic(R(17), 40).holds and al.lemma1_logistic(R(18), 20).holds
    assert not al.lemma1_quadratic(R(19), 40, lam_scale=0.5).holds


def test_theorem1_tight_case_is_an_equality():
    # two unit tasks with minima e1, e2 at theta = 0: G = -I, d = (1, 1), a = 1/2, decrease = 1/2
    chk = al.theorem1_tight_case()
    assert chk.holds
    assert chk.info["decrease"] == pytest.approx(0.5) and chk.info["bound"] == pytest.approx(0.5)


def test_theorem1_checks_on_draws_and_the_per_task_lambda_failure():
    c = al.theorem1_checks(al.theorem1_draws(R(20), 40))
    assert c["Eq. 7 (C = s_R/s_1, eps = |V^T w|)"].holds and c["a/2 (2C - C^2) |g0|^2"].holds
    assert not c["Eq. 7 with C = D = s_1/s_R"].holds
    assert not al.theorem1_per_task_lambda(R(21), 10).holds
    assert al.theorem1_per_task_lambda(R(22), 10, per_task=False).holds


def test_descend_gd_matches_a_hand_step_and_exact_alignment_stalls_on_the_conflicting_pair():
    prob, th0, a = al.conflicting_pair()
    tr = al.descend(prob, th0, 1, "gd", alpha=a)
    g = prob.jacobian(th0).sum(0)                                  # grad of L1 + L2 at (1.5, 1) = (3, 2)
    np.testing.assert_allclose(g, [3.0, 2.0])
    np.testing.assert_allclose(tr.theta[1, 0], th0 - a * g, atol=1e-14)
    with pytest.raises(ValueError):
        al.descend(prob, th0, 1, "nonsense")
    runs = {r: al.descend(prob, th0, 400, r, alpha=a) for r in ("gd", "exact")}
    chk = {r: al.trajectory_checks(tr) for r, tr in runs.items()}
    assert chk["gd"]["converged"].holds and not chk["exact"]["converged"].holds
    assert chk["exact"]["Eq. 7, current C"].holds and chk["exact"]["sum"].holds


def test_check_frame_lists_every_check():
    c = {"a": al.Check("ok", [0.1, 0.2]), "b": al.Check("bad", [-1.0])}
    f = al.check_frame(c)
    assert list(f["holds"]) == [True, False] and list(f["failed"]) == [0, 1]


def test_aligned_mtl_registered_method_agrees_with_lemma_free_formula():
    # two orthogonal gradients of norms 2 and 1: s_R = 1, aligned direction = g1/2 + g2
    G = np.array([[2.0, 0.0], [0.0, 1.0]])
    d = methods.make("aligned_mtl").aggregate(torch.from_numpy(G)).numpy()
    np.testing.assert_allclose(d, [1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(al.svd_aligned(G), [1.0, 1.0], atol=1e-12)


def test_stall_draws_shapes():
    out = al.stall_draws(R(24), 4, 30, rules=("gd",))
    assert out["gd"]["kappa_max"].shape == (4,) and out["gd"]["converged"].n == 4
    probs = [quadratic.random_tasks(2, 3, R(25))]
    assert al.descend(probs, probs[0].c.mean(0)[None], 2, "exact").L0.shape == (3, 1)
