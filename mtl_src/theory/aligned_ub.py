"""Numerical checks for the second Aligned-MTL chapter
(``notebooks/aligned_mtl/02_representation_and_rates.md``): the Z-aligned gradient (main Def. 3,
Eqs. 6-8), the per-step bounds of main Thms 1-2 / supp. Thm 2 (Eqs. 16-18, 24-26) and their sums
over a run (Eqs. 18 and 26 summed), the supplement's "converges linearly" (supp. Thms 1-2), tall
Jacobians (m > P, supp. Thm 2's rank hypothesis), Lemma 2 (Eqs. 29-33), the heavy-ball Theorem 3
(Eqs. 34-37), and dominance statistics on MultiMNIST (main Table 2, supp. Figs. 2-3).

Conventions as in :mod:`mtl_src.theory.aligned`: gradient matrices hold one task per *row*.
``G_Z`` (K x m) holds the gradients with respect to the shared representation Z (m entries, the
whole batch flattened), ``J = dZ/dtheta`` is m x P, so the task gradients in parameter space are
``G_theta = G_Z J`` (chain rule) and the Z-aligned direction of Def. 3 is
``d = J^T (s_R U V^T w)`` with ``G_Z = V diag(s) U^T``.

Every check returns a :class:`~mtl_src.theory.checks.Check` (margin >= -tol: held in that draw).
Tolerances follow the size of the subtracted quantities; they are never tuned to make a check pass.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .. import methods
from ..autodiff import task_gradients
from ..linalg import dominance_rate
from ..problems import quadratic, toy
from .aligned import _library_aligned, aligned_parts, authors_rtol, haar, random_gradients
from .checks import EPS, Check, Ledger

__all__ = [
    "Check", "Ledger", "cond", "z_aligned", "isometric_jacobian", "z_alignment_draws", "z_alignment_attained",
    "network_snapshot", "theorem2_draws", "theorem2_checks", "theorem2_counterexample", "eq16_scaling",
    "theorem2_trajectories", "summed_bound_margins", "summed_bound_step_size", "theorem2_counterexample_run",
    "quartic_loss", "linear_rate_quartic",
    "tall_alignment_draws", "tall_stall_example", "lemma2_weights", "lemma2_draws",
    "hb_params", "hb_matrix", "theorem3_matrix_draws", "heavy_ball", "fit_rate_tolerance", "theorem3_runs",
    "pair_statistics", "bound_ratio_draws", "dominance_training", "summarise_dominance",
    "toy_aligned_batch", "toy_weighted_optimum",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def cond(A: np.ndarray) -> float:
    """s_1 / s_min(A) over min(rows, cols) singular values (inf when s_min = 0)."""
    s = np.linalg.svd(np.asarray(A, float), compute_uv=False)
    return math.inf if s[-1] <= 0 else float(s[0] / s[-1])


def z_aligned(GZ: np.ndarray, J: np.ndarray, w: np.ndarray | None = None,
              rtol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Def. 3: the Z-aligned direction ``J^T d_Z`` with ``d_Z = s_R(G_Z) U V^T w`` (numpy SVD).
    Returns ``(d_theta, d_Z)``."""
    dZ = aligned_parts(GZ, w, rtol)[0]
    return np.asarray(J).T @ dZ, dZ


def isometric_jacobian(rng: np.random.Generator, m: int, P: int, lam: float = 1.0) -> np.ndarray:
    """m x P matrix with J J^T = lam^2 I (m <= P): lam times m orthonormal rows, Haar distributed."""
    return lam * haar(rng, P, m).T


def _procrustes_rows(G: np.ndarray, rtol: float = 0.0) -> tuple[np.ndarray, float]:
    """Q = V U^T (kept directions) and s_R, by numpy SVD."""
    V, s, Ut = np.linalg.svd(G, full_matrices=False)
    keep = s > max(rtol * s[0], 0.0)
    return V[:, keep] @ Ut[keep], float(s[keep].min())


# --------------------------------------------------------------------------------------------------
# Definition 3, Eqs. 6-8
# --------------------------------------------------------------------------------------------------
def z_alignment_draws(rng: np.random.Generator, n: int, log10_cond_J: tuple[float, float] = (0.0, 0.0)
                      ) -> dict[str, Check]:
    """Random G_Z (K x m, dominance up to 10^3) and wide full-row-rank J (m x P, m <= P) with
    condition number 10^U(log10_cond_J); ``(0, 0)`` gives J J^T = lam^2 I (Eq. 6's hypothesis).

    Checks (one margin per draw):

    - ``Eq. 6``: the Z-aligned direction equals the theta-aligned direction of G_theta = G_Z J
      (margin = -relative difference; tolerance 1e3 eps D(G_Z) cond(J)^2);
    - ``Eq. 8``: the Z-aligned system s_R(G_Z) Q_Z J (Q_Z = V U^T of G_Z) has dominance 1
      (margin = -(D - 1));
    - ``D <= cond(J)``: our bound on the dominance of the Z-aligned system
      (margin = (cond J - D) / cond J).
    """
    m6, t6, m8, t8, mb, tb = (np.empty(n) for _ in range(6))
    for i in range(n):
        K = int(rng.integers(2, 6))
        m = int(rng.integers(K, 21))
        P = int(rng.integers(m, 41))
        GZ = random_gradients(rng, K, m, rng.uniform(0.0, 3.0))
        lc = rng.uniform(*log10_cond_J)
        J = random_gradients(rng, m, P, lc) if lc > 0 else isometric_jacobian(rng, m, P, 10.0 ** rng.uniform(-1, 1))
        cJ = cond(J)
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        d_z, _ = z_aligned(GZ, J, w)
        d_t = aligned_parts(GZ @ J, w)[0]
        m6[i] = -np.linalg.norm(d_z - d_t) / np.linalg.norm(d_t)
        t6[i] = 1e3 * EPS * cond(GZ) * cJ**2
        Q, sR = _procrustes_rows(GZ)
        D = cond(sR * Q @ J)
        m8[i], t8[i] = -(D - 1.0), 1e3 * EPS * cJ**2
        mb[i], tb[i] = (cJ - D) / cJ, 1e3 * EPS * cJ
    tag = "J J^T = lam^2 I" if log10_cond_J == (0.0, 0.0) else f"cond(J) = 10^U{log10_cond_J}"
    return {"Eq. 6": Check(f"Z-aligned == theta-aligned ({tag})", m6, t6),
            "Eq. 8": Check(f"D(s_R Q_Z J) = 1 ({tag})", m8, t8),
            "D <= cond(J)": Check(f"D(s_R Q_Z J) <= cond(J) ({tag})", mb, tb)}


def z_alignment_attained(rng: np.random.Generator, n: int) -> Check:
    """The bound D(s_R Q_Z J) <= cond(J) is attained: J (m x P, condition number 10^U(0.3, 2)) with
    left singular vectors a_1 .. a_m, and G_Z = V diag(s) U^T whose right factor U (m x K) contains
    a_1 and a_m (plus K - 2 random orthonormal directions of their complement, K in 2..5). The
    squared singular values of Q_Z J are the eigenvalues of U^T J J^T U, whose extremes are then
    s_1(J)^2 and s_m(J)^2 exactly. Margin = -|D / cond(J) - 1|, tolerance 1e3 eps cond(J)^2."""
    m_, t_ = np.empty(n), np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 6))
        m = int(rng.integers(K, 21))
        P = int(rng.integers(m, 41))
        J = random_gradients(rng, m, P, rng.uniform(0.3, 2.0))
        A = np.linalg.svd(J, full_matrices=False)[0]
        rest = A[:, 1:-1] @ haar(rng, m - 2, K - 2) if K > 2 else np.zeros((m, 0))
        U = np.column_stack([A[:, 0], A[:, -1], rest])
        GZ = (haar(rng, K) * (10.0 ** rng.uniform(0, 2, K))) @ U.T
        Q, sR = _procrustes_rows(GZ)
        cJ = cond(J)
        m_[i], t_[i] = -abs(cond(sR * Q @ J) / cJ - 1.0), 1e3 * EPS * cJ**2
    return Check("D(s_R Q_Z J) = cond(J) when span(U) holds J's extreme directions", m_, t_)


def network_snapshot(bench: Any, model: torch.nn.Module, batch: Sequence[torch.Tensor],
                     w: np.ndarray | None = None) -> dict[str, Any]:
    """Everything Def. 3 needs at one point of a real network, in float64 numpy.

    Forward ``batch`` through ``model`` (an :class:`~mtl_src.benchmarks.base.MTLModel`); G_Z (K x m)
    and G_theta (K x P) by :func:`~mtl_src.autodiff.task_gradients`, the full Jacobian J (m x P) of
    the flattened representation Z w.r.t. the encoder's parameters (m backward passes), and:
    ``chain_rule_err`` = |G_theta - G_Z J| / |G_theta| (float32 autograd), ``dead`` = share of the
    entries of Z whose row of J is zero (ReLU units off for that input), the eigenvalues of J J^T,
    the isometry defect |J J^T / lam_mean - I|_2 on all rows and on the live rows, cond(J) on the
    live rows, the dominance of G_theta, of G_Z and of the Z-aligned system s_R Q_Z J, and the cosine
    between the theta-aligned and the Z-aligned directions.
    """
    x = batch[0]
    Z, outs = model(x)
    losses = bench.losses(outs, batch)
    K = int(losses.shape[0])
    w = np.ones(K) if w is None else np.asarray(w, float)
    shared = model.shared_parameters()
    GZ = task_gradients(losses, [Z], retain_graph=True).double().numpy()
    Gt = task_gradients(losses, shared, retain_graph=True).double().numpy()
    J = task_gradients(Z.reshape(-1), shared, mode="loop").double().numpy()
    live = np.abs(J).sum(1) > 0
    M = J @ J.T
    lam = np.linalg.eigvalsh(M)
    Ml = M[np.ix_(live, live)]
    lam_l = np.linalg.eigvalsh(Ml)

    def defect(A: np.ndarray, ev: np.ndarray) -> float:
        return float(np.linalg.norm(A / ev.mean() - np.eye(len(A)), 2))

    rt = authors_rtol(K, torch.float32)
    d_t = aligned_parts(Gt, w, rt)[0]
    d_z, _ = z_aligned(GZ, J, w, rt)
    Q, sR = _procrustes_rows(GZ, rt)
    return {
        "m": J.shape[0], "P": J.shape[1], "J": J, "GZ": GZ, "Gtheta": Gt, "live": live,
        "chain_rule_err": float(np.linalg.norm(Gt - GZ @ J) / np.linalg.norm(Gt)),
        "dead": float(1.0 - live.mean()), "eig_JJt": lam, "eig_JJt_live": lam_l,
        "defect_all": defect(M, lam), "defect_live": defect(Ml, lam_l),
        "cond_J_live": float(math.sqrt(lam_l[-1] / lam_l[0])) if lam_l[0] > 0 else math.inf,
        "D_Gtheta": dominance_rate(torch.from_numpy(Gt)), "D_GZ": dominance_rate(torch.from_numpy(GZ)),
        "D_Zsystem": cond(sR * Q @ J),
        "cos_theta_Z": float(d_t @ d_z / (np.linalg.norm(d_t) * np.linalg.norm(d_z))),
        "norm_ratio_Z_theta": float(np.linalg.norm(d_z) / np.linalg.norm(d_t)),
    }


# --------------------------------------------------------------------------------------------------
# Theorems 1-2 (main, App. B, Eqs. 13-26; supp. Thm 2): one step on smooth problems with known Lambda
# --------------------------------------------------------------------------------------------------
def theorem2_draws(rng: np.random.Generator, n: int, jacobian: str = "random") -> pd.DataFrame:
    """Tasks that see theta only through a linear representation Z = J theta:
    L_i = 1/2 (Z - c_i)^T A_i (Z - c_i), so G_Z rows are A_i (Z - c_i), G_theta = G_Z J, and
    L0 = sum_i w_i L_i is Lam-smooth with Lam = lambda_max(J^T (sum_i w_i A_i) J) exactly.

    ``jacobian``: "identity" (J = I: Z-aligned = theta-aligned, main Thm 1), "isometric"
    (J J^T = lam^2 I, m < P), "random" (wide J, m <= P, full row rank, condition number 10^U(0, 2)),
    "tall" (m > P: P in 1..m-1, rank J = P = min(m, P), condition number s_1/s_P = 10^U(0, 2); J J^T is
    singular, and C_l = s_P/s_1 is the reading of supp. Thm 2's rank hypothesis).
    Per draw K in 2..5, m in 2..12, task conditions 10^U(0, 3), a = 1/Lam (30 %) or U(0, 1)/Lam, one
    Z-aligned step (exact rank). Records the decrease of L0 and the constants of Eq. 25 at their
    largest admissible values: C_s = s_R/s_1 of G_Z, C_l = l_min/l_1 of J, eps = |V^T w|.
    """
    rows = []
    for _ in range(n):
        K = int(rng.integers(2, 6))
        m = int(rng.integers(2, 13))
        if jacobian == "identity":
            P, J = m, np.eye(m)
        elif jacobian == "isometric":
            P = int(rng.integers(m, 25))
            J = isometric_jacobian(rng, m, P, 10.0 ** rng.uniform(-1, 1))
        elif jacobian == "random":
            P = int(rng.integers(m, 25))
            J = random_gradients(rng, m, P, rng.uniform(0.0, 2.0))
        elif jacobian == "tall":
            P = int(rng.integers(1, m))
            J = random_gradients(rng, m, P, rng.uniform(0.0, 2.0))
        elif jacobian != "adversarial":
            raise ValueError("jacobian must be 'identity', 'isometric', 'random', 'tall' or 'adversarial'")
        if jacobian == "adversarial":
            # the shape of theorem2_counterexample, randomised: K = 2, G_Z = diag(1, s) U^T, w mostly
            # along the weak direction, J with a moderate condition number, A_i = I, theta = 0
            K, P = 2, int(rng.integers(m, 25))
            J = random_gradients(rng, m, P, rng.uniform(0.0, 1.0))
            GZ0 = np.diag([1.0, 10.0 ** rng.uniform(-3, -1)]) @ haar(rng, m, 2).T
            prob = quadratic.QuadraticTasks(np.stack([np.eye(m)] * 2), -GZ0)
            w = np.array([10.0 ** rng.uniform(-2, 0), 1.0])
            theta = np.zeros(P)
        else:
            prob = quadratic.random_tasks(K, m, rng, cond=10.0 ** rng.uniform(0, 3), spread=10.0 ** rng.uniform(-1, 1))
            w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
            theta = np.linalg.lstsq(J, prob.c.mean(0), rcond=None)[0] + rng.standard_normal(P) * 10.0 ** rng.uniform(-1, 1)
        Lam = float(np.linalg.eigvalsh(J.T @ prob.hessian(w) @ J)[-1])
        a = (1.0 if rng.random() < 0.3 else rng.uniform(0.0, 1.0)) / Lam
        GZ = prob.jacobian(J @ theta)
        d, _ = z_aligned(GZ, J, w)
        _, Cs, eps = aligned_parts(GZ, w)
        sJ = np.linalg.svd(J, compute_uv=False)
        L0 = float(w @ prob.losses(J @ theta))
        L1 = float(w @ prob.losses(J @ (theta - a * d)))
        g0 = J.T @ (GZ.T @ w)
        s1 = float(np.linalg.svd(GZ, compute_uv=False)[0])
        rows.append({"K": K, "m": m, "P": P, "alpha": a, "Lam": Lam, "L0": L0, "L1": L1, "decrease": L0 - L1,
                     "g0_sq": float(g0 @ g0), "C_s": float(Cs), "C_l": float(sJ[-1] / sJ[0]), "eps": float(eps),
                     "s_1": s1, "s_R": float(Cs) * s1,
                     "w_sq": float(w @ w), "D_GZ": 1.0 / float(Cs), "cond_J": float(sJ[0] / sJ[-1])})
    return pd.DataFrame(rows)


def theorem2_checks(df: pd.DataFrame) -> dict[str, Check]:
    """Per draw, margin = decrease / bound - 1 for

    - ``Eq. 25``: a eps^2 C_s^2 C_l^2 |g0|^2 / (2 |w|^2) (supp. Thm 2 final bound; main Eq. 25);
    - ``descent``: bound 0, i.e. the step does not increase L0 (margin = decrease / (a |g0|^2));
    - ``Eq. 16``: a s_R^2 eps^2 / 2, the bound main Eq. 16's middle expression gives (its sum has
      every factor 2 s_r/s_R - 1 >= 1 and sum_r (w^T v_r)^2 = eps^2); meaningful for J = I (Thm 1);
    - ``Eq. 16 as printed``: a s_R^2 eps^2 s_1^2 / 2 (the printed right-hand side ends with an extra
      factor s_1^2). It is not invariant under scaling the losses (see :func:`eq16_scaling`): for a
      convex quadratic the decrease is at most a <g0, d> = a s_R sum_r s_r (w^T v_r)^2
      <= a s_R s_1 eps^2, below the printed bound whenever s_R s_1 > 2.

    Tolerance: loss rounding 64 eps (|L0| + |L1|) relative to the bound.
    """
    a, Cs, Cl, e, w2, g0, dec = (df[k].to_numpy() for k in ("alpha", "C_s", "C_l", "eps", "w_sq", "g0_sq", "decrease"))
    rnd = 64 * EPS * (np.abs(df["L0"].to_numpy()) + np.abs(df["L1"].to_numpy()))
    B = a * e**2 * Cs**2 * Cl**2 * g0 / (2 * w2)
    out = {"Eq. 25": Check("Eq. 25: dL0 >= a eps^2 Cs^2 Cl^2 |g0|^2 / (2|w|^2)", dec / B - 1.0, rnd / B)}
    scale = a * g0  # the size of a first-order decrease
    out["descent"] = Check("Z-aligned step does not increase L0", dec / scale, rnd / scale)
    if {"s_1", "s_R"} <= set(df.columns):
        s1, sR = df["s_1"].to_numpy(), df["s_R"].to_numpy()
        B16 = a * sR**2 * e**2 / 2
        out["Eq. 16"] = Check("Eq. 16 (middle term): dL0 >= a s_R^2 eps^2 / 2", dec / B16 - 1.0, rnd / B16)
        B16p = B16 * s1**2
        out["Eq. 16 as printed"] = Check("Eq. 16 as printed: dL0 >= a s_R^2 eps^2 s_1^2 / 2", dec / B16p - 1.0,
                                         rnd / B16p, {"s_R s_1": sR * s1})
    return out


def eq16_scaling(c: float) -> dict[str, float]:
    """Main Eq. 16 as printed under a rescaling of the losses. Two unit-curvature tasks with minima
    e_1, e_2, theta = 0, w = 1 (orthogonal gradients of norm 1: s_1 = s_R = 1, eps^2 = 2), all losses
    multiplied by c: G scales by c, Lam by c, a = 1/Lam by 1/c, the decrease by c, but the printed
    bound a s_R^2 eps^2 s_1^2 / 2 by c^3. Returns the decrease, the printed bound and the bound without
    the extra s_1^2 (a s_R^2 eps^2 / 2; equal to the decrease here, the tight case of Theorem 1)."""
    prob = quadratic.QuadraticTasks(np.stack([c * np.eye(2)] * 2), np.eye(2))
    w, theta = np.ones(2), np.zeros(2)
    a = 1.0 / prob.smoothness(w)
    G = prob.jacobian(theta)
    d, Cs, eps = aligned_parts(G, w)
    s = np.linalg.svd(G, compute_uv=False)
    dec = float(w @ prob.losses(theta) - w @ prob.losses(theta - a * d))
    return {"c": c, "decrease": dec, "Eq. 16 printed": float(a * s[-1] ** 2 * eps**2 * s[0] ** 2 / 2),
            "Eq. 16 without s_1^2": float(a * s[-1] ** 2 * eps**2 / 2)}


def theorem2_counterexample(s: float = 0.01, w1: float = 0.1, rho: float = 0.5) -> dict[str, float]:
    """A two-parameter instance of main Thm 2 / supp. Thm 2 where the Z-aligned step *increases* L0.

    Z = J theta with J = sqrtm([[1, -rho], [-rho, 1]]) (full rank, cond sqrt((1 + rho)/(1 - rho))),
    tasks L_i = 1/2 |Z - c_i|^2 with c_1 = -(1, 0), c_2 = -(0, s), theta = 0, so G_Z = diag(1, s)
    (dominance 1/s, V = U = I); w = (w1, 1), |V^T w| = |w|; a = 1/Lam. With u = G_Z^T w and
    v = s U V^T w the first-order change of L0 is -a u^T J J^T v = -a s (w1^2 + s - rho w1 (1 + s)),
    negative for the defaults: the step goes uphill although every hypothesis holds with finite
    constants. Returns the decrease of L0, Eq. 25's bound, <g0, d> and the constants.
    """
    M = np.array([[1.0, -rho], [-rho, 1.0]])
    ev, E = np.linalg.eigh(M)
    J = (E * np.sqrt(ev)) @ E.T
    GZ0 = np.diag([1.0, s])
    prob = quadratic.QuadraticTasks(np.stack([np.eye(2)] * 2), -GZ0)
    w = np.array([w1, 1.0])
    theta = np.zeros(2)
    Lam = float(np.linalg.eigvalsh(J.T @ prob.hessian(w) @ J)[-1])
    a = 1.0 / Lam
    GZ = prob.jacobian(J @ theta)
    d, _ = z_aligned(GZ, J, w)
    _, Cs, eps = aligned_parts(GZ, w)
    sJ = np.linalg.svd(J, compute_uv=False)
    g0 = J.T @ GZ.T @ w
    dec = float(w @ prob.losses(J @ theta) - w @ prob.losses(J @ (theta - a * d)))
    bound = a * eps**2 * Cs**2 * (sJ[-1] / sJ[0]) ** 2 * float(g0 @ g0) / 2 / float(w @ w)
    return {"decrease": dec, "Eq. 25 bound": float(bound), "<g0, d>": float(g0 @ d), "D(G_Z)": 1 / float(Cs),
            "cond(J)": float(sJ[0] / sJ[-1]), "eps = |V^T w|": float(eps), "Lam": Lam}


def _z_run(J: np.ndarray, GZ_of: Any, L_of: Any, w: np.ndarray, a: float, T: int, theta: np.ndarray,
           c_norm: float, LamZ: float) -> dict[str, np.ndarray]:
    """T Z-aligned steps theta <- theta - a J^T d_Z(theta) (Def. 3, exact rank) on tasks that see theta
    only through Z = J theta; ``GZ_of(Z)`` is the K x m matrix of gradients w.r.t. Z, ``L_of(Z)`` the K
    losses. Stops early where G_Z = 0. Returns per step t (up to the stop): ``L`` (L0(theta_t), one
    entry more than the steps), ``g0_sq`` = |grad L0(theta_t)|^2, ``C_s`` = s_R/s_1 of G_Z, ``eps`` =
    |V^T w|, ``g0_first`` / ``g0_last`` = |grad L0| at the first and the last iterate, ``theta`` the last
    iterate, and ``rnd``, the rounding of L0_t - L0_t+1: loss rounding 64 eps (|L0_t| + |L0_t+1|) plus
    the change of the losses caused by the resolution 2 eps (|Z| + c_norm) of Z - c (``LamZ`` bounds the
    curvature in Z), as in :func:`~mtl_src.theory.aligned.trajectory_checks`."""
    L, g2, Cs_, ep_, rnd_ = [], [], [], [], []
    g_first = None
    for t in range(T + 1):
        Z = J @ theta
        GZ = GZ_of(Z)
        L.append(float(w @ L_of(Z)))
        g0 = J.T @ (GZ.T @ w)
        g_first = float(np.linalg.norm(g0)) if g_first is None else g_first
        if t == T or not np.any(GZ):
            break
        d, _ = z_aligned(GZ, J, w)
        _, Cs, eps = aligned_parts(GZ, w)
        th1 = theta - a * d
        L1 = float(w @ L_of(J @ th1))
        delta = 2 * EPS * (np.linalg.norm(Z) + c_norm)
        rnd_.append(64 * EPS * (abs(L[-1]) + abs(L1))
                    + 2 * (4 * float(np.linalg.norm(GZ, axis=1) @ w) * delta + LamZ * delta**2))
        g2.append(float(g0 @ g0)), Cs_.append(float(Cs)), ep_.append(float(eps))
        theta = th1
    return {"L": np.array(L), "g0_sq": np.array(g2), "C_s": np.array(Cs_), "eps": np.array(ep_), "rnd": np.array(rnd_),
            "g0_first": g_first, "g0_last": float(np.linalg.norm(g0)), "theta": theta}


def summed_bound_margins(run: dict[str, np.ndarray], a: float, Cl: float, w2: float, Lstar: float
                         ) -> tuple[float, float, float, float]:
    """Main Eq. 18 (J = I) / Eq. 26 (Z-aligned) *summed* over a run of :func:`_z_run`.

    Summing the per-step inequality |g0_t|^2 <= 2|w|^2 (L0_t - L0_t+1) / (a C^2 C_l^2 eps^2) over
    t < T' with constants valid at every step (the proof's uniform C, eps; we take the run's worst
    ones, C(T') = min_{t<T'} C_s,t and eps(T') = min_{t<T'} eps_t, C_l fixed since J is constant)
    telescopes to

        S(T') = sum_{t<T'} |g0_t|^2 <= 2|w|^2 (L0_0 - L0_T') / (a C(T')^2 C_l^2 eps(T')^2)      (telescoped)
                                    <= 2|w|^2 (L0_0 - L0*)   / (a C(T')^2 C_l^2 eps(T')^2)      (with L0*).

    Returns, each the worst over every horizon T' = 1..steps: (margin, tolerance) of the telescoped
    form and of the form with L0*; margin = (bound - S) / bound. Tolerance: 1e3 eps for the sums plus
    the accumulated loss rounding relative to the bound."""
    g2, C, e, L, rnd = run["g0_sq"], run["C_s"], run["eps"], run["L"], run["rnd"]
    if len(g2) == 0:
        return math.inf, 0.0, math.inf, 0.0
    S = np.cumsum(g2)
    k = a * np.minimum.accumulate(C) ** 2 * Cl**2 * np.minimum.accumulate(e) ** 2 / (2 * w2)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = []
        for top in (L[0] - L[1:], np.full(len(g2), L[0] - Lstar)):
            B = top / k
            tol = 1e3 * EPS + np.cumsum(rnd) / np.abs(top)
            q = np.where(k > 0, (B - S) / np.abs(B), np.inf)
            i = int(np.argmin(q + tol))
            out += [float(q[i]), float(tol[i])]
    return out[0], out[1], out[2], out[3]


def _pl_linear_margin(run: dict[str, np.ndarray], a: float, Cl: float, w2: float, mu: float, Lstar: float
                      ) -> tuple[float, float, int]:
    """Worst step of the linear contraction L0_t+1 - L* <= (1 - a mu C_s,t^2 C_l^2 eps_t^2 / |w|^2)(L0_t - L*)
    that the per-step bound (Eq. 25) gives with the Polyak-Lojasiewicz inequality |g0|^2 >= 2 mu (L0 - L*).
    A step is judged where both sides exceed 1e3 times the rounding; returns (margin 1 - ratio,
    tolerance, judged steps); margin +inf where no step is judged."""
    gap, rnd = run["L"] - Lstar, run["rnd"]
    n = len(run["g0_sq"])
    if n == 0:
        return math.inf, 0.0, 0
    pred = (1.0 - a * mu * run["C_s"] ** 2 * Cl**2 * run["eps"] ** 2 / w2) * gap[:-1]
    judged = (gap[:-1] > 1e3 * rnd) & (pred > 1e3 * rnd)
    if not judged.any():
        return math.inf, 0.0, 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(judged, 1.0 - gap[1:] / pred, np.inf)
        tol = np.where(judged, 2 * rnd / pred, 0.0)
    i = int(np.argmin(q + tol))
    return float(q[i]), float(tol[i]), int(judged.sum())


def theorem2_trajectories(rng: np.random.Generator, n: int, T: int, jacobian: str = "isometric",
                          gd_tol: float = 1e-6) -> dict[str, Any]:
    """Eq. 26 along runs: ``n`` problems Z = J theta, L_i = 1/2 (Z - c)^T A_i (Z - c) with a *common*
    minimiser c in representation space (so L0 can reach its minimum L0* = 0; with different minima
    aligned descent stops early, first chapter), K in 2..4, m in 2..8, P in m..16, task conditions
    10^U(0, 2), w = 1 or random positive, a = 1/Lam, T Z-aligned steps from theta_0 = J^+ c + N(0, I).
    ``jacobian``: "identity" (J = I, P = m: theta-aligned descent, main Thm 1), "isometric"
    (J J^T = lam^2 I) or "random" (condition number 10^U(0, 1)).

    Checks, one margin per run:

    - ``Eq. 26 every step``: worst step of 2|w|^2 dL0_t / (a C_s,t^2 C_l^2 eps_t^2 |g0_t|^2) - 1, the
      per-step inequality Eq. 26 sums (constants of step t). A step is judged where the bound exceeds
      1e3 times the loss rounding 64 eps (|L_t| + |L_t+1|); ``info["unjudged runs"]`` counts runs with
      no judged step (margin +inf there) and the check is refused (ValueError) if every run is
      unjudged;
    - ``summed``: main Eq. 18 / Eq. 26 summed over the run with the run's worst constants and L0*,
      at every horizon (:func:`summed_bound_margins`); ``telescoped``: the same with L0_T' in place of
      L0* (the stronger intermediate form);
    - ``linear (PL)``: the per-step linear contraction of :func:`_pl_linear_margin` with the PL constant
      mu = lambda_min(sum_i w_i A_i) s_m(J)^2 of L0(theta) (valid for J of full row rank);
    - ``converged``: log10(gd_tol |g0_0| / |g0_T|) >= 0 (Eq. 26's conclusion |g0_t| -> 0, reached
      only if the constants stay bounded away from 0; ``min C_s`` holds each run's smallest s_R/s_1).

    The rounding allowance adds to the loss rounding the change of the losses caused by the
    resolution 2 eps (|Z| + |c|) of Z - c (as in :func:`~mtl_src.theory.aligned.trajectory_checks`).
    """
    if jacobian not in ("identity", "isometric", "random"):
        raise ValueError("jacobian must be 'identity', 'isometric' or 'random'")
    m26, t26, mconv, cmin = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    ms, ts, mtel, ttel, mpl, tpl = (np.empty(n) for _ in range(6))
    unjudged = 0
    for i in range(n):
        K = int(rng.integers(2, 5))
        m = int(rng.integers(2, 9))
        P = int(rng.integers(m, 17))
        if jacobian == "identity":
            P, J = m, np.eye(m)
        else:
            J = (isometric_jacobian(rng, m, P, 10.0 ** rng.uniform(-1, 1)) if jacobian == "isometric"
                 else random_gradients(rng, m, P, rng.uniform(0.0, 1.0)))
        prob = quadratic.random_tasks(K, m, rng, cond=10.0 ** rng.uniform(0, 2))
        prob.c[:] = prob.c[0]
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        Lam = float(np.linalg.eigvalsh(J.T @ prob.hessian(w) @ J)[-1])
        a = 1.0 / Lam
        sJ = np.linalg.svd(J, compute_uv=False)
        Cl = float(sJ[-1] / sJ[0])
        theta = np.linalg.lstsq(J, prob.c[0], rcond=None)[0] + rng.standard_normal(P)
        w2 = float(w @ w)
        evZ = np.linalg.eigvalsh(prob.hessian(w))
        run = _z_run(J, prob.jacobian, prob.losses, w, a, T, theta, float(np.linalg.norm(prob.c[0])), float(evZ[-1]))
        L, g2, Cs, eps, rnd = run["L"], run["g0_sq"], run["C_s"], run["eps"], run["rnd"]
        B = a * Cs**2 * Cl**2 * eps**2 * g2 / (2 * w2)
        judged = B > 1e3 * rnd
        unjudged += int(not judged.any())
        if judged.any():
            q = np.where(judged, (L[:-1] - L[1:]) / np.where(judged, B, 1.0) - 1.0, np.inf)
            qt = np.where(judged, rnd / np.where(judged, B, 1.0), 0.0)
            j = int(np.argmin(q + qt))
            m26[i], t26[i] = q[j], qt[j]
        else:
            m26[i], t26[i] = np.inf, 0.0
        mconv[i] = math.log10(gd_tol * run["g0_first"] / max(run["g0_last"], 1e-300))
        cmin[i] = Cs.min() if len(Cs) else math.inf
        mtel[i], ttel[i], ms[i], ts[i] = summed_bound_margins(run, a, Cl, w2, 0.0)
        mpl[i], tpl[i], _ = _pl_linear_margin(run, a, Cl, w2, float(evZ[0]) * float(sJ[-1]) ** 2, 0.0)
    if unjudged == n:
        raise ValueError("no run has a step where Eq. 26's bound exceeds the rounding: nothing was checked; "
                         "use larger initial distances or fewer steps")
    tag = {"identity": "J = I", "isometric": "J J^T = lam^2 I", "random": "random J"}[jacobian]
    eq = "Eq. 18" if jacobian == "identity" else "Eq. 26"
    return {"Eq. 26 every step": Check(f"Eq. 26 at every step of Z-aligned descent ({tag})", m26, t26,
                                       {"unjudged runs": unjudged}, unit="runs"),
            "summed": Check(f"{eq} summed: sum_t |g0_t|^2 <= 2|w|^2 (L0_0 - L0*)/(a C^2 C_l^2 eps^2), "
                            f"worst constants, every horizon ({tag})", ms, ts, unit="runs"),
            "telescoped": Check(f"{eq} telescoped: the same with L0_T' for L0* ({tag})", mtel, ttel, unit="runs"),
            "linear (PL)": Check(f"L0_t+1 - L* <= (1 - a mu C_s^2 C_l^2 eps^2/|w|^2)(L0_t - L*) every step ({tag})",
                                 mpl, tpl, unit="runs"),
            "converged": Check(f"|g0_T| <= {gd_tol:g} |g0_0| after {T} Z-aligned steps ({tag})", mconv,
                               unit="runs"), "min C_s": cmin}


def summed_bound_step_size(rng: np.random.Generator, n: int, T: int, alpha_lam: tuple[float, float] = (1.05, 1.95)
                           ) -> Check:
    """The constructed failure of the summed bound (main Eqs. 18 / 26): the step size above 1/Lam.

    One task L = (l / 2)|Z - c|^2 (l = 10^U(-1, 1)), Z = J theta with J J^T = s^2 I (m in 2..8,
    P in m..16), w = 1: G_Z is one row, C_s = C_l = 1, eps = |w| = 1, and the Z-aligned step is the
    gradient step, so Z - c contracts by q = 1 - a Lam with Lam = s^2 l. The ratio of the sum over T'
    steps to the bound with L0* is (1 - q^(2T')) / (2 - a Lam) (ours): at most 1 for a Lam <= 1
    (equality at a Lam = 1 once T' >= 1) and above 1 at *every* horizon T' >= 1 for 1 < a Lam < 2
    (there q^2 < |q| = a Lam - 1). ``alpha_lam``: the range of a Lam. (With several tasks of equal
    isotropic curvature G_Z would have rank one only up to rounding, and the exact-rank Z-aligned step
    would follow the rounding noise.) Returns the summed check with L0* (:func:`summed_bound_margins`)."""
    mm, tt = np.empty(n), np.empty(n)
    for i in range(n):
        m = int(rng.integers(2, 9))
        P = int(rng.integers(m, 17))
        J = isometric_jacobian(rng, m, P, 10.0 ** rng.uniform(-1, 1))
        lam = 10.0 ** rng.uniform(-1, 1)
        prob = quadratic.QuadraticTasks(lam * np.eye(m)[None], rng.standard_normal((1, m)))
        w = np.ones(1)
        Lam = float(np.linalg.eigvalsh(J.T @ prob.hessian(w) @ J)[-1])
        a = rng.uniform(*alpha_lam) / Lam
        theta = np.linalg.lstsq(J, prob.c[0], rcond=None)[0] + rng.standard_normal(P)
        run = _z_run(J, prob.jacobian, prob.losses, w, a, T, theta, float(np.linalg.norm(prob.c[0])), lam)
        _, _, mm[i], tt[i] = summed_bound_margins(run, a, 1.0, 1.0, 0.0)
    return Check(f"summed bound with L0*, a Lam in {alpha_lam} (one isotropic task)", mm, tt, unit="runs")


def theorem2_counterexample_run(T: int = 200, s: float = 0.01, w1: float = 0.1, rho: float = 0.5) -> dict[str, float]:
    """The summed bound along a run started at :func:`theorem2_counterexample` (T Z-aligned steps,
    exact rank, a = 1/Lam; the tasks have different minima, L0* = min L0 > 0). Returns L0 at the start,
    at the end and L0*, the smallest C_s met, |grad L0| at the end relative to the start, and the
    margins (worst over every horizon, :func:`summed_bound_margins`) of the telescoped form (negative
    once L0 has gone up) and of the form with L0* (positive but vacuous as C_s -> 0)."""
    M = np.array([[1.0, -rho], [-rho, 1.0]])
    ev, E = np.linalg.eigh(M)
    J = (E * np.sqrt(ev)) @ E.T
    prob = quadratic.QuadraticTasks(np.stack([np.eye(2)] * 2), -np.diag([1.0, s]))
    w = np.array([w1, 1.0])
    Lam = float(np.linalg.eigvalsh(J.T @ prob.hessian(w) @ J)[-1])
    a = 1.0 / Lam
    Lstar = float(w @ prob.losses(prob.minimizer(w)))
    run = _z_run(J, prob.jacobian, prob.losses, w, a, T, np.zeros(2), 1.0, 1.0)
    mt, tt, ms, ts = summed_bound_margins(run, a, 1.0 / cond(J), float(w @ w), Lstar)
    return {"L0_0": float(run["L"][0]), "L0_T": float(run["L"][-1]), "L0*": Lstar, "min C_s": float(run["C_s"].min()),
            "|g0_T|/|g0_0|": run["g0_last"] / run["g0_first"], "telescoped margin": mt, "telescoped tol": tt,
            "summed margin": ms, "summed tol": ts}


# --------------------------------------------------------------------------------------------------
# supp. Thms 1-2: "converges linearly"
# --------------------------------------------------------------------------------------------------
def quartic_loss(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The task loss of the supp. Thm 2 counter-case (:func:`linear_rate_quartic`):
    phi(z) = z^4/4 for |z| <= 1 and 3z^2/2 - 2|z| + 3/4 beyond (the C^2 quadratic continuation),
    elementwise, with phi'. Bounded below by 0 = phi(0), phi'' = 3 min(z^2, 1) <= 3: a Lipschitz
    gradient, but phi''(0) = 0, so no Polyak-Lojasiewicz inequality holds near the minimiser."""
    z = np.asarray(z, float)
    a = np.abs(z)
    inner = a <= 1.0
    f = np.where(inner, a**4 / 4, 1.5 * a**2 - 2 * a + 0.75)
    g = np.where(inner, z**3, 3 * z - 2 * np.sign(z))
    return f, g


def linear_rate_quartic(rng: np.random.Generator, n: int, T: int) -> dict[str, Any]:
    """Supp. Thm 2 ("converges linearly") on tasks that meet every stated hypothesis with the best
    constants: K in 1..4 tasks, task i sees only entry i of Z = J theta (m = K, P in m..16, J J^T = s^2 I,
    so cond J = 1, rank J = m = min(m, P)), L_i = phi(Z_i) (:func:`quartic_loss`: bounded below, gradient
    Lipschitz with Lam = 3 s^2 for L0 = sum_i L_i), w = 1, a = 1/Lam, theta_0 with Z_0 = z_0 (1, .., 1),
    z_0 = U(0.3, 1) (plus a random null-space component of J). G_Z = z^3 I: C_s = 1, eps = |w| at every
    step, and each entry follows z_t+1 = z_t - z_t^3 / 3 (ours), whence
    2/3 <= 1/z_t+1^2 - 1/z_t^2 <= 3/2 for z_t <= 1 and, with gap_t = L0_t - L0* = K z_t^4 / 4,

        gap_0 / (1 + 3/2 z_0^2 t)^2  <=  gap_t  <=  gap_0 / (1 + 2/3 z_0^2 t)^2         (sandwich, ours):

    gap_t decays like 1/t^2 and no geometric sequence stays above the lower bound.

    Checks, one margin per run: ``Eq. 25`` at every step (margin dec / bound - 1; holds: the step is
    a gradient step); ``sandwich`` min over t of the log of both ratios (tolerance 1e-9); ``linear at
    the initial rate``: gap_t <= q_0^t gap_0 for every t, q_0 = 1 - a mu_0 C_s^2 eps^2 / |w|^2 with
    mu_0 = |g0_0|^2 / (2 gap_0) the PL ratio at theta_0 (the contraction the proof's per-step bound
    gives where PL holds with the start's constant; margin min_t log10(q_0^t gap_0 / gap_t));
    ``summed`` main Eq. 26 summed (:func:`summed_bound_margins`). Also the PL ratio mu_t / mu_0 at the
    last step (mu_t = |g0_t|^2 / (2 gap_t) -> 0) and T (1 - r_T) with r_t = gap_t+1 / gap_t, whose
    limit is 2 (the per-step contraction tends to 1 like 1 - 2/t)."""
    m25, ms, ts, ml, msw, mu_last, tail = (np.empty(n) for _ in range(7))
    for i in range(n):
        K = int(rng.integers(1, 5))
        m = K
        P = int(rng.integers(m, 17))
        s = 10.0 ** rng.uniform(-1, 1)
        J = isometric_jacobian(rng, m, P, s)
        z0 = rng.uniform(0.3, 1.0)
        v = rng.standard_normal(P)
        theta = J.T @ np.full(m, z0) / s**2 + (v - J.T @ (J @ v) / s**2)
        w = np.ones(K)
        Lam = 3.0 * s**2
        a = 1.0 / Lam

        def GZ_of(Z: np.ndarray) -> np.ndarray:
            return np.diag(quartic_loss(Z)[1])

        def L_of(Z: np.ndarray) -> np.ndarray:
            return quartic_loss(Z)[0]

        run = _z_run(J, GZ_of, L_of, w, a, T, theta, 0.0, 3.0)
        L, g2, Cs, eps, rnd = run["L"], run["g0_sq"], run["C_s"], run["eps"], run["rnd"]
        w2 = float(w @ w)
        B = a * Cs**2 * eps**2 * g2 / (2 * w2)
        m25[i] = float(np.min((L[:-1] - L[1:]) / B - 1.0))
        _, _, ms[i], ts[i] = summed_bound_margins(run, a, 1.0, w2, 0.0)
        t = np.arange(len(L))
        gap = L
        lo = gap[0] / (1 + 1.5 * z0**2 * t) ** 2
        hi = gap[0] / (1 + 2 / 3 * z0**2 * t) ** 2
        msw[i] = float(np.min(np.minimum(np.log(gap / lo), np.log(hi / gap))[1:]))  # t = 0: both are equalities
        mu0 = g2[0] / (2 * gap[0])
        q0 = 1.0 - a * mu0 * Cs[0] ** 2 * eps[0] ** 2 / w2
        ml[i] = float(np.min(t * math.log10(q0) + math.log10(gap[0]) - np.log10(gap)))
        mu_last[i] = g2[-1] / (2 * gap[-2]) / mu0 if len(g2) > 1 else math.nan
        tail[i] = (len(L) - 2) * (1.0 - gap[-1] / gap[-2])
    tag = f"quartic tasks, {T} steps"
    return {"Eq. 25": Check(f"Eq. 25 at every step ({tag})", m25, 1e-9, unit="runs"),
            "sandwich": Check(f"gap_0/(1 + 3/2 z0^2 t)^2 <= gap_t <= gap_0/(1 + 2/3 z0^2 t)^2 ({tag})", msw, 1e-9, unit="runs"),
            "linear at the initial rate": Check(f"gap_t <= q_0^t gap_0, q_0 from Eq. 25 + PL at theta_0 ({tag})", ml, 1e-9,
                                                unit="runs"),
            "summed": Check(f"Eq. 26 summed with L0*, worst constants, every horizon ({tag})", ms, ts, unit="runs"),
            "mu_T / mu_0": mu_last, "T (1 - r_T)": tail}


# --------------------------------------------------------------------------------------------------
# tall J: more representation entries than parameters (supp. Thm 2's "rank J = min(|theta|, |Z|)")
# --------------------------------------------------------------------------------------------------
def tall_alignment_draws(rng: np.random.Generator, n: int) -> dict[str, Check]:
    """Def. 3 with a *tall* J (m x P, m > P, rank P = min(m, P), the case supp. Thm 2's rank
    hypothesis admits): K in 2..5, P in 1..10, m in P+1..P+10, G_Z of dominance up to 10^3, and J with
    orthonormal columns scaled by lam (J^T J = lam^2 I, the tall analogue of Eq. 6's hypothesis) in
    half of the draws, cond(J) = 10^U(0.3, 2) otherwise. Then J J^T = lam^2 (projector onto range J),
    singular, and the theta-gradients G_theta = G_Z J only see the part of G_Z in range J.

    Checks: ``Eq. 6`` Z-aligned == theta-aligned on the draws with J^T J = lam^2 I (margin -relative
    difference, tolerance 1e3 eps D(G_Z)); ``D <= cond(J)`` our bound on the dominance of the Z-aligned
    system s_R Q_Z J with cond(J) = s_1/s_P (margin (cond J - D)/cond J; -inf where Q_Z J loses rank,
    which it must when K > P; ``info["K > P"]`` marks those draws)."""
    m6, t6, mb, kp = [], [], np.empty(n), np.empty(n, bool)
    for i in range(n):
        K = int(rng.integers(2, 6))
        P = int(rng.integers(1, 11))
        m = int(rng.integers(P + 1, P + 11))
        GZ = random_gradients(rng, K, m, rng.uniform(0.0, 3.0))
        iso = rng.random() < 0.5
        J = (isometric_jacobian(rng, P, m, 10.0 ** rng.uniform(-1, 1)).T if iso
             else random_gradients(rng, m, P, rng.uniform(0.3, 2.0)))
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        if iso:
            d_z, _ = z_aligned(GZ, J, w)
            d_t = aligned_parts(GZ @ J, w)[0]
            m6.append(-np.linalg.norm(d_z - d_t) / max(np.linalg.norm(d_t), 1e-300))
            t6.append(1e3 * EPS * cond(GZ))
        Q, sR = _procrustes_rows(GZ)
        S = sR * Q @ J
        sv = np.linalg.svd(S, compute_uv=False)
        cJ = cond(J)
        D = math.inf if len(sv) < K or sv[-1] <= 1e3 * EPS * sv[0] * K else float(sv[0] / sv[-1])
        mb[i] = (cJ - D) / cJ if math.isfinite(D) else -math.inf
        kp[i] = K > P
    return {"Eq. 6": Check("tall J, J^T J = lam^2 I: Z-aligned == theta-aligned", np.array(m6), np.array(t6)),
            "D <= cond(J)": Check("tall J: D(s_R Q_Z J) <= cond(J) = s_1/s_P", mb, 1e3 * EPS, {"K > P": kp})}


def tall_stall_example(s: float = 0.25) -> dict[str, float]:
    """A tall J on which the Z-aligned step vanishes although grad L0 != 0 (ours).

    m = 2, P = 1, J = (1, 0)^T (J^T J = 1: rank J = 1 = min(m, P), cond J = 1, so every constant of
    supp. Thm 2 is at its best). Two tasks L_i = 1/2 |Z - c_i|^2 with G_Z = V diag(1, s) U^T at
    theta = 0, V = I, U the rotation by 45 degrees, w = (1, 1). Then Q_Z^T w = U V^T w = (0, sqrt 2)
    lies in null(J^T), so d = J^T d_Z = 0, while grad L0 = J^T G_Z^T w = J^T U (1, s) = (1 - s)/sqrt 2
    != 0 for s != 1: the method cannot leave a point that is not stationary, and Eq. 25 (whose bound
    is positive) fails. Returns |d|, |grad L0|, the decrease of L0, Eq. 25's bound (C_l = 1) and the
    number of steps the iterate moved in 100 iterations."""
    c45 = math.sqrt(0.5)
    U = np.array([[c45, -c45], [c45, c45]])
    GZ0 = np.diag([1.0, s]) @ U.T
    prob = quadratic.QuadraticTasks(np.stack([np.eye(2)] * 2), -GZ0)
    J = np.array([[1.0], [0.0]])
    w = np.ones(2)
    Lam = float(np.linalg.eigvalsh(J.T @ prob.hessian(w) @ J)[-1])
    a = 1.0 / Lam
    theta = np.zeros(1)
    GZ = prob.jacobian(J @ theta)
    d, _ = z_aligned(GZ, J, w)
    _, Cs, eps = aligned_parts(GZ, w)
    g0 = J.T @ GZ.T @ w
    dec = float(w @ prob.losses(J @ theta) - w @ prob.losses(J @ (theta - a * d)))
    bound = a * float(eps) ** 2 * float(Cs) ** 2 * float(g0 @ g0) / (2 * float(w @ w))
    th, moved = theta.copy(), 0
    for _ in range(100):
        dd, _ = z_aligned(prob.jacobian(J @ th), J, w)
        moved += int(np.abs(a * dd).max() > 1e-12)
        th = th - a * dd
    return {"|d|": float(np.linalg.norm(d)), "|grad L0|": float(np.linalg.norm(g0)), "decrease": dec,
            "Eq. 25 bound": float(bound), "C_s": float(Cs), "cond(J)": cond(J), "steps that moved": moved}


# --------------------------------------------------------------------------------------------------
# Lemma 2 (Eqs. 29-33)
# --------------------------------------------------------------------------------------------------
def lemma2_weights(G: np.ndarray, w: np.ndarray, rtol: float = 0.0, inverted: bool = False) -> np.ndarray:
    """Lemma 2's task weights w'_i = sum_k w_k a_ik, a_ik = sum_r (s_R/s_r) v_r^i v_r^k over the kept
    directions (``inverted``: s_r/s_R, a wrong variant for the counter-check)."""
    V, s, _ = np.linalg.svd(G, full_matrices=False)
    keep = s > max(rtol * s[0], 0.0)
    if not keep.any():
        return np.zeros(G.shape[0])
    V, s = V[:, keep], s[keep]
    f = s / s[-1] if inverted else s[-1] / s
    return (V * f) @ V.T @ w


def lemma2_draws(rng: np.random.Generator, n: int, space: str = "theta", inverted: bool = False,
                 deficient_fraction: float = 0.25) -> Check:
    """Lemma 2: the aligned direction equals sum_i w'_i g_i with Lemma 2's weights.

    ``space="theta"``: d = library ``aligned_mtl`` on G (eigen-solver), g_i rows of G.
    ``space="Z"``: d = J^T (library ``aligned_mtl`` on G_Z) with random wide J, g_i rows of
    G_theta = G_Z J, weights from G_Z (Eq. 32). In ``deficient_fraction`` of the draws one task
    gradient is a combination of the others (rank K - 1). Margin = -relative difference; tolerance
    1e3 eps D^2 (the eigen-solver works on G G^T). ``info``: the share of draws where some w'_i < 0
    and the smallest w'_i / max w'.
    """
    m, tol, neg = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 7))
        P = int(rng.integers(K, 41))
        lc = rng.uniform(0.0, 3.0)
        G = random_gradients(rng, K, P, lc)
        if rng.random() < deficient_fraction:
            G[-1] = rng.standard_normal(K - 1) @ G[:-1]
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        rt = authors_rtol(K)
        wp = lemma2_weights(G, w, rt, inverted)
        if space == "theta":
            d, Gt = _library_aligned(G, w), G
        else:
            J = random_gradients(rng, P, int(rng.integers(P, 61)), rng.uniform(0.0, 1.0))
            d, Gt = J.T @ _library_aligned(G, w), G @ J
        ref = Gt.T @ wp
        m[i] = -np.linalg.norm(d - ref) / max(np.linalg.norm(ref), 1e-300)
        s = np.linalg.svd(G, compute_uv=False)
        s = s[s > rt * s[0]]
        tol[i] = 1e3 * EPS * (s[0] / s[-1]) ** 2 * (1.0 if space == "theta" else cond(J) ** 2)
        neg[i] = wp.min() / np.abs(wp).max()
    label = f"Lemma 2, {space}-aligned" + (" with s_r/s_R (wrong)" if inverted else "")
    return Check(label, m, tol, {"share with a negative weight": float(np.mean(neg < 0)),
                                 "min w'_i / max |w'|": float(neg.min())})


# --------------------------------------------------------------------------------------------------
# Theorem 3 (Eqs. 34-37): heavy ball
# --------------------------------------------------------------------------------------------------
def hb_params(mu: float, Lam: float) -> tuple[float, float, float]:
    """Theorem 3's step and momentum: a = 4/(sqrt Lam + sqrt mu)^2,
    b = max(|1 - sqrt(a mu)|, |1 - sqrt(a Lam)|), and the claimed rate (sqrt g - 1)/(sqrt g + 1),
    g = Lam/mu (equal to b)."""
    a = 4.0 / (math.sqrt(Lam) + math.sqrt(mu)) ** 2
    b = max(abs(1 - math.sqrt(a * mu)), abs(1 - math.sqrt(a * Lam)))
    g = Lam / mu
    return a, b, (math.sqrt(g) - 1) / (math.sqrt(g) + 1)


def hb_matrix(H: np.ndarray, a: float, b: float) -> np.ndarray:
    """The 2P x 2P heavy-ball iteration matrix [[(1 + b) I - a H, -b I], [I, 0]] of Eq. 35."""
    P = H.shape[0]
    I = np.eye(P)
    return np.block([[(1 + b) * I - a * H, -b * I], [I, np.zeros((P, P))]])


def theorem3_matrix_draws(rng: np.random.Generator, n: int) -> dict[str, Check]:
    """Random SPD H (P in 1..10) with spectrum in [mu, Lam] (both attained), the parameters of
    :func:`hb_params`. Checks: ``Eq. 36`` |T|_2 <= b (margin (b - |T|)/b); ``rate`` spectral radius
    rho(T) <= b, the claimed rate (margin (b - rho)/b); ``sqrt`` rho(T) = sqrt(b) (margin
    -|rho/sqrt(b) - 1|, tolerance 1e-9: eigenvalues of a non-normal matrix); ``polyak``: with Polyak's
    momentum b^2 instead of b, rho(T) = b exactly (margin -|rho/b - 1|). There the eigenvalues of T for
    h = mu and h = Lam are double (a 2 x 2 Jordan block: the discriminant of z^2 - (1 + b^2 - a h) z + b^2
    vanishes at both ends), and a double eigenvalue is computed only to about sqrt(eps |T|), so the
    tolerance is 1e2 sqrt(eps |T|_2) / b."""
    m36, mr, ms, mp, tp = (np.empty(n) for _ in range(5))
    for i in range(n):
        P = int(rng.integers(1, 11))
        mu = 10.0 ** rng.uniform(-2, 1)
        Lam = mu * 10.0 ** rng.uniform(0.05, 4)
        ev = rng.uniform(mu, Lam, P)
        ev[0] = mu
        if P > 1:
            ev[1] = Lam
        Q = haar(rng, P)
        H = (Q * ev) @ Q.T
        a, b, rho_claim = hb_params(mu, Lam)
        T = hb_matrix(H, a, b)
        nrm = float(np.linalg.norm(T, 2))
        rho = float(np.abs(np.linalg.eigvals(T)).max())
        m36[i], mr[i], ms[i] = (b - nrm) / b, (b - rho) / b, -abs(rho / math.sqrt(b) - 1)
        Tp = hb_matrix(H, a, b * b)
        mp[i] = -abs(float(np.abs(np.linalg.eigvals(Tp)).max()) / b - 1)
        tp[i] = 1e2 * math.sqrt(EPS * float(np.linalg.norm(Tp, 2))) / b
    return {
            "polyak": Check("Polyak's beta = rho^2: spectral radius of T = rho", mp, tp),"Eq. 36": Check("Eq. 36: |T|_2 <= (sqrt g - 1)/(sqrt g + 1)", m36, 1e-12),
            "rate": Check("spectral radius of T <= (sqrt g - 1)/(sqrt g + 1)", mr, 1e-12),
            "sqrt": Check("spectral radius of T = sqrt((sqrt g - 1)/(sqrt g + 1))", ms, 1e-9)}


def heavy_ball(prob: quadratic.QuadraticTasks, theta0: np.ndarray, T: int, beta_rule: str = "paper",
               direction: str = "aligned", w: np.ndarray | None = None) -> dict[str, Any]:
    """T steps of theta_{t+1} = theta_t - a_t d_t + b_t (theta_t - theta_{t-1}), theta_{-1} = theta_0.

    ``direction``: "aligned" (Def. 2 with the authors' cutoff, written with Lemma 2's weights w'_t)
    or "gd" (d = G^T w, w' = w). Per step mu_t = sum_i w'_i mu_i and Lam_t = sum_i w'_i Lam_i with
    mu_i, Lam_i the extreme eigenvalues of A_i (Theorem 3's mu-hat, Lam-hat); a_t from
    :func:`hb_params`; ``beta_rule`` "paper" (b_t as in Theorem 3) or "polyak" (b_t squared,
    Polyak's classical choice). The run stops where mu_t <= 0 (Theorem 3's a_t is then undefined;
    ``undefined`` = True) or where G = 0 exactly (theta = theta*). Returns the stacked error
    E_t = |(theta_t - theta*, theta_{t-1} - theta*)| up to the stop, the claimed rates rho_t, mu_t,
    Lam_t, min_i w'_i, theta* = the minimiser of L0 and ``T_last``, the iteration matrix of the last
    step (H = sum_i w'_i A_i; for one task the matrix of every step).
    """
    K = prob.K
    w = np.ones(K) if w is None else np.asarray(w, float)
    ev = np.linalg.eigvalsh(prob.A)
    mus, Lams = ev[:, 0], ev[:, -1]
    ts = prob.minimizer(w)
    rt = authors_rtol(K)
    th_prev = th = np.asarray(theta0, float).copy()
    E, rho, mu_t, Lam_t, wmin = [], [], [], [], []
    undefined = False
    last = None
    for t in range(T + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            E.append(math.sqrt(np.sum((th - ts) ** 2) + np.sum((th_prev - ts) ** 2)))
        if t == T or not math.isfinite(E[-1]):
            break
        G = prob.jacobian(th)
        if not np.any(G):
            break
        wp = lemma2_weights(G, w, rt) if direction == "aligned" else w
        mu, Lam = float(wp @ mus), float(wp @ Lams)
        mu_t.append(mu), Lam_t.append(Lam), wmin.append(float(wp.min()))
        if not (mu > 0 and Lam > 0):
            undefined = True
            break
        a, b, r = hb_params(mu, Lam)
        rho.append(r)
        if beta_rule == "polyak":
            b = b * b
        d = G.T @ wp
        last = (wp, a, b)
        th, th_prev = th - a * d + b * (th - th_prev), th
    T_last = None if last is None else hb_matrix(np.einsum("k,kpq->pq", last[0], prob.A), last[1], last[2])
    return {"E": np.array(E), "rho": np.array(rho), "mu": np.array(mu_t), "Lam": np.array(Lam_t),
            "wmin": np.array(wmin), "theta_star": ts, "undefined": undefined, "T_last": T_last}


def _fit_window(E: np.ndarray, floor: float = 1e-11) -> np.ndarray | None:
    """The steps the rate is fitted on: the second half of the steps where E_t > floor E_0."""
    ok = np.isfinite(E) & (E > floor * E[0])
    idx = np.flatnonzero(ok)
    if len(idx) < 8:
        return None
    last = idx[-1]
    return np.arange(last // 2, last + 1)


def _fit_rate(E: np.ndarray, floor: float = 1e-11) -> float:
    """Geometric mean contraction of E_t over the second half of the steps where E_t > floor E_0
    (least-squares slope of log E_t)."""
    t = _fit_window(E, floor)
    if t is None:
        return math.nan
    slope = np.polyfit(t, np.log(E[t]), 1)[0]
    return float(math.exp(slope))


def fit_rate_tolerance(T: np.ndarray | None, window: np.ndarray | None) -> float:
    """Relative accuracy of :func:`_fit_rate` for a *fixed* iteration matrix T (diagonalisable,
    T = X D X^{-1}, every eigenvalue of modulus r, as for heavy ball with the stated beta): then
    E_t = |T^t s_0| = r^t f_t with log f_t confined to an interval of length delta = log cond(X), and
    the least-squares slope over the window t_0..t_1 is off by at most
    (delta / 2) sum|t - mean| / sum (t - mean)^2 (in log r). Returns expm1 of that bound (inf when the
    fit has no window or T is missing). For several tasks H_t changes at every step and the value,
    computed for the last step's T, is the accuracy the fit would have if H were frozen there."""
    if T is None or window is None:
        return math.inf
    X = np.linalg.eig(T)[1]
    delta = math.log(max(np.linalg.cond(X), 1.0))
    dt = window - window.mean()
    return float(math.expm1(delta / 2 * np.abs(dt).sum() / (dt @ dt)))


def theorem3_runs(rng: np.random.Generator, n: int, T: int, K_range: tuple[int, int] = (2, 4),
                  common_minimum: bool = True, beta_rule: str = "paper", direction: str = "aligned",
                  P_range: tuple[int, int] = (2, 8)) -> dict[str, Any]:
    """Theorem 3 on ``n`` random strongly convex quadratic problems (K tasks, condition 10^U(0.5, 2)
    each, random positive w), theta_0 = theta* + N(0, I). ``common_minimum``: all tasks share their
    minimiser (the case the proof's mean-value step needs: grad L_k(theta*) = 0 for each k).

    Checks (one margin per run): ``Eq. 37`` E_{t+1} <= rho_t E_t at every step (worst step, margin
    1 - E_{t+1}/(rho_t E_t), tolerance 1e-9); ``claimed rate`` fitted rate <= max_t rho_t (margin
    1 - fit / rho); ``sqrt rate`` fitted rate <= sqrt(max_t rho_t) (margin 1 - fit / sqrt(rho));
    both with the per-run tolerance :func:`fit_rate_tolerance` (the accuracy of the fit, exact for
    one task; ``fit tol``), and a run too short to fit counts as a failure; ``converged``
    E_T <= 1e-8 E_0 (margin log10; -inf where mu-hat became <= 0 and Theorem 3's step is undefined).
    Also the fitted and claimed rates, ``fit error`` = fit / sqrt(rho) - 1 (for one task with the
    stated beta the asymptotic rate is exactly sqrt(rho), so there it is the error of the fit), the
    smallest mu-hat and w'_i, and which runs became undefined.
    """
    m37, mc, ms, mconv, fit, claim, mumin, wneg, undef, ftol = (np.empty(n) for _ in range(10))
    for i in range(n):
        K = int(rng.integers(K_range[0], K_range[1] + 1))
        P = int(rng.integers(P_range[0], P_range[1] + 1))
        prob = quadratic.random_tasks(K, P, rng, cond=10.0 ** rng.uniform(0.5, 2))
        if common_minimum:
            prob.c[:] = prob.c[0]
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        ts = prob.minimizer(w)
        run = heavy_ball(prob, ts + rng.standard_normal(P), T, beta_rule, direction, w)
        E, rho = run["E"], run["rho"]
        nst = len(rho)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            judged = E[:nst] > 1e-12 * E[0]
            q = 1.0 - E[1:nst + 1] / (rho * E[:nst])
            m37[i] = np.min(q[judged]) if judged.any() else -np.inf
        fit[i] = _fit_rate(E)
        ftol[i] = fit_rate_tolerance(run["T_last"], _fit_window(E))
        claim[i] = rho.max() if nst else math.nan
        mc[i] = 1.0 - fit[i] / claim[i]
        ms[i] = 1.0 - fit[i] / math.sqrt(claim[i])
        undef[i] = run["undefined"]
        ok = math.isfinite(E[-1]) and not run["undefined"]
        mconv[i] = math.log10(1e-8 * E[0] / max(E[-1], 1e-300)) if ok else -np.inf
        mumin[i] = run["mu"].min()
        wneg[i] = run["wmin"].min()
    tag = f"{'common' if common_minimum else 'different'} minima, K {K_range[0]}-{K_range[1]}, beta {beta_rule}"
    nn = lambda x: np.nan_to_num(x, nan=-1.0)  # noqa: E731  (a run too short to fit counts as a failure)
    ft = np.where(np.isfinite(ftol), ftol, 0.0)
    out: dict[str, Any] = {
        "Eq. 37": Check(f"Eq. 37: E_t+1 <= rho_t E_t every step ({tag})", m37, 1e-9, unit="runs"),
        "claimed rate": Check(f"fitted rate <= (sqrt g - 1)/(sqrt g + 1) ({tag})", nn(mc), ft, unit="runs"),
        "sqrt rate": Check(f"fitted rate <= sqrt((sqrt g - 1)/(sqrt g + 1)) ({tag})", nn(ms), ft, unit="runs"),
        "converged": Check(f"|theta_T - theta*| <= 1e-8 |theta_0 - theta*| ({tag})", mconv, 0.0, unit="runs"),
        "fitted": fit, "claimed": claim, "fit tol": ftol, "fit error": fit / np.sqrt(claim) - 1.0,
        "min mu_hat": mumin, "min w'": wneg, "undefined": undef.astype(bool),
    }
    return out


# --------------------------------------------------------------------------------------------------
# Table 2 and supp. Fig. 3: dominance statistics along training
# --------------------------------------------------------------------------------------------------
def pair_statistics(G: np.ndarray) -> dict[str, float]:
    """Supp. Fig. 3's four statistics of a gradient system (rows): the dominance (condition number),
    the gradient magnitude similarity of Yu et al. (K = 2: 2|g1||g2|/(|g1|^2 + |g2|^2); K > 2: the
    smallest over pairs), the smallest pairwise cosine and the largest norm ratio max |g_i|/|g_j|."""
    G = np.asarray(G, float)
    nr = np.linalg.norm(G, axis=1)
    K = len(G)
    cos = min(float(G[i] @ G[j] / (nr[i] * nr[j])) for i in range(K) for j in range(i + 1, K))
    gms = min(2 * nr[i] * nr[j] / (nr[i] ** 2 + nr[j] ** 2) for i in range(K) for j in range(i + 1, K))
    return {"dominance": cond(G), "GMS": float(gms), "min cos": cos, "max norm ratio": float(nr.max() / nr.min())}


def bound_ratio_draws(rng: np.random.Generator, n: int, tall: bool = False) -> Check:
    """Ours: D(G) >= max_{i,j} |g_i|/|g_j| when K <= P (s_1 >= max |g_i|, s_K <= min |g_i|), with
    equality for orthogonal rows (supp. Cor. 1). ``tall=True`` draws K > P, where s_K is not the
    smallest singular value of a K-row system in the same sense and the bound can fail.
    Margin = (D - ratio) / D."""
    m = np.empty(n)
    for i in range(n):
        if tall:
            P = int(rng.integers(1, 4))
            K = int(rng.integers(P + 1, 7))
        else:
            K = int(rng.integers(2, 7))
            P = int(rng.integers(K, 41))
        G = rng.standard_normal((K, P)) * 10.0 ** rng.uniform(-2, 2, (K, 1))
        st = pair_statistics(G)
        m[i] = (st["dominance"] - st["max norm ratio"]) / st["dominance"]
    return Check("D(G) >= max norm ratio" + (" (K > P)" if tall else " (K <= P)"), m, 1e3 * EPS)


def dominance_training(bench: Any, method: str, steps: int, batch_size: int = 64, lr: float = 1e-3,
                       seed: int = 0, w: Sequence[float] | None = None) -> tuple[pd.DataFrame, torch.nn.Module]:
    """Train ``bench``'s model with ``method`` (a registered aggregator) for ``steps`` Adam steps on
    shuffled training batches, recording at every step the statistics of :func:`pair_statistics` for

    - ``raw``: the task gradients G_theta w.r.t. the encoder parameters (Def. 1's system), and
    - ``system``: the system the method effectively follows: diag(alpha) G_theta for Gramian
      weightings (alpha = the method's task weights), s_R Q G_theta-rows for ``aligned_mtl``
      (the aligned system of Def. 2) and s_R(G_Z) Q_Z J for ``aligned_mtl_ub`` (Def. 3; K
      vector-Jacobian products).

    Task-specific parameters get the gradient of the summed losses, as in the library's trainer.
    Returns the records (one row per step and system) and the trained model.
    """
    torch.manual_seed(seed)
    model = bench.build_model()
    agg = methods.make(method) if w is None else methods.make(method, w=list(w))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = bench.datasets()["train"]
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)
    shared, specific = model.shared_parameters(), model.task_parameters()
    rows = []
    for t in range(steps):
        idx = order[(t * batch_size) % len(data):][:batch_size]
        if len(idx) < batch_size:
            order = torch.randperm(len(data), generator=gen)
            idx = order[:batch_size]
        batch = data[idx]
        Z, outs = model(batch[0])
        losses = bench.losses(outs, batch)
        opt.zero_grad(set_to_none=True)
        for p, g in zip(specific, torch.autograd.grad(losses.sum(), specific, retain_graph=True)):
            p.grad = g
        G = task_gradients(losses, shared, retain_graph=True)
        Gn = G.double().numpy()
        lv = losses.detach()
        rec = {"step": t, "method": method} | {f"loss_{i}": float(v) for i, v in enumerate(lv)}
        rows.append(rec | {"system": "raw"} | pair_statistics(Gn))
        if agg.space == "representation":
            GZ = task_gradients(losses, [Z], retain_graph=True)
            dZ = agg.aggregate(GZ).view_as(Z)
            Q, sR = _procrustes_rows(GZ.double().numpy(), authors_rtol(len(GZ), torch.float32))
            rowsJ = [torch.autograd.grad(Z, shared, grad_outputs=torch.from_numpy(sR * q).float().view_as(Z),
                                         retain_graph=True) for q in Q]
            S = np.stack([torch.cat([g.reshape(-1) for g in r]).double().numpy() for r in rowsJ])
            grads = torch.autograd.grad(Z, shared, grad_outputs=dZ)
            for p, g in zip(shared, grads):
                p.grad = g
        else:
            d = agg.aggregate(G)
            alpha = getattr(agg, "last_weights", None)
            if method == "aligned_mtl":
                Q, sR = _procrustes_rows(Gn, authors_rtol(len(Gn), torch.float32))
                S = sR * Q
            elif alpha is not None:
                S = alpha.double().numpy()[:, None] * Gn
            else:
                S = None
            off = 0
            for p in shared:
                p.grad = d[off:off + p.numel()].view_as(p).to(p.dtype)
                off += p.numel()
        if S is not None:
            rows.append(rec | {"system": "system"} | pair_statistics(S))
        opt.step()
    return pd.DataFrame(rows), model


def summarise_dominance(records: pd.DataFrame) -> pd.DataFrame:
    """Table 2's layout: mean, std, max, min of the dominance per method and system."""
    g = records.groupby(["method", "system"], sort=False)["dominance"]
    return g.agg(["mean", "std", "max", "min"]).reset_index()


# --------------------------------------------------------------------------------------------------
# supp. Fig. 2: the toy with preference weights
# --------------------------------------------------------------------------------------------------
def toy_aligned_batch(weights: Sequence[Sequence[float]], starts: np.ndarray, iterations: int,
                      lr: float = 1e-3, record_every: int = 1) -> np.ndarray:
    """Aligned-MTL with Adam on the toy for every (preference, start) pair at once, in numpy.

    The same arithmetic as ``train_toy("aligned_mtl", w=...)`` (the authors' eigen-solver on the
    2 x 2 Gram matrix with the cutoff lambda_max K eps, torch's Adam defaults), vectorised over runs;
    tested equal to it. Returns iterates of shape (n_weights, n_starts, n_records, 2).
    """
    W = np.asarray(weights, float)
    S0 = np.asarray(starts, float).reshape(-1, 2)
    nW, nS = len(W), len(S0)
    x = np.repeat(S0[None], nW, 0).reshape(-1, 2)
    wv = np.repeat(W, nS, 0)
    m1 = np.zeros_like(x)
    m2 = np.zeros_like(x)
    b1, b2, e = 0.9, 0.999, 1e-8
    rec = [x.copy()]
    for it in range(1, iterations + 1):
        _, G = toy.losses_and_jacobian_np(x)
        M = G @ np.swapaxes(G, 1, 2)
        lam, V = np.linalg.eigh(M)
        keep = lam > np.maximum(lam.max(1, keepdims=True), 0.0) * 2 * EPS
        lam_k = np.where(keep, lam, np.inf)
        smin2 = lam_k.min(1)
        inv = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
        Wm = np.sqrt(np.where(np.isfinite(smin2), smin2, 0.0))[:, None, None] * np.einsum("nkr,nr,njr->nkj", V, inv, V)
        alpha = np.einsum("nkj,nj->nk", Wm, wv)
        d = np.einsum("nk,nkp->np", alpha, G)
        m1 = b1 * m1 + (1 - b1) * d
        m2 = b2 * m2 + (1 - b2) * d * d
        x = x - lr / (1 - b1**it) * m1 / (np.sqrt(m2) / math.sqrt(1 - b2**it) + e)
        if it % record_every == 0:
            rec.append(x.copy())
    return np.stack(rec, 1).reshape(nW, nS, -1, 2)


def toy_weighted_optimum(w: Sequence[float], n_grid: int = 41) -> np.ndarray:
    """The global minimiser of w_1 f_1 + w_2 f_2 on [-10, 10]^2: best grid point, then L-BFGS-B."""
    from scipy.optimize import minimize

    w = np.asarray(w, float)
    g = np.linspace(-10, 10, n_grid)
    X = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    f, _ = toy.losses_and_jacobian_np(X)
    best = X[np.argsort(f @ w)[:5]]

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, G = toy.losses_and_jacobian_np(x[None])
        return float(f[0] @ w), G[0].T @ w

    sols = [minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[(-10, 10)] * 2) for x0 in best]
    return min(sols, key=lambda s: s.fun).x
