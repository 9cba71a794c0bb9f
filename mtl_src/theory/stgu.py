"""Numerical checks of the STGU theory (chapter ``notebooks/stgu/01_theory.md``).

Selective Task Group Updates (Jeong & Yoon, ICLR 2025): Definitions 1, 2, 4 (inter-task, proximal and
two-step affinity), Eq. 12, Theorems 1-5 and Algorithm 1.

Models. Every task k has a loss L_k(s, h_k) of the shared parameters s (P_s entries) and its own head
h_k (P_h entries); a state is ``(s, h)`` with ``h`` of shape (K, P_h).

- :class:`QuadTasks`: L_k(z) = 1/2 z^T A_k z - b_k^T z + c_k with z = (s, h_k). With A_k = J_k^T J_k
  (:func:`random_lsq`) this is multi-task least squares L_k = 1/2 ||X_k s + Z_k h_k - y_k||^2: a shared
  linear map plus a task-specific linear head on task-specific features, convex, and the Lipschitz
  constant of grad L_k is exactly H_k = ||A_k||_2 (:func:`random_indefinite` gives non-convex
  quadratics with the same exact H). Taylor expansions of quadratics stop at second order, so the
  O(eta^2) terms the paper drops are known in closed form.
- :class:`BilinearTasks`: L_k = 1/2 ||X W v_k - y_k||^2 / n, a shared layer W and a linear head v_k: a
  non-convex, non-quadratic model (its Taylor series does not stop), used for the slope fits.

Every check returns a :class:`~mtl_src.theory.checks.Check`: one dimensionless margin per draw
(``>= -tol``: the statement held in that draw). Tolerances come from the rounding error of the losses
that are subtracted, never tuned to make a check pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .. import methods
from ..autodiff import weighted_sum
from ..methods import Forward, StepContext, StepResult
from ..methods.stgu import STGU, _check_losses
from ..methods.connection_strength import release_unreached
from .checks import EPS, Check, Ledger

__all__ = [
    "Check", "Ledger", "QuadTasks", "BilinearTasks", "random_lsq", "random_indefinite", "random_bilinear",
    "random_state", "group_step", "run_sequence", "affinity", "two_step_affinity",
    "definition_checks", "eq12_check", "eq12_expansion", "order_draws", "theorem1_check", "theorem2_check",
    "taylor_slopes", "theorem3_check", "theorem3_expansion", "theorem4_check", "theorem4_tight",
    "theorem5_draws", "theorem5_checks", "gap_curves",
    "PlantedProblem", "planted_problem", "StguRun", "run_stgu", "BatchStartSTGU", "PairingSTGU", "PAIRINGS",
    "hand_case", "hand_case3", "grouping_slack", "beta_effect",
    "plot_traces",
]

Group = Sequence[int]


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
@dataclass
class QuadTasks:
    """K quadratic tasks L_k(s, h_k) = 1/2 z^T A_k z - b_k^T z + c_k, z = (s, h_k) of length Ps + Ph."""

    A: np.ndarray  # (K, Ps + Ph, Ps + Ph), symmetric
    b: np.ndarray  # (K, Ps + Ph)
    c: np.ndarray  # (K,)
    Ps: int

    @property
    def K(self) -> int:
        return self.A.shape[0]

    @property
    def Ph(self) -> int:
        return self.A.shape[1] - self.Ps

    def _z(self, s: np.ndarray, h: np.ndarray) -> np.ndarray:
        return np.concatenate([np.broadcast_to(s, (self.K, self.Ps)), h], axis=1)

    def losses(self, s: np.ndarray, h: np.ndarray) -> np.ndarray:
        z = self._z(s, h)
        return 0.5 * np.einsum("kp,kpq,kq->k", z, self.A, z) - np.einsum("kp,kp->k", self.b, z) + self.c

    def grads(self, s: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shared gradients (K, Ps), head gradients (K, Ph))."""
        g = np.einsum("kpq,kq->kp", self.A, self._z(s, h)) - self.b
        return g[:, : self.Ps], g[:, self.Ps:]

    def blocks(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hessian blocks of L_k: (shared-shared P, shared-head C, head-head Q)."""
        A, p = self.A[k], self.Ps
        return A[:p, :p], A[:p, p:], A[p:, p:]

    @property
    def H_tasks(self) -> np.ndarray:
        """Exact Lipschitz constant of grad L_k (all parameters), per task: max |eigenvalue of A_k|."""
        return np.abs(np.linalg.eigvalsh(self.A)).max(axis=1)

    @property
    def H(self) -> float:
        return float(self.H_tasks.max())


def random_lsq(rng: np.random.Generator, K: int, Ps: int | None = None, Ph: int | None = None,
               n: int | None = None) -> QuadTasks:
    """Multi-task least squares L_k = 1/2 ||X_k s + Z_k h_k - y_k||^2 with Gaussian data scaled by
    random per-task factors 10^U(-1, 1) (so tasks differ in curvature and loss scale)."""
    Ps = int(rng.integers(2, 7)) if Ps is None else Ps
    Ph = int(rng.integers(1, 4)) if Ph is None else Ph
    n = int(rng.integers(Ps + Ph, 3 * (Ps + Ph) + 1)) if n is None else n
    J = rng.standard_normal((K, n, Ps + Ph)) / math.sqrt(n) * 10.0 ** rng.uniform(-0.5, 0.5, (K, 1, 1))
    y = rng.standard_normal((K, n)) * 10.0 ** rng.uniform(-0.5, 0.5, (K, 1))
    A = np.einsum("knp,knq->kpq", J, J)
    return QuadTasks(A, np.einsum("knp,kn->kp", J, y), 0.5 * np.sum(y**2, axis=1), Ps)


def random_indefinite(rng: np.random.Generator, K: int, Ps: int | None = None, Ph: int | None = None) -> QuadTasks:
    """Non-convex quadratics: symmetric A_k with eigenvalues of both signs (Haar eigenvectors)."""
    Ps = int(rng.integers(2, 7)) if Ps is None else Ps
    Ph = int(rng.integers(1, 4)) if Ph is None else Ph
    D = Ps + Ph
    A = np.empty((K, D, D))
    for k in range(K):
        Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
        lam = rng.uniform(-1, 1, D) * 10.0 ** rng.uniform(-0.5, 0.5)
        lam[0], lam[1] = abs(lam[0]), -abs(lam[1])
        A[k] = (Q * lam) @ Q.T
    return QuadTasks(A, rng.standard_normal((K, D)), rng.standard_normal(K), Ps)


@dataclass
class BilinearTasks:
    """L_k(W, v_k) = 1/2 ||X W v_k - y_k||^2 / n; the shared state is W flattened (d * r entries)."""

    X: np.ndarray  # (n, d)
    y: np.ndarray  # (K, n)
    r: int

    @property
    def K(self) -> int:
        return self.y.shape[0]

    @property
    def Ps(self) -> int:
        return self.X.shape[1] * self.r

    @property
    def Ph(self) -> int:
        return self.r

    def _res(self, s: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = s.reshape(self.X.shape[1], self.r)
        F = self.X @ W  # (n, r)
        return F, F @ h.T - self.y.T  # (n, K)

    def losses(self, s: np.ndarray, h: np.ndarray) -> np.ndarray:
        _, R = self._res(s, h)
        return 0.5 * np.sum(R**2, axis=0) / self.X.shape[0]

    def grads(self, s: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        F, R = self._res(s, h)
        n = self.X.shape[0]
        XR = self.X.T @ R / n  # (d, K)
        gs = np.einsum("dk,kr->kdr", XR, h).reshape(self.K, -1)
        return gs, (F.T @ R / n).T


def random_bilinear(rng: np.random.Generator, K: int) -> BilinearTasks:
    d, r = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    n = int(rng.integers(d + 2, 4 * d + 1))
    return BilinearTasks(rng.standard_normal((n, d)), rng.standard_normal((K, n)), r)


def random_state(rng: np.random.Generator, prob: QuadTasks | BilinearTasks) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal(prob.Ps), rng.standard_normal((prob.K, prob.Ph))


def _scale_bilinear(prob: BilinearTasks, s: np.ndarray, h: np.ndarray) -> float:
    """A curvature scale for the bilinear model at (s, h): ||X||^2/n (1 + ||W||^2 + ||V||^2)."""
    return float(np.linalg.norm(prob.X, 2) ** 2 / prob.X.shape[0] * (1 + s @ s + np.sum(h * h)))


# --------------------------------------------------------------------------------------------------
# group steps and affinities (Def. 1, 2, 4; Eq. 3)
# --------------------------------------------------------------------------------------------------
def group_step(prob, s: np.ndarray, h: np.ndarray, group: Group, eta: float, *, heads: bool = True,
               head_at_new_shared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One update of group G (Eq. 3, Def. 2): s <- s - eta sum_{i in G} grad_s L_i, and for i in G
    h_i <- h_i - eta grad_{h_i} L_i, all gradients at the current state (``heads=False``: Def. 1, the
    heads stay; ``head_at_new_shared=True``: the heads' gradient is taken at the updated s)."""
    gs, gh = prob.grads(s, h)
    idx = list(group)
    s1 = s - eta * gs[idx].sum(0)
    h1 = h.copy()
    if heads:
        if head_at_new_shared:
            gh = prob.grads(s1, h)[1]
        h1[idx] = h[idx] - eta * gh[idx]
    return s1, h1


def run_sequence(prob, s, h, groups: Sequence[Group], eta: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """States before and after each group of a sequential update (len(groups) + 1 states)."""
    states = [(s, h)]
    for g in groups:
        states.append(group_step(prob, *states[-1], g, eta))
    return states


def affinity(prob, s, h, group: Group, eta: float, kind: str = "B") -> np.ndarray:
    """Affinity from ``group`` to every task (K,): 1 - L_k(after) / L_k(before). ``kind="A"``: Def. 1
    (extended to groups, Eq. 13: heads not updated); ``"B"``: Def. 2 (the group's heads updated)."""
    s1, h1 = group_step(prob, s, h, group, eta, heads=(kind == "B"))
    return 1.0 - prob.losses(s1, h1) / prob.losses(s, h)


def two_step_affinity(prob, s, h, groups: Sequence[Group], eta: float,
                      pairing: str = "own") -> tuple[np.ndarray, np.ndarray]:
    """Def. 4 for a sequence of groups: (product form Eq. 67, direct form Eq. 68), each (K,).

    ``pairing="own"``: the factor of step m is 1 - B_m with B_m measured from the losses just before and
    just after step m (Eq. 67). ``pairing="batch_start"``: every B_m divides by the losses at the start
    of the batch (a wrong implementation; then the product does not telescope)."""
    st = run_sequence(prob, s, h, groups, eta)
    L = np.array([prob.losses(*x) for x in st])
    prod = np.ones(prob.K)
    for m in range(len(groups)):
        den = L[m] if pairing == "own" else L[0]
        prod = prod * (L[m + 1] / den)
    return 1.0 - prod, 1.0 - L[-1] / L[0]


def _tol(*Ls: np.ndarray | float) -> float:
    """Rounding error of a difference of the given losses (64 eps times their sum of moduli)."""
    return 64 * EPS * float(sum(np.sum(np.abs(x)) for x in Ls))


# --------------------------------------------------------------------------------------------------
# Definitions 1, 2, 4 and Eq. 12
# --------------------------------------------------------------------------------------------------
def _random_groups(rng: np.random.Generator, K: int) -> list[tuple[int, ...]]:
    lab = rng.integers(0, K, K)
    lab[rng.permutation(K)[: min(K, 2)]] = [0, 1][: min(K, 2)]
    gs = [tuple(int(i) for i in np.flatnonzero(lab == m)) for m in range(K)]
    gs = [g for g in gs if g]
    return [gs[i] for i in rng.permutation(len(gs))]


def definition_checks(rng: np.random.Generator, n: int) -> dict[str, Check]:
    """Exact identities of the definitions, on random least-squares draws (K in 2..5, eta H ~ U(0, 1]):

    - ``A = B off the group``: for k not in G, A_{G->k} = B_{G->k} (the head of k does not move; end of
      Sec. A.1). Margin -|A - B| relative to the rounding of the two losses.
    - ``Eq. 67 = Eq. 68``: for a random sequence of groups, the product of the one-step factors equals
      1 - L_k(end)/L_k(start) (telescoping). Margin -|product form - direct form| / tolerance scale.
    - ``Eq. 67 with batch-start denominators`` (counter): the same product when every step's affinity is
      divided by the batch-start loss; it does not telescope, so the check must fail.
    """
    mA, tA, m67, t67, mbad, tbad = (np.empty(n) for _ in range(6))
    for d in range(n):
        K = int(rng.integers(2, 6))
        prob = random_lsq(rng, K)
        s, h = random_state(rng, prob)
        eta = rng.uniform(0, 1) / prob.H
        groups = _random_groups(rng, K)
        G = groups[0]
        out = [k for k in range(K) if k not in G] or [0]
        k = out[0]
        L0 = prob.losses(s, h)
        sA, _ = group_step(prob, s, h, G, eta, heads=False)
        sB, hB = group_step(prob, s, h, G, eta)
        LA, LB = prob.losses(sA, h)[k], prob.losses(sB, hB)[k]
        mA[d] = -abs(LA - LB) / L0[k] if k not in G else 0.0
        tA[d] = _tol(LA, LB) / L0[k]
        if len(groups) < 2:  # a sequence needs two groups
            groups = [G, tuple(i for i in range(K) if i not in G)] if len(G) < K else [G, G]
        prod, direct = two_step_affinity(prob, s, h, groups, eta)
        bad, _ = two_step_affinity(prob, s, h, groups, eta, pairing="batch_start")
        L = np.array([prob.losses(*x) for x in run_sequence(prob, s, h, groups, eta)])
        scale = np.max(np.abs(L).sum(0) / L[0])
        m67[d] = -np.max(np.abs(prod - direct))
        t67[d] = 64 * EPS * scale * len(groups)
        mbad[d] = -np.max(np.abs(bad - direct))
        tbad[d] = t67[d]
    return {
        "A=B": Check("A_{G->k} = B_{G->k} for k outside G (Sec. A.1)", mA, tA),
        "Eq. 67-68": Check("two-step affinity: product of one-step factors = 1 - L_end/L_start", m67, t67),
        "Eq. 67 batch-start": Check("the same with every factor over the batch-start loss", mbad, tbad),
    }


def eq12_check(rng: np.random.Generator, n: int, model: str = "lsq", eta_max: float = 1.0,
               head_at_new_shared: bool = False, head_near_optimum: bool = False) -> Check:
    """Eq. 12 (Sec. A.1): for k in G, A_{G->k} <= B_{G->k}, i.e. moving k's head as well can only lower
    L_k after the shared step. Draws: K in 2..4, k in G, eta uniform in (0, eta_max / H_k] where H_k is
    the exact smoothness of L_k (lsq, convex) or, for the bilinear model, a curvature scale.

    Margin (L_k(s', h_k) - L_k(s', h_k')) / (eta ||grad_{h_k} L_k||^2): >= 0 iff A <= B; the first-order
    expansion gives 1. ``head_at_new_shared=True`` takes the head step with the gradient at the updated
    shared parameters (a variant for which the descent lemma proves Eq. 12 when eta <= 2/H).
    ``head_near_optimum=True`` (lsq): h_k = argmin_h L_k(s, h) + 1e-3 N(0, I), so the head gradient is
    small against the shared step (the constructed case)."""
    m, tol = np.empty(n), np.empty(n)
    for d in range(n):
        K = int(rng.integers(2, 5))
        prob = random_lsq(rng, K) if model == "lsq" else random_bilinear(rng, K)
        s, h = random_state(rng, prob)
        G = _random_groups(rng, K)[0]
        k = int(rng.choice(G))
        if head_near_optimum:
            P, C, Q = prob.blocks(k)
            bk = prob.b[k][prob.Ps:]
            h[k] = np.linalg.solve(Q, bk - C.T @ s) + 1e-3 * rng.standard_normal(prob.Ph)
        Hk = prob.H_tasks[k] if model == "lsq" else _scale_bilinear(prob, s, h)
        eta = rng.uniform(0, 1) * eta_max / Hk
        sA, _ = group_step(prob, s, h, G, eta, heads=False)
        sB, hB = group_step(prob, s, h, G, eta, head_at_new_shared=head_at_new_shared)
        LA, LB = prob.losses(sA, h)[k], prob.losses(sB, hB)[k]
        gh = prob.grads(s, h)[1][k]
        den = eta * float(gh @ gh)
        m[d] = (LA - LB) / den
        tol[d] = _tol(LA, LB) / den
    name = f"Eq. 12, A_G->k <= B_G->k, k in G ({model}, eta H <= {eta_max:g}"
    name += ", head near its optimum" if head_near_optimum else ""
    name += ", head step at the new shared parameters)" if head_at_new_shared else ")"
    return Check(name, m, tol)


def eq12_expansion(rng: np.random.Generator, n: int) -> Check:
    """Where Eq. 12 breaks, exactly (quadratics): with g_G the group's shared gradient and b, C, Q the
    head gradient and Hessian blocks of L_k,

        L_k(s', h_k) - L_k(s', h_k') = eta ||b||^2 - eta^2 b^T C^T g_G - eta^2/2 b^T Q b .

    The cross term has no sign, so for any eta > 0 a state with ||b|| small enough against
    |b^T C^T g_G| violates Eq. 12. Margin: -|lhs - rhs| relative to the rounding of the losses."""
    m, tol = np.empty(n), np.empty(n)
    for d in range(n):
        K = int(rng.integers(2, 5))
        prob = random_lsq(rng, K)
        s, h = random_state(rng, prob)
        G = _random_groups(rng, K)[0]
        k = int(rng.choice(G))
        eta = rng.uniform(0, 2) / prob.H_tasks[k]
        gs, gh = prob.grads(s, h)
        gG, b = gs[list(G)].sum(0), gh[k]
        _, C, Q = prob.blocks(k)
        sA, _ = group_step(prob, s, h, G, eta, heads=False)
        sB, hB = group_step(prob, s, h, G, eta)
        LA, LB = prob.losses(sA, h)[k], prob.losses(sB, hB)[k]
        rhs = eta * b @ b - eta**2 * b @ C.T @ gG - 0.5 * eta**2 * b @ Q @ b
        m[d] = -abs((LA - LB) - rhs)
        tol[d] = _tol(LA, LB) + 64 * EPS * (eta * b @ b + eta**2 * (abs(b @ C.T @ gG) + abs(b @ Q @ b)))
        m[d], tol[d] = m[d] / prob.losses(s, h)[k], tol[d] / prob.losses(s, h)[k]
    return Check("L(s',h) - L(s',h') = eta|b|^2 - eta^2 b.C^T g_G - eta^2/2 b.Qb (quadratics)", m, tol)


# --------------------------------------------------------------------------------------------------
# Theorems 1 and 2: affinity order <-> gradient-alignment order
# --------------------------------------------------------------------------------------------------
def order_draws(rng: np.random.Generator, n: int, eta_rule: str = "below", eta_rel: float = 1.0) -> dict[str, np.ndarray]:
    """Three least-squares tasks (i, j, k) = (0, 1, 2), a random state, and

    Delta = (g_i - g_j) . g_k (shared gradients), c = 1/2 [(g_i+g_k)^T P (g_i+g_k) - (g_j+g_k)^T P (g_j+g_k)]
    with P the shared Hessian block of L_k, so that exactly
    L_k(s|i,k) - L_k(s|j,k) = -eta Delta + eta^2 c  and  L_k (A_{i,k->k} - A_{j,k->k}) = eta Delta - eta^2 c.
    The orders agree iff eta < eta* = Delta / c (when Delta c > 0; else for every eta).

    ``eta_rule``: "below" eta = u min(eta*, 1/H), u ~ U(0, 1); "fixed" eta = 1/H (the standard step);
    "above" eta = 1.1 eta* on the draws with finite eta* (others dropped); "rel" eta = eta_rel / H, a
    fixed grid point that does not depend on eta* (for the same ``rng`` seed, every eta_rel sees the same
    states, so a grid eta = 10^-k / H shows the failing share as eta -> 0). Returns per-draw arrays."""
    keys = ("Delta", "c", "eta", "eta_star", "Lk", "Li_", "Lj_", "Ai", "Aj", "gnorm")
    out: dict[str, list] = {k: [] for k in keys}
    tries = 0
    while len(out["eta"]) < n and tries < 20 * n:
        tries += 1
        prob = random_lsq(rng, 3)
        s, h = random_state(rng, prob)
        gs, _ = prob.grads(s, h)
        gi, gj, gk = gs
        P = prob.blocks(2)[0]
        Delta = float((gi - gj) @ gk)
        c = 0.5 * float((gi + gk) @ P @ (gi + gk) - (gj + gk) @ P @ (gj + gk))
        eta_star = Delta / c if Delta * c > 0 else math.inf
        H = prob.H
        if eta_rule == "below":
            eta = rng.uniform(0, 1) * min(eta_star, 1 / H)
        elif eta_rule == "fixed":
            eta = 1 / H
        elif eta_rule == "above":
            if not math.isfinite(eta_star):
                continue
            eta = 1.1 * eta_star
        elif eta_rule == "rel":
            eta = eta_rel / H
        else:
            raise ValueError(f"order_draws: eta_rule must be 'below', 'fixed', 'above' or 'rel', got {eta_rule!r}")
        L = prob.losses(s, h)
        Li_ = prob.losses(*group_step(prob, s, h, (0, 2), eta, heads=False))[2]
        Lj_ = prob.losses(*group_step(prob, s, h, (1, 2), eta, heads=False))[2]
        for key, v in zip(keys, (Delta, c, eta, eta_star, L[2], Li_, Lj_, 1 - Li_ / L[2], 1 - Lj_ / L[2],
                                 float(np.linalg.norm(gk) * (np.linalg.norm(gi) + np.linalg.norm(gj))))):
            out[key].append(v)
    return {k: np.array(v) for k, v in out.items()}


def theorem1_check(dr: dict[str, np.ndarray], label: str) -> Check:
    """Theorem 1: A_{i,k->k} >= A_{j,k->k} implies g_i.g_k >= g_j.g_k. Tasks are relabelled per draw
    so that the premise holds (A_i >= A_j); margin = Delta / (|g_k|(|g_i| + |g_j|)) of the relabelled
    pair; the tolerance is the rounding of the compared losses, carried through Delta ~ (L_j' - L_i')/eta."""
    sgn = np.where(dr["Ai"] >= dr["Aj"], 1.0, -1.0)
    m = sgn * dr["Delta"] / dr["gnorm"]
    tol = 64 * EPS * (dr["Li_"] + dr["Lj_"]) / (dr["eta"] * dr["gnorm"])
    return Check(f"Thm 1: A_(i,k->k) >= A_(j,k->k) => g_i.g_k >= g_j.g_k ({label})", m, tol)


def theorem2_check(dr: dict[str, np.ndarray], label: str) -> Check:
    """Theorem 2: g_i.g_k >= g_j.g_k implies L_k(s|i,k) <= L_k(s|j,k). Relabelled so that Delta >= 0;
    margin = (L_k(s|j,k) - L_k(s|i,k)) / (eta |g_k|(|g_i| + |g_j|))."""
    sgn = np.where(dr["Delta"] >= 0, 1.0, -1.0)
    den = dr["eta"] * dr["gnorm"]
    m = sgn * (dr["Lj_"] - dr["Li_"]) / den
    return Check(f"Thm 2: g_i.g_k >= g_j.g_k => L_k(s|i,k) <= L_k(s|j,k) ({label})", m,
                 64 * EPS * (dr["Li_"] + dr["Lj_"]) / den)


def _slope(eta: np.ndarray, r: np.ndarray) -> float:
    return float(np.polyfit(np.log(eta), np.log(np.abs(r)), 1)[0])


def taylor_slopes(rng: np.random.Generator, n: int, which: str, model: str = "bilinear",
                  decades: tuple[float, float] = (-4.0, -1.5), points: int = 6,
                  first_order: bool = True) -> tuple[Check, dict[str, Any]]:
    """Order of the terms the proofs drop: for each draw the residual r(eta) on a geometric grid of eta
    (``decades`` of 1/H, or of the bilinear curvature scale), and the fitted log-log slope.

    ``which``: "theorem1" r = L_k (A_{i,k->k} - A_{j,k->k}) - eta (g_i - g_j).g_k (Eq. 16-17);
    "theorem1B" the same with the proximal affinity B (k's head steps in both groups, so its first-order
    contribution -eta ||b_k||^2 cancels in the difference);
    "theorem3" r = L_k (A_{i,k->k} - A_{i->k}) - eta ||g_k||^2 (Eq. 29-33); "theorem5_seq1" /
    "theorem5_seq2" r = L_k after the sequence ({i,k},{j}) / ({j},{i,k}) minus L_k after the joint step
    (Eq. 93-99 / 120-127; the first-order terms cancel). The claim is r = O(eta^2), i.e. a slope of at
    least 2 (more where the eta^2 coefficient happens to vanish): margin slope - 2 with a tolerance of 0.1
    for the fit. ``first_order=False`` (theorem1/3 only) leaves the first-order term in r, a residual of
    slope 1 that the check must reject. The fit uses the grid points where |r| exceeds 1e3 times the
    rounding error of the losses it subtracts (at least 3 points; otherwise the draw is counted as
    ``unjudged``, margin 0). Returns the check and the curves (eta, |r|/L_k)."""
    m = np.empty(n)
    curves = []
    unjudged = 0
    for d in range(n):
        prob = random_bilinear(rng, 3) if model == "bilinear" else random_lsq(rng, 3)
        s, h = random_state(rng, prob)
        base = 1 / (_scale_bilinear(prob, s, h) if model == "bilinear" else prob.H)
        etas = base * 10.0 ** np.linspace(decades[0], decades[1], points)
        L = prob.losses(s, h)[2]
        gs, _ = prob.grads(s, h)
        r, rnd = np.empty(points), np.empty(points)
        for e_i, eta in enumerate(etas):
            if which in ("theorem1", "theorem1B"):
                heads = which == "theorem1B"  # B: k's head moves in both group steps (same first order)
                La = prob.losses(*group_step(prob, s, h, (0, 2), eta, heads=heads))[2]
                Lb = prob.losses(*group_step(prob, s, h, (1, 2), eta, heads=heads))[2]
                r[e_i] = (Lb - La) - first_order * eta * (gs[0] - gs[1]) @ gs[2]
            elif which == "theorem3":
                La = prob.losses(*group_step(prob, s, h, (0, 2), eta, heads=False))[2]
                Lb = prob.losses(*group_step(prob, s, h, (0,), eta, heads=False))[2]
                r[e_i] = (Lb - La) - first_order * eta * gs[2] @ gs[2]
            else:
                La = prob.losses(*group_step(prob, s, h, (0, 1, 2), eta))[2]
                seq = [(0, 2), (1,)] if which == "theorem5_seq1" else [(1,), (0, 2)]
                Lb = prob.losses(*run_sequence(prob, s, h, seq, eta)[-1])[2]
                r[e_i] = Lb - La
            rnd[e_i] = _tol(La, Lb, L)
        judged = np.abs(r) > 1e3 * rnd  # points whose residual stands above the rounding of the losses
        if judged.sum() >= 3:
            m[d] = _slope(etas[judged], r[judged]) - 2.0
        else:  # the remainder is below rounding on (almost) the whole grid: nothing to fit, no evidence against
            m[d] = 0.0
            unjudged += 1
        curves.append((etas / base, np.abs(r) / L))
    what = "dropped terms" if first_order else "first-order term kept"
    return (Check(f"{which}: {what} O(eta^2) (fitted slope >= 2 - 0.1, {model})", m, 0.1),
            {"curves": curves, "unjudged": unjudged})


# --------------------------------------------------------------------------------------------------
# Theorem 3
# --------------------------------------------------------------------------------------------------
def theorem3_check(rng: np.random.Generator, n: int, eta_rule: str = "below", near_optimum: bool = False,
                   eta_rel: float = 1.0) -> Check:
    """Theorem 3: A_{i,k->k} >= A_{i->k}. Exactly (quadratics, P the shared Hessian block of L_k):
    L_k (A_{i,k->k} - A_{i->k}) = eta ||g_k||^2 - eta^2 (g_i^T P g_k + 1/2 g_k^T P g_k), so the claim holds
    iff eta <= eta3* = ||g_k||^2 / (g_i^T P g_k + 1/2 g_k^T P g_k) (when that denominator is positive).

    ``eta_rule``: "below" eta = u min(eta3*, 1/H); "fixed" eta = 1/H; "rel" eta = eta_rel / H (a fixed
    grid point; the same states for every eta_rel with the same ``rng`` seed). ``near_optimum``: the state puts
    task k close to its own minimiser (s, h_k) = z_k* + 1e-3 N(0, I) while i is far from it (the
    constructed case). Margin = (L_k(s|i) - L_k(s|i,k)) / (eta ||g_k||^2) (the expansion says 1)."""
    m, tol = np.empty(n), np.empty(n)
    for d in range(n):
        prob = random_lsq(rng, 3)
        s, h = random_state(rng, prob)
        if near_optimum:
            z = np.linalg.solve(prob.A[2], prob.b[2]) + 1e-3 * rng.standard_normal(prob.Ps + prob.Ph)
            s, h[2] = z[: prob.Ps], z[prob.Ps:]
        gs, _ = prob.grads(s, h)
        gi, gk = gs[0], gs[2]
        P = prob.blocks(2)[0]
        den3 = gi @ P @ gk + 0.5 * gk @ P @ gk
        eta3 = gk @ gk / den3 if den3 > 0 else math.inf
        u = rng.uniform(0, 1)  # drawn under every rule, so the states do not depend on the rule
        eta = {"below": u * min(eta3, 1 / prob.H), "fixed": 1 / prob.H, "rel": eta_rel / prob.H}[eta_rule]
        Lik = prob.losses(*group_step(prob, s, h, (0, 2), eta, heads=False))[2]
        Li = prob.losses(*group_step(prob, s, h, (0,), eta, heads=False))[2]
        m[d] = (Li - Lik) / (eta * gk @ gk)
        tol[d] = _tol(Li, Lik) / (eta * gk @ gk)
    what = "k near its optimum, " if near_optimum else ""
    rule = f"{eta_rel:g}/H" if eta_rule == "rel" else eta_rule
    return Check(f"Thm 3: A_(i,k->k) >= A_(i->k) ({what}eta {rule})", m, tol)


def theorem3_expansion(rng: np.random.Generator, n: int) -> Check:
    """The exact second-order form of Eq. 29-33 on quadratics (see :func:`theorem3_check`); margin =
    -|lhs - rhs| / L_k, tolerance the rounding of the losses."""
    m, tol = np.empty(n), np.empty(n)
    for d in range(n):
        prob = random_lsq(rng, 3)
        s, h = random_state(rng, prob)
        gs, _ = prob.grads(s, h)
        gi, gk = gs[0], gs[2]
        P = prob.blocks(2)[0]
        eta = rng.uniform(0, 2) / prob.H
        Lik = prob.losses(*group_step(prob, s, h, (0, 2), eta, heads=False))[2]
        Li = prob.losses(*group_step(prob, s, h, (0,), eta, heads=False))[2]
        rhs = eta * gk @ gk - eta**2 * (gi @ P @ gk + 0.5 * gk @ P @ gk)
        L = prob.losses(s, h)[2]
        m[d] = -abs((Li - Lik) - rhs) / L
        tol[d] = (_tol(Li, Lik) + 64 * EPS * (eta * gk @ gk + eta**2 * (abs(gi @ P @ gk) + gk @ P @ gk))) / L
    return Check("L_k(A_ik->k - A_i->k) = eta|g_k|^2 - eta^2 (g_i.P g_k + g_k.P g_k/2)", m, tol)


# --------------------------------------------------------------------------------------------------
# Theorem 4
# --------------------------------------------------------------------------------------------------
def theorem4_check(rng: np.random.Generator, n: int, bound: str = "paper", factor: float = 1.0,
                   convex_fraction: float = 0.5) -> tuple[Check, dict[str, Any]]:
    """Theorem 4, Eq. 6-7, at every sub-step of one sequential batch.

    Draws: K in 2..6 tasks, a random partition into groups and a random order; least squares (convex)
    in ``convex_fraction`` of the draws, indefinite quadratics otherwise; H = max_k ||A_k|| exactly.
    Step: ``bound="paper"`` eta = factor * u * min_m min(2/(HK), 1/(H|G_m|)); ``"shared_only"`` eta =
    factor * u * 2/(HK) (the |G_m| condition dropped); u ~ U(0, 1], u = 1 in 30 % of the draws.

    For sub-step m (group G_m, state before it): LHS = sum of all task losses after it, RHS = the sum
    before it - eta g_m.(sum_k g_k - g_m) - eta/2 ||g_ts,m||^2 (g = shared gradients of the groups,
    g_ts = head gradients of G_m). Margin = min over sub-steps of (RHS - LHS) / scale with
    scale = eta (|g_m| |sum g| + |g_m|^2 + ||g_ts,m||^2). Info: draws whose eta exceeded some
    1/(H|G_m|), and sub-steps whose RHS is above the loss before (Eq. 7 allows an increase)."""
    m, tol = np.empty(n), np.empty(n)
    over_Gm = 0
    allow_up, went_up, substeps = 0, 0, 0
    for d in range(n):
        K = int(rng.integers(2, 7))
        prob = random_lsq(rng, K) if rng.random() < convex_fraction else random_indefinite(rng, K)
        s, h = random_state(rng, prob)
        groups = _random_groups(rng, K)
        H = prob.H
        u = 1.0 if rng.random() < 0.3 else rng.uniform(0, 1)
        if bound == "paper":
            eta = factor * u * min(min(2 / (H * K), 1 / (H * len(g))) for g in groups)
        else:
            eta = factor * u * 2 / (H * K)
        over_Gm += any(eta > 1 / (H * len(g)) for g in groups)
        worst, wtol = math.inf, 0.0
        for g in groups:
            gs, gh = prob.grads(s, h)
            idx = list(g)
            gm, gsum = gs[idx].sum(0), gs.sum(0)
            gts2 = float(np.sum(gh[idx] ** 2))
            before = prob.losses(s, h)
            s, h = group_step(prob, s, h, g, eta)
            after = prob.losses(s, h)
            rhs = before.sum() - eta * gm @ (gsum - gm) - 0.5 * eta * gts2
            scale = eta * (np.linalg.norm(gm) * np.linalg.norm(gsum) + gm @ gm + gts2) + 1e-300
            q = (rhs - after.sum()) / scale
            t = _tol(before, after) / scale
            allow_up += rhs > before.sum()
            went_up += after.sum() > before.sum()
            substeps += 1
            if q + t < worst + wtol:
                worst, wtol = q, t
        m[d], tol[d] = worst, wtol
    name = "Eq. 6-7 at every sub-step, eta <= " + ("min(2/HK, 1/(H|G_m|))" if bound == "paper" else "2/(HK)")
    if factor != 1.0:
        name += f" x {factor:g}"
    return Check(name, m, tol), {"draws with eta > 1/(H|G_m|)": over_Gm, "sub-steps": substeps,
                                 "sub-steps whose bound allows an increase": allow_up,
                                 "sub-steps where the total loss increased": went_up}


def theorem4_tight(K: int = 2, factors: Sequence[float] = (1.0, 1.05)) -> Check:
    """Sharpness of eta <= 2/(HK): K tasks L_i = H/2 (||s - c_i||^2 + ||h_i - d_i||^2) in R^2 x R,
    groups = singletons, heads at their optima (h_i = d_i, no head gradient), one sub-step of group
    {0}. The descent lemma is an equality here, so Eq. 7 holds with equality at eta = 2/(HK) and fails
    above it. One margin per factor (eta = factor * 2/(HK))."""
    H = 1.0
    c = np.array([[1.0, 0.0], [-1.0, 0.5], [0.3, -1.0], [0.0, 2.0], [2.0, 1.0], [-1.5, -0.5]])[:K]
    A = np.stack([H * np.eye(3)] * K)
    dd = np.linspace(1.0, 2.0, K)
    z = np.concatenate([c, dd[:, None]], axis=1)
    prob = QuadTasks(A, np.einsum("kpq,kq->kp", A, z), 0.5 * H * np.sum(z * z, axis=1), 2)
    s, h = np.zeros(2), dd[:, None].copy()
    m, tol = [], []
    for f in factors:
        eta = f * 2 / (H * K)
        gs, gh = prob.grads(s, h)
        gm, gsum, gts2 = gs[0], gs.sum(0), float(gh[0] @ gh[0])
        before = prob.losses(s, h)
        after = prob.losses(*group_step(prob, s, h, (0,), eta))
        rhs = before.sum() - eta * gm @ (gsum - gm) - 0.5 * eta * gts2
        scale = eta * (np.linalg.norm(gm) * np.linalg.norm(gsum) + gm @ gm + gts2)
        m.append((rhs - after.sum()) / scale)
        tol.append(_tol(before, after) / scale)
    return Check(f"Eq. 7 on isotropic tasks, K = {K}, eta = {list(factors)} x 2/(HK)", np.array(m), np.array(tol),
                 unit="step sizes")


# --------------------------------------------------------------------------------------------------
# Theorem 5
# --------------------------------------------------------------------------------------------------
def theorem5_draws(rng: np.random.Generator, n: int, eta_rel: float = 1e-3, max_tries: int | None = None) -> dict[str, Any]:
    """Draws of three least-squares tasks (i, j, k) = (0, 1, 2) that satisfy Theorem 5's hypotheses at
    the state (convex losses; {i, k} with positive affinity both ways, A_{i->k} > 0 and A_{k->i} > 0; j
    with negative affinity to k, A_{j->k} < 0), at eta = eta_rel / H. Rejection sampling: draws that
    miss the hypotheses are discarded (their number is returned).

    Per draw: L_k after the joint step, after ({i,k},{j}) and after ({j},{i,k}); the exact second-order
    coefficient of L_k(seq2) - L_k(joint), c2 = a^T (P_i + P) g_j + b^T C^T g_j (a = g_k, b = head
    gradient of k, P, C blocks of L_k, P_i shared block of L_i); and ||b|| before / after j's step."""
    keys = ("L", "joint", "seq1", "seq2", "c2", "b0", "b1", "eta")
    out: dict[str, list] = {k: [] for k in keys}
    tries, max_tries = 0, (max_tries or 50 * n)
    while len(out["L"]) < n and tries < max_tries:
        tries += 1
        prob = random_lsq(rng, 3)
        s, h = random_state(rng, prob)
        eta = eta_rel / prob.H
        A = lambda g: affinity(prob, s, h, g, eta, kind="A")  # noqa: E731
        if not (A((0,))[2] > 0 and A((2,))[0] > 0 and A((1,))[2] < 0):
            continue
        L = prob.losses(s, h)[2]
        joint = prob.losses(*group_step(prob, s, h, (0, 1, 2), eta))[2]
        seq1 = prob.losses(*run_sequence(prob, s, h, [(0, 2), (1,)], eta)[-1])[2]
        st2 = run_sequence(prob, s, h, [(1,), (0, 2)], eta)
        seq2 = prob.losses(*st2[-1])[2]
        gs, gh = prob.grads(s, h)
        P, C, _ = prob.blocks(2)
        Pi = prob.blocks(0)[0]
        c2 = gs[2] @ (Pi + P) @ gs[1] + gh[2] @ C.T @ gs[1]
        b1 = prob.grads(*st2[1])[1][2]
        for key, v in zip(keys, (L, joint, seq1, seq2, c2, np.linalg.norm(gh[2]), np.linalg.norm(b1), eta)):
            out[key].append(v)
    res = {k: np.array(v) for k, v in out.items()}
    res["rejected"] = tries - len(res["L"])
    return res


def theorem5_checks(dr: dict[str, Any]) -> dict[str, Check]:
    """``le``: Eq. 8 right, B_{i,j,k->k} <= B_{j;i,k->k} i.e. L_k(seq2) <= L_k(joint); margin
    (joint - seq2) / (eta^2 |c2|) (the gap is eta^2 c2 + O(eta^3)). ``c2 sign``: the gap has the sign of
    c2 (margin (seq2 - joint) c2 / (eta^2 c2^2)). ``head grows``: the proof's last step, ||g_ts,k||
    larger after j's step; margin (b1 - b0) / b0."""
    e2 = dr["eta"] ** 2 * np.abs(dr["c2"])
    tol = 64 * EPS * (dr["joint"] + dr["seq2"]) / e2
    return {
        "le": Check("Thm 5: B_(i,j,k->k) <= B_(j;i,k->k) (Eq. 8 right)", (dr["joint"] - dr["seq2"]) / e2, tol),
        "c2 sign": Check("sign of L_k(seq2) - L_k(joint) = sign of c2", (dr["seq2"] - dr["joint"]) * np.sign(dr["c2"]) / e2, tol),
        "head grows": Check("proof of Thm 5: ||g_ts,k|| grows after j's step", (dr["b1"] - dr["b0"]) / dr["b0"], 1e3 * EPS),
    }


def gap_curves(rng: np.random.Generator, n_curves: int = 5, points: int = 13, n_fail: int = 0) -> dict[str, np.ndarray]:
    """Theorem 5 gaps vs eta on draws that satisfy its hypotheses: |L_k(seq1) - L_k(joint)| / L_k and
    (L_k(seq2) - L_k(joint)) / L_k for eta H in 10^[-4, 0]. The last ``n_fail`` curves are draws
    (meeting the hypotheses) selected for c2 > 0, i.e. where Eq. 8 (right) fails, for illustration."""
    rels = 10.0 ** np.linspace(-4, 0, points)
    out: dict[str, np.ndarray] = {"eta_rel": rels}
    rows1, rows2 = [], []
    for c in range(n_curves):
        sub = np.random.default_rng([int(rng.integers(2**31)), c])
        while True:
            prob = random_lsq(sub, 3)
            s, h = random_state(sub, prob)
            e0 = 1e-3 / prob.H
            A = lambda g: affinity(prob, s, h, g, e0, kind="A")  # noqa: E731
            if A((0,))[2] > 0 and A((2,))[0] > 0 and A((1,))[2] < 0:
                if c < n_curves - n_fail:
                    break
                gs, gh = prob.grads(s, h)
                P, C, _ = prob.blocks(2)
                if gs[2] @ (prob.blocks(0)[0] + P) @ gs[1] + gh[2] @ C.T @ gs[1] > 0:
                    break
        L = prob.losses(s, h)[2]
        r1, r2 = [], []
        for r in rels:
            eta = r / prob.H
            joint = prob.losses(*group_step(prob, s, h, (0, 1, 2), eta))[2]
            r1.append(abs(prob.losses(*run_sequence(prob, s, h, [(0, 2), (1,)], eta)[-1])[2] - joint) / L)
            r2.append((prob.losses(*run_sequence(prob, s, h, [(1,), (0, 2)], eta)[-1])[2] - joint) / L)
        rows1.append(r1)
        rows2.append(r2)
    out["seq1"], out["seq2"] = np.array(rows1), np.array(rows2)
    return out


# --------------------------------------------------------------------------------------------------
# Algorithm 1 on a planted problem (the library's registered ``stgu`` method)
# --------------------------------------------------------------------------------------------------
@dataclass
class PlantedProblem:
    """Least squares with planted task relations: y_k = X a_k + Z_k phi_k + noise, shared weights
    a_k = sign_k * a (sign = +1 for the related tasks, -1 for the conflicting one), per-task features
    Z_k and heads phi_k. Model: prediction_k = X s + Z_k h_k (s shared, h_k the head)."""

    X: torch.Tensor  # (N, p)
    Z: torch.Tensor  # (K, N, q)
    y: torch.Tensor  # (K, N)
    signs: tuple[float, ...]

    @property
    def K(self) -> int:
        return self.y.shape[0]


def planted_problem(seed: int, signs: Sequence[float] = (1.0, 1.0, -1.0), N: int = 256, p: int = 6,
                    q: int = 3, noise: float = 0.1) -> PlantedProblem:
    g = torch.Generator().manual_seed(seed)
    K = len(signs)
    X = torch.randn(N, p, generator=g, dtype=torch.float64)
    Z = torch.randn(K, N, q, generator=g, dtype=torch.float64)
    a = torch.randn(p, generator=g, dtype=torch.float64)
    phi = torch.randn(K, q, generator=g, dtype=torch.float64)
    sg = torch.tensor(list(signs), dtype=torch.float64)
    y = sg[:, None] * (X @ a)[None] + torch.einsum("knq,kq->kn", Z, phi) + noise * torch.randn(K, N, generator=g, dtype=torch.float64)
    return PlantedProblem(X, Z, y, tuple(float(x) for x in signs))


@dataclass
class StguRun:
    """History of a run: tracked affinity after every batch (T, K, K), groups used per batch, losses."""

    affinity: np.ndarray
    groups: list[tuple[tuple[int, ...], ...]]
    losses: np.ndarray  # (T, K) first-forward losses of each batch
    method: Any = None

    def share(self, grouping: tuple[tuple[int, ...], ...], start: int = 0) -> float:
        g = self.groups[start:]
        return sum(x == grouping for x in g) / max(1, len(g))


def run_stgu(prob: PlantedProblem, *, iterations: int = 300, lr: float = 0.05, batch: int = 32,
             beta: float = 0.05, warmup: int = 50, seed: int = 0, method: Any = None,
             device: str = "cpu") -> StguRun:
    """Train the planted model with a STGU method (default: the registered ``stgu``) and SGD(lr), on
    random mini-batches (drawn on the CPU, so the batches do not depend on ``device``); returns the
    affinity trace and the groups of every batch."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    K, p, q = prob.K, prob.X.shape[1], prob.Z.shape[2]
    X, Z, Y = prob.X.to(dev), prob.Z.to(dev), prob.y.to(dev)
    s = torch.nn.Parameter(torch.zeros(p, dtype=torch.float64, device=dev))
    heads = [torch.nn.Parameter(torch.zeros(q, dtype=torch.float64, device=dev)) for _ in range(K)]
    opt = torch.optim.SGD([s, *heads], lr=lr)
    m = methods.make("stgu", beta=beta, warmup=warmup, seed=seed) if method is None else method
    gen = torch.Generator().manual_seed(seed)
    N = prob.X.shape[0]
    A, G, L = [], [], []
    for _ in range(iterations):
        idx = torch.randperm(N, generator=gen)[:batch].to(dev)

        def forward(idx=idx) -> Forward:
            pred = X[idx] @ s + torch.stack([Z[k, idx] @ heads[k] for k in range(K)])
            return Forward(0.5 * ((pred - Y[:, idx]) ** 2).mean(1))

        res = m.step(StepContext(forward=forward, shared=[s], optimizer=opt, specific=heads))
        A.append(m.affinity.cpu().numpy())
        G.append(m.groups)
        L.append(res.losses.cpu().numpy())
    return StguRun(np.array(A), G, np.array(L), m)


PAIRINGS = ("own", "batch_start", "one_early")


class PairingSTGU(STGU):
    """A STGU whose affinity update of group m may use the wrong pair of losses (for the implementation
    note and its tests). With L^(0) the losses of the batch's first forward pass and L^(m+1) those after
    the m-th group step (m = 0, 1, ...):

    - ``"own"``: (L^(m), L^(m+1)), the losses just before and just after group m's own step (what the
      registered ``stgu`` does; Def. 2);
    - ``"batch_start"``: (L^(0), L^(m+1)), every group divides by the batch-start losses, so group m is
      also credited with the effect of the groups updated before it;
    - ``"one_early"``: (L^(max(m-1, 0)), L^(m+1)), the denominator saved one forward pass too early
      (group m is credited with group m-1's step too). With two groups it coincides with
      ``"batch_start"``; from three groups on all three pairings differ."""

    def __init__(self, *args: Any, pairing: str = "batch_start", **kwargs: Any):
        if pairing not in PAIRINGS:
            raise ValueError(f"PairingSTGU: pairing must be one of {PAIRINGS}, got {pairing!r}")
        super().__init__(*args, **kwargs)
        self.pairing = pairing

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        losses = out.losses
        K = losses.shape[0]
        _check_losses(losses)
        self._init(K)
        w = torch.ones(K, dtype=losses.dtype)
        groups = self.next_groups(K)
        seq = self.ordered(groups)
        first = losses.detach()
        hist = [first]
        for mm, group in enumerate(seq):
            ctx.optimizer.zero_grad(set_to_none=True)
            weighted_sum(losses, w, group).backward()  # the group's graphs only (autodiff.stack_losses)
            release_unreached(ctx.specific)
            ctx.optimizer.step()
            losses = ctx.forward().losses
            _check_losses(losses)
            hist.append(losses.detach())
            before = {"own": hist[mm], "batch_start": hist[0], "one_early": hist[max(mm - 1, 0)]}[self.pairing]
            self.update_affinity(group, before, hist[-1])
        self._t += 1
        self.last_groups = groups
        self.n_groups_history.append(len(groups))
        self.grouping_counts[groups] += 1
        return StepResult(first, {"n_groups": float(len(groups))})


class BatchStartSTGU(PairingSTGU):
    """A wrong implementation, for the implementation note: every group's affinity is measured from
    the losses at the start of the batch (before *all* group steps) to the losses after its own step,
    so group m is also credited with the effect of the groups updated before it
    (:class:`PairingSTGU` with ``pairing="batch_start"``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, pairing="batch_start", **kwargs)


def hand_case(method: Any = None, beta: float = 0.5) -> dict[str, Any]:
    """A case computable by hand: one shared scalar s = 0, no heads, L_0 = (s - 1)^2 / 2,
    L_1 = 0.2 (s + 1)^2 / 2, singleton groups in the order ({0}, {1}), SGD with eta = 0.5, one batch.

    By hand: L = (0.5, 0.1) at s = 0; after {0}'s step s = 0.5, L = (0.125, 0.225); after {1}'s step
    s = 0.35, L = (0.21125, 0.18225). Own-step pairing: B_{0->1} = 1 - 0.225/0.1 = -1.25,
    B_{1->0} = 1 - 0.21125/0.125 = -0.69 (task 1 hurts task 0), B_{0->0} = 0.75, B_{1->1} = 0.19.
    Batch-start pairing: B_{1->0} = 1 - 0.21125/0.5 = +0.5775 (task 1 looks helpful: it is credited
    with task 0's own progress), B_{1->1} = 1 - 0.18225/0.1 = -0.8225.
    Returns the exact values and the tracked affinity of ``method`` (registered ``stgu`` with order
    forward and singletons by default) after the batch; with beta, tracked = beta * B."""
    s = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([s], lr=0.5)

    def forward() -> Forward:
        return Forward(torch.stack([0.5 * (s[0] - 1) ** 2, 0.1 * (s[0] + 1) ** 2]))

    m = methods.make("stgu", grouping="singletons", order="forward", beta=beta) if method is None else method
    m.step(StepContext(forward=forward, shared=[s], optimizer=opt, specific=[]))
    own = np.array([[0.75, -1.25], [-0.69, 0.19]])
    start = np.array([[0.75, -1.25], [0.5775, -0.8225]])
    return {"tracked": m.affinity.numpy(), "own": beta * own, "batch_start": beta * start, "s_end": float(s.detach())}


def hand_case3(method: Any = None, beta: float = 0.5, eta: float = 0.3) -> dict[str, Any]:
    """Three singleton groups updated in the order ({0}, {1}, {2}), with heads: one shared scalar s and
    a scalar head h_k per task, L_k = a_k/2 (s + h_k - y_k)^2 with a = (1, 0.4, 2), y = (1, -1, 0.5),
    s = h = 0 at the start, SGD with ``eta``, one batch. Every group step moves s and its own head.

    The expected tracked affinities come from an independent computation, the numpy quadratic model
    (:class:`QuadTasks`, :func:`run_sequence`): the losses L^(0..3) before and after each step, and for
    each pairing of :class:`PairingSTGU` the rows tracked[m, j] = beta (1 - L_j(after) / L_j(before))
    (singletons: no within-group sign rule). The third group's row differs between all three pairings,
    so the case tells the correct pairing from both wrong ones.

    Returns the tracked affinity of ``method`` (default: the registered ``stgu``, singletons, forward
    order), the expected matrices per pairing and the numpy losses."""
    a, y = np.array([1.0, 0.4, 2.0]), np.array([1.0, -1.0, 0.5])
    K = 3
    A = np.stack([a[k] * np.ones((2, 2)) for k in range(K)])
    prob = QuadTasks(A, np.stack([a[k] * y[k] * np.ones(2) for k in range(K)]), 0.5 * a * y**2, 1)
    states = run_sequence(prob, np.zeros(1), np.zeros((K, 1)), [(0,), (1,), (2,)], eta)
    L = np.array([prob.losses(*x) for x in states])           # (4, K): L^(0), ..., L^(3)
    expected = {}
    for pairing in PAIRINGS:
        E = np.zeros((K, K))
        for m in range(K):
            den = {"own": L[m], "batch_start": L[0], "one_early": L[max(m - 1, 0)]}[pairing]
            E[m] = beta * (1.0 - L[m + 1] / den)
        expected[pairing] = E
    s = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    heads = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in range(K)]
    opt = torch.optim.SGD([s, *heads], lr=eta)
    at, yt = torch.as_tensor(a), torch.as_tensor(y)

    def forward() -> Forward:
        return Forward(torch.stack([0.5 * at[k] * (s[0] + heads[k][0] - yt[k]) ** 2 for k in range(K)]))

    m = methods.make("stgu", grouping="singletons", order="forward", beta=beta) if method is None else method
    m.step(StepContext(forward=forward, shared=[s], optimizer=opt, specific=heads))
    return {"tracked": m.affinity.numpy(), "expected": expected, "losses": L,
            "s_end": float(s.detach()), "s_end_numpy": float(states[-1][0][0])}


def grouping_slack(affinity: np.ndarray, grouping: Sequence[Sequence[int]]) -> float:
    """How firmly a tracked affinity (K x K, row = source) encodes ``grouping`` under the registered
    method's rule (tasks share a group iff their symmetrised, self-normalised affinity S_ij > 0):
    min over pairs of S_ij for pairs inside a group and -S_ij for pairs across groups. > 0: the next
    batch uses exactly ``grouping``; its size is the margin by which the sign pattern holds."""
    from ..methods.stgu import symmetric_affinity

    S = symmetric_affinity(torch.as_tensor(np.asarray(affinity, dtype=float))).numpy()
    lab = {k: g for g, grp in enumerate(grouping) for k in grp}
    K = S.shape[0]
    return float(min((S[i, j] if lab[i] == lab[j] else -S[i, j]) for i in range(K) for j in range(i + 1, K)))


def beta_effect(runs: dict[float, Sequence[StguRun]], warmup: int) -> dict[str, Any]:
    """The effect of the decay rate beta (STGU Fig. 4c / D.5) on runs of the same problems and seeds,
    ``runs[beta][r]``. Per run, after the warm-up: the roughness of the tracked affinity (mean over
    batches and off-diagonal pairs of |B~_t - B~_(t-1)|) and the number of batches whose grouping
    differs from the previous batch's.

    For an EMA, B~_t - B~_(t-1) = beta (B_t - B~_(t-1)), so the roughness should grow with beta; the
    paper's reading (larger beta: faster, noisier response, groups change more often) adds that the
    grouping changes should not become rarer as beta grows. Checks, one margin per run and pair of
    consecutive betas (small -> large): ``rougher`` log(roughness(large) / roughness(small)) (> 0:
    rougher); ``changes`` (changes(large) - changes(small)) / batches (>= 0: no fewer changes).
    Returns the checks and a table (beta, run, roughness, changes)."""
    betas = sorted(runs)
    n = len(runs[betas[0]])
    rows, m_rough, m_chg = [], [], []
    rough = {b: np.empty(n) for b in betas}
    chg = {b: np.empty(n) for b in betas}
    for b in betas:
        for r, run in enumerate(runs[b]):
            A = run.affinity[warmup:]
            off = ~np.eye(A.shape[1], dtype=bool)
            rough[b][r] = float(np.mean(np.abs(np.diff(A, axis=0))[:, off]))
            g = run.groups[warmup:]
            chg[b][r] = sum(g[t] != g[t - 1] for t in range(1, len(g)))
            rows.append({"beta": b, "run": r, "roughness": rough[b][r], "grouping changes": int(chg[b][r]),
                         "batches": len(g)})
    for lo, hi in zip(betas[:-1], betas[1:]):
        batches = max(1, len(runs[lo][0].groups) - warmup)
        m_rough.extend(np.log(rough[hi] / np.maximum(rough[lo], 1e-300)))
        m_chg.extend((chg[hi] - chg[lo]) / batches)
    import pandas as pd

    return {"rougher": Check("larger beta: rougher affinity trace", np.array(m_rough), 0.0, unit="run pairs"),
            "changes": Check("larger beta: no fewer grouping changes", np.array(m_chg), 0.0, unit="run pairs"),
            "table": pd.DataFrame(rows)}


def plot_traces(runs: dict[str, StguRun], pairs: Sequence[tuple[int, int]], names: Sequence[str]) -> Any:
    """One panel per (source, target) pair: tracked affinity vs batch, one line per run label; a last
    panel with the number of groups per batch."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, len(pairs) + 1, figsize=(4 * (len(pairs) + 1), 3.3))
    for lab, r in runs.items():
        for a, (i, j) in zip(ax, pairs):
            a.plot(r.affinity[:, i, j], label=lab)
        ax[-1].plot([len(g) for g in r.groups], label=lab, alpha=0.8)
    for a, (i, j) in zip(ax, pairs):
        a.axhline(0, color="k", lw=0.6)
        a.set(title=rf"$\tilde B_{{{names[i]}\to {names[j]}}}$", xlabel="batch")
    ax[-1].set(title="number of groups M", xlabel="batch")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
