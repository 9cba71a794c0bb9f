"""Manual loss weights: a fixed, hand-tuned weight per task (Connection Strength supplement App. B)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import register
from .base import LossWeighting, StepContext


@register("manual")
class ManualWeights(LossWeighting):
    r"""Fixed loss weights: :math:`\mathcal L = \sum_i w_i L_i`.

    The "manually tuned" loss scaling of the Connection-Strength supplement (App. B, scaling 2): for
    NYUD-v2 (depth : semseg : normals : edges) = 1 : 1 : 10 : 50, for PASCAL-Context (semseg : parts :
    saliency : normals : edges) = 1 : 2 : 5 : 10 : 50, following earlier multi-task work. The weights are
    used exactly as given (not renormalised to sum to K), as in those papers; the default ``w=None`` means
    all ones, i.e. linear scalarisation. ``w`` must be finite, non-negative and not all zero; its
    length is checked against the number of tasks K at the first step.
    """

    NYUD = (1.0, 1.0, 10.0, 50.0)
    PASCAL = (1.0, 2.0, 5.0, 10.0, 50.0)

    def __init__(self, w: Sequence[float] | None = None):
        if w is not None:
            try:
                w = [float(v) for v in w]
            except (TypeError, ValueError):
                raise ValueError(f"manual: w must be a sequence of numbers, got {w!r}") from None
            t = torch.tensor(w, dtype=torch.float64)
            if t.numel() == 0 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or float(t.sum()) == 0.0:
                raise ValueError(f"manual: w must be finite, non-negative and not all zero, got {w}")
        self.w = w

    def loss_weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        K = losses.shape[0]
        if self.w is None:
            return torch.ones(K, dtype=torch.float64)
        if len(self.w) != K:
            raise ValueError(f"manual: w has {len(self.w)} entries but there are {K} tasks")
        return torch.tensor(self.w, dtype=torch.float64)
