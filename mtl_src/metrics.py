r"""Task metrics, the multi-task summary numbers (Delta m, Var[Delta m_i], mean rank) and a summary table.

Two layers:

- **task metrics** computed from predictions, with small accumulators for a whole evaluation split:
  :func:`accuracy`, :func:`mae` / :class:`MeanAbsoluteError`, :class:`ConfusionMatrix` (mIoU, pixel
  accuracy), :class:`DepthErrors` (abs / rel error), :class:`NormalErrors` (angle statistics),
  :func:`edge_loss` and :class:`EdgeFMeasure` (odsF);
- **multi-task summaries** of reported numbers against single-task (STL) baselines:
  :func:`relative_drops`, :func:`delta_m`, :func:`per_task_drops`, :func:`var_delta_m`,
  :func:`mean_rank` and :func:`summarize` (tidy results frame -> per-method table).

Sign and averaging of Delta m (read this before quoting a number)
------------------------------------------------------------------
The per-metric relative drop of metric j (value :math:`M_j`, STL value :math:`B_j`) is, in percent,

.. math::  \delta_j = (-1)^{l_j}\,\frac{M_j - B_j}{|B_j|}\times 100,\qquad l_j = 1 \text{ if higher is better},

so :math:`\delta_j > 0` means *worse* than single-task (Maninis et al. 2019; PIVRG Eq. 3). This is the
default ``sign="drop"``: **lower Delta m is better**, as printed by PIVRG and computed by the
nash-mtl / FAMO code. ``sign="improvement"`` negates it (higher is better), which is what the
Connection Strength and STGU tables print (their ":math:`\Delta_m\uparrow`").

Averaging (``average=``):

- ``"metric"`` - mean of :math:`\delta_j` over *all metrics pooled* (nash-mtl / FAMO / PIVRG code; a task
  with 5 metrics weighs 5 times a task with 1);
- ``"task"`` - mean over the metrics of each task first, then over tasks (LibMTL).

For PIVRG's tables the pooled convention reproduces every printed Delta m (see
:mod:`mtl_src.paper_tables`). PIVRG's fairness indicator Var[Delta m_i] is the **population** variance
(ddof = 0) of the **per-metric** drops :math:`\delta_j` (9 values on NYUv2, 4 on Cityscapes, 11 on QM9):
that, and no other combination of (per-task / per-metric, ddof 0 / 1), reproduces its Tables 5, 9-11.
Its weights use per-task scores :math:`s_i` (mean of the task's :math:`\delta_j`), :func:`per_task_drops`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "accuracy", "mae", "MeanAbsoluteError", "ConfusionMatrix", "DepthErrors", "NormalErrors",
    "edge_loss", "EdgeFMeasure",
    "relative_drops", "delta_m", "per_task_drops", "var_delta_m", "mean_rank", "summarize",
]

Sign = Literal["drop", "improvement"]
Average = Literal["metric", "task"]
Reduction = Literal["batch", "pixel"]


# ------------------------------------------------------------------------------------------------
# Task metrics
# ------------------------------------------------------------------------------------------------

def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def accuracy(pred: Tensor, target: Tensor, ignore_index: int | None = None) -> float:
    r"""Fraction of correct labels, :math:`\frac1N\sum_n [\hat y_n = y_n]`.

    ``pred``: integer labels with the shape of ``target``, or scores/logits with one extra class
    dimension at position 1 (``(N, C, ...)``, arg-maxed). Entries whose target equals ``ignore_index``
    are left out. For a binary task with one logit per sample pass ``(logit > 0).long()``.
    """
    pred, target = _as_tensor(pred), _as_tensor(target)
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(1)
    elif pred.is_floating_point():
        raise ValueError("accuracy: pass integer labels, or scores with a class dimension at position 1 "
                         f"(got float predictions of shape {tuple(pred.shape)} for targets {tuple(target.shape)})")
    if pred.shape != target.shape:
        raise ValueError(f"accuracy: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    n = int(keep.sum())
    if n == 0:
        raise ValueError("accuracy: no (non-ignored) targets")
    return float((pred[keep] == target[keep]).sum()) / n


def mae(pred: Tensor, target: Tensor) -> float:
    r"""Mean absolute error :math:`\frac1N\sum_n |\hat y_n - y_n|` over all entries."""
    pred, target = _as_tensor(pred), _as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"mae: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.numel() == 0:
        raise ValueError("mae: empty input")
    return float((pred.double() - target.double()).abs().mean())


class MeanAbsoluteError:
    r"""Per-column MAE over a whole split: :math:`\mathrm{MAE}_k = \frac1N\sum_{n} |\hat y_{nk} - y_{nk}|`.

    ``update(pred, target)`` with shape (B,) or (B, K); every sample weighs the same whatever the batch
    sizes (the nash-mtl QM9 code sums absolute errors and divides by the number of molecules).
    """

    def __init__(self) -> None:
        self.abs_sum: Tensor | None = None
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = _as_tensor(pred), _as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"MeanAbsoluteError: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        s = (pred.detach().double() - target.detach().double()).abs().sum(0).cpu()
        self.abs_sum = s if self.abs_sum is None else self.abs_sum + s
        self.count += pred.shape[0]

    def compute(self) -> np.ndarray:
        if self.abs_sum is None or self.count == 0:
            raise ValueError("MeanAbsoluteError: no samples")
        return np.atleast_1d((self.abs_sum / self.count).numpy())


class ConfusionMatrix:
    r"""Confusion-matrix accumulator for semantic segmentation (rows: target class, columns: prediction).

    - pixel accuracy :math:`= \sum_c h_{cc} / \sum_{c,c'} h_{cc'}`;
    - IoU of class c :math:`= h_{cc} / (\sum_{c'} h_{cc'} + \sum_{c'} h_{c'c} - h_{cc})`;
    - mIoU = mean IoU over the classes whose union is non-empty.

    Pixels whose target is ``ignore_index`` (default -1, the MTAN / nash-mtl label of unannotated
    pixels; 255 for PASCAL-style data) are left out; any other target outside ``[0, C)`` is an error
    (the nash-mtl code drops them silently). A class absent from both targets and predictions has an
    undefined IoU (0/0): the nash-mtl code then returns NaN for the mIoU; here such classes are left
    out of the mean (on the full test sets every class occurs, so the two agree).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = -1) -> None:
        if num_classes < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """``pred``: labels shaped like ``target``, or scores ``(N, C, ...)`` (arg-maxed over dim 1)."""
        pred, target = _as_tensor(pred).detach(), _as_tensor(target).detach()
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"ConfusionMatrix: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        n = self.num_classes
        bad = (target < 0) | (target >= n)
        if bool(bad.any()):
            raise ValueError(f"ConfusionMatrix: target labels outside [0, {n}) that are not ignore_index="
                             f"{self.ignore_index}: {sorted(set(target[bad].tolist()))[:5]}")
        if bool(((pred < 0) | (pred >= n)).any()):
            raise ValueError(f"ConfusionMatrix: predicted labels outside [0, {n})")
        self.mat += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def _check(self) -> Tensor:
        h = self.mat.double()
        if float(h.sum()) == 0:
            raise ValueError("ConfusionMatrix: no (non-ignored) pixels accumulated")
        return h

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both targets and predictions (0/0)."""
        h = self._check()
        union = h.sum(1) + h.sum(0) - h.diag()
        out = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        ok = union > 0
        out[ok] = h.diag()[ok] / union[ok]
        return out.numpy()

    def miou(self) -> float:
        iu = self.iou()
        return float(np.nanmean(iu))  # at least one class has a non-empty union once _check passed

    def pixel_accuracy(self) -> float:
        h = self._check()
        return float(h.diag().sum() / h.sum())

    def compute(self) -> tuple[float, float]:
        """``(mIoU, pixel accuracy)`` as fractions (the papers print them x 100)."""
        return self.miou(), self.pixel_accuracy()


class DepthErrors:
    r"""Absolute and relative depth error over valid pixels (target != 0).

    .. math:: \mathrm{abs} = \frac{1}{|V|}\sum_{p\in V} |\hat d_p - d_p|, \qquad
              \mathrm{rel} = \frac{1}{|V|}\sum_{p\in V} \frac{|\hat d_p - d_p|}{d_p}

    ``reduction="batch"`` (default) reproduces the MTAN / nash-mtl evaluation loop: the two means are
    taken over the valid pixels *of each batch*, then averaged over batches with equal weight (so a
    short last batch weighs as much as a full one). ``reduction="pixel"`` pools all valid pixels of the
    split (LibMTL-style dataset mean). Batches without a valid pixel are skipped (the authors' code would
    divide by zero). ``update(pred, target, mask=None)``; shapes ``(N, 1, H, W)`` or ``(N, H, W)``.
    """

    def __init__(self, reduction: Reduction = "batch") -> None:
        if reduction not in ("batch", "pixel"):
            raise ValueError(f"DepthErrors: reduction must be 'batch' or 'pixel', got {reduction!r}")
        self.reduction = reduction
        self.sums = np.zeros(2)  # abs, rel: per-batch means (batch) or per-pixel sums (pixel)
        self.count = 0  # batches (batch) or pixels (pixel)

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        pred, target = _as_tensor(pred).detach().double(), _as_tensor(target).detach().double()
        if pred.shape != target.shape:
            raise ValueError(f"DepthErrors: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        valid = target != 0 if mask is None else _as_tensor(mask).bool() & (target != 0)
        n = int(valid.sum())
        if n == 0:
            return
        err = (pred[valid] - target[valid]).abs()
        sums = np.array([float(err.sum()), float((err / target[valid].abs()).sum())])
        if self.reduction == "batch":
            self.sums += sums / n
            self.count += 1
        else:
            self.sums += sums
            self.count += n

    def compute(self) -> tuple[float, float]:
        """``(abs_err, rel_err)``."""
        if self.count == 0:
            raise ValueError("DepthErrors: no valid pixels accumulated")
        a, r = self.sums / self.count
        return float(a), float(r)


class NormalErrors:
    r"""Angle error statistics of surface normals over valid pixels.

    Angle :math:`e_p = \arccos(\mathrm{clip}(\hat n_p^\top n_p, -1, 1))` in degrees, on unit vectors
    (both ``pred`` and ``target`` are normalised along dim 1 when ``normalize=True``; the MTAN head
    already normalises its output). Valid pixels: target vector not all zero (the MTAN code tests the
    *sum* of the components, which also drops the rare valid normal whose components cancel).
    ``compute()`` returns mean, median and the fractions with :math:`e_p <` 11.25, 22.5, 30 degrees
    (fractions; the papers print them x 100).

    ``reduction="batch"`` (default) as the MTAN / nash-mtl loop: each statistic (the median too) per
    batch, then averaged over batches. ``reduction="pixel"``: over all valid pixels of the split; the
    median then comes from a histogram with bins of ``bin_deg`` degrees (exact to within one bin).
    """

    THRESHOLDS = (11.25, 22.5, 30.0)

    def __init__(self, reduction: Reduction = "batch", normalize: bool = True, bin_deg: float = 1e-3) -> None:
        if reduction not in ("batch", "pixel"):
            raise ValueError(f"NormalErrors: reduction must be 'batch' or 'pixel', got {reduction!r}")
        if not bin_deg > 0:
            raise ValueError(f"NormalErrors: bin_deg must be > 0, got {bin_deg}")
        self.reduction, self.normalize, self.bin_deg = reduction, normalize, float(bin_deg)
        self.batch_sums = np.zeros(5)
        self.batches = 0
        nbins = int(math.ceil(180.0 / self.bin_deg))
        self.hist = np.zeros(nbins, dtype=np.int64) if reduction == "pixel" else None
        self.sum_angle = 0.0
        self.below = np.zeros(3, dtype=np.int64)
        self.pixels = 0

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """``pred``, ``target``: ``(N, 3, H, W)`` (any ``(N, D, ...)``); ``mask``: ``(N, H, W)``."""
        pred, target = _as_tensor(pred).detach().double(), _as_tensor(target).detach().double()
        if pred.shape != target.shape:
            raise ValueError(f"NormalErrors: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        valid = (target != 0).any(1)
        if mask is not None:
            valid = valid & _as_tensor(mask).bool()
        if self.normalize:
            pred = torch.nn.functional.normalize(pred, dim=1)
            target = torch.nn.functional.normalize(target, dim=1)
        cos = (pred * target).sum(1)[valid].clamp(-1.0, 1.0)
        if cos.numel() == 0:
            return
        e = np.degrees(np.arccos(cos.cpu().numpy()))
        if self.reduction == "batch":
            self.batch_sums += [e.mean(), np.median(e), *[(e < t).mean() for t in self.THRESHOLDS]]
            self.batches += 1
        else:
            idx = np.minimum((e / self.bin_deg).astype(np.int64), self.hist.size - 1)
            self.hist += np.bincount(idx, minlength=self.hist.size)
            self.sum_angle += float(e.sum())
            self.below += [int((e < t).sum()) for t in self.THRESHOLDS]
            self.pixels += e.size

    def compute(self) -> tuple[float, float, float, float, float]:
        """``(mean, median, <11.25, <22.5, <30)``."""
        if self.reduction == "batch":
            if self.batches == 0:
                raise ValueError("NormalErrors: no valid pixels accumulated")
            return tuple(float(v) for v in self.batch_sums / self.batches)  # type: ignore[return-value]
        if self.pixels == 0:
            raise ValueError("NormalErrors: no valid pixels accumulated")
        cum = np.cumsum(self.hist)
        half = self.pixels / 2.0
        b = int(np.searchsorted(cum, half))  # bin holding the middle pixel
        before = cum[b - 1] if b > 0 else 0
        median = (b + (half - before) / max(self.hist[b], 1)) * self.bin_deg  # linear within the bin
        return (self.sum_angle / self.pixels, float(median), *(float(c) / self.pixels for c in self.below))


def edge_loss(logits: Tensor, target: Tensor, pos_weight: float = 0.95, ignore_index: int | None = 255) -> Tensor:
    r"""Class-balanced binary cross-entropy of edge maps (PAD-Net / MTI-Net convention, w = 0.95):

    .. math:: \mathcal L = -\frac{1}{|V|}\sum_{p\in V} \big[w\, y_p \log\sigma(x_p) + (1-w)(1-y_p)\log(1-\sigma(x_p))\big]

    over the valid pixels V (target != ``ignore_index``); computed with log-sigmoid (stable for any
    logit). Edges are rare, so w weighs the positive pixels up.
    """
    if not 0.0 <= pos_weight <= 1.0:
        raise ValueError(f"edge_loss: pos_weight must be in [0, 1], got {pos_weight}")
    if logits.shape != target.shape:
        raise ValueError(f"edge_loss: shapes differ: {tuple(logits.shape)} vs {tuple(target.shape)}")
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    n = int(valid.sum())
    if n == 0:
        raise ValueError("edge_loss: no valid pixels")
    y = torch.where(valid, target, torch.zeros_like(target)).to(logits.dtype)
    ls = torch.nn.functional.logsigmoid
    per = -(pos_weight * y * ls(logits) + (1 - pos_weight) * (1 - y) * ls(-logits))
    return (per * valid).sum() / n


class EdgeFMeasure:
    r"""Optimal-dataset-scale F-measure (odsF) of soft edge maps, a simplified BSDS benchmark.

    For each threshold t (``thresholds`` values, default the BSDS / SEISM grid of 99 points
    ``linspace(0.01, 0.99, 99)``), the prediction :math:`\{p: \hat y_p \ge t\}` is matched to the
    ground-truth edges with a tolerance of ``max_dist`` x the image diagonal (0.0075 as MTI-Net
    evaluates PASCAL-Context; it uses 0.011 on NYUD). Counts are summed over the whole split, then

    .. math:: P(t) = \frac{\#\text{pred. pixels within tol. of a GT pixel}}{\#\text{pred. pixels}},\quad
              R(t) = \frac{\#\text{GT pixels within tol. of a pred. pixel}}{\#\text{GT pixels}},\quad
              \mathrm{odsF} = \max_t \frac{2P(t)R(t)}{P(t)+R(t)}.

    Simplifications vs the BSDS benchmark (``correspondPixels``): (1) matching is by distance only,
    not a one-to-one bipartite assignment, so one GT pixel may justify several predicted pixels (P and
    R are upper bounds of the benchmark's, most visibly for thick predictions); (2) predictions are not
    thinned / non-maximum-suppressed; (3) one annotation per image. Numbers are therefore comparable
    between methods evaluated here, not with the papers' printed odsF. P = 0 with no predicted pixel.
    Pixels with target ``ignore_index`` are excluded from both counts. Returns a fraction.
    """

    def __init__(self, thresholds: int | Sequence[float] = 99, max_dist: float = 0.0075,
                 ignore_index: int | None = 255) -> None:
        th = np.linspace(1 / (thresholds + 1), 1 - 1 / (thresholds + 1), thresholds) \
            if isinstance(thresholds, int) else np.sort(np.asarray(thresholds, float))
        if th.size == 0 or not np.all(np.isfinite(th)):
            raise ValueError("EdgeFMeasure: need at least one finite threshold")
        if not max_dist >= 0:
            raise ValueError(f"EdgeFMeasure: max_dist must be >= 0, got {max_dist}")
        self.thresholds, self.max_dist, self.ignore_index = th, float(max_dist), ignore_index
        self.match_pred = np.zeros(th.size, dtype=np.int64)
        self.n_pred = np.zeros(th.size, dtype=np.int64)
        self.match_gt = np.zeros(th.size, dtype=np.int64)
        self.n_gt = 0

    def _counts_above(self, scores: np.ndarray) -> np.ndarray:
        s = np.sort(scores)
        return s.size - np.searchsorted(s, self.thresholds, side="left")  # #{scores >= t}

    def update(self, prob: Tensor, target: Tensor) -> None:
        """``prob``: edge probabilities in [0, 1], ``(N, H, W)`` or ``(N, 1, H, W)``; ``target``: {0, 1}."""
        from scipy import ndimage

        prob = _as_tensor(prob).detach().double().cpu().numpy()
        target = _as_tensor(target).detach().cpu().numpy()
        if prob.shape != target.shape:
            raise ValueError(f"EdgeFMeasure: shapes differ: {prob.shape} vs {target.shape}")
        if prob.ndim == 4:
            prob, target = prob[:, 0], target[:, 0]
        if prob.ndim != 3:
            raise ValueError(f"EdgeFMeasure: expected (N, H, W) or (N, 1, H, W), got {prob.shape}")
        for p, g in zip(prob, target):
            valid = np.ones(g.shape, bool) if self.ignore_index is None else g != self.ignore_index
            gt = (g == 1) & valid
            H, W = g.shape
            r = self.max_dist * math.hypot(H, W)
            # precision: a predicted pixel is matched if some GT edge pixel lies within r
            if gt.any():
                near_gt = ndimage.distance_transform_edt(~gt) <= r
            else:
                near_gt = np.zeros_like(gt)
            self.n_pred += self._counts_above(p[valid])
            self.match_pred += self._counts_above(p[valid & near_gt])
            # recall: a GT pixel is matched at t if the highest score within r of it is >= t
            R = int(math.floor(r))
            yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
            disk = (yy**2 + xx**2) <= r * r
            local_max = ndimage.maximum_filter(np.where(valid, p, -np.inf), footprint=disk, mode="constant",
                                               cval=-np.inf)
            self.match_gt += self._counts_above(local_max[gt])
            self.n_gt += int(gt.sum())

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(thresholds, precision, recall)`` over the split."""
        if self.n_gt == 0:
            raise ValueError("EdgeFMeasure: no ground-truth edge pixel accumulated")
        P = np.where(self.n_pred > 0, self.match_pred / np.maximum(self.n_pred, 1), 0.0)
        R = self.match_gt / self.n_gt
        return self.thresholds, P, R

    def compute(self) -> float:
        """odsF (fraction in [0, 1])."""
        _, P, R = self.curve()
        F = np.where(P + R > 0, 2 * P * R / np.where(P + R > 0, P + R, 1.0), 0.0)
        return float(F.max())


# ------------------------------------------------------------------------------------------------
# Multi-task summaries
# ------------------------------------------------------------------------------------------------

def _aligned(values: Any, baseline: Any, higher_is_better: Any, tasks: Any = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Hashable] | None, list[Hashable]]:
    """Arrays (values (..., M), baseline (M,), sign (M,), task labels or None, metric names)."""
    if isinstance(baseline, Mapping):
        names = list(baseline)
    elif isinstance(values, Mapping):
        names = list(values)
    else:
        names = list(range(np.shape(baseline)[0]))

    def pick(x: Any, what: str) -> list[Any]:
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"{what} has no entry for metrics {missing}")
            return [x[n] for n in names]
        if len(x) != len(names):
            raise ValueError(f"{what} has {len(x)} entries for {len(names)} metrics")
        return list(x)

    if isinstance(values, Mapping):
        v = np.stack([np.asarray(a, float) for a in pick(values, "values")], axis=-1)
    else:
        v = np.asarray(values, float)
        if v.shape[-1:] != (len(names),):
            raise ValueError(f"values have shape {v.shape}, last axis must be the {len(names)} metrics")
    b = np.asarray(pick(baseline, "baseline"), float)
    hib = np.asarray([bool(h) for h in pick(higher_is_better, "higher_is_better")])
    t = None if tasks is None else pick(tasks, "tasks")
    if not np.all(np.isfinite(b)) or np.any(b == 0):
        bad = [names[j] for j in range(len(names)) if not np.isfinite(b[j]) or b[j] == 0]
        raise ValueError(f"baseline must be finite and non-zero for a relative drop; bad metrics: {bad}")
    if not np.all(np.isfinite(v)):
        bad = sorted({names[j] for j in np.nonzero(~np.isfinite(v))[-1]}, key=str)
        raise ValueError(f"values are not finite for metrics {bad}")
    return v, b, hib, t, names


def _check_sign(sign: str) -> float:
    if sign not in ("drop", "improvement"):
        raise ValueError(f"sign must be 'drop' (positive = worse) or 'improvement', got {sign!r}")
    return 1.0 if sign == "drop" else -1.0


def relative_drops(values: Any, baseline: Any, higher_is_better: Any, sign: Sign = "drop") -> np.ndarray:
    r"""Per-metric relative change vs single-task in percent, :math:`\delta_j` (module docstring).

    ``values``: array ``(..., M)`` (leading axes e.g. seeds) or a mapping metric -> value(s);
    ``baseline`` and ``higher_is_better``: sequences of length M or mappings (a mapping ``baseline``
    fixes the metric order). ``sign="drop"``: positive = worse; ``"improvement"``: positive = better.
    """
    s = _check_sign(sign)
    v, b, hib, _, _ = _aligned(values, baseline, higher_is_better)
    return s * np.where(hib, -1.0, 1.0) * (v - b) / np.abs(b) * 100.0


def _task_groups(t: list[Hashable] | None, task_order: Sequence[Hashable] | None) -> list[tuple[Hashable, np.ndarray]]:
    if t is None:
        raise ValueError("tasks (the task of each metric) are needed for per-task averaging")
    order = list(dict.fromkeys(t)) if task_order is None else list(task_order)
    if set(order) != set(t):
        raise ValueError(f"task_order {order} does not match the metrics' tasks {sorted(set(t), key=str)}")
    ta = np.asarray(t, dtype=object)
    return [(k, np.nonzero(ta == k)[0]) for k in order]


def per_task_drops(values: Any, baseline: Any, higher_is_better: Any, tasks: Any,
                   sign: Sign = "drop", task_order: Sequence[Hashable] | None = None) -> np.ndarray:
    r"""Per-task mean of the relative drops, :math:`\Delta m_i = \frac{1}{|J_i|}\sum_{j\in J_i}\delta_j`.

    These are PIVRG's scores :math:`s_i` (percent, positive = worse with ``sign="drop"``). ``tasks``
    gives the task of each metric; tasks come in order of first appearance unless ``task_order`` is
    given. Returns shape ``(..., T)``.
    """
    d = relative_drops(values, baseline, higher_is_better, sign)
    _, _, _, t, _ = _aligned(values, baseline, higher_is_better, tasks)
    return np.stack([d[..., idx].mean(-1) for _, idx in _task_groups(t, task_order)], axis=-1)


def delta_m(values: Any, baseline: Any, higher_is_better: Any, average: Average = "metric",
            tasks: Any = None, sign: Sign = "drop") -> float | np.ndarray:
    r"""Delta m in percent.

    ``average="metric"``: :math:`\frac1M\sum_j\delta_j` (all metrics pooled: nash-mtl, FAMO, PIVRG);
    ``average="task"``: :math:`\frac1T\sum_i\frac{1}{|J_i|}\sum_{j\in J_i}\delta_j` (LibMTL; needs ``tasks``).
    ``sign="drop"`` (default): positive = worse than single-task, lower is better (PIVRG's tables);
    ``sign="improvement"``: the negative (Connection Strength / STGU tables). A float for one row of
    values, an array for stacked rows ``(..., M)``.
    """
    if average not in ("metric", "task"):
        raise ValueError(f"average must be 'metric' or 'task', got {average!r}")
    if average == "metric":
        out = relative_drops(values, baseline, higher_is_better, sign).mean(-1)
    else:
        out = per_task_drops(values, baseline, higher_is_better, tasks, sign).mean(-1)
    return float(out) if np.ndim(out) == 0 else out


def var_delta_m(values: Any, baseline: Any, higher_is_better: Any, over: Average = "metric",
                tasks: Any = None, ddof: int = 0) -> float | np.ndarray:
    r"""PIVRG's fairness indicator Var[Delta m_i]: the variance of the relative drops.

    Default: population variance (``ddof=0``) of the per-*metric* drops :math:`\delta_j`, which
    reproduces PIVRG's Tables 5, 9, 10, 11 (e.g. NYUv2 LS: 259.13 from its 9 printed metrics); the
    sample variance or per-task drops give other numbers (NYUv2 LS: 291.52 with ddof=1 over
    metrics, 231.47 over tasks). ``over="task"`` uses :func:`per_task_drops` instead. Independent of
    ``sign``.
    """
    if over not in ("metric", "task"):
        raise ValueError(f"over must be 'metric' or 'task', got {over!r}")
    d = relative_drops(values, baseline, higher_is_better) if over == "metric" \
        else per_task_drops(values, baseline, higher_is_better, tasks)
    if d.shape[-1] - ddof <= 0:
        raise ValueError(f"var_delta_m: {d.shape[-1]} drops leave no degrees of freedom with ddof={ddof}")
    out = d.var(-1, ddof=ddof)
    return float(out) if np.ndim(out) == 0 else out


def mean_rank(table: Any, higher_is_better: Any) -> Any:
    r"""Mean rank (MR) of each method: rank per metric (1 = best, ties get their average rank),
    then the mean over metrics; lower is better.

    ``table``: a DataFrame with one row per method and one column per metric (or a 2-D array, rows =
    methods). ``higher_is_better``: mapping column -> bool or a sequence per column. Every method is
    ranked against all rows given (drop the STL row first if it should not compete). Returns a Series
    indexed like ``table`` (an array for array input). Missing values are an error.
    """
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(np.asarray(table, float))
    hib = [higher_is_better[c] for c in df.columns] if isinstance(higher_is_better, Mapping) else list(higher_is_better)
    if len(hib) != df.shape[1]:
        raise ValueError(f"mean_rank: {len(hib)} directions for {df.shape[1]} metrics")
    vals = df.to_numpy(float)
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"mean_rank: missing or non-finite values in columns "
                         f"{[c for c, ok in zip(df.columns, np.isfinite(vals).all(0)) if not ok]}")
    ranks = pd.DataFrame(vals, index=df.index, columns=df.columns)
    for j, c in enumerate(df.columns):
        ranks[c] = ranks[c].rank(ascending=not hib[j], method="average")
    out = ranks.mean(axis=1)
    return out if isinstance(table, pd.DataFrame) else out.to_numpy()


def summarize(results: Any, baseline: Mapping[str, float], higher_is_better: Mapping[str, bool] | None = None,
              *, metrics: Sequence[Any] | None = None, tasks: Mapping[str, str] | None = None,
              split: str = "test", epoch: int | Literal["last"] = "last", benchmark: str | None = None,
              average: Average = "metric", sign: Sign = "drop", var_over: Average = "metric",
              rank_exclude: Sequence[str] = ("stl",)) -> Any:
    r"""Per-method summary table from a tidy results frame.

    ``results`` has the columns ``benchmark, method, seed, epoch, split, metric, task, value``
    (:data:`mtl_src.train.RESULT_COLUMNS`). Rows of ``split`` and of the metrics in ``baseline`` are
    used, at the last epoch of each run (``epoch="last"``) or at a given epoch. Directions come from
    ``higher_is_better`` or from ``metrics`` (objects with ``name``, ``task``, ``higher_is_better``,
    e.g. :class:`mtl_src.benchmarks.base.Metric`); tasks from ``tasks``, ``metrics`` or the frame's
    ``task`` column.

    Columns of the returned frame (one row per method): for each metric ``<metric>`` (mean over seeds)
    and ``<metric> sd`` (sample sd, ddof = 1; NaN for one seed); ``delta_m`` and ``delta_m sd`` (Delta m
    of each seed, then mean / sd); ``var_delta_m`` (:func:`var_delta_m` of the seed-mean metrics, as
    PIVRG computes it from its averaged table rows); ``mr`` (:func:`mean_rank` of the seed-mean metrics
    among the methods of the table, except those of ``rank_exclude``: the papers rank the multi-task
    methods only, so the single-task row "stl" gets MR = NaN and does not shift the others' ranks); ``n_seeds``. ``average`` / ``sign`` as in :func:`delta_m`.
    """
    import pandas as pd

    df = results
    need = {"benchmark", "method", "seed", "epoch", "split", "metric", "value"}
    if not need <= set(df.columns):
        raise ValueError(f"summarize: results lack columns {sorted(need - set(df.columns))}")
    if benchmark is not None:
        df = df[df["benchmark"] == benchmark]
    elif df["benchmark"].nunique() > 1:
        raise ValueError(f"summarize: several benchmarks {sorted(df['benchmark'].unique())}; pass benchmark=")
    names = list(baseline)
    if metrics is not None:
        spec = {m.name: m for m in metrics}
        missing = [n for n in names if n not in spec]
        if missing:
            raise ValueError(f"summarize: no Metric given for {missing}")
        higher_is_better = {n: spec[n].higher_is_better for n in names}
        tasks = tasks or {n: spec[n].task for n in names}
    if higher_is_better is None:
        raise ValueError("summarize: pass higher_is_better or metrics")
    df = df[(df["split"] == split) & df["metric"].isin(names)]
    if df.empty:
        raise ValueError(f"summarize: no rows for split {split!r} and metrics {names}")
    if epoch == "last":
        last = df.groupby(["method", "seed"])["epoch"].transform("max")
        df = df[df["epoch"] == last]
    else:
        df = df[df["epoch"] == epoch]
        if df.empty:
            raise ValueError(f"summarize: no rows at epoch {epoch}")
    if tasks is None and "task" in df.columns:
        tasks = df.drop_duplicates("metric").set_index("metric")["task"].to_dict()
    wide = df.pivot_table(index=["method", "seed"], columns="metric", values="value", aggfunc="mean")
    wide = wide.reindex(columns=names)
    if wide.isna().any().any():
        holes = wide[wide.isna().any(axis=1)]
        raise ValueError(f"summarize: runs miss metrics: "
                         f"{[(i, [c for c in names if np.isnan(holes.loc[i, c])]) for i in holes.index]}")
    per_seed_dm = pd.Series(delta_m(wide.to_numpy(), baseline, higher_is_better, average, tasks, sign)
                            .reshape(-1), index=wide.index)
    g = wide.groupby(level="method", sort=False)
    mean, sd = g.mean(), g.std(ddof=1)
    out = pd.DataFrame(index=mean.index)
    for n in names:
        out[n] = mean[n]
        out[f"{n} sd"] = sd[n]
    dm = per_seed_dm.groupby(level="method", sort=False)
    out["delta_m"] = dm.mean()
    out["delta_m sd"] = dm.std(ddof=1)
    out["var_delta_m"] = np.atleast_1d(var_delta_m(mean[names].to_numpy(), baseline, higher_is_better,
                                                   var_over, tasks))
    ranked = mean.loc[[m for m in mean.index if m not in set(rank_exclude)], names]
    out["mr"] = mean_rank(ranked, higher_is_better) if len(ranked) else np.nan  # excluded rows: NaN
    out["n_seeds"] = g.size()
    out.attrs.update({"split": split, "epoch": epoch, "average": average, "sign": sign, "var_over": var_over})
    return out
