"""Where a set of results came from: commit, command, packages, CPU, wall time of every run.

Reference runs are committed with the code that produced them. :func:`record_run` keeps
``<out_dir>/provenance.json`` up to date after every finished run (written atomically): the environment
of each invocation that added runs (commit and whether the training code had uncommitted changes, the
exact command, Python / package versions, CPU model, torch threads) and, per (method, seed), its wall
time and the invocation it belongs to. :func:`training_code_changed` tells a chapter whether the code
that trains has changed since the commit a set of results records.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["TRAINING_CODE", "PROVENANCE", "environment", "record_run", "load", "training_code_changed",
           "changed_training_files", "training_paths", "same_machine_kind", "git"]

#: the file in an out_dir that records where its runs came from
PROVENANCE = "provenance.json"

#: paths (relative to the repository root) whose changes can change a training run's numbers; the
#: report, statistics, plotting and theory modules are not among them
TRAINING_CODE: tuple[str, ...] = (
    "mtl_src/methods", "mtl_src/benchmarks", "mtl_src/train.py", "mtl_src/autodiff.py", "mtl_src/nn.py",
    "mtl_src/solvers.py", "mtl_src/linalg.py", "mtl_src/data.py", "mtl_src/experiment.py", "mtl_src/metrics.py",
)

#: the environment variable the runner (``python -m mtl_src.run``) sets to its own command line
COMMAND_ENV = "MTL_COMPANION_COMMAND"

_PACKAGES = ("torch", "numpy", "scipy", "pandas", "torch_geometric", "rdkit", "mlxtend", "qm9pack")
ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> str | None:
    """Output of ``git args`` in the repository (None when git or the repository is unavailable)."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> str | None:
    """A short hash of the CPU's instruction-set flags (kernels, hence float rounding, depend on them)."""
    import hashlib

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                return hashlib.sha256(flags.encode()).hexdigest()[:16]
    except OSError:
        pass
    return None


def same_machine_kind(env: dict[str, Any]) -> bool:
    """Is this machine's CPU the one ``env`` (a recorded invocation) ran on: same model name and same
    instruction-set flags (False when either was not recorded)?"""
    return bool(env.get("cpu_flags")) and env.get("cpu") == _cpu_model() and env.get("cpu_flags") == _cpu_flags()


def environment() -> dict[str, Any]:
    """This process's commit, training-code state, command, versions and machine."""
    import torch

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    status = git("status", "--porcelain", "--", *TRAINING_CODE)
    return {
        "commit": git("rev-parse", "HEAD"),
        "training_code_dirty": None if status is None else bool(status),
        "command": os.environ.get(COMMAND_ENV) or shlex.join([sys.executable, *sys.argv]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": versions,
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads_per_run": 1,
    }


def load(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The provenance of ``out_dir`` (empty structure when there is none)."""
    path = Path(out_dir) / PROVENANCE
    if not path.exists():
        return {"invocations": [], "runs": {}}
    return json.loads(path.read_text())


def _write(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def record_run(out_dir: str | os.PathLike, spec: str, seed: int, wall_s: float, env: dict[str, Any]) -> None:
    """Add run (spec, seed) with its wall time to ``<out_dir>/provenance.json``, under invocation ``env``."""
    prov = load(out_dir)
    if not prov["invocations"] or prov["invocations"][-1] != env:
        prov["invocations"].append(env)
    prov["runs"][f"{spec}|{seed}"] = {"wall_s": round(float(wall_s), 2), "invocation": len(prov["invocations"]) - 1,
                                      "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write(prov, Path(out_dir) / PROVENANCE)


def training_paths(benchmark: str | None = None) -> list[str]:
    """The paths whose changes can change the runs of ``benchmark``: :data:`TRAINING_CODE`, less the
    modules of the *other* benchmarks that ``benchmark``'s own module does not import (a change to the
    QM9 loader does not make MultiMNIST's runs stale). None: all of :data:`TRAINING_CODE`."""
    if benchmark is None:
        return list(TRAINING_CODE)
    folder = ROOT / "mtl_src" / "benchmarks"
    own = folder / f"{benchmark}.py"
    text = own.read_text() if own.exists() else ""
    others = []
    for path in sorted(folder.glob("*.py")):
        stem = path.stem
        if stem.startswith("_") or stem in ("base", "__init__", benchmark):
            continue
        if f"from .{stem} import" in text or f"from . import {stem}" in text:
            continue
        others.append(f":(exclude)mtl_src/benchmarks/{path.name}")
    return [*TRAINING_CODE, *others]


def changed_training_files(commit: str | None, benchmark: str | None = None) -> list[str] | None:
    """The training-code files (:func:`training_paths`) that differ between ``commit`` and this checkout,
    committed or not (None when it cannot be told: no git, unknown commit)."""
    if not commit:
        return None
    out = git("diff", "--name-only", commit, "--", *training_paths(benchmark))
    return None if out is None else [line for line in out.splitlines() if line.strip()]


def training_code_changed(commit: str | None, benchmark: str | None = None) -> bool | None:
    """Has the training code of ``benchmark`` (:func:`training_paths`) changed between ``commit`` and
    this checkout (committed or not)? None when it cannot be told (no git, unknown commit)."""
    files = changed_training_files(commit, benchmark)
    return None if files is None else bool(files)
