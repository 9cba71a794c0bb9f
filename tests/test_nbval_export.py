"""The nbval export plugin: only a notebook whose every cell passed is published.

Runs pytest + nbval in a subprocess on two tiny notebooks (one good, one with a
failing cell) exactly as the Makefile does, and checks what lands in the
destination folder. This is the guarantee that a failing chapter can never
reach the book.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbval")

TESTS = Path(__file__).resolve().parent


def _notebook(path: Path, sources: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _run(root: Path, dest: Path, *notebooks: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "nbval_export", "--nbval-lax",
        "--nbval-current-env", "-p", "no:cacheprovider", "-c", os.devnull,
        f"--nbexport-root={root}", f"--nbexport-dest={dest}", *map(str, notebooks),
    ]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_only_fully_passing_notebooks_are_published(tmp_path):
    root, dest = tmp_path / "stage", tmp_path / "book"
    good, bad = root / "a" / "good.ipynb", root / "b" / "bad.ipynb"
    _notebook(good, ["x = 6 * 7", "x", "print('hello'); 1;"])
    _notebook(bad, ["y = 1", "assert y == 2, 'deliberate failure'", "z = 3"])
    stale = dest / "b" / "bad.ipynb"  # an earlier, passing export of the bad notebook
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")

    res = _run(root, dest, good, bad)
    assert res.returncode != 0, res.stdout  # the failing cell fails the session
    assert "deliberate failure" in res.stdout

    out = nbformat.read(dest / "a" / "good.ipynb", as_version=4)
    cells = out.cells
    assert [c.execution_count for c in cells] == [1, 2, 3]
    assert cells[1].outputs[0]["data"]["text/plain"] == "42"
    # a trailing ';' suppresses the result (cells are stored in history, as in Jupyter)
    assert [o["output_type"] for o in cells[2].outputs] == ["stream"]
    assert not stale.exists(), "a failing notebook must remove its previous export"
    assert "cells ran" in res.stdout  # per-notebook execution time is reported
    assert not list(dest.rglob("*.tmp"))  # nothing half-written
