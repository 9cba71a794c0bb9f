"""Experiments: every method x seed on one benchmark, single-task baselines, one tidy CSV.

    benchmark  ->  run(bench, methods, seeds)  ->  results.csv (tidy)  ->  metrics.summary  ->  chapter

:func:`run` trains each (method, seed) with :func:`mtl_src.train.train` and the benchmark's training
defaults for its profile, appends the run's rows to ``<out_dir>/results.csv`` (rewritten atomically
after every run, so an interrupted experiment keeps every finished run and ``resume=True`` skips them),
and returns the whole tidy frame. :func:`stl_baseline` trains single-task learning (``stl:k``) for
every task and caches the per-metric values that Delta m is measured against.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import methods as _methods
from .data import config_key, data_root
from .train import RESULT_COLUMNS, train

__all__ = ["COMPARISON", "PI_VARIANTS", "comparison_methods", "stl_baseline", "run", "write_csv"]

#: Every method of the four papers' comparison tables (single-task learning is the Delta m baseline).
COMPARISON: tuple[str, ...] = (
    "ls", "si", "rlw", "dwa", "uw", "dtp", "gradnorm", "famo",              # loss weightings
    "mgda", "mgda_ub", "pcgrad", "graddrop", "cagrad", "imtl_g", "nash_mtl",  # gradient aggregators
    "moco", "fairgrad", "aligned_mtl", "aligned_mtl_ub", "pivrg",
    "connection_strength", "stgu",                                           # update strategies
)
#: PIVRG Table 5: PIVRG's performance-informed weights added to other methods.
PI_VARIANTS: tuple[str, ...] = ("pi:ls", "pi:rlw", "pi:dwa", "pi:uw", "pi:mgda", "pi:nash_mtl")


def comparison_methods(pi: bool = False) -> list[str]:
    """The registered methods of :data:`COMPARISON` (and of :data:`PI_VARIANTS` with ``pi=True``)."""
    have = set(_methods.available())
    names = [m for m in COMPARISON if m in have]
    if pi and "pi" in have:
        names += [m for m in PI_VARIANTS if _methods.parse_spec(m)[1]["base"] in have]
    return names


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a CSV atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".csv.tmp")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _training(bench, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(bench.training())
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def stl_baseline(
    bench,
    *,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    cache: bool = True,
    progress: bool = False,
    split: str = "test",
    **train_overrides: Any,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Single-task baseline of every metric, and the STL runs' tidy rows.

    Task k's metrics come from the model trained on task k alone (``stl:k``), at the last evaluation,
    averaged over ``seeds``. The result is cached in ``<data_root>/stl/`` under a key of the
    benchmark's configuration, the training configuration and the seeds (a changed setting never
    reuses a stale baseline). Returns ``(baseline, rows)``; rows have method ``"stl"``.
    """
    cfg = _training(bench, train_overrides)
    key = config_key({"bench": bench.config(), "train": cfg, "seeds": list(seeds), "split": split})
    path = data_root(getattr(bench, "data_root", None)) / "stl" / f"{bench.name}-{key}.csv"
    if cache and path.exists():
        rows = pd.read_csv(path)
    else:
        frames = []
        for k in range(bench.K):
            for seed in seeds:
                res = train(bench, f"stl:{k}", seed=seed, device=device, progress=progress,
                            eval_splits=(split,), **cfg)
                frames.append(res.frame())
        rows = pd.concat(frames, ignore_index=True)
        if cache:
            write_csv(rows, path)
    last = rows[(rows.split == split)]
    last = last[last.epoch == last.epoch.max()]
    baseline: dict[str, float] = {}
    for k, task in enumerate(bench.tasks):
        own = last[(last.method == f"stl:{k}") & (last.task == task)]
        for metric, values in own.groupby("metric").value:
            baseline[metric] = float(values.mean())
    missing = [mt.name for mt in bench.metrics if mt.name not in baseline]
    if missing:
        raise RuntimeError(f"stl_baseline: no single-task value for metrics {missing} of {bench.name!r}")
    stl_rows = rows[rows.split == split].copy()
    stl_rows = stl_rows[[r.task == bench.tasks[int(r.method.split(":")[1])] for r in stl_rows.itertuples()]]
    stl_rows["method"] = "stl"
    return baseline, stl_rows


def run(
    bench,
    methods: Iterable[str],
    *,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = False,
    hyperparameters: dict[str, dict[str, Any]] | None = None,
    **train_overrides: Any,
) -> pd.DataFrame:
    """Train every method spec x seed on ``bench``; return (and write) the tidy results.

    ``methods``: registered names or specs (``"pi:nash_mtl"``); every name is checked before anything
    is trained. ``hyperparameters``: per-method overrides, e.g. ``{"cagrad": {"c": 0.5}}``.
    ``train_overrides`` (epochs, lr, batch_size, ...) replace the benchmark's profile defaults.
    With ``out_dir``, ``<out_dir>/results.csv`` is rewritten atomically after every run, and with
    ``resume`` the (method, seed) pairs already in it are not trained again.
    """
    specs = list(methods)
    hyperparameters = dict(hyperparameters or {})
    for spec in specs:  # fail before training anything
        _methods.make(spec, **hyperparameters.get(spec, {}))
    cfg = _training(bench, train_overrides)
    csv = Path(out_dir) / "results.csv" if out_dir is not None else None
    frame = pd.DataFrame(columns=RESULT_COLUMNS)
    if csv is not None and resume and csv.exists():
        frame = pd.read_csv(csv)
    done = set(zip(frame.method, frame.seed)) if len(frame) else set()
    for spec in specs:
        for seed in seeds:
            if (spec, seed) in done:
                continue
            res = train(bench, spec, seed=seed, device=device, progress=progress,
                        **cfg, **hyperparameters.get(spec, {}))
            frame = pd.concat([frame, res.frame()], ignore_index=True) if len(frame) else res.frame()
            if csv is not None:
                write_csv(frame, csv)
    return frame


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)
