"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import register
from .base import GramianWeighting, preference
from .fairgrad import FairSolution, _check_solver_hp, clip_weights, solve_fair_weights


@register("nash_mtl")
class NashMTL(GramianWeighting):
    r"""Nash bargaining solution (Navon et al. 2022, Thm 5.1 / Eq. 3): :math:`d = G^\top\alpha` with
    :math:`\alpha > 0` solving

    .. math:: \alpha_i\,(G G^\top \alpha)_i = w_i \quad\text{i.e.}\quad G G^\top\alpha = w / \alpha,

    the stationarity condition of :math:`\max_{\|d\| \le \epsilon} \sum_i w_i \log(g_i^\top d)`
    (w = 1: the paper; a general w is PIVRG's PI-Nash-MTL, where the equal weights of the log-utilities
    are replaced by the performance weights omega, see :meth:`set_performance_weights`). Then every task
    gets the utility :math:`g_i^\top d = w_i / \alpha_i` and :math:`\|d\|^2 = \sum_i w_i` (= K), whatever
    the scale of G: the direction is invariant to rescaling any task's loss.

    Authors' code (kept here): weights recomputed every ``update_weights_every`` steps (default 1) and
    re-used in between; after the backward of :math:`\sum_i \alpha_i L_i` the shared gradient is
    clipped to norm ``max_norm`` = 1 (``clip_grad_norm_`` after ``loss.backward()``, so it does act; with
    :math:`\|d\| = \sqrt K > 1` every update of K >= 2 tasks is clipped). The weights multiply the raw
    losses, i.e. d is on the scale of the sum of the losses - ours = torchjd's ``NashMTL`` (same
    max_norm), factor 1. Their solver is a sequence of 20 (``optim_niter``) convex programs (CCP, cvxpy
    + ECOS) warm-started at the previous alpha; it converges to the same root as ours (checked against
    torchjd), which we compute by the scale-free damped Newton of
    :func:`~mtl_src.methods.fairgrad.solve_fair_weights` (FairGrad with exponent 1), to backward error
    ``tol``, warm-started at the previous alpha; non-convergence raises a ``SolverWarning``.

    At a Pareto-stationary G (0 in the convex hull of the non-zero gradients) the equation has no
    positive solution (Gordan) and d = 0; zero gradient rows get weight 0.

    Task-specific parameters: head k receives :math:`\alpha_k \nabla L_k` with the *unclipped* alpha
    (the authors back-propagate :math:`\sum_k \alpha_k L_k` and then clip only the shared
    parameters' gradient), see :meth:`head_weights`.
    """

    def head_weights(self) -> Tensor | None:
        return None if self._alpha is None else torch.as_tensor(self._alpha, dtype=torch.float64)

    def __init__(
        self,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        w: Sequence[float] | None = None,
        tol: float = 1e-10,
        max_iter: int = 200,
    ):
        _check_solver_hp("nash_mtl", tol, max_iter, max_norm)
        if int(update_weights_every) < 1:
            raise ValueError(f"nash_mtl: update_weights_every must be >= 1, got {update_weights_every}")
        self.max_norm = float(max_norm)
        self.update_weights_every = int(update_weights_every)
        self.w = None if w is None else list(map(float, w))
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        if self.w is not None and not all(v > 0 for v in self.w):
            raise ValueError(f"nash_mtl: bargaining weights w must be > 0, got {self.w}")
        self.reset()

    def reset(self) -> None:
        self._step = 0
        self._alpha: np.ndarray | None = None  # unclipped weights of the last solve (warm start)
        self._solution: FairSolution | None = None

    @property
    def last_solution(self) -> FairSolution | None:
        """The solver's report for the last solve."""
        return self._solution

    def set_performance_weights(self, omega: Tensor | Sequence[float]) -> None:
        """PI-Nash-MTL (PIVRG Sec. 4.4): bargain with weights omega instead of ones."""
        self.w = [float(v) for v in torch.as_tensor(omega).flatten()]

    def weights(self, M: Tensor) -> Tensor:
        K = M.shape[0]
        w = preference(self.w, K, self.name).numpy()
        if np.any(w <= 0):
            raise ValueError(f"{self.name}: bargaining weights must be > 0, got {w.tolist()}")
        stale = self._alpha is None or self._alpha.shape != (K,)
        if stale or self._step % self.update_weights_every == 0:
            x0 = None if stale else self._alpha
            sol = solve_fair_weights(M.double().cpu().numpy(), 1.0, w, tol=self.tol, max_iter=self.max_iter,
                                     x0=x0, who=self.name)
            self._solution = sol
            self._alpha = sol.x
        self._step += 1
        return clip_weights(torch.as_tensor(self._alpha, dtype=torch.float64), M, self.max_norm)
