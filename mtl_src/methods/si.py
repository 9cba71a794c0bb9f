"""Scale-invariant loss (SI): the sum of the log-losses (the baseline of Navon et al. 2022 / Liu et al. 2023)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from . import register
from ._loss_checks import bounds_for, check_above, check_losses, lower_bounds
from .base import LossWeighting, StepContext


@register("si")
class ScaleInvariant(LossWeighting):
    r"""Scale-invariant linear scalarisation: :math:`\mathcal L = \sum_i \log (L_i - m_i)`.

    Its gradient is :math:`\sum_i \nabla L_i / (L_i - m_i)`, i.e. the loss weights
    :math:`\lambda_i = 1/(L_i - m_i)` (reported as ``lambda_i``): rescaling a task's loss by any
    constant c > 0 leaves the update unchanged. This is the "SI" baseline of the Nash-MTL and FAMO
    papers (their code: ``torch.log(losses)`` summed with unit task weights); with m = 0 it is exactly
    that. The weights are not renormalised (the method is defined by its invariance, not by a scale).

    ``min_losses`` (m, default 0; a number or one per task): a known lower bound of the losses, for
    losses that may be <= 0 (e.g. the two-task toy problem, bounded below by -20, for which FAMO's
    authors shift by -21). The log needs :math:`L_i > m_i`: a loss at or below its bound is a clear
    ``ValueError`` (never a NaN).

    Paper: PIVRG (Qin et al., CVPR 2025) App. C.1, "Scale-Invariant (SI)", states the objective as the
    mean of the log-losses (an unnumbered display; the mean there, the sum here: a factor K); the
    Nash-MTL and FAMO papers list it as a baseline without an equation of their own.
    """

    def __init__(self, min_losses: float | Sequence[float] = 0.0):
        self.min_losses = lower_bounds(min_losses, "si")

    def total_loss(self, losses: Tensor, ctx: StepContext) -> Tensor:
        check_losses(losses, self.name)
        m = bounds_for(self.min_losses, losses, self.name)
        shifted = losses - m
        check_above(shifted.detach(), shifted.new_zeros(()), self.name, "losses minus min_losses",
                    "the scale-invariant loss sum_i log(L_i - m_i) needs every loss above its lower bound; "
                    "set min_losses to a strict lower bound of the losses")
        self.last_weights = (1.0 / shifted.detach()).double()
        return shifted.log().sum()
