"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..solvers import minimize_on_simplex
from . import register
from .base import GramianWeighting
from .fairgrad import _check_max_norm, clip_weights


@register("cagrad")
class CAGrad(GramianWeighting):
    r"""Maximise the worst task improvement in a ball around the average gradient
    :math:`g_0 = \frac1K\sum_i g_i` (Liu et al. 2021, Eq. 5 and its dual):

    .. math::
        w^* = \arg\min_{w \in \Delta_K} g_w^\top g_0 + \sqrt{\phi}\,\|g_w\|,\quad
        \phi = c^2\|g_0\|^2,\quad g_w = G^\top w,

    :math:`d_{mean} = \big(g_0 + \frac{\sqrt{\phi}}{\|g_w\|} g_w\big) / (1 + c^2)` - the division by
    :math:`1 + c^2` is the authors' default ``rescale=1`` (0: none; 2: divide by 1 + c).
    The library returns :math:`d = K\, d_{mean}` (scale of the sum of losses), so ``c = 0`` gives
    ``G.sum(0)``. The dual is convex on the simplex and is solved with a certified gap (`tol`).
    ``max_norm`` (default 0: off, as in the nash-mtl code whose numbers the tables report): clip the
    shared direction to this norm, the ``clip_grad_norm_(shared_parameters, max_norm)`` that the
    FairGrad/PIVRG code applies after every method's backward.
    """

    def __init__(self, c: float = 0.4, rescale: int = 1, tol: float = 1e-8, max_iter: int = 20_000,
                 max_norm: float = 0.0):
        if c < 0:
            raise ValueError(f"cagrad: c must be >= 0, got {c}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"cagrad: rescale must be 0, 1 or 2, got {rescale}")
        self.c = float(c)
        self.rescale = int(rescale)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.max_norm = _check_max_norm("cagrad", max_norm)

    def weights(self, M: Tensor) -> Tensor:
        A = M.double().cpu().numpy()
        K = A.shape[0]
        b = np.full(K, 1.0 / K)
        scale = float(np.trace(A)) / K
        alpha = b.copy()
        g0_sq = float(b @ A @ b)
        if self.c > 0 and scale > 0 and g0_sq > 0:
            An = A / scale
            sqrt_phi = self.c * np.sqrt(g0_sq / scale)
            Ab = An @ b
            eps = 1e-20

            def f(w: np.ndarray) -> tuple[float, np.ndarray]:
                Aw = An @ w
                nw = np.sqrt(max(w @ Aw, 0.0) + eps)
                return float(w @ Ab + sqrt_phi * nw), Ab + sqrt_phi * Aw / nw

            if K == 2:
                w = _two_task_dual(An, Ab, sqrt_phi)
            else:
                lip = float(np.linalg.eigvalsh(An)[-1])
                w = minimize_on_simplex(
                    f, K, lipschitz=lip, tol=self.tol, max_iter=self.max_iter, who=self.name
                ).x
            gw_norm = np.sqrt(max(w @ An @ w, 0.0))
            if gw_norm > 1e-12 * np.sqrt(g0_sq / scale):
                alpha = b + (sqrt_phi / gw_norm) * w
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        return clip_weights(torch.as_tensor(K * alpha / divisor, dtype=torch.float64), M, self.max_norm)


def _two_task_dual(A: np.ndarray, Ab: np.ndarray, sqrt_phi: float) -> np.ndarray:
    """Exact minimiser of F(a) = w^T A b + sqrt_phi * sqrt(w^T A w), w = (a, 1 - a), a in [0, 1].

    With q(a) = w^T A w = qa a^2 + qb a + qc and F linear part r + p a, F'(a) = 0 squares to a quadratic
    in a; F is convex, so the minimum is at a stationary root or at an end point: evaluate them all.
    """
    qa = A[0, 0] + A[1, 1] - 2.0 * A[0, 1]
    qb = 2.0 * (A[0, 1] - A[1, 1])
    qc = A[1, 1]
    p = Ab[0] - Ab[1]

    def F(a: float) -> float:
        return a * p + sqrt_phi * np.sqrt(max(qa * a * a + qb * a + qc, 0.0))

    cands = [0.0, 1.0]
    k = (p / sqrt_phi) ** 2
    # (2 qa a + qb)^2 = 4 k q(a)  <=>  4 qa (qa - k) a^2 + 4 qb (qa - k) a + qb^2 - 4 k qc = 0
    c2, c1, c0 = 4.0 * qa * (qa - k), 4.0 * qb * (qa - k), qb * qb - 4.0 * k * qc
    if abs(c2) > 1e-300:
        disc = c1 * c1 - 4.0 * c2 * c0
        # the double root -c1 / (2 c2) (= the vertex -qb / (2 qa) of q) is always a candidate: when the two
        # task gradients are mirror images (p ~ 0) the roots coincide there and rounding can make disc
        # slightly negative; without it only the end points were left and the wrong one (a = 0, not 0.5)
        # was chosen. Any a in [0, 1] is feasible, so an extra candidate never makes the answer worse.
        cands.append(-c1 / (2.0 * c2))
        if disc >= 0.0:
            r = np.sqrt(disc)
            cands += [(-c1 - r) / (2.0 * c2), (-c1 + r) / (2.0 * c2)]
    elif abs(c1) > 1e-300:
        cands.append(-c0 / c1)
    cands = [a for a in cands if 0.0 <= a <= 1.0 and np.isfinite(a)]
    a = min(cands, key=F)
    return np.array([a, 1.0 - a])
