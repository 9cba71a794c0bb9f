"""Numerical checks for the second Aligned-MTL chapter
(``notebooks/aligned_mtl/02_representation_and_rates.md``): the Z-aligned gradient (main Def. 3,
Eqs. 6-8), the per-step bounds of main Thms 1-2 / supp. Thm 2 (Eqs. 16-18, 24-26), Lemma 2
(Eqs. 29-33), the heavy-ball Theorem 3 (Eqs. 34-37), and dominance statistics on MultiMNIST
(main Table 2, supp. Figs. 2-3).

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
    "theorem2_trajectories", "lemma2_weights", "lemma2_draws",
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
    (J J^T = lam^2 I, m < P), "random" (wide J, m <= P, full row rank, condition number 10^U(0, 2)).
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
        elif jacobian != "adversarial":
            raise ValueError("jacobian must be 'identity', 'isometric', 'random' or 'adversarial'")
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


def theorem2_trajectories(rng: np.random.Generator, n: int, T: int, jacobian: str = "isometric",
                          gd_tol: float = 1e-6) -> dict[str, Any]:
    """Eq. 26 along runs: ``n`` problems Z = J theta, L_i = 1/2 (Z - c)^T A_i (Z - c) with a *common*
    minimiser c in representation space (so L0 can reach its minimum; with different minima aligned
    descent stops early, first chapter), K in 2..4, m in 2..8, P in m..16, task conditions 10^U(0, 2),
    w = 1 or random positive, a = 1/Lam, T Z-aligned steps from theta_0 = J^+ c + N(0, I).
    ``jacobian``: "isometric" (J J^T = lam^2 I) or "random" (condition number 10^U(0, 1)).

    Checks, one margin per run:

    - ``Eq. 26 every step``: worst step of 2|w|^2 dL0_t / (a C_s,t^2 C_l^2 eps_t^2 |g0_t|^2) - 1, the
      per-step inequality Eq. 26 sums (constants of step t). A step is judged where the bound exceeds
      1e3 times the loss rounding 64 eps (|L_t| + |L_t+1|); ``info["unjudged runs"]`` counts runs with
      no judged step (margin +inf there) and the check is refused (ValueError) if every run is
      unjudged;
    - ``converged``: log10(gd_tol |g0_0| / |g0_T|) >= 0 (Eq. 26's conclusion |g0_t| -> 0, reached
      only if the constants stay bounded away from 0; ``min C_s`` holds each run's smallest s_R/s_1).

    The rounding allowance adds to the loss rounding the change of the losses caused by the
    resolution 2 eps (|Z| + |c|) of Z - c (as in :func:`~mtl_src.theory.aligned.trajectory_checks`).
    """
    if jacobian not in ("isometric", "random"):
        raise ValueError("jacobian must be 'isometric' or 'random'")
    m26, t26, mconv, cmin = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    unjudged = 0
    for i in range(n):
        K = int(rng.integers(2, 5))
        m = int(rng.integers(2, 9))
        P = int(rng.integers(m, 17))
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
        LamZ = float(np.linalg.eigvalsh(prob.hessian(w))[-1])
        q, qt, judged_any, csmin = np.inf, 0.0, False, math.inf
        g00 = None
        for t in range(T + 1):
            Z = J @ theta
            GZ = prob.jacobian(Z)
            g0 = J.T @ (GZ.T @ w)
            if g00 is None:
                g00 = float(np.linalg.norm(g0))
            if t == T or not np.any(GZ):
                break
            d, _ = z_aligned(GZ, J, w)
            _, Cs, eps = aligned_parts(GZ, w)
            L0 = float(w @ prob.losses(Z))
            th1 = theta - a * d
            L1 = float(w @ prob.losses(J @ th1))
            B = a * float(Cs) ** 2 * Cl**2 * float(eps) ** 2 * float(g0 @ g0) / (2 * w2)
            # loss rounding plus the resolution of Z - c (Z = J theta is rounded to 2 eps (|Z| + |c|))
            delta = 2 * EPS * (np.linalg.norm(Z) + np.linalg.norm(prob.c[0]))
            rnd = 64 * EPS * (abs(L0) + abs(L1)) + 2 * (4 * float(np.linalg.norm(GZ, axis=1) @ w) * delta + LamZ * delta**2)
            csmin = min(csmin, float(Cs))
            if B > 1e3 * rnd:
                judged_any = True
                qq = (L0 - L1) / B - 1.0
                if qq + rnd / B < q + qt:
                    q, qt = qq, rnd / B
            theta = th1
        unjudged += int(not judged_any)
        m26[i], t26[i] = q, qt
        mconv[i] = math.log10(gd_tol * g00 / max(float(np.linalg.norm(g0)), 1e-300))
        cmin[i] = csmin
    if unjudged == n:
        raise ValueError("no run has a step where Eq. 26's bound exceeds the rounding: nothing was checked; "
                         "use larger initial distances or fewer steps")
    tag = "J J^T = lam^2 I" if jacobian == "isometric" else "random J"
    return {"Eq. 26 every step": Check(f"Eq. 26 at every step of Z-aligned descent ({tag})", m26, t26,
                                       {"unjudged runs": unjudged}, unit="runs"),
            "converged": Check(f"|g0_T| <= {gd_tol:g} |g0_0| after {T} Z-aligned steps ({tag})", mconv,
                               unit="runs"), "min C_s": cmin}


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
