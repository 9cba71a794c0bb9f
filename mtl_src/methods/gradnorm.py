"""GradNorm: gradient normalisation for adaptive loss balancing (Chen et al., ICML 2018, Alg. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..autodiff import task_gradients
from . import register
from ._loss_checks import bounds_for, check_above, check_losses, lower_bounds
from .base import Method, StepContext, StepResult


@register("gradnorm")
class GradNorm(Method):
    r"""Learned loss weights :math:`w_i` that equalise the task gradient norms at the last shared layer W,
    corrected by each task's relative training rate (Chen et al. 2018, Eq. 1-2, Alg. 1):

    .. math:: G_i = \|\nabla_W\, w_i L_i\|_2,\quad \bar G = \tfrac1K\textstyle\sum_j G_j,\quad
              \tilde L_i = \frac{L_i(t)}{L_i(0)},\quad r_i = \frac{\tilde L_i}{\tfrac1K\sum_j \tilde L_j},

    .. math:: L_{\text{grad}} = \sum_i \bigl|G_i - \operatorname{sg}[\bar G\, r_i^{\alpha}]\bigr|_1 .

    Each step: (1) one forward; the K gradients of the losses w.r.t. W = ``ctx.last_shared_layer()``
    (all its tensors, flattened together) give :math:`G_i = w_i\|\nabla_W L_i\|`; (2) the network gets
    the gradient of :math:`\sum_i w_i L_i` with the current weights and ``ctx.optimizer`` steps it;
    (3) the weights get :math:`\partial L_{\text{grad}}/\partial w_i = \mathrm{sign}(G_i - \text{target}_i)
    \|\nabla_W L_i\|` (the target is a constant, as in the paper) and their own optimizer steps them;
    (4) they are renormalised to :math:`\sum_i w_i = K` (Alg. 1), after flooring at 1e-8 so that they
    stay positive. :math:`w = 1` initially (the sum-of-losses convention). :math:`L_i(0)` are the losses of
    the first step (Alg. 1's t = 0). A task i with :math:`\tilde L_i` above the mean trains slower
    and gets a larger target gradient norm.

    Hyperparameters. ``alpha`` = 1.5: the asymmetry of the paper's NYUv2 experiments (also LibMTL's
    default). ``weight_lr`` = 1e-4: Adam on the weights with LibMTL's default learning rate (LibMTL trains its
    GradNorm weights with the model's optimizer at that rate; the paper gives no value).
    ``min_losses`` (m, default 0): the training rates use :math:`L_i - m_i`, which must be > 0 at the
    first step and >= 0 later (a ratio of losses; a clear ``ValueError`` otherwise). If every
    :math:`\tilde L_i` is 0 (all tasks at their bound) the rates are taken as 1.

    Cost: K backward passes to W (usually small) in addition to the one of the weighted loss.
    """

    def __init__(self, alpha: float = 1.5, weight_lr: float = 1e-4, min_losses: float | Sequence[float] = 0.0):
        alpha, lr = float(alpha), float(weight_lr)
        if not (alpha >= 0.0 and alpha < float("inf")):
            raise ValueError(f"gradnorm: alpha (asymmetry) must be finite and >= 0, got {alpha}")
        if not (lr > 0.0 and lr < float("inf")):
            raise ValueError(f"gradnorm: weight_lr (learning rate of the loss weights) must be > 0, got {lr}")
        self.alpha = alpha
        self.weight_lr = lr
        self.min_losses = lower_bounds(min_losses, "gradnorm")
        self.reset()

    def reset(self) -> None:
        self._w: Tensor | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._L0: Tensor | None = None
        self._last_norms: Tensor | None = None
        self._last_targets: Tensor | None = None

    @property
    def weights(self) -> Tensor | None:
        """The current loss weights w (K,) (None before the first step: w = 1)."""
        return None if self._w is None else self._w.detach().clone()

    def _setup(self, L: Tensor) -> None:
        K = L.numel()
        m = bounds_for(self.min_losses, L, self.name)
        check_above(L - m, L.new_zeros(()), self.name, "initial losses minus min_losses",
                    "GradNorm's training rates divide by L_i(0) - m_i; set min_losses to a strict lower bound")
        self._L0 = (L - m).clone()
        self._w = torch.ones(K, dtype=L.dtype, device=L.device, requires_grad=True)
        self._opt = torch.optim.Adam([self._w], lr=self.weight_lr)

    def rates(self, L: Tensor) -> Tensor:
        """r_i = L~_i / mean(L~) for detached losses L (K,), with L~_i = (L_i - m_i) / (L_i(0) - m_i)."""
        m = bounds_for(self.min_losses, L, self.name)
        shifted = L - m
        bad = torch.nonzero(shifted < 0).flatten().tolist()
        if bad:
            raise ValueError(
                f"{self.name}: losses of tasks {bad} are below their lower bound min_losses "
                f"(L - m = {shifted[bad].tolist()}); GradNorm's training rates are ratios of L_i - m_i >= 0"
            )
        Lt = shifted / self._L0
        mean = Lt.mean()
        return torch.ones_like(Lt) if float(mean) <= 0.0 else Lt / mean

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        losses = out.losses
        L = check_losses(losses, self.name, None if self._w is None else self._w.numel())
        if self._w is None:
            self._setup(L)
        w = self._w.detach().clone()  # the weights of this step (the update below is in place)
        W = [p for p in ctx.last_shared_layer()]
        GW = task_gradients(losses, W, retain_graph=True)
        norms = GW.norm(dim=1).to(w)
        r = self.rates(L.to(w))
        G = w * norms
        target = G.mean() * r**self.alpha
        # network update with the current weights (Alg. 1: both gradients come from the same forward)
        ctx.optimizer.zero_grad(set_to_none=True)
        (w.to(losses) * losses).sum().backward()
        ctx.optimizer.step()
        # weight update: d L_grad / d w_i = sign(w_i n_i - target_i) n_i, then renormalise to sum K
        self._opt.zero_grad(set_to_none=True)
        self._w.grad = torch.sign(G - target) * norms
        self._opt.step()
        with torch.no_grad():
            self._w.clamp_(min=1e-8)
            self._w.mul_(self._w.numel() / self._w.sum())
        self._last_norms, self._last_targets = G.detach(), target.detach()
        info = {f"lambda_{i}": float(a) for i, a in enumerate(w)}
        info["gradnorm_loss"] = float((G - target).abs().sum())
        return StepResult(L, info)
