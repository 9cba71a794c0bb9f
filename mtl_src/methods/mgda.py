"""MGDA: the min-norm point of the convex hull of the task gradients (Desideri 2012; Sener & Koltun 2018)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..solvers import minimize_on_simplex
from . import register
from .base import GramianWeighting


def min_norm_weights(M: np.ndarray, tol: float = 1e-8, max_iter: int = 20_000, who: str = "mgda") -> np.ndarray:
    r"""lambda* = argmin_{lambda in simplex} lambda^T M lambda for a PSD Gramian M (K x K).

    ``G^T lambda*`` is the min-norm element of conv{g_1, ..., g_K} (Sener & Koltun 2018, Eq. 3).
    K = 2 uses the closed form of Sener & Koltun's Algorithm 1 (line search between two points);
    larger K the certified simplex solver of :mod:`mtl_src.solvers` on M scaled to unit trace/K.
    """
    K = M.shape[0]
    if K == 1:
        return np.ones(1)
    scale = float(np.trace(M)) / K
    if scale <= 0.0:  # all gradients are zero: every point of the hull is the min-norm point
        return np.full(K, 1.0 / K)
    A = M / scale
    if K == 2:
        denom = A[0, 0] + A[1, 1] - 2.0 * A[0, 1]
        if denom <= 1e-15 * (A[0, 0] + A[1, 1]):
            return np.array([0.5, 0.5])  # g1 == g2: the hull is a point
        a = float(np.clip((A[1, 1] - A[0, 1]) / denom, 0.0, 1.0))
        return np.array([a, 1.0 - a])

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        Ax = A @ x
        return float(x @ Ax), 2.0 * Ax

    lip = 2.0 * float(np.linalg.eigvalsh(A)[-1])
    sol = minimize_on_simplex(f, K, lipschitz=lip, tol=tol, max_iter=max_iter, who=who, polish=lambda x: _polish(A, x))
    return sol.x


def _polish(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Solve the KKT system on the support found by the iterative solver (exact when it is right).

    On the support S the optimum satisfies A_SS x_S = mu 1, 1^T x_S = 1. The polished point is kept
    only if it is feasible and has a smaller duality gap, so this can never make the answer worse.
    """
    S = np.flatnonzero(x > 1e-9)
    n = S.size
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = A[np.ix_(S, S)]
    kkt[:n, n] = -1.0
    kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]
    if not np.all(np.isfinite(sol)) or np.any(sol < 0):
        return x
    y = np.zeros_like(x)
    y[S] = sol / sol.sum()

    def gap(z: np.ndarray) -> float:
        g = A @ z
        return float(g @ z - g.min())

    return y if gap(y) <= gap(x) else x


@register("mgda")
class MGDA(GramianWeighting):
    r"""Multiple-gradient descent: :math:`d = K\, G^\top \lambda^*`,
    :math:`\lambda^* = \arg\min_{\lambda \in \Delta_K} \|G^\top \lambda\|^2`.

    The papers' direction is the min-norm point :math:`G^\top\lambda^*` of the convex hull (weights
    sum to 1, the scale of the *mean* loss); we multiply by K to put it on the scale of the sum of
    losses (weights sum to K), so ``mgda`` = K x torchjd's ``MGDA``. ``d`` is 0 exactly at
    Pareto-stationary points; otherwise ``<d, g_i> >= ||d||^2 / K > 0`` for every task.

    ``tol``: certified duality gap of the K x K quadratic program (relative to trace(M)/K).

    Task-specific parameters: head k receives :math:`K\lambda^*_k \nabla L_k`, as in the authors'
    code (Sener & Koltun back-propagate the scaled loss :math:`\sum_k \lambda_k L_k`; the nash-mtl
    code does the same with weights summing to K), see :meth:`head_weights`.
    """

    def __init__(self, tol: float = 1e-8, max_iter: int = 20_000):
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def head_weights(self) -> Tensor | None:
        return self.last_weights

    def weights(self, M: Tensor) -> Tensor:
        M64 = M.double().cpu().numpy()
        lam = min_norm_weights(M64, self.tol, self.max_iter, self.name)
        return M.shape[0] * torch.as_tensor(lam, dtype=torch.float64)
