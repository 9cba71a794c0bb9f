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
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import methods as _methods
from . import provenance as _provenance
from .data import config_key, data_root
from .train import RESULT_COLUMNS, train

__all__ = ["COMPARISON", "PI_VARIANTS", "PROFILE_SEEDS", "comparison_methods", "stl_baseline", "run", "write_csv", "read_results",
           "Study"]

#: Every method of the four papers' comparison tables (single-task learning is the Delta m baseline).
COMPARISON: tuple[str, ...] = (
    "ls", "si", "rlw", "dwa", "uw", "dtp", "gradnorm", "famo",              # loss weightings
    "mgda", "mgda_ub", "pcgrad", "graddrop", "cagrad", "imtl_g", "nash_mtl",  # gradient aggregators
    "moco", "fairgrad", "aligned_mtl", "aligned_mtl_ub", "pivrg",
    "connection_strength", "stgu",                                           # update strategies
)
#: PIVRG Table 5: PIVRG's performance-informed weights added to other methods.
PI_VARIANTS: tuple[str, ...] = ("pi:ls", "pi:rlw", "pi:dwa", "pi:uw", "pi:mgda", "pi:nash_mtl")
#: Controls that are not methods of the papers: LS with K optimiser steps per batch, the step-count
#: control of the sequential methods (Connection Strength Phase 1, STGU).
CONTROLS: tuple[str, ...] = ("ls_steps",)


def comparison_methods(pi: bool = False, controls: bool = False) -> list[str]:
    """The registered methods of :data:`COMPARISON` (and of :data:`PI_VARIANTS` with ``pi=True``, and the
    :data:`CONTROLS` with ``controls=True``)."""
    have = set(_methods.available())
    names = [m for m in COMPARISON if m in have]
    if pi and "pi" in have:
        names += [m for m in PI_VARIANTS if _methods.parse_spec(m)[1]["base"] in have]
    if controls:
        names += [m for m in CONTROLS if m in have]
    return names


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a CSV atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".csv.tmp")
    os.close(fd)
    try:  # a .gz path is written gzip-compressed (with a fixed mtime, so equal content gives equal bytes)
        frame.to_csv(tmp, index=False,
                     compression={"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a tidy results CSV back exactly as written (empty task names stay empty strings)."""
    frame = pd.read_csv(path, dtype={"task": str, "metric": str, "method": str, "split": str})
    frame["task"] = frame["task"].fillna("")
    return frame


def _training(bench, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(bench.training())
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def _train_job(bench_spec: tuple[str, dict[str, Any]], baseline: dict[str, float] | None, spec: str, seed: int,
               kwargs: dict[str, Any]) -> pd.DataFrame:
    """One run in a worker process: rebuild the benchmark (from its cache), train, return the rows."""
    import torch

    from . import benchmarks

    torch.set_num_threads(1)
    bench = benchmarks.make(bench_spec[0], **bench_spec[1])
    bench.stl_baseline = baseline
    return _timed_train(bench, spec, seed, kwargs)


def _timed_train(bench, spec: str, seed: int, kwargs: dict[str, Any]) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    rows = train(bench, spec, seed=seed, **kwargs).frame()
    return rows, time.perf_counter() - t0


def _execute(bench, jobs: list[tuple[str, int, dict[str, Any]]], workers: int):
    """Yield ``(rows, wall seconds)`` of every (spec, seed, train kwargs) job, in job order.

    ``workers > 1`` trains in that many processes (CPU only; each with one torch thread, so two runs
    on two cores do not fight over threads); the benchmark is rebuilt in each worker from
    ``bench.spec`` (set by :func:`mtl_src.benchmarks.make`) and its cached data.
    """
    spec_of = getattr(bench, "spec", None)
    if workers <= 1 or spec_of is None or len(jobs) <= 1:
        for spec, seed, kwargs in jobs:
            yield _timed_train(bench, spec, seed, kwargs)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    bench.datasets()  # build / cache the data once, before the workers read it
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_train_job, spec_of, bench.stl_baseline, spec, seed, kwargs)
                   for spec, seed, kwargs in jobs]
        for f in futures:
            yield f.result()


def default_workers(device: str) -> int:
    """Parallel runs: one per core on the CPU (at most 4), one on a GPU."""
    return 1 if str(device).startswith("cuda") else max(1, min(4, os.cpu_count() or 1))


def stl_baseline(
    bench,
    *,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    cache: bool = True,
    progress: bool = False,
    split: str = "test",
    workers: int = 1,
    provenance_dir: str | os.PathLike | None = None,
    **train_overrides: Any,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Single-task baseline of every metric, and the STL runs' tidy rows.

    Task k's metrics come from the model trained on task k alone (``stl:k``), at the last evaluation,
    averaged over ``seeds``. The result is cached in ``<data_root>/stl/`` under a key of the
    benchmark's configuration, the training configuration and the seeds (a changed setting never
    reuses a stale baseline). Returns ``(baseline, rows)``; rows have method ``"stl"``.
    ``provenance_dir``: record the wall time of every STL run trained here in its provenance.json.
    """
    cfg = _training(bench, train_overrides)
    key = config_key({"bench": bench.config(), "train": cfg, "seeds": list(seeds), "split": split})
    path = data_root(getattr(bench, "data_root", None)) / "stl" / f"{bench.name}-{key}.csv"
    if cache and path.exists():
        rows = read_results(path)
    else:
        kwargs = {"device": device, "progress": progress, "eval_splits": (split,), **cfg}
        ck_dir = path.parent / f"{path.stem}.checkpoints" if cache else None  # resumable long STL runs
        jobs = [(f"stl:{k}", seed, {**kwargs, **_checkpointing(ck_dir, f"stl:{k}", seed)})
                for k in range(bench.K) for seed in seeds]
        saved, bench.stl_baseline = bench.stl_baseline, None
        env = _provenance.environment() if provenance_dir is not None else None
        parts = []
        try:
            for (spec, seed, _), (part, wall) in zip(jobs, _execute(bench, jobs, workers)):
                parts.append(part)
                if provenance_dir is not None:
                    _provenance.record_run(provenance_dir, spec, seed, wall, env)
            rows = pd.concat(parts, ignore_index=True)
        finally:
            bench.stl_baseline = saved
        if cache:
            write_csv(rows, path)
            if ck_dir is not None:
                shutil.rmtree(ck_dir, ignore_errors=True)
    stl_rows = rows[rows.split == split].copy()
    stl_rows = stl_rows[[r.task == bench.tasks[int(r.method.split(":")[1])] for r in stl_rows.itertuples()]]
    stl_rows["method"] = "stl"
    return baseline_from_stl(stl_rows, bench, split), stl_rows


def baseline_from_stl(stl_rows: pd.DataFrame, bench, split: str = "test") -> dict[str, float]:
    """Delta m's single-task value of every metric from the ``stl`` rows (each task's own metrics of its
    single-task model): the mean over seeds at the last evaluated epoch."""
    last = stl_rows[stl_rows.split == split]
    last = last[last.epoch == last.epoch.max()]
    baseline: dict[str, float] = {}
    for metric, values in last.groupby("metric").value:
        baseline[metric] = float(values.mean())
    missing = [mt.name for mt in bench.metrics if mt.name not in baseline]
    if missing:
        raise RuntimeError(f"stl_baseline: no single-task value for metrics {missing} of {bench.name!r}")
    return {mt.name: baseline[mt.name] for mt in bench.metrics}


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
    workers: int = 1,
    **train_overrides: Any,
) -> pd.DataFrame:
    """Train every method spec x seed on ``bench``; return (and write) the tidy results.

    ``methods``: registered names or specs (``"pi:nash_mtl"``); every name is checked before anything
    is trained. ``hyperparameters``: per-method overrides, e.g. ``{"cagrad": {"c": 0.5}}``.
    ``train_overrides`` (epochs, lr, batch_size, ...) replace the benchmark's profile defaults.
    With ``out_dir``, ``<out_dir>/results.csv`` is rewritten atomically after every run, and with
    ``resume`` the (method, seed) pairs already in it are not trained again. ``workers > 1`` trains
    that many runs at once in separate processes (same results: every run is seeded on its own).
    """
    specs = list(methods)
    hyperparameters = dict(hyperparameters or {})
    for spec in specs:  # fail before training anything
        _methods.make(spec, **hyperparameters.get(spec, {}))
    cfg = _training(bench, train_overrides)
    csv = results_path(out_dir) if out_dir is not None else None
    frame = pd.DataFrame(columns=RESULT_COLUMNS)
    if csv is not None:
        check_run_config(out_dir, run_config(bench, cfg, hyperparameters))
    if csv is not None and resume and csv.exists():
        frame = read_results(csv)
    done = set(zip(frame.method, frame.seed)) if len(frame) else set()
    jobs = [(spec, seed, {"device": device, "progress": progress, **cfg, **hyperparameters.get(spec, {}),
                          **_checkpointing(out_dir, spec, seed)})
            for spec in specs for seed in seeds if (spec, seed) not in done]
    env = _provenance.environment() if csv is not None and jobs else None
    for (spec, seed, kwargs), (rows, wall) in zip(jobs, _execute(bench, jobs, workers)):
        frame = pd.concat([frame, rows], ignore_index=True) if len(frame) else rows
        if csv is not None:
            write_csv(frame, csv)
            _provenance.record_run(out_dir, spec, seed, wall, env)
        if kwargs.get("checkpoint"):  # the run's rows are safe in the CSV: its checkpoint is no longer needed
            Path(kwargs["checkpoint"]).unlink(missing_ok=True)
    return frame


def results_path(out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/results.csv``, or ``results.csv.gz`` where the folder holds that (committed reference
    runs are compressed; a resumed run keeps adding to the compressed file)."""
    gz = Path(out_dir) / "results.csv.gz"
    return gz if gz.exists() else Path(out_dir) / "results.csv"


def _checkpointing(out_dir: str | os.PathLike | None, spec: str, seed: int) -> dict[str, Any]:
    """Train kwargs that checkpoint a run under ``<out_dir>/checkpoints/`` after every epoch and resume an
    interrupted one from there (the trainer's checkpoint + resume; nothing without ``out_dir``)."""
    if out_dir is None:
        return {}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
    return {"checkpoint": str(Path(out_dir) / "checkpoints" / f"{safe}-seed{seed}.pt"), "resume": True}


#: the file in an out_dir that records the configuration its results.csv was trained with
RUN_CONFIG = "run_config.json"


def run_config(bench, train_cfg: dict[str, Any], hyperparameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """What determines the runs of an out_dir: the benchmark's configuration, the training settings,
    per-method hyperparameters and the Delta m baseline the methods get as feedback (PIVRG, PI-*)."""
    base = getattr(bench, "stl_baseline", None)
    return json.loads(json.dumps({
        "bench": bench.config(), "train": dict(train_cfg), "hyperparameters": dict(hyperparameters or {}),
        "stl_baseline": None if base is None else {k: round(float(v), 12) for k, v in sorted(base.items())},
    }, sort_keys=True, default=str))


def check_run_config(out_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Record ``config`` in ``<out_dir>/run_config.json``, or refuse when the folder holds results of another one.

    Resuming skips the (method, seed) pairs already in results.csv; mixing runs of two configurations
    in one table would be silent nonsense, so a different configuration raises, naming what differs."""
    out = Path(out_dir)
    path = out / RUN_CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise ValueError(
                f"{out} holds results of another configuration ({detail}); use another out_dir "
                f"(or delete {out}) instead of mixing configurations in one results.csv"
            )
        return
    if results_path(out).exists():
        raise ValueError(f"{out}/results.csv has no {RUN_CONFIG}, so its configuration is unknown; "
                         "use another out_dir (or delete the folder)")
    save_json(config, path)


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


#: The benchmark an experiment chapter runs when its ``benchmark`` parameter is None, per profile (the
#: embedded benchmark in "fast", the full-scale dataset in "paper"); chapters not listed name theirs.
CHAPTER_BENCHMARKS: dict[str, dict[str, str]] = {
    "01_multimnist": {"fast": "multimnist", "reference": "multimnist", "paper": "multimnist_full"},
    "03_synthscenes": {"fast": "synthscenes", "reference": "synthscenes", "paper": "nyuv2"},
}


def default_benchmark(chapter: str, profile: str) -> str:
    """The benchmark of experiment chapter ``chapter`` (its notebook's stem) in ``profile``."""
    try:
        return CHAPTER_BENCHMARKS[chapter][profile]
    except KeyError:
        raise ValueError(f"no default benchmark for chapter {chapter!r} and profile {profile!r}; "
                         f"pass -p benchmark NAME (known defaults: {CHAPTER_BENCHMARKS})") from None


#: Seeds of each profile when a chapter does not name them (the papers report 3 seeds; the reference
#: runs 5, paired: seed s gives every method the same initialisation and the same batches).
PROFILE_SEEDS: dict[str, list[int]] = {"fast": [0, 1], "reference": [0, 1, 2, 3, 4], "paper": [0, 1, 2]}

#: Method hyperparameters a profile changes. "fast" runs have fewer batches (about 94 on MultiMNIST) than
#: STGU's warm-up of 100 singleton batches (the authors' configs), so STGU would never form a group there:
#: the pipeline check shortens the warm-up. The reference and paper profiles keep the authors' 100.
PROFILE_HYPERPARAMETERS: dict[str, dict[str, dict[str, Any]]] = {"fast": {"stgu": {"warmup": 10}}}


@dataclass
class Study:
    """One benchmark chapter's experiment: the benchmark, its single-task baseline and every run.

    >>> study = Study.prepare("multimnist", profile="fast")          # doctest: +SKIP
    >>> study.train_all(); study.table()                              # doctest: +SKIP
    """

    bench: Any
    methods: list[str]
    seeds: list[int]
    device: str
    out_dir: Path
    overrides: dict[str, Any]
    baseline: dict[str, float] | None = None
    stl_rows: pd.DataFrame | None = None
    results: pd.DataFrame | None = None
    workers: int = 1
    #: where Delta m's single-task values come from: "trained" (the ``stl`` runs) or "published"
    baseline_source: str = "trained"
    #: per-method hyperparameters of the profile (:data:`PROFILE_HYPERPARAMETERS`), keyed by method spec
    hyperparameters: dict[str, dict[str, Any]] | None = None
    profile: str = "fast"

    @classmethod
    def prepare(cls, benchmark: str, *, profile: str = "fast", methods: str | Sequence[str] = "all",
                seeds: Sequence[int] | None = None, epochs: int | None = None, device: str = "cpu",
                data_root: str | None = None, out_dir: str | os.PathLike | None = None,
                workers: int | None = None, baseline: str | None = None, **options: Any) -> "Study":
        """Validate everything (benchmark, profile, methods, seeds, epochs, device) and build the benchmark.

        ``workers``: runs trained at once (default: one per CPU core on the CPU, 1 on a GPU).
        ``seeds``: a list of non-negative ints (or an int n, meaning ``range(n)``); ``epochs`` >= 1.
        ``baseline``: Delta m against ``"trained"`` single-task runs (the ``stl`` method, trained and
        cached here) or the ``"published"`` single-task values of the papers' public code
        (:func:`published_baseline`: NYUv2, Cityscapes, QM9 at full scale; no STL runs are trained).
        None: "published" in the paper profile where the benchmark has them, else "trained"."""
        from . import benchmarks
        from .train import resolve_device

        if profile not in PROFILE_SEEDS:
            raise ValueError(f"unknown profile {profile!r}; use one of {sorted(PROFILE_SEEDS)}")
        if baseline not in (None, "trained", "published"):
            raise ValueError(f"baseline must be 'trained', 'published' or None (the profile's default), got {baseline!r}")
        seeds = check_seeds(seeds)
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"epochs must be an integer >= 1 (or None: the profile's), got {epochs!r}")
        resolve_device(device)
        names = comparison_methods(pi=True, controls=True) if methods == "all" else [methods] if isinstance(methods, str) else list(methods)
        for spec in names:
            _methods.make(spec)
        bench = benchmarks.make(benchmark, profile=profile, data_root=data_root, **options)
        published = published_baseline(bench)
        if baseline is None:
            baseline = "published" if profile == "paper" and published is not None else "trained"
        if baseline == "published" and published is None:
            raise ValueError(f"{benchmark!r} has no published single-task baseline (its module's STL_BASELINE is None); "
                             "use baseline='trained'")
        if out_dir is None:
            out_dir = tempfile.mkdtemp(prefix=f"mtl-{benchmark}-")
        hp = {m: dict(v) for m, v in PROFILE_HYPERPARAMETERS.get(profile, {}).items() if m in names}
        return cls(bench, names, list(PROFILE_SEEDS[profile] if seeds is None else seeds), device,
                   Path(out_dir), {"epochs": epochs},
                   workers=default_workers(device) if workers is None else int(workers), baseline_source=baseline,
                   hyperparameters=hp, profile=profile)

    @property
    def csv(self) -> Path:
        return results_path(self.out_dir)

    def train_baseline(self, progress: bool = False) -> dict[str, float]:
        """The benchmark's Delta m baseline: single-task learning of every task (trained, cached; its
        rows become the table's "stl" row) or, with ``baseline_source="published"``, the public
        code's values (nothing trained, no "stl" row)."""
        saved = self.out_dir / "stl.csv"
        if self.baseline_source == "published":
            self.baseline, self.stl_rows = dict(published_baseline(self.bench)), None
        elif saved.exists() and (self.out_dir / RUN_CONFIG).exists() and \
                sorted(read_results(saved).seed.unique().tolist()) == sorted(self.seeds):
            # a resumed out_dir (e.g. committed reference runs in a fresh checkout): its own STL runs are the
            # baseline its results.csv was trained against (run_config.json records it and is checked)
            self.stl_rows = read_results(saved)
            self.baseline = baseline_from_stl(self.stl_rows, self.bench)
        else:
            self.baseline, self.stl_rows = stl_baseline(self.bench, seeds=self.seeds, device=self.device,
                                                        progress=progress, workers=self.workers,
                                                        provenance_dir=self.out_dir, **self.overrides)
            write_csv(self.stl_rows, saved)
        self.bench.stl_baseline = self.baseline
        return self.baseline

    def train_all(self, progress: bool = False) -> pd.DataFrame:
        """Every method x seed (finished runs in ``results.csv`` are kept and skipped)."""
        if self.baseline is None:
            self.train_baseline(progress)
        run(self.bench, self.methods, seeds=self.seeds, device=self.device, out_dir=self.out_dir,
            progress=progress, workers=self.workers, hyperparameters=self.hyperparameters, **self.overrides)
        self.results = read_results(self.csv)  # the tables are built from the CSV on disk
        return self.results

    def table(self, average: str = "metric") -> pd.DataFrame:
        from . import report

        if self.results is None or self.baseline is None:
            raise RuntimeError("Study.table: call train_all() first")
        return report.results_table(self.results, self.bench, self.baseline, stl_rows=self.stl_rows,
                                    average=average)

    def table_problems(self, table: pd.DataFrame) -> list[str]:
        """What is wrong with a results table (empty when nothing): every method (and "stl" when the
        baseline was trained) has a row with finite metrics, Delta m and Var[Delta m_i]; the methods have
        a finite MR and STL none (it is not ranked); every row averages every seed; STL measured against
        itself has Delta m = 0."""
        problems = []
        expected = set(self.methods) | ({"stl"} if self.stl_rows is not None else set())
        if set(table.index) != expected:
            problems.append(f"rows differ from the runs: {sorted(expected ^ set(table.index))}")
        cols = [m.name for m in self.bench.metrics] + ["delta_m", "var_delta_m"]
        bad = table.index[~np.isfinite(table[cols].to_numpy(float)).all(1)].tolist()
        if bad:
            problems.append(f"non-finite metrics / Delta m / Var for {bad}")
        ranked = table.drop(index=["stl"], errors="ignore")
        if not np.isfinite(ranked["mr"].to_numpy(float)).all() or ("stl" in table.index and np.isfinite(table.loc["stl", "mr"])):
            problems.append("MR must be finite for the methods and absent for STL")
        if not (table["n_seeds"] == len(self.seeds)).all():
            problems.append(f"rows with fewer than {len(self.seeds)} seeds: {table.index[table.n_seeds != len(self.seeds)].tolist()}")
        if "stl" in table.index and abs(table.loc["stl", "delta_m"]) > 1e-9:
            problems.append(f"STL against itself has Delta m {table.loc['stl', 'delta_m']}, not 0")
        return problems

    def loss_falls(self, method: str = "ls", metrics: Sequence[str] | None = None) -> tuple[bool | None, pd.Series]:
        """Did ``method``'s training loss fall? The summed per-task training loss per epoch (mean over
        seeds; ``metrics``: which ``loss_*`` to sum, default all) and whether its last epoch is below its
        first: True / False, or None when the runs have one epoch only (the trainer records epoch means,
        so one epoch gives nothing to compare; the check then does not apply)."""
        r = self.results
        if r is None:
            raise RuntimeError("Study.loss_falls: call train_all() first")
        rows = r[(r.method == method) & (r.split == "train") & r.metric.str.startswith("loss_")]
        if metrics is not None:
            rows = rows[rows.metric.isin(list(metrics))]
        if rows.empty:
            raise ValueError(f"Study.loss_falls: no training losses of {method!r}")
        curve = rows.groupby(["epoch", "seed"]).value.sum().groupby("epoch").mean().rename(f"{method} training loss")
        return (None if len(curve) < 2 else bool(curve.iloc[-1] < curve.iloc[0])), curve


def check_seeds(seeds: Any) -> list[int] | None:
    """Seeds as a list of distinct non-negative ints; an int n means ``range(n)``; None stays None."""
    if seeds is None:
        return None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds: an integer n means seeds 0..n-1 and must be >= 1, got {seeds}")
        return list(range(seeds))
    if isinstance(seeds, (list, tuple)) and seeds and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds) and len(set(seeds)) == len(seeds):
        return list(seeds)
    raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers (e.g. [0, 1, 2]) or an "
                     f"integer n (= range(n)), got {seeds!r}")


def published_baseline(bench) -> dict[str, float] | None:
    """The single-task values the papers' public code measures Delta m against, for ``bench``, or None.

    Read from the benchmark module's ``STL_BASELINE`` (NYUv2, Cityscapes, QM9). They were measured on
    the full-scale data with the published networks, so :class:`Study` uses them by default only in the
    "paper" profile (elsewhere only when asked: a subsample or a narrower network is then compared
    with another network's numbers)."""
    import sys

    table = getattr(sys.modules.get(type(bench).__module__), "STL_BASELINE", None)
    if table is None:
        return None
    names = [m.name for m in bench.metrics]
    if set(table) != set(names):
        raise RuntimeError(f"{bench.name}: STL_BASELINE has metrics {sorted(table)}, the benchmark {sorted(names)}")
    return {n: float(table[n]) for n in names}
