"""Connection Strength-based optimization: task priority via task-specific batch norms (Jeong & Yoon, CVPR 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..autodiff import scale_losses, task_gradients, task_loss, write_grad
from . import register
from .base import Method, StepContext, StepResult, _check_matrix, preference


def connection_strength(group: Any) -> Tensor:
    r"""Normalised connection strength (K, C) of every output channel p of one shared layer to each task k.

    :math:`S_{k,p} = \|W_p\|^2\,\gamma_{k,p}^2 / (v_{k,p} + \epsilon)` (main paper Eq. 4 and 6, as in the
    authors' code): the squared weights of channel p times task k's BN gain on it (scale gamma,
    running variance v; a missing gamma or v counts as 1). Normalised over the channels of the layer,
    :math:`\hat S_{k,p} = S_{k,p} / \sum_q S_{k,q}` (Eq. 7); a task whose strengths are all 0 gets 0.
    ``group`` is a :class:`mtl_src.nn.TaskBNGroup` (or anything with ``weight``, ``gamma``,
    ``running_var``, ``eps``).
    """
    W = group.weight.detach()
    w2 = W.double().reshape(W.shape[0], -1).pow(2).sum(1)
    rows = []
    for g, v in zip(group.gamma, group.running_var):
        s = w2.clone()
        if g is not None:
            s = s * g.detach().double().pow(2)
        if v is not None:
            s = s / (v.detach().double() + float(group.eps))
        rows.append(s)
    S = torch.stack(rows)
    total = S.sum(1, keepdim=True)
    return torch.where(total > 0, S / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(S))


def top_priority(group: Any) -> Tensor:
    """The top-priority task of every output channel (C,): argmax_k of :func:`connection_strength`
    (ties go to the lowest task index, as ``torch.topk`` does in the authors' code)."""
    return connection_strength(group).argmax(0)


def tied_channels(group: Any) -> Tensor:
    """Channels (C,) bool whose largest connection strength is shared by two or more tasks: they have
    no top-priority task (argmax there is an index convention, e.g. every channel of a fresh model,
    whose task BNs all start with the same gain)."""
    S = connection_strength(group)
    return (S == S.max(0, keepdim=True).values).sum(0) > 1


def project_on_top_priority(block: Tensor, top: Tensor) -> Tensor:
    """Phase 2 on one layer: ``block`` (K, C, n) holds the task gradients of its weight, channel by
    channel; ``top`` (C,) the top-priority task per channel. For each channel group
    :math:`CG_i = \\{p : top_p = i\\}`, every other task j's gradient restricted to CG_i is projected off
    task i's, :math:`g_j \\leftarrow g_j - \\frac{\\langle g_j, g_i\\rangle}{\\|g_i\\|^2} g_i`, only when
    :math:`\\langle g_j, g_i\\rangle < 0`. Channel groups are disjoint, so the top task's own gradient
    on its group is never modified and the order does not matter. Returns a new tensor."""
    out = block.clone()
    K = out.shape[0]
    for i in torch.unique(top).tolist():
        mask = top == i
        gi = out[i, mask]
        ni = float(gi.double().pow(2).sum())
        if ni == 0.0:  # a zero gradient conflicts with nothing
            continue
        for j in range(K):
            if j == i:
                continue
            gj = out[j, mask]
            dot = float((gi.double() * gj.double()).sum())
            if dot < 0.0:
                out[j, mask] = gj - (dot / ni) * gi
    return out


@register("connection_strength")
class ConnectionStrength(Method):
    r"""Connection Strength-based optimization (Jeong & Yoon, CVPR 2024; supplement Thm 2-5, main paper Alg. 1).

    Each batch runs one of two phases, drawn at random:

    - **Phase 1** (learns task priority): for each task k in ``order``: forward, backward of
      :math:`w_k L_k`, optimizer step - K optimizer steps per batch; step k moves only the shared
      parameters and task k's own (its BNs, its head; see :func:`release_unreached`).
    - **Phase 2** (keeps task priority): one forward, per-task gradients :math:`g_k` of :math:`w_k L_k`
      on the shared parameters. For every shared layer with task-specific BNs
      (``ctx.model.task_bn_groups()``, see :mod:`mtl_src.nn`), the channels are split by their
      top-priority task :math:`\arg\max_k \hat S_{k,p}` (:func:`connection_strength`, Eq. 4, 6, 7) and
      :func:`project_on_top_priority` removes, on each group :math:`CG_i`, the conflict of every task with
      task i; the update is the sum over tasks (Thm 4). Channels whose largest strength is tied between
      tasks (:func:`tied_channels`; every channel at initialisation, when all gains are equal) have no
      top-priority task and get the plain sum, and so does every other parameter (task-specific ones
      see only their own task's loss). Each task's normalised strengths sum to 1 over the layer (Eq. 7),
      so no task can be the strict top of *every* channel: a layer "all one top task" is a tie (an
      earlier version skipped such layers by a test on the argmax; channels tied only in part were then
      projected onto task 0 by the argmax convention).

    Schedule: Phase 1 with probability :math:`p_1 = 1 - e/E` (e: 0-based epoch, E: epochs; the
    authors' code draws :math:`u \sim U(0,1)` and runs Phase 1 iff :math:`u \ge e/E`), so Phase 2
    takes over as training proceeds. ``phase1_probability`` fixes :math:`p_1` instead (1: always
    Phase 1, 0: always Phase 2). Without epoch information (``ctx.progress`` lacks ``epoch`` /
    ``epochs``, as in ``train_toy``) e/E = 0, i.e. Phase 1.

    Models without task-specific BNs (no ``task_bn_groups``): there is no connection strength, and
    Phase 2 is the plain sum over all shared parameters (how the authors' code treats every parameter
    outside a conv/BN pair); ``require_task_bn=True`` raises instead.

    Hyperparameters (authors' defaults): ``order`` of Phase 1 (None: 0..K-1, fixed as in the authors'
    code; a permutation; or ``"random"``, a fresh order per batch - supplement Tab. 15 finds the order
    immaterial); ``w`` loss weights (default 1; on the scale of the sum of losses like every method);
    ``seed`` for the phase draws and random orders (:meth:`reset` restarts it).

    Diagnostics (``StepResult.info``): ``phase`` (1 or 2), ``p_phase1``, and per layer l and task k
    ``top_share_l{l}_t{k}``, the share of the layer's channels whose top-priority task is k
    (supplement Fig. 5); also :attr:`last_top_shares`.
    """

    def __init__(
        self,
        phase1_probability: float | None = None,
        order: Sequence[int] | str | None = None,
        w: Sequence[float] | None = None,
        require_task_bn: bool = False,
        seed: int | None = 0,
    ):
        if phase1_probability is not None:
            p = float(phase1_probability)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"connection_strength: phase1_probability must be in [0, 1] or None, got {phase1_probability}")
            phase1_probability = p
        if isinstance(order, str):
            if order != "random":
                raise ValueError(f"connection_strength: order must be None, a permutation of the tasks or 'random', got {order!r}")
        elif order is not None:
            order = [int(k) for k in order]
            if sorted(order) != list(range(len(order))):
                raise ValueError(f"connection_strength: order must be a permutation of 0..K-1, got {order}")
        self.phase1_probability = phase1_probability
        self.order = order
        self.w = None if w is None else list(map(float, w))
        self.require_task_bn = bool(require_task_bn)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self.last_phase: int | None = None
        self.last_top_shares: list[Tensor] = []

    # ------------------------------------------------------------------ schedule
    @staticmethod
    def schedule(epoch: int, epochs: int) -> float:
        """Phase-1 probability :math:`p_1 = 1 - e/E` (clipped to [0, 1])."""
        if epochs <= 0:
            return 1.0
        return float(min(max(1.0 - epoch / epochs, 0.0), 1.0))

    def phase1_prob(self, progress: dict[str, Any]) -> float:
        if self.phase1_probability is not None:
            return self.phase1_probability
        if "epoch" not in progress or "epochs" not in progress:
            return 1.0
        return self.schedule(int(progress["epoch"]), int(progress["epochs"]))

    def choose_phase(self, progress: dict[str, Any]) -> int:
        """Draw the phase of one batch: 1 with probability :meth:`phase1_prob`, else 2."""
        return 1 if self._rng.random() < self.phase1_prob(progress) else 2

    # ------------------------------------------------------------------ model interface
    def groups(self, ctx: StepContext, K: int) -> list[Any]:
        """The model's task-BN layers (validated), or [] when it has none (see the class docstring)."""
        fn = getattr(ctx.model, "task_bn_groups", None)
        if fn is None:
            if self.require_task_bn:
                what = "no model (ctx.model is None)" if ctx.model is None else f"a {type(ctx.model).__name__}"
                raise ValueError(
                    f"connection_strength needs a model with task-specific batch norms: ctx.model must offer "
                    f"task_bn_groups() -> list of TaskBNGroup(weight, gamma[k], running_var[k], eps) "
                    f"(see mtl_src.nn.TaskBNModel); got {what} without task_bn_groups()"
                )
            return []
        groups = list(fn())
        shared_ids = {id(p) for p in ctx.shared}
        for l, g in enumerate(groups):
            if len(g.gamma) != K:
                raise ValueError(f"connection_strength: task_bn_groups()[{l}] has {len(g.gamma)} task BNs but there are {K} task losses")
            if id(g.weight) not in shared_ids:
                raise ValueError(f"connection_strength: the weight of task_bn_groups()[{l}] is not one of the shared parameters ctx.shared")
        return groups

    def _order(self, K: int) -> list[int]:
        if self.order is None:
            return list(range(K))
        if self.order == "random":
            return [int(k) for k in self._rng.permutation(K)]
        if len(self.order) != K:
            raise ValueError(f"connection_strength: order {self.order} has {len(self.order)} entries but there are {K} tasks")
        return list(self.order)

    # ------------------------------------------------------------------ the step
    def step(self, ctx: StepContext) -> StepResult:
        p1 = self.phase1_prob(ctx.progress)
        phase = self.choose_phase(ctx.progress)
        out = ctx.forward()
        losses = out.losses
        K = losses.shape[0]
        _check_losses(losses)
        w = preference(self.w, K, self.name).to(losses)
        groups = self.groups(ctx, K)
        if phase == 1:
            self._phase1(ctx, losses, w)
        else:
            self._phase2(ctx, losses, w, groups)
        self.last_phase = phase
        info: dict[str, float] = {"phase": float(phase), "p_phase1": p1}
        self.last_top_shares = []
        for l, g in enumerate(groups):
            top = top_priority(g)
            shares = torch.bincount(top, minlength=K).double() / top.numel()
            self.last_top_shares.append(shares)
            info.update({f"top_share_l{l}_t{k}": float(s) for k, s in enumerate(shares)})
        return StepResult(losses.detach(), info)

    def _phase1(self, ctx: StepContext, losses: Tensor, w: Tensor) -> None:
        for n, k in enumerate(self._order(losses.shape[0])):
            if n > 0:
                losses = ctx.forward().losses
                _check_losses(losses)
            ctx.optimizer.zero_grad(set_to_none=True)
            (w[k] * task_loss(losses, k)).backward()
            release_unreached(ctx.specific)
            ctx.optimizer.step()

    def _phase2(self, ctx: StepContext, losses: Tensor, w: Tensor, groups: list[Any]) -> None:
        ctx.optimizer.zero_grad(set_to_none=True)
        weighted = scale_losses(losses, w)
        if not groups:  # no connection strength: the plain sum everywhere
            weighted.sum().backward()
            ctx.optimizer.step()
            return
        specific = [p for p in ctx.specific if p.requires_grad]
        if specific:
            grads = torch.autograd.grad(weighted.sum(), specific, retain_graph=True, allow_unused=True)
            for p, g in zip(specific, grads):
                p.grad = None if g is None else g.detach()
        shared = list(ctx.shared)
        G = task_gradients(weighted, shared)
        _check_matrix(G, self.name)
        offsets, start = {}, 0
        for p in shared:
            offsets[id(p)] = (start, start + p.numel())
            start += p.numel()
        for g in groups:
            a, b = offsets[id(g.weight)]
            top = top_priority(g).to(G.device)
            keep = ~tied_channels(g).to(G.device)  # tied channels have no top task: plain sum there
            if not bool(keep.any()):
                continue
            C = g.weight.shape[0]
            block = G[:, a:b].reshape(G.shape[0], C, -1)
            block[:, keep] = project_on_top_priority(block[:, keep], top[keep])
            G[:, a:b] = block.reshape(G.shape[0], b - a)
        write_grad(shared, G.sum(0))
        ctx.optimizer.step()


def release_unreached(params: Sequence[Tensor]) -> None:
    """Set ``.grad`` to None for task-specific parameters whose gradient is exactly zero.

    When the task losses arrive stacked in one tensor without their parts (not made by
    :func:`mtl_src.autodiff.stack_losses`), a backward of one task's loss also writes zero gradients
    into the other tasks' heads (the stack passes zeros down every branch). An optimizer
    with momentum or weight decay (Adam) would then still move those heads; the authors back-propagate
    separate loss tensors, where unreached parameters keep ``grad = None`` and are not stepped. Dropping
    exact-zero task-specific gradients restores that: a sequential step moves only the shared
    parameters and those of the tasks it back-propagates (a reached parameter whose gradient is
    exactly zero is skipped too, which only matters for momentum optimizers)."""
    for p in params:
        if p.grad is not None and not bool(p.grad.any()):
            p.grad = None


def _check_losses(losses: Tensor) -> None:
    if not bool(torch.isfinite(losses).all()):
        raise ValueError(f"connection_strength: task losses {losses.detach().tolist()} contain NaN or inf")
