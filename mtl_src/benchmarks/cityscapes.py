"""Cityscapes, 2 tasks (7-class semantic segmentation + depth) at 128x256, as in MTAN / CAGrad / nash-mtl.

Protocol (Aligned-MTL supp. D "CITYSCAPES two-task", PIVRG Table 2, both following CAGrad / nash-mtl /
FAMO's ``experiments/cityscapes``): the MTAN-preprocessed Cityscapes, 2,975 train and 500 val images
(the val images are the test split); segmentation loss = pixel-wise cross-entropy ignoring label -1;
depth loss = L1 over pixels whose target is non-zero. Metrics: ``miou`` and ``pixacc`` (confusion
matrix over the whole split), ``abs_err`` and ``rel_err`` (per-batch means over valid pixels, averaged
over batches, as the public code does). :data:`STL_BASELINE` holds the single-task values the public
code uses for Delta m (FAMO ``experiments/cityscapes/utils.py``; also in PIVRG's tables): mIoU 0.7401,
pixel accuracy 0.9316, absolute error 0.0125, relative error 27.77 — the authors' numbers, not ours.

Data: prepared by ``python data_scripts/cityscapes.py --data-root DIR --source ARCHIVE`` (Cityscapes needs
registration; the script explains the manual step). This module reads exactly the MTAN layout it
writes, ``<data_root>/cityscapes/{train,val}/{image,label_7,depth}/<i>.npy`` + MANIFEST.json, one
sample per file, loaded lazily; missing/corrupt files raise :class:`~mtl_src.data.MissingDataError`.

Model: the shared SegNet encoder-decoder (Z = its last 64-channel feature map) with one MTAN-style head
per task (3x3 conv + 1x1 conv) — nash-mtl's ``SegNetSplit`` baseline. What differs from the papers:
they train SegNet-MTAN, whose task-specific attention modules read every encoder/decoder stage and so do
not fit a single shared representation Z; ``model="mtan"`` is not provided. Training augmentation
(``augment``, default on in "paper" as nash-mtl/FAMO's ``--apply-augmentation``): random scale-crop
(1.0/1.2/1.5, depth divided by the scale) and horizontal flip, drawn from torch's seeded RNG. The "fast"
profile subsamples (32 train / 16 test), resizes to 32x64 (bilinear image, nearest labels/depth) and
narrows the SegNet to 1/8 of its filters so that an LS epoch takes seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..autodiff import stack_losses
from ..data import data_root as _data_root
from . import register
from ._models import Normalize, SegNetSplit, dense_head, load_manifest
from .base import Benchmark, Metric, MTLModel

__all__ = ["Cityscapes", "MTANSamples", "DenseBenchmark", "STL_BASELINE"]

#: single-task baselines of the public code for Delta m (FAMO/nash-mtl ``utils.py`` BASE; PIVRG tables)
STL_BASELINE = {"miou": 0.7401, "pixacc": 0.9316, "abs_err": 0.0125, "rel_err": 27.77}


class MTANSamples(Dataset):
    """Per-sample .npy files of the MTAN layout: (image (3,H,W), label (H,W) float, depth (1,H,W)[, normal (3,H,W)])."""

    def __init__(self, folder: Path, dirs: list[str], index: np.ndarray, resolution: tuple[int, int] | None,
                 augment: bool):
        self.folder, self.dirs, self.index = folder, dirs, index
        self.resolution, self.augment = resolution, augment

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = int(self.index[i])
        items = {}
        for d in self.dirs:
            a = torch.from_numpy(np.load(self.folder / d / f"{j}.npy").astype(np.float32))
            items[d] = a if a.ndim == 2 else a.permute(2, 0, 1)
        if self.resolution is not None and tuple(items["image"].shape[-2:]) != self.resolution:
            items = {d: _resize(d, t, self.resolution, False) for d, t in items.items()}
        if self.augment:
            items = _scale_crop_flip(items)
        return tuple(items[d].contiguous() for d in self.dirs)


def _is_label(d: str) -> bool:
    return d.startswith("label")


def _resize(d: str, t: torch.Tensor, size: tuple[int, int], align: bool) -> torch.Tensor:
    if _is_label(d):
        return F.interpolate(t[None, None], size=size, mode="nearest")[0, 0]
    if d == "depth":
        return F.interpolate(t[None], size=size, mode="nearest")[0]
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=align)[0]


def _scale_crop_flip(items: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MTAN issue #34 / nash-mtl ``RandomScaleCrop`` (scales 1, 1.2, 1.5) then a horizontal flip (p = 0.5)."""
    H, W = items["image"].shape[-2:]
    sc = (1.0, 1.2, 1.5)[int(torch.randint(0, 3, ()))]
    h, w = int(H / sc), int(W / sc)
    i = int(torch.randint(0, H - h + 1, ()))
    j = int(torch.randint(0, W - w + 1, ()))
    out = {}
    for d, t in items.items():
        r = _resize(d, t[..., i:i + h, j:j + w], (H, W), True)
        out[d] = r / sc if d == "depth" else r
    if float(torch.rand(())) < 0.5:
        out = {d: t.flip(-1) for d, t in out.items()}
        if "normal" in out:
            out["normal"][0] = -out["normal"][0]
    return out


class DenseBenchmark(Benchmark):
    """Shared machinery of the MTAN-format scene-understanding benchmarks (Cityscapes, NYUv2)."""

    prepared = True

    DATASET = ""
    DIRS: list[str] = []
    CLASSES = 0
    HW = (0, 0)
    FAST_HW = (0, 0)
    PAPER_BATCH = 8

    def __init__(self, profile: str = "fast", data_root: str | None = None, seed: int = 0, model: str = "segnet",
                 width: float | None = None, resolution: tuple[int, int] | None = None, n_train: int | None = None,
                 n_test: int | None = None, augment: bool | None = None, verify: bool = True):
        """``model``: "segnet" (shared SegNet encoder-decoder + per-task heads; "mtan" is not provided).
        ``width``: SegNet filter multiplier (None: fast 0.125, paper 1.0). ``resolution``: (H, W) the
        samples are resized to (None: fast a small size, paper the stored size). ``n_train``/``n_test``:
        seeded subsamples (None: fast 32/16, paper all). ``augment``: random scale-crop + flip on train
        (None: fast off, paper on). ``verify``: sha256 of every file against MANIFEST.json (once)."""
        name = self.DATASET
        if profile not in ("fast", "paper"):
            raise ValueError(f"{name}: unknown profile {profile!r}; use 'fast' or 'paper'")
        if model != "segnet":
            raise ValueError(f"{name}: model must be 'segnet' (SegNet-MTAN's attention does not fit one shared "
                             f"representation Z and is not provided), got {model!r}")
        fast = profile == "fast"
        width = (0.125 if fast else 1.0) if width is None else width
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"{name}: width must be a positive number (1.0 = the published SegNet), got {width!r}")
        resolution = (self.FAST_HW if fast else self.HW) if resolution is None else tuple(resolution)
        if len(resolution) != 2 or min(resolution) < 8:
            raise ValueError(f"{name}: resolution must be (H, W) with H, W >= 8, got {resolution!r}")
        n = {"train": (32 if fast else None) if n_train is None else n_train,
             "test": (16 if fast else None) if n_test is None else n_test}
        for s, v in n.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name}: n_{s} must be a positive int or None (the profile's default), got {v!r}")
        self.profile, self.data_root, self.seed = profile, data_root, int(seed)
        self.model, self.width, self.resolution, self.n = model, float(width), tuple(int(r) for r in resolution), n
        self.augment = (not fast) if augment is None else bool(augment)
        self.verify = bool(verify)
        self.stl_baseline = None
        self._datasets: dict[str, MTANSamples] | None = None

    def config(self) -> dict[str, Any]:
        return {"name": self.DATASET, "profile": self.profile, "seed": self.seed, "model": self.model,
                "width": self.width, "resolution": list(self.resolution), "n": self.n, "augment": self.augment,
                "format": 1}

    def datasets(self) -> dict[str, MTANSamples]:
        """"train" (MTAN train/) and "test" (MTAN val/, the papers' test split)."""
        if self._datasets is None:
            root = _data_root(self.data_root)
            manifest = load_manifest(root, self.DATASET, verify=self.verify)
            counts = manifest["protocol"]["counts"]
            rng = np.random.default_rng([self.seed, 11])
            self._datasets = {}
            for split, folder in (("train", "train"), ("test", "val")):
                total, n = int(counts[folder]), self.n[split]
                index = np.arange(total) if n is None or n >= total else np.sort(rng.choice(total, n, replace=False))
                self._datasets[split] = MTANSamples(root / self.DATASET / folder, self.DIRS, index, self.resolution,
                                                    self.augment and split == "train")
        return self._datasets

    def _heads(self, c: int) -> list[nn.Module]:
        return [dense_head(c, self.CLASSES), dense_head(c, 1)]

    def build_model(self) -> MTLModel:
        enc = SegNetSplit(self.width)
        return MTLModel(enc, self._heads(enc.out_channels))

    def losses(self, outputs: list[torch.Tensor], batch: Any) -> torch.Tensor:
        return stack_losses(self._task_losses(outputs, batch))

    def _task_losses(self, outputs: list[torch.Tensor], batch: Any) -> list[torch.Tensor]:
        """The scalar task losses, in task order (a subclass appends its extra tasks' losses)."""
        label = batch[1].long()
        seg = F.cross_entropy(outputs[0], label, ignore_index=-1) if (label >= 0).any() else outputs[0].sum() * 0
        return [seg, _depth_loss(outputs[1], batch[2])]

    def kpis(self, values: dict[str, float]) -> None:
        """No [0, 1] KPI is meaningful for depth (or normals): DTP is not defined here."""
        return None

    def training(self) -> dict[str, Any]:
        """"paper": nash-mtl / FAMO ``experiments/<dataset>/trainer.py`` (CAGrad's setting, Aligned-MTL supp.
        D): Adam, lr 1e-4, 200 epochs, StepLR(100, 0.5), batch 8 (Cityscapes) / 2 (NYUv2).
        "fast": 1 epoch, Adam 1e-3, batch 8."""
        if self.profile == "paper":
            return {"epochs": 200, "batch_size": self.PAPER_BATCH, "lr": 1e-4, "optimizer": "adam",
                    "weight_decay": 0.0, "lr_schedule": "step:100:0.5"}
        return {"epochs": 1, "batch_size": 8, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "lr_schedule": None}

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, model: MTLModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        C = self.CLASSES
        conf = torch.zeros(C, C, dtype=torch.int64)
        sums: dict[str, float] = {}
        batches = 0
        try:
            for batch in loader:
                batch = self.to(batch, device)
                _, outs = model(batch[0])
                label = batch[1].long().flatten()
                pred = outs[0].argmax(1).flatten()
                k = (label >= 0) & (label < C)
                conf += torch.bincount(C * label[k] + pred[k], minlength=C * C).reshape(C, C).cpu()
                for key, v in self._batch_errors(outs, batch).items():
                    sums[key] = sums.get(key, 0.0) + v
                batches += 1
        finally:
            model.train(was_training)
        h = conf.double()
        union = h.sum(0) + h.sum(1) - h.diag()
        present = union > 0  # classes absent from both prediction and target are skipped (public code: NaN)
        miou = float((h.diag()[present] / union[present]).mean()) if present.any() else 0.0
        pixacc = float(h.diag().sum() / h.sum()) if h.sum() > 0 else 0.0
        return {"miou": miou, "pixacc": pixacc, **{k: v / max(batches, 1) for k, v in sums.items()}}

    def _batch_errors(self, outs: list[torch.Tensor], batch: Any) -> dict[str, float]:
        return _depth_errors(outs[1], batch[2])


def _depth_mask(target: torch.Tensor) -> torch.Tensor:
    return (target.sum(1, keepdim=True) != 0)


def _depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask = _depth_mask(target).float()
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def _depth_errors(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """nash-mtl ``depth_error``: mean absolute and relative error over the batch's valid pixels."""
    mask = _depth_mask(target)
    p, t = pred.masked_select(mask), target.masked_select(mask)
    n = max(int(mask.sum()), 1)
    return {"abs_err": float((p - t).abs().sum() / n), "rel_err": float(((p - t).abs() / t.abs()).sum() / n)}


@register("cityscapes")
class Cityscapes(DenseBenchmark):
    """Cityscapes 2-task (7-class segmentation, depth), MTAN format (data_scripts/cityscapes.py)."""

    DATASET = "cityscapes"
    DIRS = ["image", "label_7", "depth"]
    CLASSES = 7
    HW = (128, 256)
    FAST_HW = (32, 64)
    PAPER_BATCH = 8

    def __init__(self, profile: str = "fast", data_root: str | None = None, seed: int = 0, model: str = "segnet",
                 width: float | None = None, resolution: tuple[int, int] | None = None, n_train: int | None = None,
                 n_test: int | None = None, augment: bool | None = None, verify: bool = True):
        super().__init__(profile, data_root, seed, model, width, resolution, n_train, n_test, augment, verify)
        self.tasks = ["segmentation", "depth"]
        self.metrics = [Metric("miou", "segmentation", True), Metric("pixacc", "segmentation", True),
                        Metric("abs_err", "depth", False), Metric("rel_err", "depth", False)]
