"""Single-task learning (STL): train on one task's loss only - the baseline of Delta m."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from ..autodiff import task_loss
from . import register
from .base import LossWeighting, StepContext, StepResult


@register("stl")
class SingleTask(LossWeighting):
    r"""Single-task learning of task ``task``: :math:`\mathcal L = L_{\text{task}}`.

    The reference of the multi-task performance Delta m: one network per task, trained on that task
    alone. In the shared multi-task network this is the loss weighting :math:`\lambda = e_{\text{task}}`,
    and the backward is of :math:`L_{\text{task}}` alone. The heads of the other tasks must then not move
    at all, as in a separate single-task network: autograd gives them gradients of exactly zero (through
    the stacked loss vector), which an optimizer with weight decay or momentum would still act on, so
    task-specific parameters whose gradient is identically zero get ``.grad = None`` and the optimizer
    skips them. The other tasks' losses are still computed and returned
    (the trainer logs them). Spec form: ``"stl:2"`` trains task 2 only.

    Paper: the baseline M_b of PIVRG (Qin et al., CVPR 2025) Eq. 3, Delta m_i = (-1)^delta_i
    (M_m,i - M_b,i) / M_b,i x 100, and of the Delta_m of STGU (Jeong & Yoon, ICLR 2025, Sec. 5,
    after Maninis et al. 2019).
    """

    def __init__(self, task: int = 0):
        try:
            if isinstance(task, bool):
                raise TypeError
            task = operator.index(task)
        except TypeError:
            raise ValueError(f"stl: task must be a task index (int), got {task!r}") from None
        if task < 0:
            raise ValueError(f"stl: task must be >= 0, got {task}")
        self.task = task

    def _check(self, K: int) -> None:
        if self.task >= K:
            raise ValueError(f"stl: task index {self.task} is out of range for K = {K} tasks")

    def loss_weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        K = losses.shape[0]
        self._check(K)
        lam = torch.zeros(K, dtype=torch.float64)
        lam[self.task] = 1.0
        return lam

    def total_loss(self, losses: Tensor, ctx: StepContext) -> Tensor:
        self.last_weights = self.loss_weights(losses.detach(), ctx)
        return task_loss(losses, self.task)  # task k's graph only (autodiff.stack_losses)

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        if not bool(torch.isfinite(out.losses).all()):
            raise ValueError(f"{self.name}: task losses {out.losses.detach().tolist()} contain NaN or inf")
        ctx.optimizer.zero_grad(set_to_none=True)
        self.total_loss(out.losses, ctx).backward()
        for p in ctx.specific:
            if p.grad is not None and not bool(p.grad.any()):
                p.grad = None  # another task's head: leave it exactly as it is
        ctx.optimizer.step()
        return StepResult(out.losses.detach(), {f"lambda_{i}": float(a) for i, a in enumerate(self.last_weights)})
