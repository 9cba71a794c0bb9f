"""FAMO: fast adaptive multitask optimisation (Liu, Liu, Jin, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import register
from ._loss_checks import bounds_for, check_above, check_losses, lower_bounds
from .base import Method, StepContext, StepResult

_EPS = 1e-8  # added to L - m inside the logs, as in the authors' code


@register("famo")
class FAMO(Method):
    r"""Loss weights :math:`z = \mathrm{softmax}(\xi)` adapted so that all log-losses decrease at the same
    rate, with O(1) cost per step (no task gradients). With :math:`D_i = L_i - m_i + \epsilon`:

    .. math:: \text{update: } d = K\sum_i \frac{z_i}{c\,D_i}\nabla L_i
              = \nabla_\theta \frac{K}{c}\sum_i z_i \log D_i,\qquad c = \sum_j \frac{z_j}{D_j}\ \text{(constant)},

    .. math:: \text{logits: } \xi \leftarrow \text{Adam}\bigl(\xi;\ J_{\mathrm{softmax}}(\xi)^\top \delta\bigr),\qquad
              \delta_i = \log D_i(\theta_t) - \log D_i(\theta_{t+1}),

    i.e. the weights of tasks whose log-loss just decreased less than the weighted average go up
    (FAMO, Sec. 3 and Algorithm 1; the weight decay on xi is the paper's regulariser gamma). The
    authors' update direction has weights :math:`z_i/(cD_i)` summing to 1 (mean-loss scale); we
    multiply by K (weights sum to K, the library's sum-of-losses convention).

    The logit update needs the losses *after* the model step on the same batch, so :meth:`step` runs:
    forward, backward of the weighted log-loss, ``ctx.optimizer.step()``, a second forward under
    ``no_grad`` on the same batch, then the xi step. That second forward is FAMO's extra cost here
    (one forward without backward per step; the authors' training scripts do the same). In train mode it
    also updates batch-norm statistics a second time and redraws dropout masks.

    Defaults from the authors' code (Cranial-XIX/FAMO) and LibMTL, names as in the authors' code: xi = 0
    (equal weights), its own Adam with ``w_lr`` = 0.025 and weight decay ``gamma`` = 1e-3 (LibMTL's
    default and the authors' QM9 script), ``min_losses`` m = 0, eps = 1e-8. (Not ``lr`` /
    ``weight_decay``: the trainer uses those names for the network.) Their ``max_norm`` gradient
    clipping is not applied: in the wrapper their experiments use, the clip is called before the
    backward and so does not act on the update, and the standalone ``famo.py`` clips only when handed
    the shared parameters (its example does not). ``min_losses`` is a known lower bound of the losses
    (a number or one per task; their toy experiment uses -21); :math:`D_i \le 0` is a clear
    ``ValueError``.
    """

    def __init__(self, w_lr: float = 0.025, gamma: float = 1e-3, min_losses: float | Sequence[float] = 0.0):
        w_lr, gamma = float(w_lr), float(gamma)
        if not (w_lr > 0.0 and w_lr < float("inf")):
            raise ValueError(f"famo: w_lr (learning rate of the logits) must be > 0, got {w_lr}")
        if not (gamma >= 0.0 and gamma < float("inf")):
            raise ValueError(f"famo: gamma (weight decay of the logits) must be finite and >= 0, got {gamma}")
        self.w_lr = w_lr
        self.gamma = gamma
        self.min_losses = lower_bounds(min_losses, "famo")
        self.reset()

    def reset(self) -> None:
        self._xi: Tensor | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._last_delta: Tensor | None = None

    @property
    def weights(self) -> Tensor | None:
        """The current task weights K softmax(xi) (None before the first step: all 1)."""
        return None if self._xi is None else self._xi.numel() * torch.softmax(self._xi.detach(), 0)

    @property
    def logits(self) -> Tensor | None:
        return None if self._xi is None else self._xi.detach().clone()

    def _D(self, L: Tensor) -> Tensor:
        D = L - bounds_for(self.min_losses, L, self.name) + _EPS
        check_above(D.detach(), D.new_zeros(()), self.name, "losses minus min_losses (+1e-8)",
                    "FAMO works on log(L_i - m_i): set min_losses to a strict lower bound of the losses")
        return D

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        losses = out.losses
        K = losses.shape[0] if losses.dim() == 1 else None
        L = check_losses(losses, self.name, None if self._xi is None else self._xi.numel())
        if self._xi is None:
            self._xi = torch.zeros(K, dtype=L.dtype, device=L.device, requires_grad=True)
            self._opt = torch.optim.Adam([self._xi], lr=self.w_lr, weight_decay=self.gamma)
        D = self._D(losses)
        z = torch.softmax(self._xi.detach(), 0).to(losses)
        c = (z / D.detach()).sum()
        total = K * (z * torch.log(D)).sum() / c
        ctx.optimizer.zero_grad(set_to_none=True)
        total.backward()
        ctx.optimizer.step()
        with torch.no_grad():
            new = check_losses(ctx.forward().losses, self.name, K, "task losses after the step")
            delta = (torch.log(D.detach()) - torch.log(self._D(new))).to(self._xi)
        zx = torch.softmax(self._xi.detach(), 0)
        self._opt.zero_grad(set_to_none=True)
        self._xi.grad = zx * (delta - (zx * delta).sum())  # J_softmax^T delta (J symmetric)
        self._opt.step()
        self._last_delta = delta.detach()
        lam = K * z.detach() / (c.detach() * D.detach())
        return StepResult(L, {f"lambda_{i}": float(a) for i, a in enumerate(lam)})
