"""The one method interface.

Every method is a :class:`Method`: it owns one training step on one batch, ``step(ctx)``. Most
methods only decide how to combine the task gradients and inherit that step:

- :class:`Aggregator` maps the task-gradient matrix G (K x P) to a direction d (P,), ``aggregate(G)``;
- :class:`GramianWeighting` is an aggregator whose direction is d = G^T alpha with weights alpha
  computed from the K x K Gramian M = G G^T alone (LS, MGDA, CAGrad, Aligned-MTL, ...).

Convention (all methods): ``d`` is on the scale of the **sum** of the task losses - linear
scalarisation gives ``G.sum(0)``, i.e. alpha = 1. This matches the authors' code of Aligned-MTL,
FairGrad and PIVRG; methods whose papers work on the mean are multiplied by K (documented per method).

Sequential methods (Connection Strength Phase 1, STGU) override :meth:`Method.step` and may run several
forward/backward/optimizer steps per batch: the trainer only ever calls ``step``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..autodiff import task_gradients, write_grad
from ..linalg import gramian

__all__ = [
    "Forward", "StepContext", "StepResult", "Feedback", "Method", "Aggregator", "GramianWeighting",
    "LossWeighting", "SolverWarning", "preference",
]


class SolverWarning(RuntimeWarning):
    """A method's inner solver stopped before its convergence criterion was met."""


@dataclass
class Forward:
    """What one forward pass on the current batch gives a method.

    ``losses``: the K task losses (1-D tensor, attached to the graph).
    ``representation``: the shared representation Z = encoder(x) (needed only by methods that work on
    representation gradients, e.g. Aligned-MTL-UB, MGDA-UB); it must be the tensor the task heads read.
    """

    losses: Tensor
    representation: Tensor | None = None


@dataclass
class StepContext:
    """Everything a method may use for one training step.

    ``forward()`` runs the model on the current batch (a method may call it several times, e.g. once
    per task group); ``shared`` are the shared parameters theta_sh; ``specific`` the task-specific ones
    (all heads); ``optimizer`` steps all of them (and the method's own :meth:`Method.parameters`);
    ``last_shared`` the parameters of the last shared layer (GradNorm's W; default: the last tensor of
    ``shared``); ``model`` the network itself, for strategies that read its structure (Connection
    Strength reads task-specific batch norms); ``progress`` holds trainer state a method may read
    (``epoch``, ``epochs``, ``iteration``, ``iterations``).
    """

    forward: Callable[[], Forward]
    shared: Sequence[Tensor]
    optimizer: torch.optim.Optimizer
    specific: Sequence[Tensor] = ()
    last_shared: Sequence[Tensor] = ()
    model: torch.nn.Module | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    def last_shared_layer(self) -> list[Tensor]:
        return list(self.last_shared) if self.last_shared else [list(self.shared)[-1]]


@dataclass
class Feedback:
    """What the trainer tells a method once per epoch (:meth:`Method.observe`).

    ``train_losses``: mean training loss per task over the epoch (K,) - DWA.
    ``drops``: per-task performance drop vs single-task learning, in percent, positive = worse
    (the mean over each task's metrics of the relative drops) - PIVRG's Delta m_i; ``None`` when no
    single-task baseline is known. ``kpis``: per-task key performance indicators in [0, 1], higher is
    better (DTP). ``source``: which split the numbers come from ("train" or "val").
    """

    epoch: int
    epochs: int
    train_losses: Tensor | None = None
    drops: Tensor | None = None
    kpis: Tensor | None = None
    source: str = "train"


@dataclass
class StepResult:
    """Detached task losses of the step's (first) forward pass and method diagnostics."""

    losses: Tensor
    info: dict[str, float] = field(default_factory=dict)


def _check_matrix(G: Tensor, who: str) -> None:
    if G.dim() != 2:
        raise ValueError(f"{who}: G must be a K x P matrix, got shape {tuple(G.shape)}")
    if G.shape[0] == 0:
        raise ValueError(f"{who}: G has no rows (K = 0 tasks)")
    if not bool(torch.isfinite(G).all()):
        bad = torch.nonzero(~torch.isfinite(G).all(dim=1)).flatten().tolist()
        raise ValueError(
            f"{who}: the gradients of tasks {bad} contain NaN or inf; check those task losses "
            "(a NaN loss, a log of 0, an exploding learning rate) before aggregating"
        )


class Method(abc.ABC):
    """A multi-task optimisation method: owns one training step on a batch."""

    name: ClassVar[str] = "method"

    def reset(self) -> None:
        """Forget state accumulated during training (called at the start of a run)."""

    def parameters(self) -> list[Tensor]:
        """Learnable tensors the method owns (e.g. UW's log-variances); the trainer adds them to the
        optimizer as their own parameter group. Default: none."""
        return []

    def observe(self, feedback: Feedback) -> None:
        """Per-epoch feedback from the trainer (losses, performance drops). Default: ignored."""

    @abc.abstractmethod
    def step(self, ctx: StepContext) -> StepResult:
        """Run one training step (one or more forward/backward/optimizer steps) on the batch."""

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({hp})"


class Aggregator(Method):
    r"""A method defined by a map G (K x P) -> d (P,), applied to the shared parameters.

    ``space = "shared"``: G holds gradients w.r.t. the shared parameters theta_sh.
    ``space = "representation"``: G holds gradients w.r.t. the shared representation Z; the
    aggregated d_Z is pushed back through the encoder, i.e. theta_sh receives J^T d_Z with
    J = dZ/dtheta_sh (the "UB" variants).

    Task-specific parameters receive the gradient of :math:`\sum_k \lambda_k L_k` (each head only sees
    its own task's loss, so head k gets :math:`\lambda_k \nabla L_k`), with lambda from
    :meth:`head_weights`: by default lambda = 1, the plain sum, as in the authors' code of PCGrad,
    CAGrad, GradDrop, Aligned-MTL (``scale_decoder_grad=False``), FairGrad and PIVRG, which back-propagate
    each task's loss into the heads and overwrite only the shared gradient. Methods whose authors
    back-propagate the weighted loss :math:`\sum_k \alpha_k L_k` (MGDA, MGDA-UB, IMTL-G, Nash-MTL in the
    nash-mtl code) override :meth:`head_weights`.
    """

    space: ClassVar[Literal["shared", "representation"]] = "shared"

    def aggregate(self, G: Tensor) -> Tensor:
        """Aggregate the task-gradient matrix G (K x P) into one direction d (P,)."""
        _check_matrix(G, self.name)
        d = self._aggregate(G)
        if not bool(torch.isfinite(d).all()):
            raise FloatingPointError(f"{self.name}: produced a non-finite direction from a finite G")
        return d

    __call__ = aggregate

    @abc.abstractmethod
    def _aggregate(self, G: Tensor) -> Tensor: ...

    def head_weights(self) -> Tensor | None:
        """lambda (K,) for the task-specific parameters after the last aggregation: head k receives
        lambda_k * grad L_k. ``None`` (default): lambda = 1, the plain sum of the losses."""
        return None

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        losses = out.losses
        ctx.optimizer.zero_grad(set_to_none=True)
        specific = [p for p in ctx.specific if p.requires_grad]
        keep = bool(specific)  # the heads' backward comes after the aggregation (it may need its weights)
        if self.space == "shared":
            G = task_gradients(losses, ctx.shared, retain_graph=keep)
            write_grad(ctx.shared, self.aggregate(G))
        else:
            Z = out.representation
            if Z is None:
                raise ValueError(
                    f"{self.name} aggregates gradients w.r.t. the shared representation: the forward "
                    "function must return Forward(losses, representation=Z)"
                )
            G = task_gradients(losses, [Z], retain_graph=True)
            dZ = self.aggregate(G).view_as(Z)
            grads = torch.autograd.grad(Z, list(ctx.shared), grad_outputs=dZ, retain_graph=True, allow_unused=True)
            # Shared parameters that Z does not depend on lie *after* Z (e.g. the shared tail convs of a
            # TaskBNTailModel, which feed the task-specific BNs): J^T d_Z cannot reach them. They are
            # treated like the task-specific part, i.e. they get the heads' gradient of sum_k lambda_k L_k
            # below. (Giving them zeros froze them at their initialisation: MGDA-UB / Aligned-MTL-UB then
            # trained a network with a random fixed tail and collapsed on the task-BN LeNet.)
            after_z = []
            for p, g in zip(ctx.shared, grads):
                if g is None:
                    after_z.append(p)
                else:
                    p.grad = g.detach()
            specific = specific + [p for p in after_z if p.requires_grad]
        if specific:
            lam = self.head_weights()
            if lam is not None and (lam.shape != losses.shape or not bool(torch.isfinite(lam).all())):
                raise FloatingPointError(f"{self.name}: head weights {lam.tolist()} do not fit {losses.numel()} tasks")
            total = losses.sum() if lam is None else (lam.detach().to(losses) * losses).sum()
            grads = torch.autograd.grad(total, specific, allow_unused=True)
            for p, g in zip(specific, grads):
                p.grad = None if g is None else g.detach()
        if self.space == "representation":
            for p in ctx.shared:  # a shared parameter no loss reaches: a zero gradient, as before
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        ctx.optimizer.step()
        return StepResult(losses.detach(), self.diagnostics())

    def diagnostics(self) -> dict[str, float]:
        """Scalars describing the last aggregation (logged by the trainer)."""
        return {}


class GramianWeighting(Aggregator):
    """An aggregator of the form d = G^T alpha with alpha = weights(M), M = G G^T (K x K).

    The weights see only the Gramian, so G itself is never copied; M is formed in G's dtype and
    solvers work in float64.
    """

    last_weights: Tensor | None = None

    @abc.abstractmethod
    def weights(self, M: Tensor) -> Tensor:
        """Return alpha (K,) from the Gramian M = G G^T."""

    def _aggregate(self, G: Tensor) -> Tensor:
        alpha = self.weights(gramian(G))
        self.last_weights = alpha.detach()  # non-finite weights surface as a non-finite d in aggregate()
        return alpha.to(G.dtype) @ G

    def diagnostics(self) -> dict[str, float]:
        if self.last_weights is None:
            return {}
        return {f"alpha_{i}": float(a) for i, a in enumerate(self.last_weights)}


class LossWeighting(Method):
    """A method that only reweights the K losses: one backward of ``total_loss(losses)``.

    Default total: sum_i lambda_i L_i with ``loss_weights`` lambda (detached; neutral weights are 1,
    so the update is on the scale of the sum of losses like every method). Methods whose objective is
    not a weighted sum (UW adds log-variance terms; SI sums log L_i) override :meth:`total_loss`.
    """

    last_weights: Tensor | None = None

    def loss_weights(self, losses: Tensor, ctx: StepContext) -> Tensor:
        """lambda (K,) for this step."""
        raise NotImplementedError

    def total_loss(self, losses: Tensor, ctx: StepContext) -> Tensor:
        lam = self.loss_weights(losses.detach(), ctx).to(losses)
        if not bool(torch.isfinite(lam).all()):
            raise FloatingPointError(f"{self.name}: non-finite loss weights {lam.tolist()}")
        self.last_weights = lam.detach()
        return (lam * losses).sum()

    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.forward()
        if not bool(torch.isfinite(out.losses).all()):
            raise ValueError(f"{self.name}: task losses {out.losses.detach().tolist()} contain NaN or inf")
        ctx.optimizer.zero_grad(set_to_none=True)
        self.total_loss(out.losses, ctx).backward()
        ctx.optimizer.step()
        info = {} if self.last_weights is None else {f"lambda_{i}": float(a) for i, a in enumerate(self.last_weights)}
        return StepResult(out.losses.detach(), info)


def preference(w: Sequence[float] | Tensor | None, K: int, who: str) -> Tensor:
    """The task preference vector w (default: ones), validated against K."""
    if w is None:
        return torch.ones(K, dtype=torch.float64)
    w = torch.as_tensor(w, dtype=torch.float64).flatten()
    if w.numel() != K:
        raise ValueError(f"{who}: preference w has {w.numel()} entries but there are {K} tasks")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{who}: preference w must be finite and non-negative, got {w.tolist()}")
    return w
