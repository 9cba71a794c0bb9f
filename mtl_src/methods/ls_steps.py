"""LS with several optimiser steps per batch: the step-count control of the sequential methods."""

from __future__ import annotations

from . import register
from .base import Method, StepContext, StepResult


@register("ls_steps")
class LSSteps(Method):
    r"""Linear scalarisation that takes ``steps`` optimiser steps on every batch, each on
    :math:`\sum_i L_i` re-evaluated at the current parameters (one forward and one backward per step).

    Not a method of the papers: a *control*. Connection Strength's Phase 1 (CVPR 2024, Sec. 3.2) and STGU
    (ICLR 2025, Alg. 1) update the shared parameters once per task (or task group) on every batch, so a
    batch gives them up to K optimiser steps where LS takes one. A gain of theirs over LS may therefore
    come from the extra steps alone. ``ls_steps`` takes as many steps as Phase 1 (``steps=None``: K, the
    number of tasks), so "sequential method vs ``ls_steps``" compares at an equal number of optimiser steps
    and gradient evaluations per batch, and "vs ``ls``" at an equal number of batches.
    The losses reported for the step are those of the first forward pass, as for the other methods.
    """

    def __init__(self, steps: int | None = None):
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"ls_steps: steps must be an integer >= 1 or None (= K), got {steps!r}")
        self.steps = steps

    def step(self, ctx: StepContext) -> StepResult:
        first = None
        n = self.steps
        t = 0
        while True:
            out = ctx.forward()
            if first is None:
                first = out.losses.detach()
                n = int(first.numel()) if n is None else n
            ctx.optimizer.zero_grad(set_to_none=True)
            out.losses.sum().backward()
            ctx.optimizer.step()
            t += 1
            if t >= n:
                return StepResult(first, {"optimizer_steps": float(n)})
