"""Networks whose shared convolutions feed *task-specific* batch norms (Connection Strength).

Connection Strength (Jeong & Yoon, CVPR 2024) needs a shared backbone in which every shared conv is
followed by one BatchNorm per task: task k sees ``relu(BN_k(conv(x)))``. The BN scale
:math:`\\gamma_{k,p}` of output channel p then says how strongly task k uses channel p of that conv.

The building blocks here are small on purpose:

- :class:`TaskBatchNorm2d` - K BatchNorm2d, one per task; ``forward(x, task)`` (or set ``.task``);
- :class:`TaskBNConvEncoder` - blocks ``conv (no bias) -> TaskBatchNorm2d -> ReLU``, then a global
  average pool; ``forward(x, task)`` runs task ``task``'s path and returns its (B, C) features;
- :class:`TaskBNModel` - an :class:`~mtl_src.benchmarks.base.MTLModel` built from such an encoder and
  one head per task; ``forward(x)`` runs every task's path;
- :class:`TaskSequential` and :class:`TaskBNTailModel` - what the benchmark models use: a shared
  *trunk* (ordinary layers, computed once), then a short shared *tail* whose convs are followed by
  task-specific BNs (computed once per task), then the heads. See :class:`TaskBNTailModel` for how
  every method (not only Connection Strength) trains such a model.

What a model must offer to ``connection_strength`` (duck-typed, any ``nn.Module`` will do):

``task_bn_groups() -> list[TaskBNGroup]``
    one :class:`TaskBNGroup` per shared conv (or linear) layer that is followed by task-specific
    BNs: the layer's ``weight`` (output channels on dim 0; it must be one of the trainer's shared
    parameters), and for each task k, in task order, the BN's ``gamma[k]`` (scale, shape (C,), or
    None for an affine-free BN) and ``running_var[k]`` ((C,), or None when not tracked) and ``eps``.

Everything else about the model is the usual ``MTLModel`` contract: ``shared_parameters()`` must not
contain the task-specific BN parameters (they belong to ``task_parameters()``, since only task k's
loss reaches BN_k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .benchmarks.base import MTLModel

__all__ = ["TaskBNGroup", "TaskBatchNorm2d", "TaskBNConvEncoder", "TaskBNModel", "TaskSequential", "TaskBNTailModel"]


@dataclass
class TaskBNGroup:
    """One shared layer followed by task-specific BNs: what Connection Strength reads.

    ``weight``: the shared layer's weight, output channel p = ``weight[p]``;
    ``gamma[k]`` / ``running_var[k]``: task k's BN scale and running variance, (C,) each (or None);
    ``eps``: the BNs' epsilon.
    """

    weight: Tensor
    gamma: list[Tensor | None]
    running_var: list[Tensor | None]
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if len(self.gamma) != len(self.running_var):
            raise ValueError(f"TaskBNGroup: {len(self.gamma)} gammas but {len(self.running_var)} running variances")
        C = self.weight.shape[0]
        for name, ts in (("gamma", self.gamma), ("running_var", self.running_var)):
            for k, t in enumerate(ts):
                if t is not None and tuple(t.shape) != (C,):
                    raise ValueError(f"TaskBNGroup: {name}[{k}] has shape {tuple(t.shape)}, the layer has {C} output channels")


class TaskBatchNorm2d(nn.Module):
    """K independent ``BatchNorm2d(channels)``; task k's input is normalised by BN k only.

    The task is the ``task`` argument of :meth:`forward`, or else the attribute ``.task``.
    """

    def __init__(self, channels: int, K: int, **bn_kwargs):
        super().__init__()
        if channels < 1 or K < 1:
            raise ValueError(f"TaskBatchNorm2d needs channels >= 1 and K >= 1, got {channels}, {K}")
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels, **bn_kwargs) for _ in range(K))
        self.task: int | None = None

    @property
    def K(self) -> int:
        return len(self.bns)

    def forward(self, x: Tensor, task: int | None = None) -> Tensor:
        k = self.task if task is None else task
        if k is None:
            raise ValueError("TaskBatchNorm2d: no task given; call forward(x, task) or set .task")
        if not 0 <= int(k) < self.K:
            raise ValueError(f"TaskBatchNorm2d: task {k} out of range for K = {self.K}")
        return self.bns[int(k)](x)


class TaskBNConvEncoder(nn.Module):
    """Shared convs with task-specific BNs: ``[conv3x3 (shared, no bias) -> BN_k -> ReLU] x L -> mean over H, W``.

    ``channels``: output channels of each conv, e.g. ``(8, 16)``; ``stride``: of every conv.
    ``forward(x, task)`` returns task ``task``'s features (B, channels[-1]).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], K: int, *, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("TaskBNConvEncoder needs at least one conv layer")
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = in_channels
        for c in channels:
            self.convs.append(nn.Conv2d(c_in, c, kernel_size, stride=stride, padding=kernel_size // 2, bias=False))
            self.norms.append(TaskBatchNorm2d(c, K))
            c_in = c
        self.K = K
        self.out_features = channels[-1]

    def forward(self, x: Tensor, task: int) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x), task))
        return x.mean(dim=(-2, -1))

    def shared_parameters(self) -> list[Tensor]:
        return [p for p in self.convs.parameters() if p.requires_grad]

    def task_bn_parameters(self, task: int | None = None) -> list[Tensor]:
        """The BN parameters of task ``task`` (all tasks' when None)."""
        ps = []
        for norm in self.norms:
            bns = norm.bns if task is None else [norm.bns[task]]
            ps += [p for bn in bns for p in bn.parameters() if p.requires_grad]
        return ps

    def task_bn_groups(self) -> list[TaskBNGroup]:
        return [
            TaskBNGroup(conv.weight, [bn.weight for bn in norm.bns], [bn.running_var for bn in norm.bns], norm.bns[0].eps)
            for conv, norm in zip(self.convs, self.norms)
        ]


class TaskBNModel(MTLModel):
    """An ``MTLModel`` whose shared encoder has task-specific BNs (:class:`TaskBNConvEncoder`).

    ``forward(x) -> (Z, outputs)``: ``outputs[k] = heads[k](encoder(x, k))``, i.e. output k is computed
    through task k's BN path (K passes through the shared convs). There is no single shared
    representation here: ``Z`` is the stack (K, B, d) of the per-task features, and task k's loss
    depends on ``Z[k]`` only, so representation-space methods (``*_ub``) see mutually orthogonal task
    gradients on this model; use parameter-space methods with it.

    Shared parameters: the convs' weights. Task-specific parameters: the heads **and** the
    task-specific BNs (only task k's loss reaches BN_k).
    """

    def __init__(self, encoder: TaskBNConvEncoder, heads: Sequence[nn.Module]):
        if len(heads) != encoder.K:
            raise ValueError(f"TaskBNModel: {len(heads)} heads for an encoder with K = {encoder.K} task BNs")
        super().__init__(encoder, heads)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        zs = [self.encoder(x, k) for k in range(len(self.heads))]
        return torch.stack(zs), [h(z) for h, z in zip(self.heads, zs)]

    def shared_parameters(self) -> list[Tensor]:
        return self.encoder.shared_parameters()

    def task_parameters(self) -> list[Tensor]:
        return self.encoder.task_bn_parameters() + [p for p in self.heads.parameters() if p.requires_grad]

    def task_parameters_of(self, task: int) -> list[Tensor]:
        """The parameters only task ``task``'s loss reaches: its BNs and its head."""
        return self.encoder.task_bn_parameters(task) + [p for p in self.heads[task].parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[Tensor]:
        return [self.encoder.convs[-1].weight]

    def task_bn_groups(self) -> list[TaskBNGroup]:
        return self.encoder.task_bn_groups()


class TaskSequential(nn.Sequential):
    """``nn.Sequential`` whose :class:`TaskBatchNorm2d` members get the task: ``forward(x, task)``.

    Every other member is called as usual (shared weights, the same for every task)."""

    def forward(self, x: Tensor, task: int) -> Tensor:  # type: ignore[override]
        for module in self:
            x = module(x, task) if isinstance(module, TaskBatchNorm2d) else module(x)
        return x

    def task_bn_pairs(self) -> list[tuple[nn.Module, TaskBatchNorm2d]]:
        """(conv, task BNs) for every TaskBatchNorm2d, paired with the nearest preceding conv / linear layer."""
        pairs, last = [], None
        for module in self:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                last = module
            elif isinstance(module, TaskBatchNorm2d):
                if last is None or last.weight.shape[0] != module.bns[0].num_features:
                    raise ValueError("TaskSequential: every TaskBatchNorm2d must follow a conv with as many output channels")
                pairs.append((last, module))
        return pairs


class TaskBNTailModel(MTLModel):
    """Shared trunk -> shared tail with task-specific BNs -> heads (the benchmarks' task-BN models).

    ``forward(x) -> (Z, outputs)`` with ``Z = trunk(x)`` computed once and
    ``outputs[k] = heads[k](tail(Z, k))``: the tail (a :class:`TaskSequential`, e.g. ``conv (no bias) ->
    TaskBatchNorm2d -> ReLU``) runs once per task, through task k's BNs. So:

    - **every method** trains the same network: its K task losses come from one call of ``forward``
      (the tail's cost is paid K times, the trunk's once); parameter-space methods see the trunk's
      and the tail's shared weights as ``shared_parameters()``;
    - **representation-space methods** (``mgda_ub``, ``aligned_mtl_ub``) differentiate against
      ``Z``, the trunk's output, which every task's loss depends on (a genuinely shared
      representation). The aggregated d_Z reaches the trunk only; the tail's shared weights lie
      after Z, so they are trained like the heads, by the gradient of the heads' weighted loss
      sum_k lambda_k L_k (see ``Aggregator.step``);
    - **Connection Strength** reads ``task_bn_groups()``: one group per tail conv followed by task BNs;
    - **single-task learning** (``stl:k``) trains task k's path; the other tasks' BNs and heads get no
      gradient.

    Only the tail has task-specific BNs (the Connection Strength paper puts them after every shared
    conv): a trunk without them keeps one shared ``Z`` and keeps the K-fold cost to the tail.
    Task-specific parameters (``task_parameters()``): the tail's BNs **and** the heads.
    """

    def __init__(self, trunk: nn.Module, tail: TaskSequential, heads: Sequence[nn.Module]):
        super().__init__(trunk, heads)
        self.tail = tail
        pairs = tail.task_bn_pairs()
        if not pairs:
            raise ValueError("TaskBNTailModel: the tail has no TaskBatchNorm2d")
        for _, norm in pairs:
            if norm.K != len(self.heads):
                raise ValueError(f"TaskBNTailModel: {len(self.heads)} heads but a TaskBatchNorm2d with K = {norm.K}")

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        z = self.encoder(x)
        return z, [h(self.tail(z, k)) for k, h in enumerate(self.heads)]

    def _task_bn_ids(self) -> set[int]:
        return {id(p) for m in self.tail if isinstance(m, TaskBatchNorm2d) for p in m.parameters()}

    def shared_parameters(self) -> list[Tensor]:
        bn = self._task_bn_ids()
        tail = [p for p in self.tail.parameters() if p.requires_grad and id(p) not in bn]
        return [p for p in self.encoder.parameters() if p.requires_grad] + tail

    def task_parameters(self) -> list[Tensor]:
        bn = [p for m in self.tail if isinstance(m, TaskBatchNorm2d) for p in m.parameters() if p.requires_grad]
        return bn + [p for p in self.heads.parameters() if p.requires_grad]

    def task_parameters_of(self, task: int) -> list[Tensor]:
        """The parameters only task ``task``'s loss reaches: its tail BNs and its head."""
        bn = [p for m in self.tail if isinstance(m, TaskBatchNorm2d) for p in m.bns[task].parameters() if p.requires_grad]
        return bn + [p for p in self.heads[task].parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[Tensor]:
        """The last shared layer of the tail that has parameters (GradNorm's W)."""
        for module in reversed(list(self.tail)):
            if isinstance(module, TaskBatchNorm2d):
                continue
            own = [p for p in module.parameters() if p.requires_grad]
            if own:
                return own
        return super().last_shared_parameters()

    def task_bn_groups(self) -> list[TaskBNGroup]:
        return [TaskBNGroup(conv.weight, [bn.weight for bn in norm.bns], [bn.running_var for bn in norm.bns],
                            norm.bns[0].eps) for conv, norm in self.tail.task_bn_pairs()]
