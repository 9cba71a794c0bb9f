"""What a benchmark bundles: data splits, a shared-encoder model with task heads, losses, metrics.

A benchmark is the unit the trainer runs a method on::

    benchmark (data + model + losses + metrics)  ->  trainer  ->  tidy results (CSV)

Subclasses implement :meth:`Benchmark.datasets`, :meth:`Benchmark.build_model`,
:meth:`Benchmark.losses` and :meth:`Benchmark.evaluate`; everything else (loaders with a seeded,
resumable shuffle, single-task baselines for Delta m) is shared.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["Metric", "MTLModel", "Benchmark"]


@dataclass(frozen=True)
class Metric:
    """One reported number: its name, the task it belongs to, and which direction is better."""

    name: str
    task: str
    higher_is_better: bool


class MTLModel(nn.Module):
    """A shared encoder and one head per task: ``forward(x) -> (Z, [head_k(Z) for k])``.

    ``Z`` is the shared representation the representation-space methods (Aligned-MTL-UB, MGDA-UB)
    differentiate against; the encoder's parameters are theta_sh, the heads' the task-specific ones.
    """

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        z = self.encoder(x)
        return z, [h(z) for h in self.heads]

    def shared_parameters(self) -> list[Tensor]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_parameters(self) -> list[Tensor]:
        return [p for p in self.heads.parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[Tensor]:
        """Parameters of the encoder's last module that has any (GradNorm's W)."""
        for module in reversed(list(self.encoder.modules())):
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                return own
        return self.shared_parameters()[-1:]


class Benchmark(abc.ABC):
    """Data + model + losses + metrics of one multi-task problem."""

    name: ClassVar[str] = "benchmark"
    tasks: list[str]
    metrics: list[Metric]
    #: single-task (STL) values of :attr:`metrics` for Delta m, or None when unknown
    stl_baseline: dict[str, float] | None = None

    @abc.abstractmethod
    def datasets(self) -> dict[str, Dataset]:
        """The splits, at least ``"train"`` and ``"test"`` (``"val"`` where one exists)."""

    @abc.abstractmethod
    def build_model(self) -> MTLModel:
        """A freshly initialised model (the caller seeds torch first)."""

    @abc.abstractmethod
    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        """The K task losses (1-D tensor) of a batch, from the heads' outputs.

        Return them as ``mtl_src.autodiff.stack_losses([L_1, ..., L_K])``: the per-task backward
        passes then run each task's own head only (a plain ``torch.stack`` works, more slowly)."""

    @abc.abstractmethod
    def evaluate(self, model: MTLModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
        """Every metric of :attr:`metrics` on a split (model in eval mode, no grad)."""

    def inputs(self, batch: Any) -> Tensor:
        """The model input of a batch (default: the first element)."""
        return batch[0]

    def to(self, batch: Any, device: torch.device) -> Any:
        if isinstance(batch, Tensor):
            return batch.to(device)
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to(b, device) for b in batch)
        if isinstance(batch, dict):
            return {k: self.to(v, device) for k, v in batch.items()}
        return batch

    #: the profile the benchmark was built with ("fast": CPU-sized embedded default; "paper")
    profile: str = "fast"

    def training(self) -> dict[str, Any]:
        """Defaults of :func:`mtl_src.train.train` for this benchmark and profile (epochs, batch_size,
        lr, optimizer, weight_decay, lr_schedule), as the papers' public code trains it."""
        return {"epochs": 1, "batch_size": 64, "lr": 1e-3}

    def config(self) -> dict[str, Any]:
        """Everything that determines the data and the model (keys the single-task-baseline cache)."""
        return {"name": self.name, "profile": self.profile}

    #: True when the data are prepared by ``data_scripts/<name>.py`` into ``<data_root>/<name>/`` with a
    #: MANIFEST.json (the full-scale datasets); False when they ship or are generated
    prepared: ClassVar[bool] = False

    #: optional ``collate_fn`` for every DataLoader of this benchmark (graphs, ragged inputs); None = default
    collate: Any = None

    def kpis(self, values: dict[str, float]) -> Tensor | None:
        """Per-task key performance indicators in [0, 1] (higher = better) for DTP; None if undefined."""
        return None

    @property
    def K(self) -> int:
        return len(self.tasks)
