"""Linear scalarisation (LS): plain gradient descent on the weighted sum of the losses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from . import register
from .base import GramianWeighting, StepContext, StepResult, preference


@register("ls")
class LinearScalarization(GramianWeighting):
    r"""Gradient of :math:`\sum_i w_i L_i`: :math:`d = G^\top w`, alpha = w (default w = 1).

    With w = 1 this is ``G.sum(0)``, the reference scale of every method in the library. Its training
    step never forms G: one backward of :math:`\sum_i w_i L_i` (shared and task-specific parameters
    alike), which is what "linear scalarisation costs one backward" means in the cost benchmark.

    Paper: PIVRG (Qin et al., CVPR 2025) Eq. 1 states the multi-task objective as the *mean* of the task
    losses, and its App. C.1 restates LS as that objective; with w = 1 our d is K times the gradient of
    their Eq. 1 (the library's sum-of-losses convention, :mod:`mtl_src.methods.base`).
    """

    def __init__(self, w: Sequence[float] | None = None):
        self.w = None if w is None else list(map(float, w))

    def weights(self, M: Tensor) -> Tensor:
        return preference(self.w, M.shape[0], self.name)

    def _aggregate(self, G: Tensor) -> Tensor:  # alpha needs no Gramian: skip forming G G^T
        alpha = preference(self.w, G.shape[0], self.name)
        self.last_weights = alpha
        return alpha.to(G.dtype) @ G

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        w = preference(self.w, out.losses.shape[0], self.name).to(out.losses)
        ctx.optimizer.zero_grad(set_to_none=True)
        (w * out.losses).sum().backward()
        ctx.optimizer.step()
        return StepResult(out.losses.detach())
