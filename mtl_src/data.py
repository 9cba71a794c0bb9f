"""Where data lives, and atomic caching of generated or preprocessed arrays.

The data root is, in order: the ``data_root`` argument, the ``MTL_COMPANION_DATA`` environment
variable, ``~/.cache/mtl-companion``. Embedded benchmarks cache what they generate there (keyed by
their configuration, so a cache can never be stale); full-scale datasets prepared by
``data_scripts/<name>.py`` live in ``<data_root>/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["data_root", "config_key", "cached_arrays", "MissingDataError"]


class MissingDataError(FileNotFoundError):
    """A dataset file is missing or corrupt; the message names the file and the script that fixes it."""


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data root (see module docstring), created if missing."""
    root = Path(path or os.environ.get("MTL_COMPANION_DATA") or Path.home() / ".cache" / "mtl-companion")
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def config_key(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load ``path`` (.npz) or build the arrays, save them atomically (a crash leaves no partial file)."""
    path = Path(path)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError):
            path.unlink()  # a corrupt cache is rebuilt, never trusted
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return arrays
