"""pytest plugin: keep what nbval executed and publish it to the book.

nbval runs every code cell of a notebook as one pytest item and leaves the
cell's outputs on the item (``item.test_outputs``). This plugin copies those
outputs, with an execution count, into the notebook nbval read
(``item.parent.nb``) and, once the last cell of that notebook has finished,
writes the executed notebook atomically (temporary file + rename) to

    <--nbexport-dest>/<path of the notebook relative to --nbexport-root>

only if every cell of the notebook passed (setup, call and teardown) and every
code cell was run. A notebook with a failing cell leaves no executed file
behind: a previously exported copy is deleted. Notebooks are therefore executed
once, by nbval, and the book renders the very outputs that were tested.

Load it with ``-p nbval_export`` (``tests/`` must be on ``PYTHONPATH``), e.g.

    PYTHONPATH=tests python -m pytest -p nbval_export --nbval-lax \
        --nbval-current-env --nbexport-root build/notebooks \
        --nbexport-dest book/chapters build/notebooks/aligned_mtl/01_alignment.ipynb

Without ``--nbexport-dest`` the plugin does nothing.

With it, cells are also executed with ``store_history=True`` (nbval 0.11 uses
False), as Jupyter and papermill do: otherwise IPython ignores a trailing ``;``
(it looks up the *stored* input to decide) and the book would show outputs
such as ``[<matplotlib.lines.Line2D ...>]``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

_UMASK = os.umask(0)
os.umask(_UMASK)


def pytest_addoption(parser):
    group = parser.getgroup("nbval_export", "export notebooks executed by nbval")
    group.addoption(
        "--nbexport-dest",
        default=None,
        help="directory receiving the executed notebooks (disabled when unset)",
    )
    group.addoption(
        "--nbexport-root",
        default=".",
        help="notebooks are written to DEST/<path relative to this directory>",
    )


@dataclass
class _Notebook:
    file: object  # nbval's IPyNbFile collector
    dest: Path
    items: list = field(default_factory=list)
    n_code_cells: int = 0
    failed: bool = False
    finished: bool = False
    counter: int = 0
    seconds: float = 0.0  # wall time of its cells (setup + call + teardown)


class NbExport:
    def __init__(self, config):
        self.dest_root = Path(config.getoption("nbexport_dest")).resolve()
        self.src_root = Path(config.getoption("nbexport_root")).resolve()
        self.notebooks: dict[str, _Notebook] = {}  # keyed by the notebook's nodeid
        self.by_item: dict[str, _Notebook] = {}  # keyed by the cell's nodeid
        self.items: dict[str, object] = {}
        self.written: list[Path] = []
        self.removed: list[Path] = []
        self.errors: list[str] = []

    # -- collection -----------------------------------------------------
    def _dest_for(self, path: Path) -> Path:
        path = path.resolve()
        try:
            rel = path.relative_to(self.src_root)
        except ValueError:
            raise pytest.UsageError(
                f"nbval_export: {path} is not under --nbexport-root {self.src_root}"
            ) from None
        return self.dest_root / rel

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        for item in session.items:
            nbfile = getattr(item, "parent", None)
            if not hasattr(item, "test_outputs") or not hasattr(nbfile, "nb"):
                continue  # not an nbval cell
            key = nbfile.nodeid
            nb = self.notebooks.get(key)
            if nb is None:
                nb = _Notebook(file=nbfile, dest=self._dest_for(Path(str(nbfile.path))))
                nb.n_code_cells = sum(c.cell_type == "code" for c in nbfile.nb.cells)
                for c in nbfile.nb.cells:  # start from a clean notebook
                    if c.cell_type == "code":
                        c.outputs = []
                        c.execution_count = None
                self.notebooks[key] = nb
            nb.items.append(item.nodeid)
            self.by_item[item.nodeid] = nb
            self.items[item.nodeid] = item

    # -- execution ------------------------------------------------------
    def pytest_runtest_logreport(self, report):
        nb = self.by_item.get(report.nodeid)
        if nb is None:
            return
        item = self.items[report.nodeid]
        nb.seconds += report.duration
        if report.failed:
            nb.failed = True
        if report.when == "call" and report.passed:
            outputs = item.test_outputs or []
            nb.counter += 1
            for out in outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = nb.counter
            item.cell.outputs = [nbformat.from_dict(dict(o)) for o in outputs]
            item.cell.execution_count = nb.counter
        if report.when == "teardown" and report.nodeid == nb.items[-1]:
            nb.finished = True
            self._finalise(nb)

    def _finalise(self, nb: _Notebook) -> None:
        if nb.failed:
            self._remove(nb)
            return
        if len(nb.items) != nb.n_code_cells:
            # deselected cells (-k / -m): a partial run is not publishable
            self.errors.append(
                f"{nb.dest}: not written, only {len(nb.items)} of "
                f"{nb.n_code_cells} code cells were selected"
            )
            return
        try:
            notebook = nb.file.nb
            nbformat.validate(notebook)
            nb.dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=nb.dest.parent, prefix="." + nb.dest.stem + ".", suffix=".tmp"
            )
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    nbformat.write(notebook, fh)
                os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600
                os.replace(tmp, nb.dest)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except Exception as exc:  # report, never leave a half-written file
            self.errors.append(f"{nb.dest}: export failed: {exc!r}")
            self._remove(nb)
            return
        self.written.append(nb.dest)

    def _remove(self, nb: _Notebook) -> None:
        if nb.dest.exists():
            nb.dest.unlink()
            self.removed.append(nb.dest)

    # -- end of session -------------------------------------------------
    def pytest_sessionfinish(self, session, exitstatus):
        for nb in self.notebooks.values():
            if nb.failed and not nb.finished:  # e.g. stopped by -x / --maxfail
                self._remove(nb)
        if self.errors and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        if not (self.written or self.removed or self.errors):
            return
        tr.section("nbval_export")
        cwd = Path.cwd()

        def show(p: Path) -> str:
            try:
                return str(p.relative_to(cwd))
            except ValueError:
                return str(p)

        seconds = {nb.dest: nb.seconds for nb in self.notebooks.values()}
        for p in self.written:
            tr.line(f"wrote executed notebook {show(p)} (cells ran {seconds[p]:.0f} s)")
        for p in self.removed:
            tr.line(f"removed {show(p)} (notebook failed after {seconds[p]:.0f} s)", red=True)
        if len(self.notebooks) > 1:
            tr.line(f"notebook cells ran {sum(seconds.values()):.0f} s in all")
        for e in self.errors:
            tr.line(f"ERROR {e}", red=True)


def _execute_with_history(self, cell_input, allow_stdin=None):
    return self.kc.execute(
        cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False
    )


def pytest_configure(config):
    if config.getoption("nbexport_dest", None):
        from nbval.kernel import RunningKernel

        if not hasattr(RunningKernel, "execute_cell_input"):
            raise pytest.UsageError("nbval_export: unsupported nbval version (pin nbval<0.12)")
        RunningKernel.execute_cell_input = _execute_with_history
        config.pluginmanager.register(NbExport(config), "nbval_export_impl")
