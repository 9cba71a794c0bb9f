"""Benchmarks: data + shared-encoder model + losses + metrics (see :mod:`mtl_src.benchmarks.base`).

>>> from mtl_src import benchmarks
>>> benchmarks.available()                                   # doctest: +SKIP
>>> bench = benchmarks.make("multimnist", profile="fast")    # doctest: +SKIP

One module per benchmark; importing it registers it. ``make(name, profile=..., data_root=..., **kw)``
builds one; ``profile`` is ``"fast"`` (the embedded defaults: CPU-sized, what CI executes as a pipeline
check), ``"reference"`` (the embedded data trained until LS has converged, sized for a 2-core CPU: the
committed reference runs the book's tables come from; not every benchmark has it yet) or ``"paper"``
(the papers' sizes, for a GPU).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

from .base import Benchmark, Metric, MTLModel

__all__ = ["Benchmark", "Metric", "MTLModel", "register", "available", "get", "make", "options"]

_REGISTRY: dict[str, type[Benchmark]] = {}
T = TypeVar("T", bound=type[Benchmark])
PROFILES = ("fast", "reference", "paper")


def register(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`Benchmark` under ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"benchmark name {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Sorted names of all registered benchmarks."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Benchmark]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown benchmark {name!r}.{hint} Available: {', '.join(available())} "
            "(see mtl_src.benchmarks.available())"
        ) from None


def options(name: str) -> dict[str, Any]:
    """The constructor options of a benchmark and their defaults."""
    sig = inspect.signature(get(name).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def make(name: str, **kw: Any) -> Benchmark:
    """Build the benchmark ``name``; unknown options raise listing the valid ones."""
    cls = get(name)
    allowed = options(name)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(
            f"benchmark {name!r} has no option {', '.join(map(repr, unknown))}; it takes: {', '.join(allowed) or 'none'}"
        )
    if "profile" in kw and kw["profile"] not in PROFILES:
        raise ValueError(f"benchmark {name!r}: unknown profile {kw['profile']!r}; use one of {PROFILES}")
    bench = cls(**kw)
    bench.spec = (name, dict(kw))  # enough to rebuild it in another process (parallel runs)
    return bench


def _import_all() -> None:
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()
