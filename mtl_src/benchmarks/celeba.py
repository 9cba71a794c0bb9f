"""CelebA as 40 binary tasks (Sener & Koltun 2018; Aligned-MTL Table 3/5; PIVRG Table 2).

Protocol: each of the 40 attributes of CelebA (Liu et al. 2015) is a binary classification task on the
aligned face resized to 64x64; the official partition gives train (162,770), val (19,867) and test
(19,962). Losses: per task, 2-way cross-entropy for the ResNet-18 heads (Sener & Koltun's
``FaceAttributeDecoder``: linear -> 2 logits, log-softmax, NLL) or binary cross-entropy for the
``cnn9`` heads (FAMO/PIVRG: linear -> 1 logit, sigmoid, BCE). Metrics per attribute: accuracy
``acc_<attr>`` (Sener & Koltun and Aligned-MTL report mean accuracy/error on the validation split) and
F1 ``f1_<attr>`` (FAMO and PIVRG report F1 on the test split, threshold 0.5). KPIs (DTP) = accuracies.

Models (``model=``): ``"resnet18"`` (default; Sener & Koltun / Aligned-MTL: ResNet-18 encoder, Z = 2,048
features at 64x64, 40 linear heads) or ``"cnn9"`` (PIVRG, following FAMO: the 9-layer CNN, Z = 512, 40
linear heads); see :mod:`mtl_src.benchmarks._models`.

Data: prepared by ``python data_scripts/celeba.py --data-root DIR`` from the official archives (MD5s
from torchvision); this module reads exactly its format, ``<data_root>/celeba/`` with uint8 shards
``{split}_images_{k:03d}.npy`` (n, 64, 64, 3), ``{split}_labels.npy`` (N, 40) 0/1 and MANIFEST.json,
memory-mapped (the 2.4 GB of images are never loaded at once). Missing or corrupt files raise
:class:`~mtl_src.data.MissingDataError` naming the file and the command.

What differs from the papers: inputs are scaled to [0, 1] (FAMO's ``ToTensor``); Sener & Koltun
subtract a per-channel mean in BGR order first, a constant shift the first BatchNorm absorbs. Their
learning-rate decay (x0.85 at the start of every 10th epoch) is StepLR one epoch later. The "fast"
profile uses seeded subsamples (128 train / 64 val / 64 test) at 32x32 (2x2 average pooling of the
stored 64x64 images) so an LS epoch takes seconds on a CPU. No single-task baseline is published for
either metric (:data:`STL_BASELINE` is None); the book trains the ``stl`` method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..autodiff import stack_losses
from ..data import MissingDataError
from ..data import data_root as _data_root
from . import register
from ._models import ResNet18Encoder, cnn9_encoder, fix_command, load_manifest
from .base import Benchmark, Metric, MTLModel

__all__ = ["CelebA", "ATTRIBUTES", "STL_BASELINE"]

#: the 40 attributes, in the column order of list_attr_celeba.txt
ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]
#: no single-task baseline is published by the public code (FAMO's ``trainer_one_task.py`` computes one
#: but its numbers are not released): the book trains the ``stl`` method itself
STL_BASELINE: dict[str, float] | None = None
SPLITS = ("train", "val", "test")


class CelebAShards(Dataset):
    """Items (image float32 (3, s, s) in [0, 1], labels int64 (40,)) from memory-mapped uint8 shards."""

    def __init__(self, shards: list[np.ndarray], labels: np.ndarray, index: np.ndarray, image_size: int):
        self.shards = shards
        self.offsets = np.cumsum([0] + [len(s) for s in shards])
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.index = index
        self.factor = 64 // image_size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = int(self.index[i])
        k = int(np.searchsorted(self.offsets, j, side="right")) - 1
        img = torch.from_numpy(np.array(self.shards[k][j - self.offsets[k]])).permute(2, 0, 1).float().div_(255.0)
        if self.factor > 1:
            img = F.avg_pool2d(img, self.factor)
        return img, self.labels[j]


@register("celeba")
class CelebA(Benchmark):
    """40-attribute CelebA (prepared by data_scripts/celeba.py); ResNet-18 or the 9-layer CNN."""

    prepared = True

    SIZES = {"fast": {"train": 128, "val": 64, "test": 64, "image_size": 32},
             "paper": {"train": None, "val": None, "test": None, "image_size": 64}}

    def __init__(self, profile: str = "fast", data_root: str | None = None, seed: int = 0, model: str = "resnet18",
                 image_size: int | None = None, n_train: int | None = None, n_val: int | None = None,
                 n_test: int | None = None, verify: bool = True):
        """``model``: "resnet18" (Sener & Koltun, Aligned-MTL) or "cnn9" (FAMO, PIVRG).
        ``image_size``: 64 (stored), 32 (2x2 average pooled); None: the profile's (fast 32, paper 64).
        ``n_train``/``n_val``/``n_test``: seeded subsample sizes (None: the profile's; paper = all)."""
        if profile not in self.SIZES:
            raise ValueError(f"celeba: unknown profile {profile!r}; use 'fast' or 'paper'")
        if model not in ("resnet18", "cnn9"):
            raise ValueError(f"celeba: model must be 'resnet18' (Sener & Koltun) or 'cnn9' (FAMO/PIVRG), got {model!r}")
        d = self.SIZES[profile]
        image_size = d["image_size"] if image_size is None else image_size
        if image_size not in (32, 64):
            raise ValueError(f"celeba: image_size must be 64 (as stored) or 32, got {image_size!r}")
        n = {"train": n_train, "val": n_val, "test": n_test}
        for s in SPLITS:
            n[s] = d[s] if n[s] is None else n[s]
            if n[s] is not None and (isinstance(n[s], bool) or not isinstance(n[s], (int, np.integer)) or n[s] < 1):
                raise ValueError(f"celeba: n_{s} must be a positive int or None (the profile's default), got {n[s]!r}")
        self.profile, self.data_root, self.seed = profile, data_root, int(seed)
        self.model, self.image_size, self.n, self.verify = model, int(image_size), n, bool(verify)
        self.tasks = list(ATTRIBUTES)
        self.metrics = [Metric(f"acc_{a}", a, True) for a in ATTRIBUTES] + [Metric(f"f1_{a}", a, True) for a in ATTRIBUTES]
        self.stl_baseline = None
        self._datasets: dict[str, CelebAShards] | None = None

    def config(self) -> dict[str, Any]:
        return {"name": "celeba", "profile": self.profile, "seed": self.seed, "model": self.model,
                "image_size": self.image_size, "n": self.n, "format": 1}

    def datasets(self) -> dict[str, CelebAShards]:
        if self._datasets is None:
            root = _data_root(self.data_root)
            manifest = load_manifest(root, "celeba", verify=self.verify)
            if manifest.get("protocol", {}).get("attributes") != ATTRIBUTES:
                raise MissingDataError(f"celeba: {root / 'celeba' / 'MANIFEST.json'} lists other attributes than the "
                                       f"official 40; rebuild with: {fix_command('celeba', root, True)}")
            d = root / "celeba"
            rng = np.random.default_rng([self.seed, 40])
            self._datasets = {}
            for s in SPLITS:
                shard_names = sorted(f for f in manifest["files"] if f.startswith(f"{s}_images_"))
                shards = [np.load(d / f, mmap_mode="r") for f in shard_names]
                labels = np.load(d / f"{s}_labels.npy")
                total = sum(len(x) for x in shards)
                if total != len(labels) or any(x.shape[1:] != (64, 64, 3) or x.dtype != np.uint8 for x in shards):
                    raise MissingDataError(f"celeba: the {s} shards in {d} do not match {s}_labels.npy; "
                                           f"rebuild with: {fix_command('celeba', root, True)}")
                n = self.n[s]
                index = np.arange(total) if n is None or n >= total else np.sort(rng.choice(total, n, replace=False))
                self._datasets[s] = CelebAShards(shards, labels, index, self.image_size)
        return self._datasets

    def build_model(self) -> MTLModel:
        if self.model == "cnn9":
            return MTLModel(cnn9_encoder(), [nn.Linear(512, 1) for _ in self.tasks])
        enc = ResNet18Encoder(image_size=self.image_size)
        return MTLModel(enc, [nn.Linear(enc.out_features, 2) for _ in self.tasks])

    def losses(self, outputs: list[torch.Tensor], batch: Any) -> torch.Tensor:
        y = batch[1]
        if self.model == "cnn9":
            return stack_losses([F.binary_cross_entropy_with_logits(o.squeeze(1), y[:, k].float())
                                 for k, o in enumerate(outputs)])
        return stack_losses([F.cross_entropy(o, y[:, k]) for k, o in enumerate(outputs)])

    def _predict(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        if self.model == "cnn9":
            return torch.stack([(o.squeeze(1) > 0).long() for o in outputs], 1)
        return torch.stack([o.argmax(1) for o in outputs], 1)

    @torch.no_grad()
    def evaluate(self, model: MTLModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        K = len(self.tasks)
        tp, fp, fn, correct = (torch.zeros(K, dtype=torch.float64) for _ in range(4))
        n = 0
        try:
            for x, y in loader:
                _, outs = model(x.to(device))
                pred = self._predict(outs).cpu()
                tp += ((pred == 1) & (y == 1)).sum(0)
                fp += ((pred == 1) & (y == 0)).sum(0)
                fn += ((pred == 0) & (y == 1)).sum(0)
                correct += (pred == y).sum(0)
                n += len(x)
        finally:
            model.train(was_training)
        acc = correct / max(n, 1)
        precision = tp / (tp + fp + 1e-8)  # as FAMO's CelebaMetrics
        recall = tp / (tp + fn + 1e-8)
        f1 = 2 * precision * recall / (precision + recall + 1e-8)
        return {**{f"acc_{a}": float(acc[k]) for k, a in enumerate(self.tasks)},
                **{f"f1_{a}": float(f1[k]) for k, a in enumerate(self.tasks)}}

    def kpis(self, values: dict[str, float]) -> torch.Tensor:
        """Per-attribute accuracies (in [0, 1]); NaN where absent."""
        return torch.tensor([values.get(f"acc_{a}", float("nan")) for a in self.tasks], dtype=torch.float32)

    def training(self) -> dict[str, Any]:
        """"paper", ``model="resnet18"``: Sener & Koltun's ``train_multi_task.py`` + ``sample.json``
        (intel-isl/MultiObjectiveOptimization): Adam, lr 5e-4, batch 256, 100 epochs, lr x0.85 every 10
        epochs. ``model="cnn9"``: FAMO's ``experiments/celeba/trainer.py`` as PIVRG states (Sec. 5): Adam,
        lr 3e-4, batch 256, 15 epochs, no schedule. "fast": 1 epoch, Adam 1e-3, batch 32."""
        if self.profile == "paper" and self.model == "cnn9":
            return {"epochs": 15, "batch_size": 256, "lr": 3e-4, "optimizer": "adam", "weight_decay": 0.0,
                    "lr_schedule": None}
        if self.profile == "paper":
            return {"epochs": 100, "batch_size": 256, "lr": 5e-4, "optimizer": "adam", "weight_decay": 0.0,
                    "lr_schedule": "step:10:0.85"}
        return {"epochs": 1, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
                "lr_schedule": None}
