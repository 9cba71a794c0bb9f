"""PIVRG: performance-informed variance reduction of the gradient (CVPR 2025)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from . import register
from .base import Feedback, GramianWeighting
from .fairgrad import FairSolution, _check_solver_hp, clip_weights, solve_fair_weights

__all__ = ["performance_weights", "check_performance_hp", "PIVRG"]


def check_performance_hp(who: str, bound: float, tau_min: float) -> None:
    """Validate PIVRG's ``bound`` (> 1) and ``tau_min`` (> 0)."""
    if not (bound > 1.0 and math.isfinite(bound)):
        raise ValueError(f"{who}: bound (max omega / min omega) must be a finite number > 1, got {bound}")
    if not (tau_min > 0.0 and math.isfinite(tau_min)):
        raise ValueError(f"{who}: tau_min must be a finite number > 0, got {tau_min}")


def performance_weights(
    drops: Tensor | Sequence[float], bound: float = 2.0, tau_min: float = 10.0, who: str = "pivrg"
) -> tuple[Tensor, float]:
    r"""omega (K,) and tau from the per-task performance drops s (percent, positive = worse).

    PIVRG Eq. 5 with the temperature rule of the proof of Prop. 1:

    .. math:: \tau = \max\Big(\frac{\max_i s_i - \min_i s_i}{\ln(\text{bound})}, \tau_{\min}\Big),\qquad
              \omega = K\,\mathrm{softmax}(s / \tau),

    so that :math:`\mathbf 1^\top\omega = K` (Property 2), omega increases with s (Property 1) and
    :math:`\max\omega/\min\omega = e^{(\max s - \min s)/\tau} \le \text{bound}`, hence
    :math:`\omega_i \in [1/\text{bound}, \text{bound}]` (Property 3, Prop. 1) whatever the spread of s.
    """
    check_performance_hp(who, bound, tau_min)
    s = torch.as_tensor(drops, dtype=torch.float64).flatten()
    if s.numel() == 0:
        raise ValueError(f"{who}: no performance drops given")
    if not bool(torch.isfinite(s).all()):
        bad = torch.nonzero(~torch.isfinite(s)).flatten().tolist()
        raise ValueError(f"{who}: the performance drops of tasks {bad} are NaN or inf: {s.tolist()}")
    spread = float(s.max() - s.min())
    tau = max(spread / math.log(bound), float(tau_min))
    omega = s.numel() * torch.softmax(s / tau, dim=0)
    return omega, tau


@register("pivrg")
class PIVRG(GramianWeighting):
    r"""PIVRG (Eq. 4-8, Alg. 1): minimise the mean of the performance-weighted inverse utilities,
    :math:`\min_d \frac1K\sum_i \omega_i / g_i^\top d` (Eq. 4), whose KKT conditions (Eq. 6-7) give
    :math:`d \propto G^\top x` with x > 0 solving Eq. 8 (the paper's :math:`\mathcal G` is P x K, ours
    G is K x P):

    .. math:: (G G^\top x)_i^2 = \omega_i / x_i \iff (G G^\top x)_i = \sqrt{\omega_i / x_i},\qquad
              d = K\,G^\top x,\ \text{then } d \leftarrow d\,\min(1, \text{max\_norm}/\|d\|).

    omega = K softmax(s / tau) from the per-task performance drops s received once per epoch by
    :meth:`observe` (``Feedback.drops``; :func:`performance_weights`); omega = 1 before the first
    feedback (then PIVRG = ``fairgrad`` with alpha = 2). Facts from the authors' code
    (Qin et al.'s public PIVRG code, as read for this book): Eq. 8 solved with scipy's ``least_squares`` from x = 1/K, the
    update K G^T x (scale of the sum of losses, as FairGrad's code), then the *shared* gradient clipped
    to norm 1 - i.e. d itself (``max_norm``; 0 disables). We solve Eq. 8 by the scale-free damped Newton
    of :func:`~mtl_src.methods.fairgrad.solve_fair_weights` (unique root). At a Pareto-stationary G the
    equation has no positive solution (the paper's Assumption 1 fails) and d = 0.

    Defaults: ``bound = 2``, ``tau_min = 10`` (NYUv2 and CelebA; Cityscapes 1.8 / 20, QM9 1.8 / 100).
    A feedback without drops (no single-task baseline) leaves omega unchanged, with one warning.
    """

    def __init__(self, bound: float = 2.0, tau_min: float = 10.0, max_norm: float = 1.0, tol: float = 1e-10,
                 max_iter: int = 200):
        check_performance_hp("pivrg", bound, tau_min)
        _check_solver_hp("pivrg", tol, max_iter, max_norm)
        self.bound = float(bound)
        self.tau_min = float(tau_min)
        self.max_norm = float(max_norm)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.reset()

    def reset(self) -> None:
        self._omega: Tensor | None = None
        self._tau: float | None = None
        self._solution: FairSolution | None = None
        self._warned = False

    @property
    def omega(self) -> Tensor | None:
        """The current performance weights (None until the first feedback with drops: omega = 1)."""
        return self._omega

    @property
    def tau(self) -> float | None:
        return self._tau

    @property
    def last_solution(self) -> FairSolution | None:
        return self._solution

    def observe(self, feedback: Feedback) -> None:
        if feedback.drops is None:
            if not self._warned:
                warnings.warn(
                    f"{self.name}: feedback of epoch {feedback.epoch} has no performance drops (no single-task "
                    "baseline?); the performance weights omega stay at their last value",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned = True
            return
        self._omega, self._tau = performance_weights(feedback.drops, self.bound, self.tau_min, self.name)

    def weights(self, M: Tensor) -> Tensor:
        K = M.shape[0]
        omega = torch.ones(K, dtype=torch.float64) if self._omega is None else self._omega
        if omega.numel() != K:
            raise ValueError(f"{self.name}: {omega.numel()} performance weights for {K} tasks")
        sol = solve_fair_weights(M.double().cpu().numpy(), 2.0, omega.numpy(), tol=self.tol, max_iter=self.max_iter,
                                 who=self.name)
        self._solution = sol
        alpha = K * torch.as_tensor(sol.x, dtype=torch.float64)
        return clip_weights(alpha, M, self.max_norm)

    def diagnostics(self) -> dict[str, float]:
        info = super().diagnostics()
        if self._omega is not None:
            info.update({f"omega_{i}": float(w) for i, w in enumerate(self._omega)})
        return info
