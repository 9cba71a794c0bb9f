"""NYUv2, 3 tasks (13-class segmentation, depth, surface normals) at 288x384, as in MTAN / CAGrad / nash-mtl.

Protocol (nash-mtl ``experiments/nyuv2/trainer.py``; Aligned-MTL supp. D "NYUv2 three-task"; PIVRG
Table 1; Connection Strength's NYUD-v2 uses another pipeline): the MTAN-preprocessed NYUv2, 795 train
and 654 val images (val = the test split). Losses: pixel-wise cross-entropy ignoring -1; L1 depth over
pixels with non-zero target; normals ``1 - <pred, target>`` averaged over valid pixels (predictions
L2-normalised). Metrics: ``miou``, ``pixacc``; ``abs_err``, ``rel_err``; angular error (degrees) of the
normals ``mean_angle``, ``median_angle`` and the fractions within 11.25, 22.5 and 30 degrees
(``within_11.25``...), per-batch values averaged over batches as the public code does.
:data:`STL_BASELINE` holds the single-task values the public code uses for Delta m (nash-mtl
``experiments/nyuv2/utils.py`` BASE, "base results from CAGrad"): 0.3830, 0.6376, 0.6754, 0.2780, 25.01,
19.21, 0.3014, 0.5720, 0.6915 — the authors' numbers.

Data: ``python data_scripts/nyuv2.py --data-root DIR`` (download of the MTAN archive, sha256 recorded on
first use since none is published, or ``--source`` a local copy); read in exactly that layout,
``<data_root>/nyuv2/{train,val}/{image,label,depth,normal}/<i>.npy`` + MANIFEST.json.

Model, augmentation, profiles and what differs from the papers: as :mod:`mtl_src.benchmarks.cityscapes`
(shared SegNet + per-task heads instead of SegNet-MTAN; the normal head ends with an L2 normalisation;
a flip negates the x component of the normals). "fast": 32 train / 16 test samples at 48x64, SegNet
at 1/8 width; "paper": batch 2, Adam 1e-4, 200 epochs, StepLR(100, 0.5), augmentation on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from . import register
from ._models import Normalize, dense_head
from .base import Metric
from .cityscapes import DenseBenchmark

__all__ = ["NYUv2", "STL_BASELINE"]

#: single-task baselines of the public code for Delta m (nash-mtl ``experiments/nyuv2/utils.py``, from CAGrad)
STL_BASELINE = {"miou": 0.3830, "pixacc": 0.6376, "abs_err": 0.6754, "rel_err": 0.2780, "mean_angle": 25.01,
                "median_angle": 19.21, "within_11.25": 0.3014, "within_22.5": 0.5720, "within_30": 0.6915}


@register("nyuv2")
class NYUv2(DenseBenchmark):
    """NYUv2 3-task (13-class segmentation, depth, normals), MTAN format (data_scripts/nyuv2.py)."""

    DATASET = "nyuv2"
    DIRS = ["image", "label", "depth", "normal"]
    CLASSES = 13
    HW = (288, 384)
    FAST_HW = (48, 64)
    PAPER_BATCH = 2

    def __init__(self, profile: str = "fast", data_root: str | None = None, seed: int = 0, model: str = "segnet",
                 width: float | None = None, resolution: tuple[int, int] | None = None, n_train: int | None = None,
                 n_test: int | None = None, augment: bool | None = None, verify: bool = True):
        super().__init__(profile, data_root, seed, model, width, resolution, n_train, n_test, augment, verify)
        self.tasks = ["segmentation", "depth", "normal"]
        self.metrics = [Metric("miou", "segmentation", True), Metric("pixacc", "segmentation", True),
                        Metric("abs_err", "depth", False), Metric("rel_err", "depth", False),
                        Metric("mean_angle", "normal", False), Metric("median_angle", "normal", False),
                        Metric("within_11.25", "normal", True), Metric("within_22.5", "normal", True),
                        Metric("within_30", "normal", True)]

    def _heads(self, c: int) -> list[nn.Module]:
        return [dense_head(c, self.CLASSES), dense_head(c, 1), nn.Sequential(dense_head(c, 3), Normalize())]

    def _task_losses(self, outputs: list[torch.Tensor], batch: Any) -> list[torch.Tensor]:
        target = batch[3]
        mask = (target.sum(1, keepdim=True) != 0).float()
        normal = 1 - (outputs[2] * target * mask).sum() / mask.sum().clamp_min(1.0)
        return [*super()._task_losses(outputs, batch), normal]

    def _batch_errors(self, outs: list[torch.Tensor], batch: Any) -> dict[str, float]:
        errs = super()._batch_errors(outs, batch)
        target = batch[3]
        mask = target.sum(1) != 0
        cos = (outs[2] * target).sum(1).masked_select(mask).clamp(-1, 1)
        ang = torch.rad2deg(torch.acos(cos)).double().cpu().numpy()
        if ang.size == 0:
            ang = np.array([90.0])
        return {**errs, "mean_angle": float(ang.mean()), "median_angle": float(np.median(ang)),
                "within_11.25": float((ang < 11.25).mean()), "within_22.5": float((ang < 22.5).mean()),
                "within_30": float((ang < 30).mean())}
