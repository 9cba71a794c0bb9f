"""Run one notebook with papermill parameters, after validating them.

    python -m mtl_src.run notebooks/aligned_mtl/01_alignment.md -p iterations 35000 -p device cuda

The jupytext source is converted to .ipynb, the ``parameters`` cell's defaults are read, every
``-p NAME VALUE`` is checked (unknown name, wrong type, negative count, unknown method, CUDA absent
-> one message naming the fix, nothing run), and the executed notebook is written to
``results/runs/<notebook>-<timestamp>/`` (``--out-dir`` to choose). The run folder is created as
``<dir>.partial`` and renamed when the notebook finished; a failed run is renamed ``<dir>.failed``.
If the notebook has an ``out_dir`` parameter (and it is not given) it is pointed at that folder, except
in the ``reference`` profile: the reference runs of an experiment chapter go to
``results/reference/<benchmark>/`` (committed with the code; finished runs are skipped, interrupted ones
resume from their checkpoints, so the set may be produced over several invocations), with
``provenance.json`` recording this command, the commit and the wall time of every run.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "read_parameters", "validate", "ParameterError"]

COUNT_NAMES = {"iterations", "epochs", "n_seeds", "draws", "n_draws", "batch_size"}
#: counts that must be at least 1 (zero epochs would train nothing and report an untrained network)
POSITIVE_NAMES = {"epochs", "n_seeds", "batch_size"}
PROFILES = ("fast", "reference", "paper")


class ParameterError(ValueError):
    """A papermill parameter that cannot be used; the message names the fix."""


def _load_notebook(path: Path):
    import jupytext

    if not path.exists():
        raise ParameterError(f"notebook {str(path)!r} not found (sources live under notebooks/, e.g. notebooks/aligned_mtl/01_alignment.md)")
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def read_parameters(nb) -> dict[str, Any]:
    """Defaults of the notebook's ``parameters`` cell (simple literal assignments)."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError("the notebook has no cell tagged 'parameters'; it cannot be parameterised")
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name = node.target.id
        else:
            continue
        try:
            params[name] = ast.literal_eval(node.value)
        except ValueError:
            params[name] = ast.unparse(node.value)  # an expression: keep its text, accept any override
    return params


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _same_kind(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return not (isinstance(default, int) and isinstance(value, float) and not value.is_integer())
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def validate(defaults: dict[str, Any], overrides: dict[str, Any], notebook: str | None = None) -> dict[str, Any]:
    """Check ``overrides`` against the notebook's defaults; return the cleaned overrides.

    ``notebook``: the notebook's stem; given, a benchmark that reads a prepared dataset (the parameter
    ``benchmark``, or the chapter's default for the profile) must find its MANIFEST.json under data_root.
    ``seeds`` may be a list of distinct non-negative integers or an integer n (seeds 0..n-1)."""
    from . import methods
    from .train import resolve_device

    clean: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in defaults:
            raise ParameterError(f"unknown parameter {name!r}; this notebook takes: {', '.join(defaults)}")
        default = defaults[name]
        either = name in ("methods", "method") and isinstance(value, (str, list, tuple))  # "all" or a list
        if not either and not _same_kind(default, value):
            raise ParameterError(
                f"parameter {name!r} must be of type {type(default).__name__} like its default {default!r}, got {value!r}"
            )
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            value = int(value)
        if name in COUNT_NAMES and value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < (1 if name in POSITIVE_NAMES else 0)):
            kind = "a positive integer (>= 1)" if name in POSITIVE_NAMES else "a non-negative integer"
            raise ParameterError(f"parameter {name!r} must be {kind}, got {value!r}")
        if name == "seeds" and value is not None and not isinstance(value, (list, tuple)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"parameter 'seeds' must be a non-empty list of non-negative integers "
                                     f"(e.g. [0, 1, 2]) or an integer n >= 1 meaning seeds 0..n-1, got {value!r}")
            value = list(range(value))
        if name == "device":
            try:
                resolve_device(value)
            except (RuntimeError, ValueError) as err:
                raise ParameterError(str(err)) from None
        if name in ("methods", "method") and value != "all":
            for m in [value] if isinstance(value, str) else value:
                try:
                    methods.make(m)
                except (ValueError, TypeError) as err:
                    raise ParameterError(str(err)) from None
        if name == "benchmark":
            from . import benchmarks

            try:
                benchmarks.get(value)
            except ValueError as err:
                raise ParameterError(str(err)) from None
        if name == "profile" and value not in PROFILES:
            raise ParameterError(f"unknown profile {value!r}; use one of {', '.join(PROFILES)} (-p profile paper)")
        if name == "seeds" and isinstance(value, (list, tuple)):
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value) \
                    or len(set(value)) != len(value):
                raise ParameterError(f"parameter 'seeds' must be a non-empty list of distinct non-negative integers, got {value!r}")
            value = list(value)
        if name == "data_root" and value is not None and not Path(str(value)).expanduser().is_dir():
            raise ParameterError(
                f"data_root {value!r} is not a directory; create it or prepare the data with data_scripts/ "
                "(see data_scripts/README.md)"
            )
        clean[name] = list(value) if isinstance(value, tuple) else value
    if notebook is not None:
        _check_prepared_data(defaults, clean, notebook)
    return clean


def _check_prepared_data(defaults: dict[str, Any], clean: dict[str, Any], notebook: str) -> None:
    """A benchmark that reads a prepared dataset needs its MANIFEST.json under data_root, checked up front
    with the loaders' own check (presence and sizes of every listed file; hashes are left to the run)."""
    if "benchmark" not in defaults:
        return
    profile = clean.get("profile", defaults.get("profile", "fast"))
    name = clean.get("benchmark", defaults["benchmark"])
    if name is None:
        from .experiment import CHAPTER_BENCHMARKS

        name = CHAPTER_BENCHMARKS.get(notebook, {}).get(str(profile))
    if not isinstance(name, str):
        return
    from . import benchmarks
    from .benchmarks._models import load_manifest
    from .data import MissingDataError, data_root

    if not getattr(benchmarks.get(name), "prepared", False):
        return
    root = clean.get("data_root", defaults.get("data_root"))
    try:
        load_manifest(data_root(root), name, verify=False)
    except MissingDataError as err:
        raise ParameterError(f"benchmark {name!r} ({profile} profile) reads prepared data: {err}") from None


#: where the committed reference runs of each benchmark live (relative to the repository root)
REFERENCE_ROOT = Path("results") / "reference"
COMMAND_ENV = "MTL_COMPANION_COMMAND"  # = mtl_src.provenance.COMMAND_ENV (not imported: keep the CLI light)


def reference_dir(defaults: dict[str, Any], overrides: dict[str, Any], notebook: str) -> Path | None:
    """``results/reference/<benchmark>`` when an experiment notebook runs in the reference profile, else None."""
    if overrides.get("profile", defaults.get("profile")) != "reference":
        return None
    name = overrides.get("benchmark", defaults.get("benchmark"))
    if name is None:
        from .experiment import CHAPTER_BENCHMARKS

        name = CHAPTER_BENCHMARKS.get(notebook, {}).get("reference")
    if not isinstance(name, str):
        raise ParameterError(f"{notebook}: no benchmark for the reference profile; pass -p benchmark NAME")
    from . import benchmarks

    try:  # constructors are cheap (data are built lazily) and reject a profile they do not define
        benchmarks.make(name, profile="reference")
    except ValueError as err:
        raise ParameterError(f"benchmark {name!r} has no reference profile yet ({err})") from None
    return REFERENCE_ROOT / name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtl_src.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", type=Path, help="jupytext .md (or .ipynb) notebook")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a parameter (VALUE is parsed as YAML: 3, 1e-3, cuda, [ls, mgda])")
    ap.add_argument("--out-dir", type=Path, default=None, help="run folder (default results/runs/<name>-<time>)")
    ap.add_argument("--profile", choices=PROFILES, default=None,
                    help="named profile of an experiment notebook (same as -p profile NAME): fast = the "
                         "embedded CPU defaults the book executes, paper = the papers' epochs and seeds (GPU)")
    ap.add_argument("--dry-run", action="store_true", help="validate and print the parameters, run nothing")
    args = ap.parse_args(argv)
    try:
        nb = _load_notebook(args.notebook)
        defaults = read_parameters(nb)
        given = {k: _parse_value(v) for k, v in args.parameter}
        if args.profile is not None:
            if "profile" not in defaults:
                raise ParameterError(f"{args.notebook} has no 'profile' parameter; --profile applies to experiment notebooks")
            if given.get("profile", args.profile) != args.profile:
                raise ParameterError(f"--profile {args.profile} contradicts -p profile {given['profile']}")
            given["profile"] = args.profile
        overrides = validate(defaults, given, notebook=args.notebook.stem)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if overrides.get("profile", defaults.get("profile")) == "paper" and \
            not str(overrides.get("device", defaults.get("device", "cpu"))).startswith("cuda"):
        print("warning: the paper profile trains the papers' full schedules; on the CPU that takes days. "
              "Add -p device cuda on a GPU machine (or -p epochs 1 for a smoke run).", file=sys.stderr)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out_dir or Path("results") / "runs" / f"{args.notebook.stem}-{stamp}"
    partial = out.with_name(out.name + ".partial")
    if "out_dir" in defaults and "out_dir" not in overrides:
        try:
            reference = reference_dir(defaults, overrides, args.notebook.stem)
        except ParameterError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if reference is not None:
            # the reference runs accumulate (and resume) in results/reference/<benchmark>/, which is committed
            overrides["out_dir"] = str(reference)
        else:
            overrides["out_dir"] = str(partial)  # the folder is renamed to `out` once the run succeeded
    os.environ[COMMAND_ENV] = shlex.join(["python", "-m", "mtl_src.run", *(argv if argv is not None else sys.argv[1:])])
    print(f"{args.notebook}: {json.dumps(overrides)}")
    if args.dry_run:
        return 0
    import nbformat
    import papermill

    if out.exists():
        print(f"error: {out} already exists; choose another --out-dir", file=sys.stderr)
        return 2
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    src = partial / "input.ipynb"
    nbformat.write(nb, src)
    (partial / "parameters.json").write_text(json.dumps({"notebook": str(args.notebook), **overrides}, indent=2))
    try:
        papermill.execute_notebook(str(src), str(partial / f"{args.notebook.stem}.ipynb"),
                                   parameters=overrides, kernel_name="python3", cwd=str(Path.cwd()))
    except Exception as err:  # papermill.PapermillExecutionError and kernel failures
        failed = out.with_name(out.name + ".failed")
        shutil.rmtree(failed, ignore_errors=True)
        src.unlink(missing_ok=True)
        partial.rename(failed)
        print(f"error: the notebook failed ({type(err).__name__}); see {failed}/{args.notebook.stem}.ipynb", file=sys.stderr)
        return 1
    src.unlink()
    partial.rename(out)
    print(f"done: {out}/{args.notebook.stem}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
