"""Dynamic Weight Average (DWA; Liu et al., CVPR 2019, MTAN Eq. 7)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import register
from ._loss_checks import check_above, check_losses
from .base import Feedback, LossWeighting, StepContext


@register("dwa")
class DynamicWeightAverage(LossWeighting):
    r"""Weights from the descent rate of each task's epoch loss:

    .. math:: \lambda_i(t) = \frac{K \exp(r_i(t-1)/T)}{\sum_j \exp(r_j(t-1)/T)},\qquad
              r_i(t-1) = \frac{L_i(t-1)}{L_i(t-2)},

    where :math:`L_i(t)` is task i's mean training loss over epoch t (Liu et al. 2019, Eq. 7; the
    Connection-Strength supplement, Eq. 89). A task whose loss went down more slowly gets more weight.
    :math:`\lambda = 1` during the first two epochs (no two past epoch losses yet), as in the MTAN code;
    the weights sum to K (already the sum-of-losses convention). ``T`` = 2, the temperature of the
    paper and of the MTAN / LibMTL code.

    The epoch losses arrive through :meth:`observe` (``Feedback.train_losses``, once per epoch); they
    must be finite and positive (a ratio of losses), else a ``ValueError``; feedback without
    ``train_losses`` is ignored. The weights of epoch t are fixed for all its steps.
    """

    def __init__(self, T: float = 2.0):
        T = float(T)
        if not (T > 0.0 and T < float("inf")):
            raise ValueError(f"dwa: temperature T must be a positive finite number, got {T}")
        self.T = T
        self.reset()

    def reset(self) -> None:
        self._history: list[Tensor] = []  # the last two epoch-loss vectors, oldest first
        self._weights: Tensor | None = None

    @property
    def weights(self) -> Tensor | None:
        """The current weights (None while they are still 1)."""
        return self._weights

    def observe(self, feedback: Feedback) -> None:
        if feedback.train_losses is None:  # e.g. feedback with performance drops only: nothing to learn
            return
        K = self._history[-1].numel() if self._history else None
        L = check_losses(torch.as_tensor(feedback.train_losses), self.name, K, "epoch training losses").double()
        check_above(L, L.new_zeros(()), self.name, "epoch training losses",
                    "DWA uses ratios of epoch losses, which need positive losses")
        self._history = (self._history + [L.cpu()])[-2:]
        if len(self._history) == 2:
            r = self._history[1] / self._history[0]
            self._weights = r.numel() * torch.softmax(r / self.T, dim=0)

    def loss_weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        K = losses.shape[0]
        if self._history and self._history[-1].numel() != K:
            raise ValueError(f"dwa: the epoch losses had {self._history[-1].numel()} tasks but the batch has {K}")
        if self._weights is None:
            return torch.ones(K, dtype=torch.float64)
        return self._weights
