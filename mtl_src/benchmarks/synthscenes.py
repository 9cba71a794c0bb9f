"""SynthScenes: procedurally rendered indoor scenes, an NYUv2-like dense-prediction benchmark.

**This benchmark is synthetic.** It exists because NYUv2 and Cityscapes cannot ship with the book
(licences, size, no network at run time). It exercises the same *task mix and metric suite* as
the NYUv2 experiments of the papers (semantic segmentation, depth, surface normals, optionally
edges as in the NYUD/PASCAL experiments of Connection Strength and STGU) with the same kind of
model (a SegNet encoder-decoder with per-task heads), **not the same difficulty**: numbers measured
here are not comparable with the papers' NYUv2 tables.

Data
----
Every scene is drawn and ray-cast by :mod:`mtl_src.render` (numpy, no external files): a closed room
(floor with an optional checkerboard, four walls, ceiling, 0-2 paintings on the walls) with 1-4
oriented boxes, 1-3 spheres (some resting on boxes) and 0-2 cylinders, random colours, one point
light with hard shadows, a random camera pose (height 1.2-1.8 m, yaw +-26 deg, looking 5-29 deg
down, 60 deg horizontal field of view) and 8-bit RGB with a little sensor noise (sigma 1%). Per
pixel the renderer gives

* ``segmentation``: one of 7 classes (floor, wall, ceiling, painting, box, sphere, cylinder);
  ``ignore_index`` 255 is honoured by the loss and the metrics, though a closed room leaves no
  pixel unlabelled;
* ``depth``: metric depth along the optical axis (> 0 everywhere; zero would mark a missing value
  as in NYUv2 and is masked out by the loss and metrics);
* ``normal``: unit surface normal in the camera frame (x right, y down, z forward), facing the camera;
* ``edge``: instance boundaries, 2 px wide (object outlines, occlusions between objects of the same
  class, paintings, and the creases where room planes meet).

Scene ``i`` of a split is generated from ``numpy.random.default_rng([seed, split, i])``, so the data
are deterministic and the first scenes do not depend on the split sizes. Rendered arrays are cached
with :func:`mtl_src.data.cached_arrays` under ``<data_root>/synthscenes/<key>.npz``; the key hashes
the *data* part of :meth:`SynthScenes.config` (everything but the task set and the model widths, so
benchmarks with different task sets share one cache). Inputs are standardised per channel with the
training split's mean and standard deviation.

Protocol (as the public NYUv2 code: MTAN ``lorenmt/mtan``, ``AvivNavon/nash-mtl``, FAMO)
---------------------------------------------------------------------------------------------
* Splits: train and test only, no validation split (NYUv2: 795 / 654 images at 288 x 384); the
  ``paper`` profile uses those sizes and that resolution, ``fast`` (the book's) 64 / 32 scenes at
  48 x 64.
* Model: SegNet-style encoder-decoder (conv-BN-ReLU blocks, 2x2 max-pooling, max-unpooling with the
  pooling indices); the decoder's full-resolution feature map is the shared representation Z. Each
  head is MTAN's prediction layer: a 3x3 conv then a 1x1 conv; the normal head's output is divided by
  its norm. ``paper``: SegNet widths 64-128-256-512-512 with 2-2-3-3-3 convs per level (as MTAN's
  SegNet); ``fast``: 16-32-64 with one conv per level.
* Losses: cross-entropy with ``ignore_index=255``; L1 over pixels with depth > 0; 1 - cosine over
  pixels with a non-zero normal (as nash-mtl's ``calc_loss``); edges: balanced binary cross-entropy
  with a fixed positive weight 0.95 (Vandenhende et al.'s ``BalancedCrossEntropyLoss``, the NYUD/PASCAL
  edge loss of the multi-task dense-prediction code that STGU and Connection Strength build on).
* Metrics (NYUv2 suite): ``seg_miou``, ``seg_pixacc``; ``depth_abs``, ``depth_rel``;
  ``normal_mean``, ``normal_median`` (degrees), ``normal_11.25``, ``normal_22.5``, ``normal_30``
  (fractions within the angle); ``edge_odsf`` when edges are on.
* Training (``paper``): Adam, lr 1e-4, batch 2, 200 epochs, StepLR(100, 0.5), no weight decay, as
  nash-mtl's ``experiments/nyuv2/trainer.py`` (and MTAN). ``fast``: Adam, lr 1e-3, batch 16, 20 epochs,
  cosine schedule.

What differs from the papers' protocol, and why
-----------------------------------------------
* The data (see above). No data augmentation (nash-mtl uses random scale-crops by default).
* Metrics (:mod:`mtl_src.metrics` with ``reduction="pixel"``) are pooled over all pixels of the
  split; the MTAN/nash-mtl scripts average per-batch values (their normal median is a mean of
  per-batch medians), which depends on the batch size. mIoU averages the IoU over the classes that
  occur in the ground truth or the prediction; the normal median comes from 0.001-degree bins.
* ``edge_odsf`` is :class:`mtl_src.metrics.EdgeFMeasure`: a simplified BSDS/seism optimal-dataset-scale
  F-measure (99 thresholds, counts pooled over the split, matching by distance without thinning or
  one-to-one assignment) with tolerance ``max(0.011, 1 px / diagonal)`` of the image diagonal (0.011 is
  MTI-Net's NYUD setting; at 48 x 64 it would be under one pixel).
* Single-task baselines are not hard-coded (``stl_baseline = None``): they are computed and cached
  elsewhere by training the ``stl`` method.
* KPIs for DTP: mIoU, ``max(0, 1 - depth_rel)``, ``normal_30`` and ``edge_odsf``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .. import render
from ..autodiff import stack_losses
from ..data import cached_arrays, config_key, data_root
from . import Benchmark, Metric, MTLModel, register

__all__ = ["SynthScenes", "TASKS", "CLASSES"]

TASKS = ("segmentation", "depth", "normal", "edge")
CLASSES = render.CLASSES
IGNORE_INDEX = 255
EDGE_POS_WEIGHT = 0.95
#: bump when the renderer or the scene distribution changes (invalidates the caches)
RENDER_VERSION = 1

_PROFILES: dict[str, dict[str, Any]] = {
    "fast": {"n_train": 64, "n_test": 32, "image_size": (48, 64), "widths": (16, 32, 64), "depths": (1, 1, 1)},
    "reference": {"n_train": 320, "n_val": 64, "n_test": 160, "image_size": (48, 64), "widths": (16, 32, 64),
                  "depths": (1, 1, 1)},
    "paper": {"n_train": 795, "n_test": 654, "image_size": (288, 384),
              "widths": (64, 128, 256, 512, 512), "depths": (2, 2, 3, 3, 3)},
}
_TRAINING = {
    "fast": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
             "lr_schedule": "cosine"},
    "reference": {"epochs": 20, "batch_size": 16, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
                  "lr_schedule": "cosine", "eval_splits": ("val", "test")},
    "paper": {"epochs": 200, "batch_size": 2, "lr": 1e-4, "optimizer": "adam", "weight_decay": 0.0,
              "lr_schedule": "step:100:0.5"},
}
_METRICS = {
    "segmentation": [("seg_miou", True), ("seg_pixacc", True)],
    "depth": [("depth_abs", False), ("depth_rel", False)],
    "normal": [("normal_mean", False), ("normal_median", False), ("normal_11.25", True),
               ("normal_22.5", True), ("normal_30", True)],
    "edge": [("edge_odsf", True)],
}
_SPLITS = {"train": 0, "test": 1, "val": 2}


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

def _render_split(seed: int, split: int, n: int, height: int, width: int, workers: int) -> dict[str, np.ndarray]:
    if workers <= 1 or n < 2 * workers:
        return render.render_scenes(seed, split, 0, n, height, width)
    import concurrent.futures as cf
    import multiprocessing as mp

    bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
    # spawn: safe after torch has started its threads (fork is not); the renderer imports no torch
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        parts = list(ex.map(render.render_scenes, *zip(*[(seed, split, a, b, height, width)
                                                    for a, b in zip(bounds[:-1], bounds[1:]) if b > a])))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class _SceneDataset(Dataset):
    """Items ``(image, targets)``: standardised float image (3, H, W) and a dict with the chosen tasks'
    targets: segmentation (H, W) int64, depth (1, H, W), normal (3, H, W) unit, edge (1, H, W) in {0, 1}."""

    def __init__(self, arrays: dict[str, np.ndarray], split: str, mean: Tensor, std: Tensor, tasks: list[str]):
        self.rgb = arrays[f"{split}_rgb"]
        self.targets = {t: arrays[f"{split}_{k}"] for t, k in
                        [("segmentation", "label"), ("depth", "depth"), ("normal", "normal"), ("edge", "edge")]
                        if t in tasks}
        self.mean, self.std = mean.view(3, 1, 1), std.view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.rgb)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.rgb[i]).permute(2, 0, 1).float().div_(255.0)
        x = (x - self.mean) / self.std
        y: dict[str, Tensor] = {}
        for t, a in self.targets.items():
            v = torch.from_numpy(np.asarray(a[i]))
            if t == "segmentation":
                y[t] = v.long()
            elif t == "normal":  # stored as float16: renormalise (zero vectors = missing stay zero)
                v = v.float().permute(2, 0, 1)
                y[t] = v / v.norm(dim=0, keepdim=True).clamp_min(1e-12)
            else:
                y[t] = v.float().unsqueeze(0)
        return x, y


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------

def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegNetTrunk(nn.Module):
    """SegNet encoder-decoder laid out as MTAN's ``SegNet``: encoder level l = ``depths[l]`` conv-BN-ReLU
    blocks (the first one widens to ``widths[l]``) and 2x2 max-pooling with indices; decoder level l =
    max-unpooling at those indices, a block narrowing to ``widths[l-1]``, then ``depths[l] - 1`` blocks.
    Xavier-normal initialisation as MTAN. Output: the full-resolution map (widths[0], H, W) = Z."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        self.enc = nn.ModuleList()
        c = in_channels
        for w, d in zip(widths, depths):
            self.enc.append(nn.Sequential(_conv(c, w), *[_conv(w, w) for _ in range(d - 1)]))
            c = w
        self.dec = nn.ModuleList()
        for lvl in reversed(range(len(widths))):
            out = widths[max(lvl - 1, 0)]
            self.dec.append(nn.Sequential(_conv(widths[lvl], out), *[_conv(out, out) for _ in range(depths[lvl] - 1)]))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        indices = []
        for block in self.enc:
            x, idx = self.pool(block(x))
            indices.append(idx)
        for block, idx in zip(self.dec, reversed(indices)):
            x = block(self.unpool(x, idx))
        return x


def task_bn_segnet(widths: tuple[int, ...], depths: tuple[int, ...], K: int) -> tuple[SegNetTrunk, nn.Module]:
    """:class:`SegNetTrunk` whose last conv-BN-ReLU block (full resolution, ``widths[0]`` channels) is
    replaced by a tail ``conv3x3 (no bias) -> task k's BatchNorm -> ReLU`` (for Connection Strength, see
    :class:`mtl_src.nn.TaskBNTailModel`). Z is then the trunk's output, the input of that conv."""
    from ..nn import TaskBatchNorm2d, TaskSequential

    trunk = SegNetTrunk(widths, depths)
    last = trunk.dec[-1]
    last[len(last) - 1] = nn.Identity()
    c = widths[0]
    tail = TaskSequential(nn.Conv2d(c, c, 3, padding=1, bias=False), TaskBatchNorm2d(c, K), nn.ReLU())
    nn.init.xavier_normal_(tail[0].weight)
    return trunk, tail


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


class _UnitNormal(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _head(c: int, out: int, unit: bool = False) -> nn.Sequential:
    """MTAN's prediction layer: 3x3 conv then 1x1 conv (optionally normalised to unit vectors)."""
    layers: list[nn.Module] = [nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, out, 1)]
    if unit:
        layers.append(_UnitNormal())
    head = nn.Sequential(*layers)
    _xavier(head)
    return head


# ------------------------------------------------------------------------------------------------
# Losses (as the MTAN / nash-mtl NYUv2 code); the metrics are mtl_src.metrics'
# ------------------------------------------------------------------------------------------------

def _seg_loss(logits: Tensor, label: Tensor) -> Tensor:
    return F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)


def _depth_loss(pred: Tensor, depth: Tensor) -> Tensor:
    mask = (depth > 0).to(pred.dtype)
    return ((pred - depth).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def _normal_loss(pred: Tensor, normal: Tensor) -> Tensor:
    mask = (normal != 0).any(dim=1, keepdim=True).to(pred.dtype)
    return 1.0 - ((pred * normal).sum(dim=1, keepdim=True) * mask).sum() / mask.sum().clamp_min(1.0)


def _edge_loss(logits: Tensor, edge: Tensor) -> Tensor:
    """Balanced BCE with the fixed positive weight 0.95, mean over pixels (:func:`mtl_src.metrics.edge_loss`)."""
    from ..metrics import edge_loss

    return edge_loss(logits, edge, pos_weight=EDGE_POS_WEIGHT)


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------

@register("synthscenes")
class SynthScenes(Benchmark):
    """Procedural NYUv2-like scenes: segmentation, depth, normals (and optionally edges).

    Options: ``tasks`` (a subset of ``TASKS``, in that order of the heads; default the NYUv2 three),
    ``n_train`` / ``n_test`` (scenes; ``None`` = the profile's), ``image_size`` ((H, W), divisible by
    2 ** levels of the SegNet; ``None`` = the profile's), ``workers`` (rendering processes; ``None`` =
    one for small jobs, up to 8 for large ones; does not change the data), ``n_val`` (validation scenes,
    rendered from their own seed; ``None`` = the profile's: 64 in ``reference``, else 0 = no validation
    split), ``task_bn`` (default True:
    the decoder's last conv is followed by task-specific batch norms, the architecture Connection
    Strength needs and every method trains; False: one shared BN there).
    """

    def __init__(self, profile: str = "fast", data_root: str | None = None, seed: int = 0,
                 tasks: tuple[str, ...] | list[str] = ("segmentation", "depth", "normal"),
                 n_train: int | None = None, n_test: int | None = None,
                 image_size: tuple[int, int] | None = None, workers: int | None = None,
                 task_bn: bool = True, n_val: int | None = None):
        if profile not in _PROFILES:
            raise ValueError(f"synthscenes: unknown profile {profile!r}; use one of {sorted(_PROFILES)}")
        p = _PROFILES[profile]
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or any(t not in TASKS for t in tasks):
            raise ValueError(f"synthscenes: tasks must be distinct names from {TASKS}, got {tasks!r}; "
                             "e.g. tasks=('segmentation', 'depth', 'normal', 'edge')")
        n_train = p["n_train"] if n_train is None else n_train
        n_test = p["n_test"] if n_test is None else n_test
        n_val = p.get("n_val", 0) if n_val is None else n_val
        for k, v in (("n_train", n_train), ("n_test", n_test)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"synthscenes: {k} must be a positive integer, got {v!r}")
        if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or n_val < 0:
            raise ValueError(f"synthscenes: n_val must be an integer >= 0 (0: no validation split), got {n_val!r}")
        image_size = tuple(p["image_size"] if image_size is None else image_size)
        levels = len(p["widths"])
        if (len(image_size) != 2 or any(not isinstance(s, (int, np.integer)) or s < 2**levels or s % 2**levels
                                        for s in image_size)):
            raise ValueError(f"synthscenes: image_size must be (H, W) with both multiples of {2**levels} "
                             f"(the {levels} poolings of the {profile!r} SegNet), got {image_size!r}; e.g. (48, 64)")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"synthscenes: workers must be a positive integer or None, got {workers!r}")
        self.profile = profile
        self.data_root = data_root
        self.seed = int(seed)
        self.tasks = tasks
        self.n_train, self.n_test, self.n_val = int(n_train), int(n_test), int(n_val)
        self.splits = ["train", "val", "test"] if self.n_val else ["train", "test"]
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.widths, self.depths = tuple(p["widths"]), tuple(p["depths"])
        self.workers = workers
        self.task_bn = bool(task_bn)
        self.metrics = [Metric(name, t, hib) for t in self.tasks for name, hib in _METRICS[t]]
        self.stl_baseline = None
        self.n_classes = len(CLASSES)
        self._data: dict[str, Dataset] | None = None
        self._arrays: dict[str, np.ndarray] | None = None

    # -- configuration --------------------------------------------------------------------------
    def data_config(self) -> dict[str, Any]:
        """What determines the rendered data (keys the cache)."""
        return {"name": self.name, "seed": self.seed, "n_train": self.n_train, "n_test": self.n_test,
                "image_size": list(self.image_size), "render_version": RENDER_VERSION,
                **({"n_val": self.n_val} if self.n_val else {})}

    def config(self) -> dict[str, Any]:
        return {**self.data_config(), "profile": self.profile, "tasks": list(self.tasks),
                "widths": list(self.widths), "depths": list(self.depths),
                **({"task_bn": True} if self.task_bn else {})}

    def training(self) -> dict[str, Any]:
        """``paper``: nash-mtl / MTAN NYUv2 settings (Adam 1e-4, batch 2, 200 epochs, StepLR(100, 0.5));
        ``reference`` (the committed reference runs): Adam 1e-3, batch 16, 20 epochs of 320 scenes, cosine,
        evaluated on 64 validation and 160 test scenes (rendered with their own seeds).
        ``fast``: Adam 1e-3, batch 16, 2 epochs of 64 scenes, cosine. This was the book's profile: every
        method on two seeds must fit the CI budget (about a minute per chapter on 2 CPU cores), so it
        shows the pipeline and the table, not settled rankings; ``n_train=512, n_test=256`` with
        ``epochs=20`` trains the model properly."""
        return dict(_TRAINING[self.profile])

    # -- data -----------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The rendered arrays (``train_rgb``, ``train_label``, ... ``test_edge``), from the cache."""
        if self._arrays is None:
            H, W = self.image_size
            work = (self.n_train + self.n_val + self.n_test) * H * W
            workers = self.workers or (1 if work < 20_000_000 else min(8, os.cpu_count() or 1))

            def build() -> dict[str, np.ndarray]:
                out = {}
                for split, n in (("train", self.n_train), ("val", self.n_val), ("test", self.n_test)):
                    if n == 0:
                        continue
                    for k, v in _render_split(self.seed, _SPLITS[split], n, H, W, workers).items():
                        out[f"{split}_{k}"] = v
                return out

            path = data_root(self.data_root) / "synthscenes" / f"{config_key(self.data_config())}.npz"
            self._arrays = cached_arrays(path, build)
        return self._arrays

    def datasets(self) -> dict[str, Dataset]:
        if self._data is None:
            a = self.arrays()
            rgb = a["train_rgb"]
            # per-channel statistics of the training images, in chunks (no float copy of the split)
            s = np.zeros(3)
            s2 = np.zeros(3)
            for i in range(0, len(rgb), 256):
                c = rgb[i:i + 256].reshape(-1, 3).astype(np.float64) / 255.0
                s += c.sum(0)
                s2 += (c * c).sum(0)
            n = rgb.shape[0] * rgb.shape[1] * rgb.shape[2]
            mean = s / n
            std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-8))
            self.input_mean = torch.tensor(mean, dtype=torch.float32)
            self.input_std = torch.tensor(std, dtype=torch.float32)
            self._data = {split: _SceneDataset(a, split, self.input_mean, self.input_std, self.tasks)
                          for split in self.splits}
        return self._data

    # -- model and losses -----------------------------------------------------------------------
    def build_model(self) -> MTLModel:
        """The SegNet and one MTAN head per task. With ``task_bn`` (the default) the decoder's last
        conv-BN-ReLU block becomes a tail with task-specific BNs (:func:`task_bn_segnet`)."""
        c = self.widths[0]
        out = {"segmentation": self.n_classes, "depth": 1, "normal": 3, "edge": 1}
        heads = [_head(c, out[t], unit=(t == "normal")) for t in self.tasks]
        if self.task_bn:
            from ..nn import TaskBNTailModel

            trunk, tail = task_bn_segnet(self.widths, self.depths, len(self.tasks))
            return TaskBNTailModel(trunk, tail, heads)
        return MTLModel(SegNetTrunk(self.widths, self.depths), heads)

    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        y = batch[1]
        fns = {"segmentation": _seg_loss, "depth": _depth_loss, "normal": _normal_loss, "edge": _edge_loss}
        return stack_losses([fns[t](o, y[t]) for t, o in zip(self.tasks, outputs)])

    # -- evaluation -----------------------------------------------------------------------------
    def edge_max_dist(self) -> float:
        """Matching tolerance of ``edge_odsf`` as a fraction of the image diagonal: 0.011 (MTI-Net's
        NYUD setting), raised to one pixel at low resolution (0.011 x 80 px would match nothing)."""
        return max(0.011, 1.0 / math.hypot(*self.image_size))

    def meters(self) -> dict[str, Any]:
        """One accumulator of :mod:`mtl_src.metrics` per task, pooling all pixels of a split."""
        from .. import metrics as M

        make = {"segmentation": lambda: M.ConfusionMatrix(self.n_classes, ignore_index=IGNORE_INDEX),
                "depth": lambda: M.DepthErrors(reduction="pixel"),
                "normal": lambda: M.NormalErrors(reduction="pixel"),
                "edge": lambda: M.EdgeFMeasure(max_dist=self.edge_max_dist())}
        return {t: make[t]() for t in self.tasks}

    def update_meters(self, meters: dict[str, Any], outputs: list[Tensor], targets: dict[str, Tensor]) -> None:
        """Feed one batch of head outputs (as the model returns them) to the meters."""
        for t, o in zip(self.tasks, outputs):
            if t == "segmentation":
                meters[t].update(o.argmax(1), targets[t])
            elif t == "edge":
                meters[t].update(torch.sigmoid(o), targets[t])
            else:
                meters[t].update(o, targets[t])

    def results(self, meters: dict[str, Any]) -> dict[str, float]:
        """Metric values from the meters, in the order of :attr:`metrics`."""
        values: dict[str, float] = {}
        for t, m in meters.items():
            v = m.compute()
            if t == "segmentation":
                values["seg_miou"], values["seg_pixacc"] = v
            elif t == "depth":
                values["depth_abs"], values["depth_rel"] = v
            elif t == "normal":
                names = ("normal_mean", "normal_median", "normal_11.25", "normal_22.5", "normal_30")
                values.update(zip(names, v))
            else:
                values["edge_odsf"] = v
        return {mt.name: float(values[mt.name]) for mt in self.metrics}

    @torch.no_grad()
    def evaluate(self, model: MTLModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        meters = self.meters()
        try:
            for batch in loader:
                x, y = self.to(batch, device)
                _, outs = model(x)
                self.update_meters(meters, outs, y)
        finally:
            model.train(was_training)
        return self.results(meters)

    def kpis(self, values: dict[str, float]) -> Tensor | None:
        """mIoU, max(0, 1 - depth_rel), normal_30, edge_odsf (NaN where a value is missing)."""
        nan = float("nan")
        k = {"segmentation": values.get("seg_miou", nan),
             "depth": max(0.0, 1.0 - values["depth_rel"]) if "depth_rel" in values else nan,
             "normal": values.get("normal_30", nan),
             "edge": values.get("edge_odsf", nan)}
        return torch.tensor([k[t] for t in self.tasks], dtype=torch.float32)
