"""Numerical checks of the Aligned-MTL theory (chapter ``notebooks/aligned_mtl/01_alignment.md``).

Conventions, as in :mod:`mtl_src.linalg`: ``G`` is K x P, row i = gradient of task i; its SVD is
``G = V diag(s) U^T`` with ``V`` (K x R) in task space and ``U`` (P x R) in parameter space, so the
theta-aligned direction of Definition 2 is ``d = s_R U V^T w`` and the paper's ``||V w|| >= eps`` reads
``||V^T w|| >= eps`` here. ``g0 = G^T w`` is the gradient of ``L0 = sum_i w_i L_i``.

Every check returns a :class:`Check`: one dimensionless *margin* per draw (``>= 0``: the statement held
in that draw, ``< 0``: it failed) and a rounding tolerance per draw, so that ``Check.holds`` is exact
arithmetic's verdict up to float64 rounding. Tolerances are derived from the size of the quantities
that are subtracted, never tuned to make a check pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from .. import methods
from ..linalg import dominance_rate, procrustes, singular_values
from ..problems import quadratic
from .checks import Check, Ledger

__all__ = [
    "Check", "Ledger", "haar", "random_gradients", "svd_aligned", "authors_rtol", "aligned_parts",
    "dominance_invariance", "procrustes_optimality", "gram_schmidt_optimality", "aligned_unit_dominance",
    "eigen_vs_svd", "alignment_picture", "corollary1", "corollary2", "corollary2_boundary",
    "lemma1_quadratic", "lemma1_logistic", "lemma1_curves",
    "theorem1_draws", "theorem1_checks", "theorem1_tight_case", "theorem1_per_task_lambda",
    "Trajectory", "descend", "conflicting_pair", "trajectory_checks", "check_frame", "stall_draws",
    "plot_pair_runs",
]

EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------------
# random objects and the aligned direction
# --------------------------------------------------------------------------------------------------
def haar(rng: np.random.Generator, n: int, k: int | None = None) -> np.ndarray:
    """n x k matrix with orthonormal columns, Haar distributed (QR of a Gaussian, signs fixed)."""
    k = n if k is None else k
    Q, R = np.linalg.qr(rng.standard_normal((n, k)))
    return Q * np.sign(np.diag(R))


def random_gradients(rng: np.random.Generator, K: int, P: int, log10_cond: float) -> np.ndarray:
    """K x P matrix with Haar singular vectors, singular values log-uniform over ``log10_cond``
    decades (the extremes included, so the dominance rate is exactly ``10**log10_cond``)."""
    R = min(K, P)
    s = np.sort(10.0 ** rng.uniform(0.0, log10_cond, R))[::-1]
    s[0], s[-1] = 10.0 ** log10_cond, 1.0
    if R == 1:
        s[0] = 1.0
    s = s * 10.0 ** rng.uniform(-2, 2)
    return (haar(rng, K, R) * s) @ haar(rng, P, R).T


def authors_rtol(K: int, dtype: torch.dtype = torch.float64) -> float:
    """Relative singular-value cutoff of the authors' solver: eigenvalues of G G^T below
    ``lambda_max K eps`` are dropped, i.e. singular values below ``sigma_1 sqrt(K eps)``."""
    return math.sqrt(K * torch.finfo(dtype).eps)


def aligned_parts(G: np.ndarray, w: np.ndarray | None = None,
                  rtol: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Definition 2 straight from the SVD, batched over leading axes.

    Singular values ``<= rtol * s_1`` are treated as zero (``rtol = 0``: keep every non-zero one, the
    exact-arithmetic definition); ``s_R`` is the smallest kept one. Returns the direction
    ``d = s_R U V^T w``, ``C = s_R / s_1`` and ``eps = ||V_R^T w||`` (the constants of Theorem 1 at
    their largest admissible values).
    """
    G = np.asarray(G, dtype=float)
    w = np.ones(G.shape[-2]) if w is None else np.asarray(w, dtype=float)
    V, s, Ut = np.linalg.svd(G, full_matrices=False)
    keep = (s > rtol * s[..., :1]) & (s > 0)
    sR = np.where(keep, s, np.inf).min(-1)
    sR = np.where(np.isfinite(sR), sR, 0.0)
    c = np.einsum("...kr,k->...r", V, w) * keep
    d = sR[..., None] * np.einsum("...r,...rp->...p", c, Ut)
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.where(s[..., 0] > 0, sR / s[..., 0], 0.0)
    return d, C, np.linalg.norm(c, axis=-1)


def svd_aligned(G: np.ndarray, w: np.ndarray | None = None, rtol: float = 0.0) -> np.ndarray:
    """The theta-aligned direction ``s_R U V^T w`` of Definition 2 (see :func:`aligned_parts`)."""
    return aligned_parts(G, w, rtol)[0]


def _spectrum(G: np.ndarray, w: np.ndarray, rtol: float) -> tuple[float, float]:
    """C = s_R / s_1 and eps = ||V_R^T w|| with the rank cut at ``rtol``."""
    _, C, eps = aligned_parts(G, w, rtol)
    return float(C), float(eps)


def _library_aligned(G: np.ndarray, w: np.ndarray, dtype: torch.dtype = torch.float64) -> np.ndarray:
    agg = methods.make("aligned_mtl", w=list(map(float, w)))
    return agg.aggregate(torch.as_tensor(G, dtype=dtype)).double().numpy()


# --------------------------------------------------------------------------------------------------
# Definition 1 (dominance rate) and Definition 2 (Procrustes alignment)
# --------------------------------------------------------------------------------------------------
_TRANSFORMS = ("global scale", "parameter rotation", "task permutation", "per-task scale")


def dominance_invariance(rng: np.random.Generator, n: int, transform: str) -> Check:
    """D(T(G)) = D(G) for a transform T of the gradient system; margin = -|D(T G)/D(G) - 1|.

    ``transform``: "global scale" (c G), "parameter rotation" (G R^T, R orthogonal P x P: a change of
    orthonormal coordinates of theta), "task permutation" (Pi G), "per-task scale" (diag(s) G: each
    loss multiplied by its own constant - *not* an invariance). Tolerance: singular values are
    computed to ~eps * s_1, so D has relative error ~ eps * D (times a dimension factor of 1e3).
    Also records the deviation of the library's ``dominance_rate`` from numpy's ``cond``.
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}")
    m, tol, lib_err = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 7))
        P = int(rng.integers(K, 61))
        G = random_gradients(rng, K, P, rng.uniform(0.0, 4.0))
        if transform == "global scale":
            H = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-3, 3) * G
        elif transform == "parameter rotation":
            H = G @ haar(rng, P).T
        elif transform == "task permutation":
            H = G[rng.permutation(K)]
        else:
            H = 10.0 ** rng.uniform(-1, 1, K)[:, None] * G
        D = dominance_rate(torch.from_numpy(G))
        m[i] = -abs(dominance_rate(torch.from_numpy(H)) / D - 1.0)
        tol[i] = 1e3 * EPS * D
        lib_err[i] = abs(D / np.linalg.cond(G) - 1.0)
    return Check(f"D(G) = D({transform} of G)", m, tol, {"library_vs_numpy_cond": float(lib_err.max())})


def _frob2(A: np.ndarray) -> float:
    return float(np.sum(A * A))


def procrustes_optimality(rng: np.random.Generator, n: int, n_random: int = 20,
                          step: float = 1e-3) -> Check:
    """Q* = V U^T (library ``procrustes``) minimises ||G - Q||_F over Q with orthonormal rows.

    Per draw (K <= P, full rank) the margin is min over candidates of
    (||G - Q||_F^2 - ||G - Q*||_F^2) / (||G||_F^2 + K): ``n_random`` Haar-random Q and
    ``n_random`` small rotations Q* R, R Q* (R = Cayley transform of a random skew matrix of size
    ``step``). Also records: max ||Q* Q*^T - I|| and max |min value - sum (s_i - 1)^2| (relative).
    """
    m, feas, closed = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        K = int(rng.integers(1, 7))
        P = int(rng.integers(K, 41))
        G = random_gradients(rng, K, P, rng.uniform(0.0, 3.0))
        Qs, _ = procrustes(torch.from_numpy(G))
        Qs = Qs.numpy()
        f_star = _frob2(G - Qs)
        scale = _frob2(G) + K
        s = np.linalg.svd(G, compute_uv=False)
        feas[i] = np.abs(Qs @ Qs.T - np.eye(K)).max()
        closed[i] = abs(f_star - np.sum((s - 1.0) ** 2)) / scale
        cands = [haar(rng, P, K).T for _ in range(n_random)]
        for _ in range(n_random):
            for size, right in ((P, True), (K, False)):
                S = rng.standard_normal((size, size)) * step
                S = S - S.T
                I = np.eye(size)
                R = np.linalg.solve(I - S / 2, I + S / 2)  # Cayley: exactly orthogonal up to rounding
                cands.append(Qs @ R if right else R @ Qs)
        m[i] = min(_frob2(G - Q) - f_star for Q in cands) / scale
    return Check("||G - Q||_F >= ||G - V U^T||_F for orthonormal-row Q", m, 1e3 * EPS,
                 {"max ||QQ^T - I||": float(feas.max()), "max |min - sum(s-1)^2|": float(closed.max())})


def gram_schmidt_optimality(rng: np.random.Generator, n: int) -> Check:
    """A wrong candidate, to show the Procrustes check has power: claim that the Gram-Schmidt
    orthonormalisation of the rows of G is the minimiser; margin = f(Q*) - f(Q_gs) relative."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 7))
        P = int(rng.integers(K, 41))
        G = random_gradients(rng, K, P, rng.uniform(0.5, 3.0))
        Qg, R = np.linalg.qr(G.T)
        Qg = (Qg * np.sign(np.diag(R))).T
        Qs = procrustes(torch.from_numpy(G))[0].numpy()
        m[i] = (_frob2(G - Qs) - _frob2(G - Qg)) / (_frob2(G) + K)
    return Check("Gram-Schmidt rows minimise ||G - Q||_F", m, 1e3 * EPS)


def aligned_unit_dominance(rng: np.random.Generator, n: int) -> Check:
    """Every singular value of the aligned system s_min Q* equals s_min (dominance 1, Def. 2).
    Margin = -max_i |s_i(s_min Q*) / s_min - 1|."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(1, 8))
        P = int(rng.integers(K, 61))
        G = random_gradients(rng, K, P, rng.uniform(0.0, 4.0))
        Q, smin = procrustes(torch.from_numpy(G))
        s = singular_values(smin * Q).numpy()
        m[i] = -np.abs(s / smin - 1.0).max()
    return Check("all singular values of s_min V U^T equal s_min", m, 1e3 * EPS)


def eigen_vs_svd(rng: np.random.Generator, n: int, deficient_fraction: float = 0.25) -> Check:
    """The authors' eigen-solver on M = G G^T (library ``aligned_mtl``) gives the direction of the
    SVD form s_R U V^T w (library ``procrustes``, and an independent numpy SVD with the authors'
    cutoff). In ``deficient_fraction`` of the draws one singular value is set 1e-12 s_1, far below
    the cutoff sqrt(K eps) s_1, so all three must drop it (R = K - 1).

    Margin = -max relative difference of the three directions. Working on G G^T squares the
    condition number, so the tolerance is 1e3 eps D^2.
    """
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        K = int(rng.integers(1, 8))
        P = int(rng.integers(K, 61))
        lc = rng.uniform(0.0, 3.0)
        G = random_gradients(rng, K, P, lc)
        cut = K >= 2 and rng.random() < deficient_fraction
        if cut:  # one singular value far below the cutoff: every solver must drop it
            V, s, Ut = np.linalg.svd(G, full_matrices=False)
            s[-1] = s[0] * 1e-12
            G = (V * s) @ Ut
            lc = math.log10(s[0] / s[-2])
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        d_eig = _library_aligned(G, w)
        Q, smin = procrustes(torch.from_numpy(G))
        d_proc = smin * Q.numpy().T @ w
        d_np = svd_aligned(G, w, authors_rtol(K))
        ref = np.linalg.norm(d_np)
        m[i] = -max(np.linalg.norm(d_eig - d_np), np.linalg.norm(d_proc - d_np)) / ref
        tol[i] = 1e3 * EPS * 10.0 ** (2 * lc)
    return Check("eigen-solver on GG^T == s_R U V^T w (SVD)", m, tol)


def alignment_picture(ax: Any, G: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fig. 2 of the main paper, computed: two task gradients in R^2 (one dominating), the Procrustes
    rows q1, q2 of Q = V U^T (orthonormal), the aligned system s_min q_i, and the updates of LS
    (g1 + g2) and Aligned-MTL (s_min (q1 + q2), library ``aligned_mtl``). Returns the vectors."""
    G = np.array([[3.0, 0.9], [-0.7, 0.8]]) if G is None else np.asarray(G, float)
    Q, smin = procrustes(torch.from_numpy(G))
    Q = Q.numpy()
    vec = {"g1": G[0], "g2": G[1], "q1": Q[0], "q2": Q[1], "s_min q1": smin * Q[0], "s_min q2": smin * Q[1],
           "LS: g1 + g2": G.sum(0), "Aligned-MTL": _library_aligned(G, np.ones(2))}
    style = {"g1": ("C0", "-"), "g2": ("C1", "-"), "q1": ("C0", ":"), "q2": ("C1", ":"),
             "s_min q1": ("C0", "--"), "s_min q2": ("C1", "--"), "LS: g1 + g2": ("k", "-"),
             "Aligned-MTL": ("C3", "-")}
    for k, v in vec.items():
        col, ls = style[k]
        ax.annotate("", xy=v, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=col, ls=ls, lw=2))
        ax.plot([], [], color=col, ls=ls, lw=2, label=k)
    allv = np.array(list(vec.values()))
    lo, hi = allv.min(0) - 0.3, allv.max(0) + 0.3
    ax.set_xlim(min(lo[0], -0.3), hi[0])
    ax.set_ylim(min(lo[1], -0.3), hi[1])
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper left")
    return vec


# --------------------------------------------------------------------------------------------------
# Corollaries 1-2 (supplement, Sec. B, Eq. 12)
# --------------------------------------------------------------------------------------------------
def _two_vectors(rng: np.random.Generator, P: int) -> tuple[np.ndarray, np.ndarray]:
    B = haar(rng, P, 2)
    return B[:, 0], B[:, 1]


def corollary1(rng: np.random.Generator, n: int, P: int = 1000, angle: float = math.pi / 2) -> Check:
    """kappa(G) = max(|g1|/|g2|, |g2|/|g1|) for g1 orthogonal to g2 (Corollary 1).

    ``angle`` != pi/2 builds the counterexample (the corollary's hypothesis dropped).
    Margin = -|kappa / formula - 1|; tolerance 1e3 eps kappa (SVD accuracy).
    """
    m, tol, ratio, kap = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        u, v = _two_vectors(rng, P)
        n1, n2 = 10.0 ** rng.uniform(-3, 3, 2)
        G = np.stack([n1 * u, n2 * (math.cos(angle) * u + math.sin(angle) * v)])
        k = dominance_rate(torch.from_numpy(G))
        formula = max(n1 / n2, n2 / n1)
        m[i] = -abs(k / formula - 1.0)
        tol[i] = 1e3 * EPS * formula
        ratio[i], kap[i] = n1 / n2, k
    return Check("Cor. 1: kappa = max norm ratio" + ("" if angle == math.pi / 2 else
                 f" (angle {math.degrees(angle):.0f} deg)"), m, tol, {"ratio": ratio, "kappa": kap})


def _cor2_formula(a: float) -> float:
    """Eq. 12 of the supplement, branch by branch (nan on the boundary alpha/2 = pi/4)."""
    h = a / 2.0
    if math.pi / 4 < h <= math.pi / 2:
        return math.tan(h)
    if 0 < h < math.pi / 4:
        return 1.0 / math.tan(h)
    return math.nan


def corollary2(rng: np.random.Generator, n: int, P: int = 1000, norm_ratio: float = 1.0) -> Check:
    """kappa(G) = tan(a/2) (pi/4 < a/2 <= pi/2) or cot(a/2) (0 < a/2 < pi/4) for equal-norm
    g1, g2 at angle a (Corollary 2, Eq. 12); a ~ U(0, pi). ``norm_ratio`` != 1 drops the hypothesis.
    Margin = -|kappa / formula - 1|; tolerance 1e3 eps kappa."""
    m, tol, ang, kap = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        u, v = _two_vectors(rng, P)
        a = rng.uniform(0.0, math.pi)
        r = 10.0 ** rng.uniform(-2, 2)
        G = r * np.stack([u, norm_ratio * (math.cos(a) * u + math.sin(a) * v)])
        k = dominance_rate(torch.from_numpy(G))
        formula = _cor2_formula(a)
        m[i] = -abs(k / formula - 1.0)
        tol[i] = 1e3 * EPS * formula
        ang[i], kap[i] = a, k
    return Check("Cor. 2: kappa = tan/cot(a/2)" + ("" if norm_ratio == 1.0 else
                 f" (norm ratio {norm_ratio:g})"), m, tol, {"angle": ang, "kappa": kap})


def corollary2_boundary(rng: np.random.Generator, P: int = 1000) -> dict[str, float]:
    """kappa at the angles Eq. 12 leaves out or reaches at its ends: a = pi/2 (neither branch),
    a = pi (g2 = -g1, first branch, tan(pi/2) = inf) and a = 0 (g2 = g1, excluded)."""
    u, v = _two_vectors(rng, P)
    out = {}
    for name, g2 in (("a = pi/2", v), ("a = pi", -u), ("a = 0", u.copy())):
        out[name] = dominance_rate(torch.from_numpy(np.stack([u, g2])))
    out["tan(pi/4)"] = math.tan(math.pi / 4)
    return out


# --------------------------------------------------------------------------------------------------
# Lemma 1 (supplement Eq. 1-5): the descent lemma
# --------------------------------------------------------------------------------------------------
def lemma1_quadratic(rng: np.random.Generator, n: int, lam_scale: float = 1.0,
                     tight_fraction: float = 0.25) -> Check:
    """L(theta) - L(theta - a r) >= a <grad L, r> - a^2 Lam' / 2 |r|^2 with Lam' = lam_scale * Lam.

    L = 1/2 x^T A x + b^T x with A symmetric (possibly indefinite), Lam = max |eig(A)| (the Lipschitz
    constant of grad L). In a ``tight_fraction`` of draws r is the eigenvector of eigenvalue +Lam,
    where the inequality is an equality. Margin = (lhs - rhs) / (a^2 Lam' |r|^2 / 2); the tolerance
    is the rounding error of the loss differences relative to that term.
    """
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        P = int(rng.integers(1, 21))
        Lam = 10.0 ** rng.uniform(-2, 2)
        lam = rng.uniform(-1.0, 1.0, P) * Lam
        tight = rng.random() < tight_fraction
        j = int(rng.integers(P))
        lam[j] = Lam if tight else rng.choice([-1.0, 1.0]) * Lam
        Q = haar(rng, P)
        A = (Q * lam) @ Q.T
        b = rng.standard_normal(P) * Lam
        theta = rng.standard_normal(P) * 10.0 ** rng.uniform(-1, 1)
        # r on the scale of a gradient (Lam |theta|), so that the step a r is comparable with theta
        u = Q[:, j] if tight else rng.standard_normal(P) / math.sqrt(P)
        r = u * Lam * (np.linalg.norm(theta) + 1.0) * 10.0 ** rng.uniform(-1, 1)
        a = 10.0 ** rng.uniform(-2, 1) / Lam
        x1 = theta - a * r
        L0, L1 = 0.5 * theta @ A @ theta + b @ theta, 0.5 * x1 @ A @ x1 + b @ x1
        g = A @ theta + b
        quad = 0.5 * a * a * lam_scale * Lam * (r @ r)
        m[i] = ((L0 - L1) - (a * (g @ r) - quad)) / quad
        size = Lam * (theta @ theta + x1 @ x1) + np.abs(b) @ (np.abs(theta) + np.abs(x1)) + abs(a * (g @ r))
        tol[i] = 32 * (P + 2) * EPS * size / quad
    label = "Lemma 1 on quadratics" + ("" if lam_scale == 1.0 else f" with Lam' = {lam_scale:g} Lam")
    return Check(label, m, tol)


def _logistic(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = y * (X @ theta)
    return float(np.logaddexp(0.0, -z).sum()), -(X.T @ (y * expit(-z)))


def lemma1_logistic(rng: np.random.Generator, n: int, lam_scale: float = 1.0,
                    tight_fraction: float = 0.5) -> Check:
    """Lemma 1 for the logistic loss L(theta) = sum_j log(1 + exp(-y_j x_j^T theta)),
    whose gradient is Lipschitz with Lam = ||X||_2^2 / 4 (Hessian X^T diag(s(1-s)) X, s(1-s) <= 1/4).

    In a ``tight_fraction`` of draws theta = 0 and r = top right singular vector of X, where the
    curvature along r equals Lam at the start; elsewhere theta and r are Gaussian. Step sizes
    a = 10^U(-2, 1) / Lam. Margin as in :func:`lemma1_quadratic`.
    """
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        N, P = int(rng.integers(5, 61)), int(rng.integers(1, 11))
        X = rng.standard_normal((N, P)) * 10.0 ** rng.uniform(-1, 1)
        y = rng.choice([-1.0, 1.0], N)
        _, s, Vt = np.linalg.svd(X, full_matrices=False)
        Lam = s[0] ** 2 / 4.0
        # theta on the scale 1/||X||, r on the scale of a gradient (||X||), so a r is comparable with theta
        if rng.random() < tight_fraction:
            theta, u = np.zeros(P), Vt[0]
        else:
            theta = rng.standard_normal(P) * 10.0 ** rng.uniform(-1, 1) / s[0]
            u = rng.standard_normal(P) / math.sqrt(P)
        r = u * s[0] * 10.0 ** rng.uniform(-1, 1)
        a = 10.0 ** rng.uniform(-2, 1) / Lam
        L0, g = _logistic(theta, X, y)
        L1, _ = _logistic(theta - a * r, X, y)
        quad = 0.5 * a * a * lam_scale * Lam * (r @ r)
        m[i] = ((L0 - L1) - (a * (g @ r) - quad)) / quad
        tol[i] = 32 * N * EPS * (abs(L0) + abs(L1) + abs(a * (g @ r))) / quad
    label = "Lemma 1 on logistic losses" + ("" if lam_scale == 1.0 else f" with Lam' = {lam_scale:g} Lam")
    return Check(label, m, tol)


def lemma1_curves(rng: np.random.Generator, N: int = 40, P: int = 5, n_alpha: int = 200) -> dict[str, Any]:
    """One logistic problem at theta = 0 along the top curvature direction: the true decrease
    L(0) - L(-a r) against the lower bounds of Eq. 1 (Lam/2), Eq. 5 (Lam) and Eq. 1 with Lam/2."""
    X = rng.standard_normal((N, P))
    y = rng.choice([-1.0, 1.0], N)
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    Lam = s[0] ** 2 / 4.0
    L0, g = _logistic(np.zeros(P), X, y)
    r = Vt[0] * (1.0 if g @ Vt[0] >= 0 else -1.0)
    alphas = np.linspace(0.0, 3.0 / Lam, n_alpha)
    dec = np.array([L0 - _logistic(-a * r, X, y)[0] for a in alphas])
    lin = alphas * (g @ r)
    return {"alpha": alphas, "Lam": Lam, "decrease": dec,
            "Eq. 1 (Lam/2)": lin - 0.5 * alphas**2 * Lam,
            "Eq. 5 (Lam)": lin - alphas**2 * Lam,
            "Eq. 1 with Lam underestimated by 2": lin - 0.25 * alphas**2 * Lam}


# --------------------------------------------------------------------------------------------------
# Theorem 1 (supplement Eq. 6-7; main paper Theorem 1): one step
# --------------------------------------------------------------------------------------------------
def theorem1_draws(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Random multi-task quadratics, one aligned step each (library ``aligned_mtl``).

    Per draw: K in 2..5 tasks, P in 1..30 parameters (so P < K occurs: rank R = P), task
    condition numbers 10^U(0, 3), preference w = 1 or a random positive vector, theta around the
    task minima, Lam = lambda_max(sum w_i A_i) (the smoothness of L0), a = Lam^{-1} (30 %) or
    U(0, 1) / Lam. Records the decrease of L0 and the spectral quantities of the proof, with
    C = s_R / s_1 and eps = ||V^T w|| at their largest admissible values.
    """
    rows = []
    for _ in range(n):
        K = int(rng.integers(2, 6))
        P = int(rng.integers(1, 31))
        prob = quadratic.random_tasks(K, P, rng, cond=10.0 ** rng.uniform(0, 3),
                                      spread=10.0 ** rng.uniform(-1, 1))
        w = np.ones(K) if rng.random() < 0.5 else rng.dirichlet(np.ones(K)) * K
        theta = prob.c.mean(0) + rng.standard_normal(P) * 10.0 ** rng.uniform(-1, 1)
        Lam = prob.smoothness(w)
        a = (1.0 if rng.random() < 0.3 else rng.uniform(0.0, 1.0)) / Lam
        G = prob.jacobian(theta)
        d = _library_aligned(G, w)
        L0 = float(w @ prob.losses(theta))
        L1 = float(w @ prob.losses(theta - a * d))
        C, eps = _spectrum(G, w, authors_rtol(K))
        rows.append({"K": K, "P": P, "alpha": a, "Lam": Lam, "L0": L0, "L1": L1,
                     "decrease": L0 - L1, "g0_sq": float(np.sum((G.T @ w) ** 2)), "C": C, "eps": eps,
                     "w_sq": float(w @ w), "kappa": 1.0 / C})
    return pd.DataFrame(rows)


def theorem1_checks(df: pd.DataFrame) -> dict[str, Check]:
    """The per-step bounds, each as margin = decrease / bound - 1:

    - ``Eq. 7``: a eps^2 C^2 |g0|^2 / (2 |w|^2), C = s_R/s_1 (the proof's reading of C);
    - ``kappa^-2``: a / 2 * (s_R/s_1)^2 |g0|^2 (what the proof gives, no eps, any rank);
    - ``sharp``: a / 2 * (2 C - C^2) |g0|^2 (the proof's Eq. 6 bounded term by term);
    - ``Eq. 7, C = D``: the statement's reading of C (an upper bound on the dominance s_1/s_R).
    """
    a, C, e, w2, g0, dec = (df[k].to_numpy() for k in ("alpha", "C", "eps", "w_sq", "g0_sq", "decrease"))
    size = 64 * EPS * (np.abs(df["L0"].to_numpy()) + np.abs(df["L1"].to_numpy()))
    bounds = {
        "Eq. 7 (C = s_R/s_1, eps = |V^T w|)": a * e**2 * C**2 * g0 / (2 * w2),
        "a/2 (s_R/s_1)^2 |g0|^2": a / 2 * C**2 * g0,
        "a/2 (2C - C^2) |g0|^2": a / 2 * (2 * C - C**2) * g0,
        "Eq. 7 with C = D = s_1/s_R": a * e**2 * C**-2 * g0 / (2 * w2),
    }
    return {k: Check(k, dec / B - 1.0, size / B) for k, B in bounds.items()}


def theorem1_tight_case() -> Check:
    """Two unit-curvature tasks with minima e1, e2, theta = 0, w = 1, a = 1/Lam: orthogonal
    equal-norm gradients (C = 1) along a top-curvature direction. Eq. 7 then holds with equality, so
    its constant cannot be improved and its strict '>' is false. Margin = -|decrease / bound - 1|."""
    prob = quadratic.QuadraticTasks(np.stack([np.eye(2)] * 2), np.eye(2))
    w, theta = np.ones(2), np.zeros(2)
    a = 1.0 / prob.smoothness(w)
    G = prob.jacobian(theta)
    d = _library_aligned(G, w)
    dec = float(w @ prob.losses(theta) - w @ prob.losses(theta - a * d))
    C, eps = _spectrum(G, w, authors_rtol(2))
    bound = a * eps**2 * C**2 * float(np.sum((G.T @ w) ** 2)) / (2 * (w @ w))
    return Check("Eq. 7 attained with equality", [-abs(dec / bound - 1.0)], 1e3 * EPS,
                 {"decrease": dec, "bound": bound})


def theorem1_per_task_lambda(rng: np.random.Generator, n: int, K: int = 3,
                             per_task: bool = True) -> Check:
    """K identical tasks (a duplicated loss): G has rank 1 and the aligned step is the plain
    gradient of L0 = K L_1. With the main paper's reading (Lam = smoothness of each task,
    ``per_task=True``) the step a = 1/Lam is K times too long along the top curvature direction and
    L0 *increases*; with the supplement's reading (Lam = smoothness of L0) Eq. 7 holds.
    Margin = decrease / (Eq. 7 bound) - 1, with theta - c along the top eigenvector plus noise."""
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        P = int(rng.integers(2, 11))
        A1 = quadratic.random_spd(P, rng, cond=10.0 ** rng.uniform(0, 2))
        c1 = rng.standard_normal(P)
        prob = quadratic.QuadraticTasks(np.stack([A1] * K), np.stack([c1] * K))
        lam, E = np.linalg.eigh(A1)
        theta = c1 + E[:, -1] + 0.1 * rng.standard_normal(P)
        w = np.ones(K)
        Lam = lam[-1] if per_task else prob.smoothness(w)
        G = prob.jacobian(theta)
        d = _library_aligned(G, w)
        a = 1.0 / Lam
        L0, L1 = float(w @ prob.losses(theta)), float(w @ prob.losses(theta - a * d))
        C, eps = _spectrum(G, w, authors_rtol(K))
        B = a * eps**2 * C**2 * float(np.sum((G.T @ w) ** 2)) / (2 * (w @ w))
        m[i] = (L0 - L1) / B - 1.0
        tol[i] = 64 * EPS * (abs(L0) + abs(L1)) / B
    which = "each task's Lam (main paper)" if per_task else "Lam of L0 (supplement)"
    return Check(f"Eq. 7 for {K} duplicated tasks, a = 1/{which}", m, tol)


# --------------------------------------------------------------------------------------------------
# Theorem 1 beyond one step: trajectories
# --------------------------------------------------------------------------------------------------
_RULES = ("gd", "exact", "authors_cutoff", "aligned_mtl", "aligned_mtl_float32")


@dataclass
class Trajectory:
    """Iterates theta_{t+1} = theta_t - alpha d(theta_t) of m independent runs (run index = axis 1).

    ``C`` and ``eps`` are Theorem 1's constants s_R/s_1 and ||V_R^T w|| at each step, with the rank
    cut where the rule cuts it; ``sv`` holds all singular values of G_t (no cut) for the dominance.
    """

    rule: str
    w: np.ndarray  # (K,)
    alpha: np.ndarray  # (m,)
    Lam: np.ndarray  # (m,) smoothness of L0
    mu: np.ndarray  # (m,) strong convexity of L0
    Lstar: np.ndarray  # (m,) min L0
    c_norm: np.ndarray  # (m,) max_i ||c_i|| (sets the resolution of theta - c_i)
    theta: np.ndarray  # (T+1, m, P)
    L0: np.ndarray  # (T+1, m)
    g0: np.ndarray  # (T+1, m) ||grad L0||
    gsum: np.ndarray  # (T+1, m) sum_i w_i ||g_i||
    sv: np.ndarray  # (T+1, m, min(K, P))
    C: np.ndarray  # (T+1, m)
    eps: np.ndarray  # (T+1, m)

    @property
    def kappa(self) -> np.ndarray:
        """s_1 / s_min of G_t with no rank cut (inf where s_min = 0), shape (T+1, m)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sv[..., 0] / self.sv[..., -1]


def descend(probs: quadratic.QuadraticTasks | list[quadratic.QuadraticTasks], theta0: np.ndarray,
            T: int, rule: str, alpha: float | np.ndarray | None = None,
            w: np.ndarray | None = None) -> Trajectory:
    """T steps of ``theta <- theta - alpha d(theta)`` on one or several quadratic problems (same K, P).

    ``rule``: "gd" (d = G^T w, plain gradient descent on L0), "exact" (Definition 2 keeping every
    non-zero singular value, numpy SVD), "authors_cutoff" (Definition 2 with the authors' cutoff
    sqrt(K eps64), numpy SVD, batched), "aligned_mtl" / "aligned_mtl_float32" (the library's
    eigen-solver on float64 / float32 gradients, one run at a time). ``alpha`` defaults to 1/Lam.
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}")
    probs = [probs] if isinstance(probs, quadratic.QuadraticTasks) else list(probs)
    A = np.stack([p.A for p in probs])
    c = np.stack([p.c for p in probs])
    m, K, P = c.shape
    w = np.ones(K) if w is None else np.asarray(w, dtype=float)
    Lam = np.array([p.smoothness(w) for p in probs])
    alpha = 1.0 / Lam if alpha is None else np.broadcast_to(np.asarray(alpha, float), (m,)).copy()
    dtype = torch.float32 if rule.endswith("float32") else torch.float64
    rtol = {"gd": 0.0, "exact": 0.0}.get(rule, authors_rtol(K, dtype))
    th = np.asarray(theta0, dtype=float).reshape(m, P).copy()
    rec: dict[str, list] = {k: [] for k in ("theta", "L0", "g0", "gsum", "sv", "C", "eps")}
    for t in range(T + 1):
        r = th[:, None, :] - c
        G = np.einsum("mkpq,mkq->mkp", A, r)
        d_al, C, e = aligned_parts(G, w, rtol)
        g = np.einsum("k,mkp->mp", w, G)
        rec["theta"].append(th.copy())
        rec["L0"].append(0.5 * np.einsum("k,mkp,mkp->m", w, r, G))
        rec["g0"].append(np.linalg.norm(g, axis=1))
        rec["gsum"].append(np.linalg.norm(G, axis=2) @ w)
        rec["sv"].append(np.linalg.svd(G, compute_uv=False))
        rec["C"].append(C)
        rec["eps"].append(e)
        if t == T:
            break
        if rule == "gd":
            d = g
        elif rule in ("exact", "authors_cutoff"):
            d = d_al
        else:
            d = np.stack([_library_aligned(G[j], w, dtype) for j in range(m)])
        th = th - alpha[:, None] * d
    arr = {k: np.array(v) for k, v in rec.items()}
    mu = np.array([p.strong_convexity(w) for p in probs])
    Lstar = np.array([float(w @ p.losses(p.minimizer(w))) for p in probs])
    return Trajectory(rule, w, alpha, Lam, mu, Lstar, np.linalg.norm(c, axis=2).max(1), **arr)


def conflicting_pair() -> tuple[quadratic.QuadraticTasks, np.ndarray, float]:
    """Two unit-curvature tasks with minima (1, 0) and (-1, 0). L0 = L1 + L2 is minimal at 0, where
    g1 = -g2 != 0: G has rank 1 there. Start (1.5, 1), step a = 1 / (2 Lam)."""
    prob = quadratic.QuadraticTasks(np.stack([np.eye(2)] * 2), np.array([[1.0, 0.0], [-1.0, 0.0]]))
    return prob, np.array([1.5, 1.0]), 0.5 / prob.smoothness()


def _worst_step(q: np.ndarray, tol: np.ndarray, judged: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run: the judged step with the smallest q + tol (its margin and tolerance), and the
    number of judged steps. Runs with no judged step get margin +inf."""
    key = np.where(judged, q + tol, np.inf)
    idx = np.argmin(key, axis=0)
    cols = np.arange(q.shape[1])
    has = judged.any(axis=0)
    return (np.where(has, q[idx, cols], np.inf), np.where(has, tol[idx, cols], 0.0), judged.sum(axis=0))


def trajectory_checks(tr: Trajectory, gd_tol: float = 1e-6, unit: str = "runs") -> dict[str, Check]:
    """Theorem 1 along runs, one margin per run.

    For every rule: ``converged``, log10(gd_tol |g0_0| / |g0_T|) >= 0 (the theorem's conclusion
    |g0_t| -> 0, to relative accuracy ``gd_tol`` after T steps). For the rules whose step is exactly
    Definition 2 with the recorded constants ("exact", "authors_cutoff"), also:

    - ``Eq. 7, current C``: worst step of decrease_t / (a eps_t^2 C_t^2 |g0_t|^2 / (2|w|^2)) - 1,
      constants of step t (the per-step inequality the proof establishes);
    - ``Eq. 7, initial C``: the same with C_0, eps_0 frozen (the main paper bounds only the initial
      dominance);
    - ``sum``: sum_t (s_R eps)_t^2 <= 2 (L0_0 - L0_T) / a, what summing the proof's intermediate
      bound (decrease >= a/2 s_R^2 eps^2) forces: s_R eps -> 0;
    - ``Eq. 8``: min_{t<T'} |g0_t|^2 <= 2|w|^2 (L0_0 - L0_T') / (a eps_min^2 C_min^2 T') for every
      horizon T' (the O(1/T) bound with the run's worst constants; vacuous once C_min = 0);
    - ``linear``: L0_{t+1} - L* <= (1 - a mu eps_t^2 C_t^2 / |w|^2)(L0_t - L*) at every step, which
      Eq. 7 gives with the Polyak-Lojasiewicz inequality |g0|^2 >= 2 mu (L0 - L*) of a mu-strongly
      convex L0 (worst step, margin = 1 - ratio).

    A step is judged only where the compared quantity exceeds 1e3 times its rounding error (loss
    evaluation, and the resolution 2 eps (|theta| + |c|) of theta and of theta - c_i); the tolerance
    there is that rounding error relative to the quantity (< 1e-3).
    """
    a, Lam, w2 = tr.alpha, tr.Lam, float(tr.w @ tr.w)
    L, g0, gs, C, e2 = tr.L0, tr.g0, tr.gsum, tr.C, tr.eps**2
    T = L.shape[0] - 1
    out: dict[str, Check] = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out["converged"] = Check(f"|g0_T| <= {gd_tol:g} |g0_0| after {T} steps ({tr.rule})",
                                 np.log10(gd_tol * g0[0] / np.maximum(g0[-1], 1e-300)))
        if tr.rule not in ("exact", "authors_cutoff"):
            out["converged"].unit = unit
            return out
        dec = L[:-1] - L[1:]
        delta = 2 * EPS * (np.linalg.norm(tr.theta, axis=2) + tr.c_norm)
        res = 4 * gs * delta + Lam * delta**2  # loss change from the resolution of theta, theta - c_i
        rnd = 64 * EPS * (np.abs(L[:-1]) + np.abs(L[1:])) + res[:-1] + res[1:]
        for key, CC, ee in (("Eq. 7, current C", C[:-1], e2[:-1]), ("Eq. 7, initial C", C[:1], e2[:1])):
            B = a * ee * CC**2 * g0[:-1] ** 2 / (2 * w2)
            judged = B > 1e3 * rnd
            q = np.where(judged, dec / B - 1.0, np.inf)
            marg, tol, nj = _worst_step(q, np.where(judged, rnd / B, 0.0), judged)
            label = "C_t, eps_t" if key.endswith("current C") else "C_0, eps_0"
            out[key] = Check(f"Eq. 7 with {label} at every step ({tr.rule})", marg, tol, {"judged steps": nj})
        lhs = np.sum((C[:-1] * tr.sv[:-1, :, 0]) ** 2 * e2[:-1], axis=0)
        rhs = 2 * (L[0] - L[-1]) / a
        out["sum"] = Check(f"sum_t (s_R eps)^2 <= 2 (L0_0 - L0_T)/a ({tr.rule})", (rhs - lhs) / rhs, 1e-9)
        Tp = np.arange(1, T + 1)[:, None]
        cmin = np.minimum.accumulate(C[:-1] ** 2 * e2[:-1], axis=0)
        best = np.minimum.accumulate(g0[:-1] ** 2, axis=0)
        bound = np.where(cmin > 0, 2 * w2 * (L[0] - L[1:]) / (a * cmin * Tp), np.inf)
        m8 = np.where(np.isinf(bound), 1.0, (bound - best) / np.maximum(np.abs(bound), best))
        out["Eq. 8"] = Check(f"Eq. 8: min_t |g0|^2 <= 2|w|^2 dL0/(a eps^2 C^2 T') ({tr.rule})",
                             np.min(m8, axis=0), 1e-9)
        gap = L - tr.Lstar
        rgap = 64 * EPS * (np.abs(L) + np.abs(tr.Lstar)) + res
        pred = (1.0 - a * tr.mu * C[:-1] ** 2 * e2[:-1] / w2) * gap[:-1]
        judged = (gap[:-1] > 1e3 * rgap[:-1]) & (pred > 1e3 * rgap[1:])
        q = np.where(judged, 1.0 - gap[1:] / pred, np.inf)
        marg, tol, nj = _worst_step(q, np.where(judged, (rgap[1:] + rgap[:-1]) / pred, 0.0), judged)
        out["linear"] = Check(f"L0_t+1 - L* <= (1 - a mu eps^2 C_t^2/|w|^2)(L0_t - L*) ({tr.rule})",
                              marg, tol, {"judged steps": nj})
    for chk in out.values():
        chk.unit = unit
    return out


def check_frame(checks: dict[str, Check]) -> pd.DataFrame:
    """A tidy table of named checks: runs/draws, failures, worst margin, verdict."""
    return pd.DataFrame([{"check": c.name, "n": c.n, "failed": c.failures, "worst margin": c.worst,
                          "holds": c.holds} for c in checks.values()])


def stall_draws(rng: np.random.Generator, n: int, T: int, common_minimum: bool = False,
                P_range: tuple[int, int] = (2, 10), gd_tol: float = 1e-6,
                rules: tuple[str, ...] = ("gd", "exact", "authors_cutoff")) -> dict[str, Any]:
    """``n`` random two-task quadratics in R^P, P ~ U{P_range} (library ``random_tasks``: different
    minima, condition number 10), w = 1, a = 1/Lam, theta_0 = mean of the minima + N(0, I); T steps
    of each rule (see :func:`descend`). ``common_minimum=True`` moves both minima to the first one
    (tasks that do not conflict at the optimum).

    Returns, per rule, the :func:`trajectory_checks` over all draws (one margin per draw) plus the
    per-draw maximal dominance ``kappa_max`` (no rank cut) and ``final_ratio`` |g0_T| / |g0_0|.
    """
    Ps = rng.integers(P_range[0], P_range[1] + 1, n)
    groups = []
    for P in np.unique(Ps):
        probs = [quadratic.random_tasks(2, int(P), rng) for _ in range(int(np.sum(Ps == P)))]
        if common_minimum:
            for p in probs:
                p.c[1] = p.c[0]
        th0 = np.stack([p.c.mean(0) for p in probs]) + rng.standard_normal((len(probs), int(P)))
        groups.append((probs, th0))
    out: dict[str, Any] = {"T": T, "n": n}
    for rule in rules:
        parts = [(trajectory_checks(tr, gd_tol, "draws"), tr)
                 for tr in (descend(probs, th0, T, rule) for probs, th0 in groups)]
        merged: dict[str, Any] = {}
        for key in parts[0][0]:
            if not all(key in p[0] for p in parts):
                continue
            cs = [p[0][key] for p in parts]
            merged[key] = Check(cs[0].name, np.concatenate([c.margins for c in cs]),
                                np.concatenate([c.tol for c in cs]), unit="draws")
        merged["kappa_max"] = np.concatenate([tr.kappa.max(0) for _, tr in parts])
        merged["final_ratio"] = np.concatenate([tr.g0[-1] / tr.g0[0] for _, tr in parts])
        out[rule] = merged
    return out


_RULE_STYLE = {
    "gd": ("plain GD (LS)", "k", "-"),
    "exact": ("Def. 2, exact rank", "C3", "-"),
    "authors_cutoff": ("Def. 2, authors' cutoff", "C2", "--"),
    "aligned_mtl": ("library aligned_mtl, float64", "C0", "--"),
    "aligned_mtl_float32": ("library aligned_mtl, float32", "C1", ":"),
}


def plot_pair_runs(prob: quadratic.QuadraticTasks, runs: dict[str, Trajectory],
                   box: tuple[float, float, float, float] = (-1.2, 2.0, -0.6, 1.9)) -> Any:
    """Three panels for runs on one two-parameter problem: iterates over the contours of L0 with the
    set where G loses rank (zero level of det G, K = P = 2) and the minimiser of L0; |grad L0| and
    the dominance s_1/s_2 of G_t against t."""
    import matplotlib.pyplot as plt

    if prob.K != 2 or prob.P != 2:
        raise ValueError("plot_pair_runs draws K = P = 2 problems")
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.9))
    x = np.linspace(box[0], box[1], 241)
    y = np.linspace(box[2], box[3], 161)
    X, Y = np.meshgrid(x, y)
    TH = np.stack([X, Y], -1)
    R = TH[..., None, :] - prob.c
    Gg = np.einsum("kpq,...kq->...kp", prob.A, R)
    L0 = 0.5 * np.einsum("...kp,...kp->...", R, Gg)
    ax[0].contour(X, Y, L0, levels=15, colors="0.75", linewidths=0.8)
    ax[0].contour(X, Y, np.linalg.det(Gg), levels=[0.0], colors="C4", linewidths=2)
    ax[0].plot([], [], color="C4", lw=2, label="rank G < 2 (D = inf)")
    ts = prob.minimizer()
    ax[0].scatter(*ts, marker="*", s=200, color="gold", edgecolor="k", zorder=5, label="minimiser of $L_0$")
    for rule, tr in runs.items():
        lab, col, ls = _RULE_STYLE[rule]
        ax[0].plot(tr.theta[:, 0, 0], tr.theta[:, 0, 1], color=col, ls=ls, marker=".", ms=3, label=lab)
        t = np.arange(tr.g0.shape[0])
        ax[1].semilogy(t, np.maximum(tr.g0[:, 0], 1e-300), color=col, ls=ls, label=lab)
        ax[2].semilogy(t, tr.kappa[:, 0], color=col, ls=ls, label=lab)
    first = next(iter(runs.values()))
    ax[0].scatter(*first.theta[0, 0], color="k", zorder=5)
    ax[0].set_aspect("equal")
    ax[0].set_xlabel(r"$\theta_1$")
    ax[0].set_ylabel(r"$\theta_2$")
    ax[0].legend(fontsize=7, loc="upper left")
    ax[1].set_ylim(1e-18, 1e2)
    ax[1].set_xlabel("step $t$")
    ax[1].set_title(r"$\|\nabla L_0(\theta_t)\|$")
    ax[2].set_ylim(1, 1e20)
    ax[2].set_xlabel("step $t$")
    ax[2].set_title(r"dominance $\sigma_1/\sigma_2$ of $G_t$")
    fig.tight_layout()
    return fig
