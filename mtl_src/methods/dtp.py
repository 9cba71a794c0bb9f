"""Dynamic Task Prioritization (DTP; Guo, Haque, Huang, Yeung & Fei-Fei, ECCV 2018)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import register
from ._loss_checks import check_losses
from .base import Feedback, LossWeighting, StepContext


@register("dtp")
class DynamicTaskPrioritization(LossWeighting):
    r"""Focal-loss weights of each task's key performance indicator (KPI):

    .. math:: \lambda_i = -(1 - \bar\kappa_i)^{\gamma} \log \bar\kappa_i,\qquad
              \bar\kappa_i(\tau) = \alpha\,\kappa_i(\tau) + (1-\alpha)\,\bar\kappa_i(\tau-1),

    with :math:`\kappa_i \in [0, 1]` (higher is better; e.g. accuracy) from ``Feedback.kpis`` once per
    epoch and :math:`\bar\kappa` its exponential moving average (the first KPI initialises it). A task
    with a lower KPI (harder) gets a larger weight; the weight falls to 0 as the KPI goes to 1. Guo et
    al. apply the focal term :math:`FL(\kappa;\gamma)` of Lin et al. (2017) to task KPIs (their loss L_DTP).

    Hyperparameters. ``gamma`` = 2: the focusing parameter of the focal loss, whose standard value
    (Lin et al. 2017) we take since DTP presents it as a per-task knob and its authors released no code.
    ``alpha`` = 0.5: the EMA weight of the newest KPI (our choice: KPIs arrive once per epoch here, and
    0.5 keeps the weights responsive over short runs). ``clip`` = 1e-4: the KPIs are clipped to
    [clip, 1 - clip] so that :math:`\log\bar\kappa` and the weights stay finite (a KPI of exactly 0 or 1
    happens with accuracies). ``normalize`` = True rescales the weights to sum to K (library convention;
    relative weights unchanged), False uses the raw focal values.

    Paper: Guo et al., "Dynamic task prioritization for multitask learning" (ECCV 2018): the focal
    term FL and the prioritised loss L_DTP = sum_t FL(kappa_t; gamma_t) L_t. The book's sources do not
    include that paper's text, so its equation numbers are not cited here; STGU (Jeong & Yoon, ICLR 2025,
    Tables 2-3) uses DTP as a baseline.

    Before any KPI arrives the weights are 1 (DTP needs a measured performance). Feedback without
    ``kpis`` (a benchmark without KPIs) leaves the weights unchanged, with one ``RuntimeWarning`` per
    run saying so (without any KPI, DTP is linear scalarisation); NaN KPIs, values outside [0, 1] or
    a changed number of tasks are a ``ValueError``.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5, clip: float = 1e-4, normalize: bool = True):
        gamma, alpha, clip = float(gamma), float(alpha), float(clip)
        if not (gamma >= 0.0 and gamma < float("inf")):
            raise ValueError(f"dtp: gamma must be finite and >= 0, got {gamma}")
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"dtp: alpha (EMA weight of the newest KPI) must be in (0, 1], got {alpha}")
        if not (0.0 < clip < 0.5):
            raise ValueError(f"dtp: clip must be in (0, 0.5), got {clip}")
        self.gamma = gamma
        self.alpha = alpha
        self.clip = clip
        self.normalize = bool(normalize)
        self.reset()

    def reset(self) -> None:
        self._kbar: Tensor | None = None
        self._warned = False

    @property
    def kpis(self) -> Tensor | None:
        """The smoothed KPIs (None before the first KPI)."""
        return self._kbar

    def focal_weights(self, kbar: Tensor) -> Tensor:
        """lambda from smoothed KPIs (K,) (after clipping; normalised if ``normalize``)."""
        k = kbar.double().clamp(self.clip, 1.0 - self.clip)
        w = -((1.0 - k) ** self.gamma) * torch.log(k)
        if self.normalize:
            w = w.numel() * w / w.sum()  # w > 0 for every k in [clip, 1 - clip]
        return w

    def observe(self, feedback: Feedback) -> None:
        if feedback.kpis is None:
            if not self._warned:
                state = ("the weights stay 1 and DTP trains as linear scalarisation (ls)" if self._kbar is None
                         else "the weights stay at their last value")
                warnings.warn(
                    f"{self.name}: feedback of epoch {feedback.epoch} has no KPIs (the benchmark defines no "
                    f"key performance indicators?); {state}. Give the benchmark per-task KPIs in [0, 1] to "
                    "use DTP",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned = True
            return
        K = None if self._kbar is None else self._kbar.numel()
        k = check_losses(torch.as_tensor(feedback.kpis), self.name, K, "KPIs").double().cpu()
        out = torch.nonzero((k < 0) | (k > 1)).flatten().tolist()
        if out:
            raise ValueError(f"dtp: KPIs must lie in [0, 1] (higher is better); tasks {out} have {k[out].tolist()}")
        self._kbar = k if self._kbar is None else self.alpha * k + (1.0 - self.alpha) * self._kbar

    def loss_weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        K = losses.shape[0]
        if self._kbar is None:
            return torch.ones(K, dtype=torch.float64)
        if self._kbar.numel() != K:
            raise ValueError(f"dtp: {self._kbar.numel()} KPIs but the batch has {K} tasks")
        return self.focal_weights(self._kbar)
