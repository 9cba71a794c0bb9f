"""The committed reference runs: load them, say where they came from, re-train a sample of them.

    python -m mtl_src.run notebooks/experiments/<chapter>.md --profile reference
        ->  results/reference/<benchmark>/{results.csv.gz, stl.csv, run_config.json, provenance.json}
        ->  :func:`load`  ->  :mod:`mtl_src.evidence` (intervals, paired tests)  ->  the chapter

The experiment chapters' tables, figures and verdicts come from these files, produced by the runner in
the ``reference`` profile (every method, 5 paired seeds, trained until LS converged) and committed with
the code. :meth:`ReferenceRuns.status` says which commit produced them and whether the training code
(:data:`mtl_src.provenance.TRAINING_CODE`) has changed since; :func:`reproduce` re-trains the first
epochs of a few (method, seed) runs and compares them with the committed rows (CI does this).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import provenance as _provenance

__all__ = ["ROOT", "ReferenceRuns", "load", "load_folder", "from_study", "available", "compress", "reproduce"]

#: the committed reference runs, one folder per benchmark
ROOT = _provenance.ROOT / "results" / "reference"


def _results_file(folder: Path) -> Path | None:
    for name in ("results.csv.gz", "results.csv"):
        if (folder / name).exists():
            return folder / name
    return None


def compress(folder: str | os.PathLike) -> Path:
    """Replace ``results.csv`` by ``results.csv.gz`` (what is committed: tracked files stay under 5 MB).
    The runner resumes from either."""
    folder = Path(folder)
    src = folder / "results.csv"
    dst = folder / "results.csv.gz"
    if not src.exists():
        if dst.exists():
            return dst
        raise FileNotFoundError(f"{folder} holds no results.csv to compress")
    tmp = dst.with_suffix(".gz.tmp")
    with open(src, "rb") as fi, gzip.GzipFile(tmp, "wb", mtime=0) as fo:
        shutil.copyfileobj(fi, fo)
    os.replace(tmp, dst)
    src.unlink()
    return dst


@dataclass
class ReferenceRuns:
    """One benchmark's committed reference runs."""

    name: str
    folder: Path
    results: pd.DataFrame
    stl_rows: pd.DataFrame
    run_config: dict[str, Any]
    provenance: dict[str, Any]
    bench: Any = None
    baseline: dict[str, float] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.results.method))

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.results.seed.unique())

    @property
    def commits(self) -> list[str]:
        """The commits of the invocations that trained these runs (oldest first, distinct)."""
        return list(dict.fromkeys(i.get("commit") or "unknown" for i in self.provenance.get("invocations", [])))

    def complete(self) -> dict[str, list[int]]:
        """Missing seeds per method (empty when every method has every seed)."""
        have = self.results.groupby("method").seed.unique()
        seeds = set(self.seeds)
        return {m: sorted(seeds - set(map(int, s))) for m, s in have.items() if seeds - set(map(int, s))}

    def wall_time(self) -> dict[str, float]:
        """Wall seconds: ``sum`` over runs (core-seconds, one torch thread each), ``methods`` and ``stl``
        sums, and ``elapsed`` from the first invocation's start to the last run's end (per invocation,
        summed: the time a user waits with the runner's default of one run per core)."""
        runs = self.provenance.get("runs", {})
        stl = sum(r["wall_s"] for k, r in runs.items() if k.startswith("stl:"))
        total = sum(r["wall_s"] for r in runs.values())
        from datetime import datetime

        elapsed = 0.0
        inv = self.provenance.get("invocations", [])
        for i, env in enumerate(inv):
            ends = [datetime.fromisoformat(r["finished"]) for r in runs.values() if r["invocation"] == i]
            if ends:
                elapsed += (max(ends) - datetime.fromisoformat(env["started"])).total_seconds()
        return {"sum": total, "methods": total - stl, "stl": stl, "elapsed": elapsed}

    def training_code_changed(self) -> bool | None:
        """True when the training code differs from that of any commit the runs record (None: unknown)."""
        flags = [_provenance.training_code_changed(c if c != "unknown" else None, self.name) for c in self.commits]
        dirty = any(i.get("training_code_dirty") for i in self.provenance.get("invocations", []))
        if dirty:
            return True
        if any(f is None for f in flags) or not flags:
            return None
        return any(flags)

    def status(self) -> str:
        """A sentence (markdown) on where the runs came from and whether they are current."""
        head = _provenance.git("rev-parse", "--short=10", "HEAD") or "unknown"
        commits = ", ".join(c[:10] for c in self.commits)
        w = self.wall_time()
        changed = self.training_code_changed()
        if changed is None:
            state = "**whether the training code changed since cannot be told here** (no git history)"
        elif changed:
            files = sorted({f for c in self.commits for f in (_provenance.changed_training_files(c, self.name) or [])})
            state = ("**the training code has changed since these runs** (or they were trained from uncommitted "
                     f"code; files: {', '.join(f'`{f}`' for f in files) or 'uncommitted changes'}): the numbers below "
                     "are those of the older code. The reproducibility sample at the end of this page re-trains "
                     "some of them with today's code; re-run the reference profile to refresh them all")
        else:
            state = "the training code is unchanged since (`git diff` of the training modules is empty)"
        return (f"Reference runs of `{self.name}`: {len(self.methods)} methods x seeds {self.seeds}, trained at "
                f"commit {commits}; this page was built at commit {head}: {state}. Wall time "
                f"{w['elapsed'] / 3600:.2f} h on {self.provenance['invocations'][0].get('cpu', '?')} "
                f"({w['sum'] / 3600:.2f} core-hours over {len(self.provenance.get('runs', {}))} runs).")


def available(root: str | os.PathLike | None = None) -> list[str]:
    """Benchmarks with committed reference runs."""
    root = Path(root) if root is not None else ROOT
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _results_file(p)) if root.exists() else []


def load(name: str, root: str | os.PathLike | None = None, *, build: bool = True) -> ReferenceRuns | None:
    """The committed reference runs of benchmark ``name`` (None when there are none). ``build``: also
    build the benchmark in the reference profile and check that its configuration is the one recorded."""
    return load_folder((Path(root) if root is not None else ROOT) / name, name, build=build)


def from_study(study) -> ReferenceRuns:
    """The runs of a :class:`mtl_src.experiment.Study` (after ``train_all``) in the same form, so that a
    chapter run in another profile analyses its own runs the same way."""
    ref = load_folder(study.out_dir, study.bench.name, build=False)
    if ref is None:
        raise RuntimeError(f"{study.out_dir} holds no results; call study.train_all() first")
    ref.bench, ref.baseline = study.bench, dict(study.baseline)
    return ref


def load_folder(folder: str | os.PathLike, name: str, *, build: bool = True) -> ReferenceRuns | None:
    """Runs saved by the runner in ``folder`` (results, stl.csv, run_config.json, provenance.json)."""
    from .experiment import RUN_CONFIG, baseline_from_stl, read_results

    folder = Path(folder)
    path = _results_file(folder)
    if path is None:
        return None
    results = read_results(path)
    stl_rows = read_results(folder / "stl.csv") if (folder / "stl.csv").exists() else results.iloc[:0]
    config = json.loads((folder / RUN_CONFIG).read_text())
    prov = _provenance.load(folder)
    ref = ReferenceRuns(name, folder, results, stl_rows, config, prov)
    if build:
        from . import benchmarks

        bench = benchmarks.make(name, profile="reference")
        recorded = config["bench"]
        now = json.loads(json.dumps(bench.config(), sort_keys=True, default=str))
        if now != recorded:
            raise RuntimeError(f"{name}: the reference runs were trained on another benchmark configuration "
                               f"({recorded}) than the reference profile builds now ({now}); re-run the reference profile")
        ref.bench = bench
        ref.baseline = baseline_from_stl(stl_rows, bench)
        bench.stl_baseline = ref.baseline
    return ref


def reproduce(ref: ReferenceRuns, pairs: list[tuple[str, int]], epochs: int = 1) -> pd.DataFrame:
    """Re-train the first ``epochs`` of each (method, seed) in ``pairs`` with the recorded configuration
    and compare every metric of those epochs (test/val metrics and training losses) with the committed
    rows. Returns one row per compared value: method, seed, epoch, split, metric, committed, now, abs_diff."""
    import torch

    from .train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the runner's workers trained them (provenance: torch_threads_per_run)
    try:
        return _reproduce(ref, pairs, epochs, train)
    finally:
        torch.set_num_threads(threads)


def _reproduce(ref: ReferenceRuns, pairs: list[tuple[str, int]], epochs: int, train) -> pd.DataFrame:
    cfg = dict(ref.run_config["train"])
    if "eval_splits" in cfg:
        cfg["eval_splits"] = tuple(cfg["eval_splits"])
    hp = ref.run_config.get("hyperparameters", {})
    out = []
    for spec, seed in pairs:
        rows = train(ref.bench, spec, seed=seed, interrupt_after=epochs, **{**cfg, **hp.get(spec, {})}).frame()
        rows = rows[(rows.epoch <= epochs) & rows.split.isin(["train", "val", "test"])]
        old = ref.results[(ref.results.method == spec) & (ref.results.seed == seed) & (ref.results.epoch <= epochs)
                          & ref.results.split.isin(["train", "val", "test"])]
        key = ["epoch", "split", "metric", "task"]
        merged = old.merge(rows, on=key, suffixes=("_committed", "_now"), how="outer", indicator=True)
        if (merged["_merge"] != "both").any():
            raise RuntimeError(f"reproduce {spec} seed {seed}: the re-trained rows do not match the committed ones "
                               f"({merged[merged['_merge'] != 'both'][key].to_dict('records')[:5]})")
        for r in merged.itertuples():
            out.append({"method": spec, "seed": seed, "epoch": r.epoch, "split": r.split, "metric": r.metric,
                        "committed": r.value_committed, "now": r.value_now,
                        "abs_diff": abs(r.value_committed - r.value_now)})
    frame = pd.DataFrame(out)
    frame["rel_diff"] = frame.abs_diff / np.maximum(frame.committed.abs(), 1e-12)
    return frame
