"""Networks whose shared convolutions feed *task-specific* batch norms (Connection Strength).

Connection Strength (Jeong & Yoon, CVPR 2024) needs a shared backbone in which every shared conv is
followed by one BatchNorm per task: task k sees ``relu(BN_k(conv(x)))``. The BN scale
:math:`\\gamma_{k,p}` of output channel p then says how strongly task k uses channel p of that conv.

The building blocks here are small on purpose:

- :class:`TaskBatchNorm2d` - K BatchNorm2d, one per task; ``forward(x, task)`` (or set ``.task``);
- :class:`TaskBNConvEncoder` - blocks ``conv (no bias) -> TaskBatchNorm2d -> ReLU``, then a global
  average pool; ``forward(x, task)`` runs task ``task``'s path and returns its (B, C) features;
- :class:`TaskBNModel` - an :class:`~mtl_src.benchmarks.base.MTLModel` built from such an encoder and
  one head per task; ``forward(x)`` runs every task's path.

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

__all__ = ["TaskBNGroup", "TaskBatchNorm2d", "TaskBNConvEncoder", "TaskBNModel"]


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
