"""Numerical checks of the Connection-Strength theory (chapter ``notebooks/connection_strength/01_theory.md``).

Jeong & Yoon, *Quantifying Task Priority for Multi-Task Optimization* (CVPR 2024), supplement
Theorems 1-5 (Eqs. 11-87) and Appendix B (loss scalings, Eqs. 88-89).

The small model of the theorem checks (:class:`LinearMTL`) is multi-task least squares whose smoothness
constant is known exactly: task k predicts its targets ``y_k`` (n,) from a shared input ``X`` (n x P)
through the shared weights ``theta_s`` (P,) and from its own features ``Z_k`` (n x m) through its head
``theta_k`` (m,),

    L_k(theta_s, theta_k) = ||X theta_s + Z_k theta_k - y_k||^2 / (2n).

Each L_k is a convex quadratic with Hessian ``[X Z_k]^T [X Z_k] / n``; ``H`` (the papers' Lipschitz
constant of every gradient) is the largest eigenvalue over k, computed exactly. The shared weights are
split into K blocks ``theta_{s,1..K}`` (Eq. 11; the channel groups of Phase 2), ``block[p]`` = the task
that has priority on coordinate p. Conventions: ``G`` (K x P) holds the shared task gradients g_k as
rows, ``w`` the loss weights; the paper assumes ``sum w = 1`` (Eq. 13), the library's methods use
``w = 1`` (the sum of losses): both appear below.

Every check returns a :class:`~mtl_src.theory.checks.Check`: one dimensionless margin per draw (``>= 0``:
the statement held in that draw) and a rounding tolerance derived from the size of the quantities that
are subtracted. Draws are never selected to make a check pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .. import methods
from ..benchmarks.base import Benchmark, Metric
from ..methods.connection_strength import connection_strength, project_on_top_priority
from ..nn import TaskBNConvEncoder, TaskBNGroup, TaskBNModel
from .checks import EPS, Check, Ledger

__all__ = [
    "Check", "Ledger", "LinearMTL", "random_problem", "random_weights", "random_blocks",
    "theorem1_first_order", "theorem1_identity", "theorem1_finite_step", "theorem1_connection_strength",
    "eq45_check", "eq56_check", "phase1_run", "gd_run", "phase1_draws", "phase2_direction", "phase2_step",
    "phase2_run", "library_agreement", "eq76_check", "eq76_counterexample", "gd_step_check",
    "top_task_protected", "theorem5_check", "gradient_floor",
    "cos_condition_example", "uw_stationarity", "dwa_recompute", "TinyTaskBN", "top_shares",
    "strength_from_state", "strength_check", "train_runs", "weight_trajectories", "final_test",
    "eq57_long", "eq77_long", "phase1_cycle", "eq57_on_cycle", "trained_priority_check",
    "priority_settling", "settling_checks", "order_permutation_test", "phase1_order_runs",
]

TOL = 1e3 * EPS


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
@dataclass
class LinearMTL:
    """K least-squares tasks with shared weights theta_s (P,) and heads theta_k (m,) (module docstring)."""

    X: np.ndarray          # (n, P) shared input
    Z: np.ndarray          # (K, n, m) task features
    y: np.ndarray          # (K, n) targets

    @property
    def K(self) -> int:
        return self.y.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def P(self) -> int:
        return self.X.shape[1]

    @property
    def m(self) -> int:
        return self.Z.shape[2]

    def residuals(self, ts: np.ndarray, th: np.ndarray) -> np.ndarray:
        """(K, n) residuals for shared ``ts`` (P,) and heads ``th`` (K, m)."""
        return (self.X @ ts)[None] + np.einsum("knm,km->kn", self.Z, th) - self.y

    def losses(self, ts: np.ndarray, th: np.ndarray) -> np.ndarray:
        r = self.residuals(ts, th)
        return 0.5 * np.sum(r * r, axis=1) / self.n

    def grads(self, ts: np.ndarray, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shared gradients G (K, P) and head gradients (K, m): row k = grad of L_k."""
        r = self.residuals(ts, th)
        return r @ self.X / self.n, np.einsum("kn,knm->km", r, self.Z) / self.n

    def hessian(self, k: int) -> np.ndarray:
        """Hessian of L_k in (theta_s, theta_k)."""
        J = np.concatenate([self.X, self.Z[k]], axis=1)
        return J.T @ J / self.n

    @property
    def H(self) -> float:
        """max_k lambda_max(Hessian of L_k): the Lipschitz constant of every task gradient (exact)."""
        return max(float(np.linalg.eigvalsh(self.hessian(k))[-1]) for k in range(self.K))

    def shared_hessian(self) -> np.ndarray:
        """Hessian of every L_k in theta_s alone (the same for all k): X^T X / n."""
        return self.X.T @ self.X / self.n

    def minimum(self, w: np.ndarray) -> float:
        """inf over all parameters of L = sum_k w_k L_k (a joint least-squares problem, w > 0)."""
        K, n, m, P = self.K, self.n, self.m, self.P
        rows = []
        for k in range(K):
            blk = np.zeros((n, P + K * m))
            blk[:, :P] = self.X
            blk[:, P + k * m:P + (k + 1) * m] = self.Z[k]
            rows.append(math.sqrt(w[k]) * blk)
        A = np.concatenate(rows)
        b = np.concatenate([math.sqrt(w[k]) * self.y[k] for k in range(K)])
        sol = np.linalg.lstsq(A, b, rcond=None)[0]
        r = A @ sol - b
        return 0.5 * float(r @ r) / n


def random_problem(rng: np.random.Generator, K: int | None = None, P: int | None = None,
                   m: int | None = None, n: int | None = None, scale_spread: float = 1.0) -> LinearMTL:
    """A random instance: Gaussian X (columns scaled over ``cond`` <= 10), Gaussian Z_k, targets from a
    task-specific linear model plus noise, each task's targets scaled by 10**U(-scale_spread/2, +/2)."""
    K = int(rng.integers(2, 5)) if K is None else K
    P = int(rng.integers(2 * K, 17)) if P is None else P
    m = int(rng.integers(1, 4)) if m is None else m
    n = int(rng.integers(max(P, 8), 41)) if n is None else n
    X = rng.standard_normal((n, P)) * 10.0 ** rng.uniform(-0.5, 0.5, P)
    Z = rng.standard_normal((K, n, m))
    y = np.stack([X @ rng.standard_normal(P) + Z[k] @ rng.standard_normal(m) + rng.standard_normal(n)
                  for k in range(K)])
    y *= 10.0 ** rng.uniform(-scale_spread / 2, scale_spread / 2, (K, 1))
    return LinearMTL(X, Z, y)


def random_weights(rng: np.random.Generator, K: int, kind: str = "simplex") -> np.ndarray:
    """Loss weights: "simplex" (Dirichlet(1), sum 1, the paper's Eq. 13), "ones" (the library's sum of
    losses), "manual" (1 : 1 : 10 : 50, App. B, repeated/cut to K)."""
    if kind == "simplex":
        return rng.dirichlet(np.ones(K))
    if kind == "ones":
        return np.ones(K)
    if kind == "manual":
        return np.resize(np.array([1.0, 1.0, 10.0, 50.0]), K)
    raise ValueError(f"unknown weight kind {kind!r}")


def random_blocks(rng: np.random.Generator, P: int, K: int) -> np.ndarray:
    """A random split of P >= 2K shared coordinates into K blocks of at least two coordinates each
    (on a one-coordinate block all gradients are collinear): block[p] = its task."""
    if P < 2 * K:
        raise ValueError(f"random_blocks needs P >= 2K, got P = {P}, K = {K}")
    b = np.concatenate([np.repeat(np.arange(K), 2), rng.integers(0, K, P - 2 * K)])
    return rng.permutation(b)


def _state(rng: np.random.Generator, prob: LinearMTL) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal(prob.P), rng.standard_normal((prob.K, prob.m))


def _eta(rng: np.random.Generator, cap: float, boundary: float = 0.3) -> float:
    """A step size in (0, cap]: exactly cap in a ``boundary`` share of the draws, else uniform."""
    return cap if rng.random() < boundary else cap * rng.uniform(0.01, 1.0)


# --------------------------------------------------------------------------------------------------
# Theorem 1 (Eqs. 11-27)
# --------------------------------------------------------------------------------------------------
def _priority_tasks(G: np.ndarray, w: np.ndarray, block: np.ndarray, rule: str,
                    rng: np.random.Generator) -> np.ndarray:
    """The task used on each block: "gradient" = argmax_j g_j . g (the priority condition we read into
    Eq. 27), "worst" = argmin_j g_j . g, "random"."""
    K = G.shape[0]
    out = np.empty(K, dtype=int)
    for b in range(K):
        Gb = G[:, block == b]
        g = w @ Gb
        s = Gb @ g
        out[b] = {"gradient": np.argmax(s), "worst": np.argmin(s), "random": rng.integers(K)}[rule]
    return out


def _priority_direction(G: np.ndarray, block: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    d = np.empty(G.shape[1])
    for b, t in enumerate(tasks):
        d[block == b] = G[t, block == b]
    return d


def theorem1_first_order(rng: np.random.Generator, n: int, rule: str = "gradient", weights: str = "simplex",
                         eta_rel: float = 1e-6) -> Check:
    """Eq. 23-27 to first order, measured from the losses: the slope at eta = 0 of
    D(eta) = [L(theta_s - eta g) - L(theta_s - eta g_hat)] / eta, L = sum w_k L_k, g = sum w_k g_k and
    g_hat the priority direction (on each block the gradient of the task chosen by ``rule``). The
    statement: D(0) >= 0. D(0) is read off the losses at eta = eta_rel / H_L and 2 eta by Richardson
    extrapolation, 2 D(eta) - D(2 eta) (exact on quadratics up to rounding; H_L = lambda_max of the
    Hessian of L in theta_s). ``weights``: "simplex" (the paper's sum w = 1) or "ones" (the library's
    sum of losses, where the priority condition g_hat . g >= ||g||^2 no longer follows from the argmax).
    Margin: D(0) / (||g|| max(||g||, ||g_hat||)); tolerance: the rounding of the four losses / (eta scale)."""
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K, weights)
        block = random_blocks(rng, prob.P, prob.K)
        ts, th = _state(rng, prob)
        G, _ = prob.grads(ts, th)
        g = w @ G
        gh = _priority_direction(G, block, _priority_tasks(G, w, block, rule, rng))
        HL = float(np.linalg.eigvalsh(prob.shared_hessian())[-1]) * w.sum()
        eta = eta_rel / HL
        L = lambda d: float(w @ prob.losses(ts - d, th))  # noqa: E731
        D = lambda e: (L(e * g) - L(e * gh)) / e           # noqa: E731
        slope0 = 2.0 * D(eta) - D(2 * eta)
        scale = np.linalg.norm(g) * max(np.linalg.norm(g), np.linalg.norm(gh))
        m[i] = slope0 / scale
        tol[i] = 1e2 * EPS * 4 * max(float(w @ prob.losses(ts, th)), 1e-300) / (eta * scale)
    return Check(f"first-order gain of the priority update from the losses (eta = {eta_rel:g}/H_L, Richardson), "
                 f"tasks by '{rule}', w = {weights}", m, tol)


def theorem1_identity(rng: np.random.Generator, n: int, weights: str = "simplex") -> Check:
    """Eq. 25 = Eq. 26: sum_j w_j g_j - g_i = sum_j w_j (g_j - g_i), which needs sum w = 1.
    Margin: -|difference| / (||G||_F max(1, sum w)) per draw (random block, random i)."""
    m = np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K, weights)
        ts, th = _state(rng, prob)
        G, _ = prob.grads(ts, th)
        k = int(rng.integers(prob.K))
        lhs = w @ G - G[k]
        rhs = w @ (G - G[k])
        m[i] = -np.linalg.norm(lhs - rhs) / (np.linalg.norm(G) * max(1.0, w.sum()))
    return Check(f"Eq. 25 = Eq. 26 with w = {weights}", m, TOL)


def theorem1_finite_step(rng: np.random.Generator, n: int, rule: str = "gradient") -> Check:
    """Theorem 1 at a finite step eta in (0, 1/H_L] (H_L = lambda_max of the Hessian of L = sum w_k L_k
    in theta_s): L(theta_s - eta g) - L(theta_s - eta g_hat) >= 0, exactly (quadratics).
    Margin: that difference / (eta ||g|| max(||g||, ||g_hat||))."""
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K)
        block = random_blocks(rng, prob.P, prob.K)
        ts, th = _state(rng, prob)
        G, _ = prob.grads(ts, th)
        g = w @ G
        gh = _priority_direction(G, block, _priority_tasks(G, w, block, rule, rng))
        HL = float(np.linalg.eigvalsh(prob.shared_hessian())[-1]) * w.sum()
        eta = _eta(rng, 1.0 / HL)
        L0 = w @ prob.losses(ts, th)
        diff = w @ prob.losses(ts - eta * g, th) - w @ prob.losses(ts - eta * gh, th)
        scale = eta * np.linalg.norm(g) * max(np.linalg.norm(g), np.linalg.norm(gh))
        m[i] = diff / scale
        tol[i] = 1e2 * EPS * max(L0, 1.0) / scale
    return Check(f"finite step 0 < eta <= 1/H_L, tasks by '{rule}'", m, tol)


def theorem1_connection_strength(rng: np.random.Generator, n: int, C: int = 8, d: int = 6,
                                 nn_: int = 32) -> Check:
    """Does the connection-strength top task satisfy the priority condition of Eq. 27?

    Model: task k predicts ``X W^T gamma_k`` (a shared layer W (C x d) followed by a task-specific gain
    gamma_k per output channel - the linear analogue of conv + task-specific BN); the library's
    ``connection_strength`` gives S_{k,p} = ||W_p||^2 gamma_{k,p}^2 normalised over channels.
    Per draw (random W, gamma, data, w on the simplex) and channel p with top task t = argmax_k S:
    margin = (g_t . g - ||g||^2) / (||g|| max ||g_k||) on that channel's block, minimum over channels."""
    m = np.empty(n)
    ok, tot = 0, 0
    for i in range(n):
        K = int(rng.integers(2, 5))
        X = rng.standard_normal((nn_, d))
        W = rng.standard_normal((C, d)) * 10.0 ** rng.uniform(-0.5, 0.5, (C, 1))
        gam = 10.0 ** rng.uniform(-1, 1, (K, C))
        y = rng.standard_normal((K, nn_))
        w = random_weights(rng, K)
        F = X @ W.T                                   # (n, C) shared features
        r = np.einsum("nc,kc->kn", F, gam) - y        # (K, n)
        v = r @ X / nn_                               # (K, d)
        Gc = gam[:, :, None] * v[:, None, :]          # (K, C, d): grad of L_k wrt W_p
        group = TaskBNGroup(torch.from_numpy(W), [torch.from_numpy(gam[k]) for k in range(K)], [None] * K)
        top = connection_strength(group).argmax(0).numpy()
        worst = np.inf
        for p in range(C):
            g = w @ Gc[:, p]
            gt = Gc[top[p], p]
            sc = np.linalg.norm(g) * np.linalg.norm(Gc[:, p], axis=1).max()
            worst = min(worst, (gt @ g - g @ g) / sc)
            ok += bool(gt @ g - g @ g >= -TOL * sc)
            tot += 1
        m[i] = worst
    return Check("connection-strength top task meets the Eq. 27 condition (every channel)", m, TOL,
                 {"share of channels that meet it": ok / tot})


# --------------------------------------------------------------------------------------------------
# Theorem 2 (Eqs. 28-56)
# --------------------------------------------------------------------------------------------------
def eq45_check(rng: np.random.Generator, n: int, weights: str = "simplex", eta_rule: str = "1/(H max w)") -> Check:
    """Eq. 45: with theta_s fixed, one head step theta_k -= eta w_k g_k for every k gives
    sum w L(new) <= sum w L(old) - eta/2 sum w_k^2 ||g_k||^2.  ``eta_rule``: "1/(H max w)" (what
    Eq. 44 needs) or "1/H" (the theorem's statement). Margin: slack / (eta sum w_k^2 ||g_k||^2)."""
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K, weights)
        ts, th = _state(rng, prob)
        _, Gh = prob.grads(ts, th)
        cap = 1.0 / prob.H if eta_rule == "1/H" else 1.0 / (prob.H * w.max())
        eta = _eta(rng, cap)
        L0 = prob.losses(ts, th)
        L1 = prob.losses(ts, th - eta * w[:, None] * Gh)
        dec = eta * np.sum(w**2 * np.sum(Gh**2, axis=1))
        m[i] = (w @ L0 - 0.5 * dec - w @ L1) / dec
        tol[i] = 1e2 * EPS * (w @ L0) / dec
    return Check(f"Eq. 45 (heads), w = {weights}, eta <= {eta_rule}", m, tol)


def eq56_check(rng: np.random.Generator, n: int, weights: str = "simplex") -> Check:
    """Eq. 56, one Phase-1 sub-step on the shared weights: theta_s -= eta w_i g_i gives
    sum_k w_k L_k(new) <= sum_k w_k L_k(old) - eta w_i g_i . (g - w_i g_i), for eta <= 2/H.
    Margin: slack / (eta w_i ||g_i|| (||g|| + w_i ||g_i||))."""
    m, tol = np.empty(n), np.empty(n)
    for j in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K, weights)
        ts, th = _state(rng, prob)
        G, _ = prob.grads(ts, th)
        i = int(rng.integers(prob.K))
        g = w @ G
        eta = _eta(rng, 2.0 / prob.H)
        L0 = w @ prob.losses(ts, th)
        L1 = w @ prob.losses(ts - eta * w[i] * G[i], th)
        bound = L0 - eta * w[i] * G[i] @ (g - w[i] * G[i])
        sc = eta * w[i] * np.linalg.norm(G[i]) * (np.linalg.norm(g) + w[i] * np.linalg.norm(G[i]))
        m[j] = (bound - L1) / sc
        tol[j] = 1e2 * EPS * max(L0, 1.0) / sc
    return Check(f"Eq. 56 (shared sub-step), w = {weights}, eta <= 2/H", m, tol)


def _mean_cos(G: np.ndarray) -> float:
    """Mean pairwise cosine between the rows of G."""
    nrm = np.linalg.norm(G, axis=1)
    C = (G @ G.T) / np.outer(nrm, nrm)
    K = G.shape[0]
    return float((C.sum() - K) / (K * (K - 1)))


def phase1_run(prob: LinearMTL, w: np.ndarray, eta: float, T: int, ts: np.ndarray, th: np.ndarray,
               order: Sequence[int] | None = None, freeze_shared: bool = False) -> dict[str, np.ndarray]:
    """T iterations of Phase 1 (the authors' loop: for each task i in turn, a gradient step of w_i L_i on
    theta_s and theta_i at the current point). Records at the start of every iteration t (and after
    the last): L(theta^t) = sum w L, the head gradients g_k^t of Eq. 41 (at theta_s^t, theta_k^t), the
    shared gradients and their mean pairwise cosine."""
    order = list(range(prob.K)) if order is None else list(order)
    ts, th = ts.copy(), th.copy()
    L, head2, cos = np.empty(T + 1), np.empty(T + 1), np.empty(T + 1)
    for t in range(T + 1):
        G, Gh = prob.grads(ts, th)
        L[t] = w @ prob.losses(ts, th)
        head2[t] = np.sum(w**2 * np.sum(Gh**2, axis=1))
        cos[t] = _mean_cos(G)
        if t == T:
            break
        for i in order:
            G, Gh = prob.grads(ts, th)
            if not freeze_shared:
                ts = ts - eta * w[i] * G[i]
            th[i] = th[i] - eta * w[i] * Gh[i]
    return {"L": L, "head2": head2, "cos": cos, "theta_s": ts, "theta_h": th}


def gd_run(prob: LinearMTL, w: np.ndarray, eta: float, T: int, ts: np.ndarray, th: np.ndarray) -> dict[str, np.ndarray]:
    """Plain gradient descent on L = sum w L (all parameters), same records as :func:`phase1_run`."""
    ts, th = ts.copy(), th.copy()
    L, cos = np.empty(T + 1), np.empty(T + 1)
    for t in range(T + 1):
        G, Gh = prob.grads(ts, th)
        L[t] = w @ prob.losses(ts, th)
        cos[t] = _mean_cos(G)
        ts = ts - eta * (w @ G)
        th = th - eta * w[:, None] * Gh
    return {"L": L, "cos": cos}


def phase1_draws(rng: np.random.Generator, n: int, T: int) -> dict[str, Any]:
    """Phase-1 runs on random problems (w on the simplex, eta = 1/H: Theorems 2 and 3's step), each also
    run with theta_s frozen (the setting of the proof of Eq. 45/58) and as plain gradient descent on
    L = sum w L from the same start. Returns the checks

    - "Eq. 57": min_{t<=T'} sum_k w_k^2 ||g_k^t||^2 <= 2 (L(theta^0) - L*) / (eta T') for every T' <= T,
      g_k^t the head gradients of Eq. 41, L* = inf L (the weakest reading of L(Theta^*)); margin
      1 - lhs/rhs, minimum over T'. "Eq. 57 frozen": the same with theta_s frozen.
    - "cos rises": the claim after Eq. 56 that Phase 1 raises the correlation of the shared task
      gradients; margin = mean pairwise cosine at T minus at 0;

    and the curves (cosines of Phase 1 and GD, head-gradient sums)."""
    out: dict[str, Any] = {k: [] for k in ("cos_p1", "cos_gd", "head2", "head2_frozen", "rhs")}
    m57, m57f, mcos, first_fail = np.empty(n), np.empty(n), np.empty(n), np.full(n, -1)
    Ts = np.arange(1, T + 1)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K)
        ts, th = _state(rng, prob)
        eta = 1.0 / prob.H
        r = phase1_run(prob, w, eta, T, ts, th)
        rf = phase1_run(prob, w, eta, T, ts, th, freeze_shared=True)
        gd = gd_run(prob, w, eta, T, ts, th)
        Lstar = prob.minimum(w)
        out.setdefault("setups", []).append((prob, w, ts, th, eta, Lstar))
        rhs = 2.0 * (r["L"][0] - Lstar) / (eta * Ts)
        marg = 1.0 - np.minimum.accumulate(r["head2"])[1:] / rhs
        m57[i] = marg.min()
        if (marg < -1e-9).any():
            first_fail[i] = int(Ts[np.argmax(marg < -1e-9)])
        m57f[i] = (1.0 - np.minimum.accumulate(rf["head2"])[1:] / rhs).min()
        mcos[i] = r["cos"][-1] - r["cos"][0]
        for k, v in (("cos_p1", r["cos"]), ("cos_gd", gd["cos"]), ("head2", r["head2"]), ("head2_frozen", rf["head2"]), ("rhs", rhs)):
            out[k].append(v)
    out = {k: (v if k == "setups" else np.array(v)) for k, v in out.items()}
    # Eq. 57 must fail once 2 (L0 - L*) / (eta T) drops below the plateau of the head-gradient sum
    out["predicted_T"] = out["rhs"][:, 0] / np.maximum(out["head2"][:, -1], 1e-300)
    out["Eq. 57"] = Check(f"Eq. 57 for all T' <= {T}, Phase 1 (theta_s moves)", m57, 1e-9, unit="runs")
    out["Eq. 57 frozen"] = Check(f"Eq. 57 for all T' <= {T}, theta_s frozen (the proof's setting)", m57f, 1e-9, unit="runs")
    out["cos rises"] = Check(f"Phase 1 raises the mean cosine of the shared task gradients, cos(T={T}) >= cos(0)", mcos, TOL, unit="runs")
    out["first_fail"] = first_fail
    return out


# --------------------------------------------------------------------------------------------------
# Theorem 4 (Eqs. 63-76)
# --------------------------------------------------------------------------------------------------
def _block_gram(G: np.ndarray, block: np.ndarray) -> np.ndarray:
    """M[b] = G_b G_b^T (K x K) on each block b: (K, K, K)."""
    onehot = (block[:, None] == np.arange(G.shape[0])[None]).astype(float)
    return np.einsum("kp,pb,jp->bkj", G, onehot, G)


def phase2_direction(G: np.ndarray, w: np.ndarray, block: np.ndarray, always: bool = False) -> np.ndarray:
    """Phase 2 on the shared weights: on block b (top task b) every other task's weighted gradient is
    projected off task b's where their dot product is negative (the authors' rule, as in the library's
    ``project_on_top_priority``; ``always=True``: projected whatever the sign, as Eq. 66 writes it);
    the direction is the sum over tasks. (numpy; :func:`library_agreement` compares it with the library.)"""
    K, P = G.shape
    M = _block_gram(G, block)
    idx = np.arange(K)
    own = M[idx, idx, idx]                                  # ||g_b||^2 on block b
    cross = M[idx, :, idx]                                  # [b, k] = g_k . g_b on block b
    use = (idx[None, :] != idx[:, None]) & (own[:, None] > 0)
    if not always:
        use &= cross < 0
    with np.errstate(invalid="ignore", divide="ignore"):
        coef = np.where(use, w[None, :] * cross / np.where(own > 0, own, 1.0)[:, None], 0.0)   # multiple of g_b
    s = coef.sum(1)
    return w @ G - s[block] * G[block, np.arange(P)]


def library_agreement(rng: np.random.Generator, n: int) -> Check:
    """The numpy Phase-2 direction above = the library's ``project_on_top_priority`` (each shared
    coordinate a one-weight "channel", its top task the block's), summed over tasks.
    Margin: -||difference|| / ||w G||_F."""
    m = np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K)
        block = random_blocks(rng, prob.P, prob.K)
        G, _ = prob.grads(*_state(rng, prob))
        lib = project_on_top_priority(torch.from_numpy(w[:, None] * G)[:, :, None], torch.from_numpy(block))
        d = lib.numpy()[:, :, 0].sum(0)
        m[i] = -np.linalg.norm(d - phase2_direction(G, w, block)) / np.linalg.norm(w[:, None] * G)
    return Check("numpy Phase 2 = library project_on_top_priority", m, TOL)


def _eq76_rhs(G: np.ndarray, w: np.ndarray, block: np.ndarray, eta: float) -> tuple[float, float, float]:
    """The decrease promised by Eq. 76 summed over the blocks; the min over blocks of 1 - cos^2 phi_jc
    (c = the task most (anti-)aligned with the block's top task j, Eq. 80); and that block's cos phi_jc."""
    K = G.shape[0]
    M = _block_gram(G, block)
    idx = np.arange(K)
    D = np.einsum("bkk->bk", M)                             # [b, k] = ||g_k||^2 on block b
    cross = M[idx, :, idx]
    den = D[idx, idx][:, None] * D
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.clip(np.where(den > 0, cross / np.sqrt(np.where(den > 0, den, 1.0)), 0.0), -1.0, 1.0)
    c[idx, idx] = 0.0
    total = 0.5 * eta * float(np.sum(w[idx] ** 2 * D[idx, idx]) + np.sum((w[None] ** 2 * D * (1.0 - c * c))[idx[:, None] != idx[None]]))
    kc = np.argmax(c * c, axis=1)                           # the diagonal is 0, so k != b unless all are 0
    cb = c[idx, kc]
    b = int(np.argmax(cb * cb))
    return total, float(1.0 - cb[b] ** 2), float(cb[b])


def phase2_step(prob: LinearMTL, w: np.ndarray, block: np.ndarray, eta: float, ts: np.ndarray,
                th: np.ndarray, always: bool = False) -> tuple[np.ndarray, np.ndarray]:
    G, Gh = prob.grads(ts, th)
    return ts - eta * phase2_direction(G, w, block, always), th - eta * w[:, None] * Gh


def eq76_check(rng: np.random.Generator, n: int, always: bool = False, heads: bool = False,
               eta_rule: str = "1/(H max w)") -> Check:
    """Eq. 76 for one Phase-2 step on the shared weights (random top-task blocks, w on the simplex,
    eta in (0, cap], cap = 1/(H max w) (Theorem 4's condition), 1/H (Theorem 5's) or 1e-6/H (first order)):
    sum w L(new) <= sum w L(old) - (Eq. 76's decrease), summed over blocks.
    ``heads``: the heads take their gradient step too. Margin: slack / (eta sum w_k^2 ||g_k||^2)."""
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K)
        block = random_blocks(rng, prob.P, prob.K)
        ts, th = _state(rng, prob)
        cap = {"1/(H max w)": 1.0 / (prob.H * w.max()), "1/H": 1.0 / prob.H, "1e-6/H": 1e-6 / prob.H}[eta_rule]
        eta = _eta(rng, cap)
        G, _ = prob.grads(ts, th)
        dec = _eq76_rhs(G, w, block, eta)[0]
        L0 = w @ prob.losses(ts, th)
        ts1, th1 = phase2_step(prob, w, block, eta, ts, th, always)
        L1 = w @ prob.losses(ts1, th1 if heads else th)
        sc = eta * np.sum(w**2 * np.sum(G**2, axis=1))
        m[i] = (L0 - dec - L1) / sc
        tol[i] = 1e2 * EPS * max(L0, 1.0) / sc
    rule = "Eq. 66 (always project)" if always else "authors' rule"
    return Check(f"Eq. 76, one Phase-2 step, {rule}, eta <= {eta_rule}", m, tol)


def gd_step_check(rng: np.random.Generator, n: int) -> Check:
    """Theorem 4's step condition alone: plain gradient descent on L = sum w L_k (w on the simplex, equal
    weights in half the draws) with eta = 1/(H max w); does L decrease? Margin: (L_old - L_new) / L_old."""
    m = np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = np.full(prob.K, 1.0 / prob.K) if rng.random() < 0.5 else random_weights(rng, prob.K)
        ts, th = _state(rng, prob)
        G, Gh = prob.grads(ts, th)
        eta = 1.0 / (prob.H * w.max())
        L0 = w @ prob.losses(ts, th)
        m[i] = (L0 - w @ prob.losses(ts - eta * (w @ G), th - eta * w[:, None] * Gh)) / L0
    return Check("plain GD on sum w L with eta = 1/(H max w) decreases L", m, 1e2 * EPS)


def eq76_counterexample(eta_fraction: float = 1.0) -> dict[str, float]:
    """Two unit-curvature tasks L_k = ||theta - c_k||^2 / 2 in R^2 (H = 1), w = (1/2, 1/2), one block with
    top task 1. At theta, g_1 = (1, 0) and g_2 = 3 (cos a, sin a), cos a = -0.95 (strong conflict, task 2
    three times steeper). One Phase-2 step with eta = eta_fraction / (H max w)."""
    a = math.acos(-0.95)
    g1, g2 = np.array([1.0, 0.0]), 3.0 * np.array([math.cos(a), math.sin(a)])
    theta = np.zeros(2)
    c = np.stack([theta - g1, theta - g2])
    prob_L = lambda th: 0.5 * np.sum((th[None] - c) ** 2, axis=1)  # noqa: E731
    w = np.array([0.5, 0.5])
    G = np.stack([g1, g2])
    eta = eta_fraction / (1.0 * w.max())
    d = phase2_direction(G, w, np.zeros(2, dtype=int))
    L0, L1 = w @ prob_L(theta), w @ prob_L(theta - eta * d)
    dec = _eq76_rhs(G, w, np.zeros(2, dtype=int), eta)[0]
    return {"eta": eta, "L before": L0, "L after": L1, "Eq. 76 bound": L0 - dec, "first-order change": -eta * (w @ G) @ d,
            "L_1 change": prob_L(theta - eta * d)[0] - prob_L(theta)[0], "L_2 change": prob_L(theta - eta * d)[1] - prob_L(theta)[1]}


def top_task_protected(rng: np.random.Generator, n: int, task: str = "top") -> Check:
    """What the projection does guarantee (ours): on each block, the top task's gradient has
    g_top . d >= w_top ||g_top||^2 on that block (every projected gradient is orthogonal to g_top, every
    unprojected one has a non-negative dot product with it). ``task="other"``: the same claim for a
    non-top task (false in general). Margin: (g . d - w ||g||^2) / (||g|| ||d||), minimum over blocks."""
    m = np.empty(n)
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K)
        block = random_blocks(rng, prob.P, prob.K)
        ts, th = _state(rng, prob)
        G, _ = prob.grads(ts, th)
        d = phase2_direction(G, w, block)
        worst = np.inf
        for b in range(prob.K):
            sel = block == b
            k = b if task == "top" else (b + 1) % prob.K
            gk, db = G[k, sel], d[sel]
            sc = np.linalg.norm(gk) * max(np.linalg.norm(db), w[k] * np.linalg.norm(gk))
            worst = min(worst, (gk @ db - w[k] * gk @ gk) / sc)
        m[i] = worst
    return Check(f"Phase 2: g . d >= w ||g||^2 on each block for the {task} task", m, TOL)


def phase2_run(prob: LinearMTL, w: np.ndarray, block: np.ndarray, eta: float, T: int, ts: np.ndarray,
               th: np.ndarray) -> dict[str, np.ndarray]:
    """T Phase-2 steps (shared: :func:`phase2_direction`; heads: their own gradient). Records at every t:
    L, sum_k w_k^2 ||g_k||^2 on the shared weights, the min over blocks of 1 - cos^2 phi_jc and the
    cos phi_jc where it is attained."""
    ts, th = ts.copy(), th.copy()
    L, g2, fac, cosjc = (np.empty(T + 1) for _ in range(4))
    for t in range(T + 1):
        G, Gh = prob.grads(ts, th)
        L[t] = w @ prob.losses(ts, th)
        g2[t] = np.sum(w**2 * np.sum(G**2, axis=1))
        _, fac[t], cosjc[t] = _eq76_rhs(G, w, block, 1.0)
        if t < T:
            ts, th = ts - eta * phase2_direction(G, w, block), th - eta * w[:, None] * Gh
    return {"L": L, "g2": g2, "factor": fac, "cos_jc": cosjc}


def gradient_floor(prob: LinearMTL, w: np.ndarray) -> float:
    """c = inf over all parameters of sum_k w_k^2 ||grad_s L_k||^2 (a least-squares problem: each
    grad_s L_k = X^T r_k / n is linear in the parameters). c > 0 when no point is stationary for every
    task at once; then Eq. 77 fails for every T > 2 (L_0 - L*) / (eta (1 - alpha^2) c)."""
    K, n, m, P = prob.K, prob.n, prob.m, prob.P
    rows, rhs = [], []
    for k in range(K):
        J = np.zeros((n, P + K * m))
        J[:, :P] = prob.X
        J[:, P + k * m:P + (k + 1) * m] = prob.Z[k]
        rows.append(w[k] * prob.X.T @ J / n)
        rhs.append(w[k] * prob.X.T @ prob.y[k] / n)
    A, b = np.concatenate(rows), np.concatenate(rhs)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    r = A @ sol - b
    return float(r @ r)


def theorem5_check(rng: np.random.Generator, n: int, T: int) -> dict[str, Any]:
    """Eq. 77 on Phase-2 runs (random blocks, w on the simplex, eta = 1/H, L* = inf L) with two
    readings of alpha: the paper's (cos phi_jc >= alpha > -1: alpha = the smallest cos along the run) and
    the one Eq. 85 needs (|cos phi_jc| <= alpha: the largest |cos|). Also: does L decrease at every
    step (what Theorem 4 claims)? Margins: 1 - lhs/rhs; min_t (L_t - L_{t+1}) / L_0."""
    m_paper, m_fixed, mono, final_ratio, floor, predicted, alphas, alphas_p = (np.empty(n) for _ in range(8))
    setups: list[Any] = []
    for i in range(n):
        prob = random_problem(rng)
        w = random_weights(rng, prob.K)
        block = random_blocks(rng, prob.P, prob.K)
        ts, th = _state(rng, prob)
        eta = 1.0 / prob.H
        r = phase2_run(prob, w, block, eta, T, ts, th)
        gap = r["L"][0] - prob.minimum(w)
        c = gradient_floor(prob, w)
        floor[i] = c / r["g2"][0]
        setups.append((prob, w, block, ts, th, eta, gap))
        predicted[i] = 2.0 * gap / (eta * c) if c > 0 else np.inf
        lhs = r["g2"].min()
        a_paper = r["cos_jc"].min()
        a_fixed = np.abs(r["cos_jc"]).max()
        m_paper[i] = 1.0 - lhs * eta * (1.0 - a_paper**2) * T / (2.0 * gap)
        m_fixed[i] = 1.0 - lhs * eta * (1.0 - a_fixed**2) * T / (2.0 * gap)
        mono[i] = np.min(r["L"][:-1] - r["L"][1:]) / r["L"][0]
        alphas[i], alphas_p[i] = a_fixed, a_paper
        final_ratio[i] = r["g2"][-1] / r["g2"][0]
    return {"paper": Check(f"Eq. 77, alpha = min cos (paper's reading), T = {T}", m_paper, 1e-9),
            "fixed": Check(f"Eq. 77, alpha = max |cos| (what Eq. 85 needs), T = {T}", m_fixed, 1e-9),
            "monotone": Check(f"Phase 2 decreases L at every step, T = {T}", mono, 1e2 * EPS),
            "final_ratio": final_ratio, "floor_ratio": floor, "predicted_T": predicted, "setups": setups,
            "alpha_fixed": alphas, "alpha_paper": alphas_p}


def eq57_long(setup: tuple, T: int) -> Check:
    """Eq. 57 for every T' <= T on one Phase-1 run of :func:`phase1_draws` (its ``setups`` entry)."""
    prob, w, ts, th, eta, Lstar = setup
    r = phase1_run(prob, w, eta, T, ts, th)
    rhs = 2.0 * (r["L"][0] - Lstar) / (eta * np.arange(1, T + 1))
    marg = 1.0 - np.minimum.accumulate(r["head2"])[1:] / rhs
    return Check(f"Eq. 57 for T' <= {T}, one long Phase-1 run", marg, 1e-9, unit="values of T'")


def eq77_long(setup: tuple, T: int) -> Check:
    """Eq. 77 for every T' <= T on one Phase-2 run of :func:`theorem5_check`, alpha = max |cos| so far."""
    prob, w, block, ts, th, eta, gap = setup
    r = phase2_run(prob, w, block, eta, T, ts, th)
    a = np.maximum.accumulate(np.abs(r["cos_jc"]))[1:]
    lhs = np.minimum.accumulate(r["g2"])[1:]
    marg = 1.0 - lhs * eta * (1.0 - a**2) * np.arange(1, T + 1) / (2.0 * gap)
    return Check(f"Eq. 77 for T' <= {T}, one long Phase-2 run", marg, 1e-9, unit="values of T'")


def cos_condition_example() -> dict[str, float]:
    """Eq. 85's step: from cos phi >= alpha > -1 it infers 1/(1 - cos^2 phi) <= 1/(1 - alpha^2).
    A counterexample: alpha = 0 and cos phi = 0.99."""
    alpha, c = 0.0, 0.99
    return {"alpha": alpha, "cos phi": c, "1/(1-cos^2)": 1 / (1 - c * c), "1/(1-alpha^2)": 1 / (1 - alpha**2)}


# --------------------------------------------------------------------------------------------------
# Appendix B: loss scalings
# --------------------------------------------------------------------------------------------------
def uw_stationarity(rng: np.random.Generator, n: int, offset: float = 0.0) -> Check:
    """Eq. 88 (regression) has, for fixed losses L_i, its minimum over the log-variance s_i = log sigma_i^2
    at s_i = log L_i, where the weight 1/(2 sigma_i^2) = 1/(2 L_i). Checks that the library's ``uw``
    objective has zero gradient there (``offset`` shifts the point: must be detected).
    Margin: -max |d objective / d s_i|."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 6))
        L = torch.as_tensor(10.0 ** rng.uniform(-3, 3, K))
        uw = methods.make("uw")
        uw._ready(L, None)
        with torch.no_grad():
            uw._s.copy_(torch.log(L) + offset)
        uw.objective(L).backward()
        m[i] = -float(uw._s.grad.abs().max())
    return Check(f"grad of Eq. 88 at s = log L + {offset:g} is 0", m, 1e3 * EPS)


def dwa_recompute(frame, K: int, T: float = 2.0) -> Check:
    """Eq. 89 recomputed from a run's recorded epoch training losses vs the weights the run used
    (``lambda_k`` in the diagnostics, epoch means; constant within an epoch). Margin: -|difference|."""
    loss = frame[(frame.split == "train") & frame.metric.str.startswith("loss_")].pivot(index="epoch", columns="metric", values="value")
    lam = frame[(frame.split == "diagnostics") & frame.metric.str.startswith("lambda_")].pivot(index="epoch", columns="metric", values="value")
    loss = loss[sorted(loss.columns)].to_numpy()
    lam = lam[[f"lambda_{k}" for k in range(K)]].to_numpy()
    m = []
    for e in range(lam.shape[0]):            # epoch e+1 uses the losses of epochs e-1 and e (1-based)
        if e < 2:
            ref = np.ones(K)
        else:
            r = loss[e - 1] / loss[e - 2]
            ref = K * np.exp(r / T) / np.exp(r / T).sum()
        m.append(-np.abs(lam[e] - ref).max())
    return Check(f"DWA weights = Eq. 89 (T = {T:g}) from the recorded epoch losses", np.array(m), 1e-6, unit="epochs")


# --------------------------------------------------------------------------------------------------
# a tiny benchmark with task-specific BNs (App. B weight trajectories, Fig. 5, Tab. 15)
# --------------------------------------------------------------------------------------------------
class TinyTaskBN(Benchmark):
    """K regression tasks on random 1 x 8 x 8 images; task k regresses a fixed random function of the
    image (a random conv filter, ReLU, mean pool, times ``scales[k]``) with MSE. The model is the
    library's :class:`~mtl_src.nn.TaskBNModel` (two shared 3x3 convs with task-specific BNs, linear heads).
    ``scales`` sets the loss scales (default 1, 1, 3, 10: unequal, like App. B's tasks)."""

    name = "tiny_taskbn"

    def __init__(self, K: int = 4, n_train: int = 256, n_test: int = 128, channels: Sequence[int] = (8, 8),
                 scales: Sequence[float] | None = None, seed: int = 0):
        self.tasks = [f"t{k}" for k in range(K)]
        self.metrics = [Metric(f"mse_t{k}", f"t{k}", False) for k in range(K)]
        self.channels = tuple(channels)
        self.scales = np.resize(np.array([1.0, 1.0, 3.0, 10.0]), K) if scales is None else np.asarray(scales, float)
        g = torch.Generator().manual_seed(seed)
        N = n_train + n_test
        x = torch.randn(N, 1, 8, 8, generator=g)
        filt = torch.randn(K, 1, 3, 3, generator=g)
        feat = torch.relu(torch.nn.functional.conv2d(x, filt, padding=1)).mean(dim=(-2, -1))   # (N, K)
        feat = (feat - feat.mean(0)) / feat.std(0)
        mix = torch.eye(K) + 0.5 * torch.randn(K, K, generator=g)                               # tasks share structure
        y = (feat @ mix.T) * torch.as_tensor(self.scales, dtype=torch.float32)
        self._data = {"train": TensorDataset(x[:n_train], y[:n_train]), "test": TensorDataset(x[n_train:], y[n_train:])}

    def datasets(self):
        return self._data

    def build_model(self):
        K = len(self.tasks)
        return TaskBNModel(TaskBNConvEncoder(1, self.channels, K), [torch.nn.Linear(self.channels[-1], 1) for _ in range(K)])

    def losses(self, outputs, batch):
        y = batch[1]
        return torch.stack([((o[:, 0] - y[:, k]) ** 2).mean() for k, o in enumerate(outputs)])

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        model.eval()
        tot, cnt = torch.zeros(len(self.tasks), dtype=torch.float64), 0
        for batch in loader:
            batch = self.to(batch, device)
            _, outs = model(batch[0])
            tot += self.losses(outs, batch).double().cpu() * len(batch[0])
            cnt += len(batch[0])
        model.train()
        return {f"mse_t{k}": float(v) for k, v in enumerate(tot / cnt)}


def top_shares(frame, K: int) -> dict[int, np.ndarray]:
    """Per layer l: (epochs, K) shares of channels whose top-priority task is k (epoch means of the
    ``top_share_l{l}_t{k}`` diagnostics of ``connection_strength``)."""
    d = frame[(frame.split == "diagnostics") & frame.metric.str.startswith("top_share_")]
    out: dict[int, np.ndarray] = {}
    for l in sorted({int(s.split("_")[2][1:]) for s in d.metric}):
        cols = [f"top_share_l{l}_t{k}" for k in range(K)]
        out[l] = d[d.metric.isin(cols)].pivot(index="epoch", columns="metric", values="value")[cols].to_numpy()
    return out


def strength_from_state(model: TaskBNModel) -> list[np.ndarray]:
    """S_{k,p} = sum W[p]^2 gamma_{k,p}^2 / (v_{k,p} + eps), normalised over channels, straight from the
    model's tensors (the definition in the papers' README), for comparison with the library."""
    out = []
    for conv, norm in zip(model.encoder.convs, model.encoder.norms):
        w2 = conv.weight.detach().double().pow(2).sum(dim=(1, 2, 3))
        S = torch.stack([w2 * bn.weight.detach().double() ** 2 / (bn.running_var.double() + bn.eps) for bn in norm.bns])
        out.append((S / S.sum(1, keepdim=True)).numpy())
    return out


def strength_check(rng: np.random.Generator, n: int, ignore_variance: bool = False) -> Check:
    """The library's ``connection_strength`` on a :class:`TaskBNModel`'s groups vs the definition
    (:func:`strength_from_state`) on random models: random conv weights, BN scales and running
    variances. ``ignore_variance``: compare with the definition without the 1/(v + eps) factor (a wrong
    variant that must be detected). Margin: -max |difference| over layers, tasks and channels."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 5))
        torch.manual_seed(int(rng.integers(2**31)))
        model = TaskBNModel(TaskBNConvEncoder(1, (4, 6), K), [torch.nn.Linear(6, 1) for _ in range(K)])
        with torch.no_grad():
            for norm in model.encoder.norms:
                for bn in norm.bns:
                    bn.weight.copy_(torch.as_tensor(rng.normal(0, 1, bn.weight.shape)))
                    bn.running_var.copy_(torch.as_tensor(10.0 ** rng.uniform(-2, 2, bn.running_var.shape)))
        ref = strength_from_state(model)
        worst = 0.0
        for l, g in enumerate(model.task_bn_groups()):
            if ignore_variance:
                g = TaskBNGroup(g.weight, g.gamma, [None] * K, g.eps)
            worst = max(worst, float(np.abs(connection_strength(g).numpy() - ref[l]).max()))
        m[i] = -worst
    return Check("library connection strength = ||W_p||^2 gamma^2/(v + eps), normalised" +
                 (" (library without v)" if ignore_variance else ""), m, 1e-6)


def train_runs(bench: Benchmark, specs: dict[str, tuple[str, dict]], *, epochs: int, seeds: Sequence[int] = (0,),
               batch_size: int = 32, lr: float = 1e-2, device: str = "cpu") -> dict[tuple[str, int], Any]:
    """``mtl_src.train.train`` for each (label -> (method, hyperparameters)) and seed; returns the tidy frames."""
    from ..train import train
    return {(lab, s): train(bench, meth, epochs=epochs, batch_size=batch_size, lr=lr, seed=s, device=device, **kw).frame()
            for lab, (meth, kw) in specs.items() for s in seeds}


def weight_trajectories(frame, K: int) -> np.ndarray:
    """(epochs, K) epoch-mean loss weights ``lambda_k`` of a run (ones when the method reports none)."""
    d = frame[(frame.split == "diagnostics") & frame.metric.str.startswith("lambda_")]
    epochs = sorted(frame[frame.split == "train"].epoch.unique())
    if d.empty:
        return np.ones((len(epochs), K))
    return d.pivot(index="epoch", columns="metric", values="value")[[f"lambda_{k}" for k in range(K)]].to_numpy()


def final_test(frame, bench: "TinyTaskBN") -> np.ndarray:
    """Test MSE of each task at the last epoch divided by the variance of its targets (1 = predicting 0)."""
    last = frame[frame.split == "test"].epoch.max()
    te = frame[(frame.split == "test") & (frame.epoch == last)].set_index("metric").value
    y = bench.datasets()["test"].tensors[1].double()
    return np.array([te[f"mse_t{k}"] / float(y[:, k].pow(2).mean()) for k in range(bench.K)])


def _sweep(prob: LinearMTL, w: np.ndarray, eta: float, z: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """One Phase-1 iteration on the flat parameter vector z = (theta_s, theta_1..K)."""
    P, K, m = prob.P, prob.K, prob.m
    ts, th = z[:P].copy(), z[P:].reshape(K, m).copy()
    for i in order:
        G, Gh = prob.grads(ts, th)
        ts = ts - eta * w[i] * G[i]
        th[i] = th[i] - eta * w[i] * Gh[i]
    return np.concatenate([ts, th.ravel()])


def phase1_cycle(prob: LinearMTL, w: np.ndarray, eta: float, order: Sequence[int] | None = None) -> dict[str, Any]:
    """The point Phase 1 returns to after every sweep (least squares: a sweep is an affine map
    z -> M z + b, and its fixed point solves (I - M) z = b). Returns the point, the spectral radius of M
    (< 1: every run converges to this cycle), the head-gradient sum delta = sum w_k^2 ||g_k||^2 there
    (Eq. 41's gradients), the gap L(point) - inf L, the time 2 gap / (eta delta) after which Eq. 57
    must fail for the run started there, and how far one sweep from the point moves it (a check)."""
    order = list(range(prob.K)) if order is None else list(order)
    N = prob.P + prob.K * prob.m
    b = _sweep(prob, w, eta, np.zeros(N), order)
    M = np.stack([_sweep(prob, w, eta, e, order) - b for e in np.eye(N)], axis=1)
    z = np.linalg.solve(np.eye(N) - M, b)
    ts, th = z[:prob.P], z[prob.P:].reshape(prob.K, prob.m)
    _, Gh = prob.grads(ts, th)
    delta = float(np.sum(w**2 * np.sum(Gh**2, axis=1)))
    gap = float(w @ prob.losses(ts, th) - prob.minimum(w))
    moved = float(np.linalg.norm(_sweep(prob, w, eta, z, order) - z) / max(np.linalg.norm(z), 1.0))
    return {"theta_s": ts, "theta_h": th, "rho": float(np.max(np.abs(np.linalg.eigvals(M)))), "delta": delta,
            "gap": gap, "T_fail": 2.0 * gap / (eta * delta) if delta > 0 else np.inf, "moved": moved}


def eq57_on_cycle(setups: Sequence[tuple], factor: float = 2.0) -> dict[str, Any]:
    """Eq. 57 for runs started on the Phase-1 cycle of each setup of :func:`phase1_draws`: there
    Theta^t is the cycle point at every t, so min_t sum w^2 |g|^2 = delta, and Eq. 57 at
    T = ceil(factor * T_fail) is checked exactly (margin 1 - lhs/rhs). Also checks that the point is a
    fixed point of the sweep (margin -moved) and that the sweep map contracts (1 - rho)."""
    m, fix, rho, Tf, dl = (np.empty(len(setups)) for _ in range(5))
    for i, (prob, w, _, _, eta, Lstar) in enumerate(setups):
        c = phase1_cycle(prob, w, eta)
        Tf[i], dl[i] = c["T_fail"], c["delta"]
        Tc = math.ceil(factor * c["T_fail"]) if np.isfinite(c["T_fail"]) else 1
        m[i] = 1.0 - c["delta"] * eta * Tc / (2.0 * c["gap"]) if c["gap"] > 0 else 1.0
        fix[i], rho[i] = -c["moved"], 1.0 - c["rho"]
    return {"Eq. 57": Check(f"Eq. 57 from the cycle point, T = {factor:g} x (2 gap / (eta delta))", m, 1e-9, unit="runs"),
            "fixed point": Check("one sweep returns to the cycle point", fix, 1e-8, unit="runs"),
            "contracting": Check("the sweep map contracts (spectral radius < 1)", rho, 0.0, unit="runs"),
            "T_fail": Tf, "delta": dl}


def trained_priority_check(bench: "TinyTaskBN", *, epochs: int, seed: int = 0, checkpoint: str,
                           device: str = "cpu", **hyperparameters: Any) -> Check:
    """After training ``connection_strength`` on ``bench`` (``mtl_src.train.train``, model restored from
    its checkpoint), does each channel's connection-strength top task t meet the priority condition of
    Eq. 27 on that channel, g_t . g >= ||g||^2 with g = mean_k g_k (w = 1/K), gradients of the task
    losses w.r.t. the channel's conv weights on the whole training set (BN in training mode)?
    One margin per (layer, channel): (g_t . g - ||g||^2) / (||g|| max_k ||g_k||)."""
    from ..methods.connection_strength import top_priority
    from ..train import train

    train(bench, "connection_strength", epochs=epochs, batch_size=32, lr=1e-2, seed=seed, device=device,
          checkpoint=checkpoint, **hyperparameters)
    model = bench.build_model()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    tops = [top_priority(g).numpy() for g in model.task_bn_groups()]
    x, y = bench.datasets()["train"].tensors
    model.train()
    _, outs = model(x)
    losses = bench.losses(outs, (x, y))
    weights = [conv.weight for conv in model.encoder.convs]
    K = len(bench.tasks)
    grads = [torch.autograd.grad(losses[k], weights, retain_graph=True) for k in range(K)]
    m = []
    for l, top in enumerate(tops):
        Gl = torch.stack([grads[k][l] for k in range(K)]).double().reshape(K, len(top), -1).numpy()
        for p, t in enumerate(top):
            g = Gl[:, p].mean(0)
            sc = np.linalg.norm(g) * np.linalg.norm(Gl[:, p], axis=1).max()
            m.append((Gl[t, p] @ g - g @ g) / sc if sc > 0 else 0.0)
    return Check("after training: CS top task meets the Eq. 27 condition on its channel", np.array(m), TOL, unit="channels")


# --------------------------------------------------------------------------------------------------
# Fig. 5 (when does the top priority settle?) and Tab. 15 (does the Phase-1 order matter?)
# --------------------------------------------------------------------------------------------------
def priority_settling(shares: dict[int, np.ndarray], tol: float) -> dict[int, int]:
    """Per layer: the first epoch (1-based) from which the top-priority shares stay within ``tol``
    (max over tasks) of their final value up to the last epoch; an epoch count E + 1 would mean never,
    which cannot happen since the last epoch is within 0 of itself, so the result is in 1..E."""
    out: dict[int, int] = {}
    for l, S in shares.items():
        dev = np.abs(S - S[-1]).max(axis=1)                       # (E,) distance to the final shares
        late = np.maximum.accumulate(dev[::-1])[::-1]              # max over epochs >= e
        out[l] = int(np.argmax(late <= tol)) + 1
    return out


def settling_checks(share_runs: Sequence[dict[int, np.ndarray]], tol: float) -> dict[str, Any]:
    """Fig. 5's two claims over several runs (one dict layer -> (E, K) shares per run):

    - ``settles``: the top priority settles during training (Phase 2 then maintains it): per run and
      layer, margin = (E - settling epoch + 1) / E - 1/4 (the stable epochs are settling epoch .. E),
      >= 0 when the shares are stable (within ``tol``) over at least the last quarter of the epochs;
    - ``differs``: the settling epoch differs between layers: per run, margin = (max - min settling
      epoch over layers) / E - tol_e with tol_e = 1/(2E) (>= 0 iff the layers settle at different epochs).

    Returns the checks and the settling epochs (runs x layers)."""
    E = next(iter(share_runs[0].values())).shape[0]
    ep = np.array([[v for _, v in sorted(priority_settling(s, tol).items())] for s in share_runs])
    settles = Check(f"top priority stable (within {tol:g}) over the last quarter of training", ((E - ep + 1) / E - 0.25).ravel(),
                    0.0, unit="run-layers")
    differs = Check("settling epoch differs between layers", (ep.max(1) - ep.min(1)) / E - 0.5 / E, 0.0, unit="runs")
    return {"settles": settles, "differs": differs, "epochs": ep}


def order_permutation_test(values: Sequence[float], labels: Sequence[Any]) -> dict[str, float]:
    """Is there an order effect? Statistic: the variance of the per-label means of ``values`` (runs
    labelled by their Phase-1 order). p-value: the share of all distinct reassignments of the labels to
    the runs (group sizes kept; exact enumeration, the observed one included) whose statistic is at
    least the observed one. Small p: the grouping by order explains the spread better than chance."""
    import itertools

    v = np.asarray(values, dtype=float)
    labs = list(labels)
    keys = sorted(set(labs), key=labs.index)
    sizes = [labs.count(k) for k in keys]
    if len(keys) < 2 or min(sizes) < 1:
        raise ValueError("order_permutation_test needs runs of at least two orders")
    obs_groups = [np.flatnonzero([x == k for x in labs]) for k in keys]
    stat = lambda groups: float(np.var([v[g].mean() for g in groups]))  # noqa: E731
    obs = stat(obs_groups)

    def partitions(rest: tuple[int, ...], sz: list[int]):
        if not sz:
            yield []
            return
        for comb in itertools.combinations(rest, sz[0]):
            left = tuple(i for i in rest if i not in comb)
            for tail in partitions(left, sz[1:]):
                yield [np.array(comb)] + tail

    total, hits = 0, 0
    for part in partitions(tuple(range(len(v))), sizes):
        total += 1
        hits += stat(part) >= obs * (1 - 1e-12)
        if total > 200_000:
            raise ValueError("order_permutation_test: too many runs for exact enumeration")
    return {"statistic": obs, "p": hits / total, "assignments": total, "p_min": math.factorial(len(keys)) /
            total if len(set(sizes)) == 1 else 1.0 / total}


def phase1_order_runs(rng: np.random.Generator, orders: Sequence[str], starts: int, T: int,
                      eta_factor: float = 1.0) -> dict[tuple[str, int], float]:
    """An order-sensitive case for the Tab. 15 check: one random least-squares problem (K = len(order)
    tasks, w on the simplex), Phase 1 with the large step eta = eta_factor / H from ``starts`` random
    starts for each order; the value of a run is L = sum w L_k after T iterations. Phase 1 settles on an
    order-dependent cycle (:func:`phase1_cycle`), so the order decides the final loss and the starts
    hardly matter."""
    K = len(orders[0])
    prob = random_problem(rng, K=K, P=2 * K, m=1, n=40)   # few shared weights: the runs settle quickly
    w = random_weights(rng, K)
    eta = eta_factor / prob.H
    st = [_state(rng, prob) for _ in range(starts)]
    out = {}
    for o in orders:
        for j, (ts, th) in enumerate(st):
            out[(o, j)] = float(phase1_run(prob, w, eta, T, ts, th, order=[int(c) for c in o])["L"][-1])
    return out
