"""Uncertainty weighting (UW; Kendall, Gal & Cipolla, CVPR 2018): homoscedastic task uncertainty."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import register
from ._loss_checks import check_losses
from .base import LossWeighting, StepContext

_KINDS = ("regression", "classification")


@register("uw")
class UncertaintyWeighting(LossWeighting):
    r"""Learned homoscedastic-uncertainty weights (Connection-Strength supplement Eq. 88; Kendall et al.
    2018, Eq. 7 and 10), with learnable log-variances :math:`s_i = \log\sigma_i^2`:

    .. math:: \mathcal L = \sum_i \hat L_i,\qquad
              \hat L_i = \begin{cases} \tfrac{1}{2} e^{-s_i} L_i + \tfrac12 s_i & \text{regression}
                         \ (\tfrac{1}{2\sigma_i^2}L_i + \log\sigma_i)\\
                         e^{-s_i} L_i + \tfrac12 s_i & \text{classification}
                         \ (\tfrac{1}{\sigma_i^2}L_i + \log\sigma_i) \end{cases}

    The network gets the loss weights :math:`\lambda_i = e^{-s_i}/2` (regression) or :math:`e^{-s_i}`
    (classification), reported as ``lambda_i``; the log-variances get
    :math:`\partial\mathcal L/\partial s_i = \tfrac12 - \lambda_i L_i`, so for a fixed loss their
    stationary point is :math:`s_i = \log L_i` (regression) or :math:`\log 2L_i` (classification), where
    :math:`\lambda_i L_i = 1/2`.

    Parametrisation and initial value as in LibMTL's UW (log-variance ``s``, initialised at -0.5, i.e.
    initial regression weight :math:`e^{0.5}/2 \approx 0.82`); ``init`` changes it. Scale convention:
    Eq. 88 is kept as printed (its weights are not renormalised to sum to K - learning the scale is the
    method). The log-variances are the method's :meth:`parameters`: the trainer steps them with the
    model's optimizer (its learning rate and weight decay), as LibMTL does.

    ``kinds``: one of "regression" / "classification" per task (default: regression for all). K is
    then known only at the first step: :meth:`parameters` returns one tensor object for the whole run,
    created empty and filled with K entries (on the losses' device and dtype) at the first step, so an
    optimizer built before training keeps stepping the right tensor (Adam's state is created lazily).
    If the optimizer of the step does not hold the tensor, it is added as a new parameter group.
    """

    def __init__(self, kinds: Sequence[str] | None = None, init: float = -0.5):
        if kinds is not None:
            if isinstance(kinds, str):
                raise ValueError(f"uw: kinds must be a sequence with one kind per task, got the string {kinds!r}")
            kinds = [str(k) for k in kinds]
            bad = [k for k in kinds if k not in _KINDS]
            if not kinds or bad:
                raise ValueError(f"uw: kinds must be 'regression' or 'classification' per task, got {kinds}")
        init = float(init)
        if not torch.isfinite(torch.tensor(init)):
            raise ValueError(f"uw: init (the initial log-variance) must be finite, got {init}")
        self.kinds = kinds
        self.init = init
        self.reset()

    def reset(self) -> None:
        K = 0 if self.kinds is None else len(self.kinds)
        self._s = torch.full((K,), self.init, dtype=torch.float64, requires_grad=True)

    def parameters(self) -> list[Tensor]:
        return [self._s]

    @property
    def log_variances(self) -> Tensor:
        """The current log-variances s (K,), detached (empty before the first step when K is unknown)."""
        return self._s.detach()

    def _ready(self, losses: Tensor, ctx: StepContext | None) -> None:
        K = losses.shape[0]
        if self.kinds is not None and len(self.kinds) != K:
            raise ValueError(f"uw: kinds has {len(self.kinds)} entries but there are {K} tasks")
        with torch.no_grad():
            if self._s.numel() == 0:
                self._s.data = torch.full((K,), self.init, dtype=losses.dtype, device=losses.device)
            elif self._s.numel() != K:
                raise ValueError(f"uw: the log-variances have {self._s.numel()} entries but there are {K} tasks")
            elif self._s.device != losses.device or self._s.dtype != losses.dtype:
                self._s.data = self._s.data.to(device=losses.device, dtype=losses.dtype)
        if ctx is not None:
            held = any(p is self._s for g in ctx.optimizer.param_groups for p in g["params"])
            if not held:
                ctx.optimizer.add_param_group({"params": [self._s]})

    def _factors(self, K: int, like: Tensor) -> Tensor:
        kinds = self.kinds or ["regression"] * K
        return torch.tensor([0.5 if k == "regression" else 1.0 for k in kinds], dtype=like.dtype, device=like.device)

    def objective(self, losses: Tensor) -> Tensor:
        """Eq. 88 for the current log-variances (no optimizer involved; for checks)."""
        check_losses(losses, self.name)
        self._ready(losses, None)
        c = self._factors(losses.shape[0], losses)
        return (c * torch.exp(-self._s) * losses + 0.5 * self._s).sum()

    def total_loss(self, losses: Tensor, ctx: StepContext) -> Tensor:
        check_losses(losses, self.name)
        self._ready(losses, ctx)
        c = self._factors(losses.shape[0], losses)
        lam = c * torch.exp(-self._s)
        if not bool(torch.isfinite(lam).all()):
            raise FloatingPointError(f"uw: non-finite weights exp(-s) for log-variances {self._s.detach().tolist()}")
        self.last_weights = lam.detach().double()
        return (lam * losses + 0.5 * self._s).sum()
