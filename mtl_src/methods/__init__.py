"""Every MTL method behind one interface.

>>> from mtl_src import methods
>>> methods.available()[:3]
['aligned_mtl', 'aligned_mtl_ub', 'cagrad']
>>> agg = methods.make("mgda")
>>> d = agg.aggregate(G)        # doctest: +SKIP  (G: K x P task gradients -> d: P)

One file per method; each class documents its formula and the paper's equation numbers. See
:mod:`mtl_src.methods.base` for the interface (``Method.step`` owns a training step; ``Aggregator``
and ``GramianWeighting`` cover the methods that only combine task gradients).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

from .base import (
    Aggregator, Feedback, Forward, GramianWeighting, LossWeighting, Method, SolverWarning, StepContext, StepResult,
)

__all__ = [
    "make", "available", "register", "get", "hyperparameters", "parse_spec",
    "Method", "Aggregator", "GramianWeighting", "LossWeighting", "Forward", "StepContext", "StepResult",
    "Feedback", "SolverWarning",
]

_REGISTRY: dict[str, type[Method]] = {}
T = TypeVar("T", bound=type[Method])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`Method` under ``name`` (used by :func:`make`)."""

    def deco(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"method name {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Sorted names of all registered methods."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    """The class registered under ``name``; an unknown name raises with the closest names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown method {name!r}.{hint} Available: {', '.join(available())} "
            "(see mtl_src.methods.available())"
        ) from None


def hyperparameters(name: str) -> dict[str, Any]:
    """The hyperparameters of a method and their defaults."""
    sig = inspect.signature(get(name).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """A method spec -> (registered name, hyperparameters).

    ``"name"`` is the method with its defaults; ``"name:value"`` also sets its *first* hyperparameter,
    so ``"pi:nash_mtl"`` is PI-Nash-MTL (``base="nash_mtl"``) and ``"stl:2"`` single-task learning of
    task 2. Values are read as int, float or string, in that order.
    """
    name, sep, value = str(spec).partition(":")
    if not sep:
        get(name)
        return name, {}
    params = list(hyperparameters(name))
    if not params or not value:
        raise ValueError(f"method spec {spec!r}: {name!r} takes no value after ':' (use {name!r})")
    parsed: Any = value
    for conv in (int, float):
        try:
            parsed = conv(value)
            break
        except ValueError:
            continue
    return name, {params[0]: parsed}


def make(name: str, **hp: Any) -> Method:
    """Instantiate the method ``name`` with hyperparameters ``hp`` (defaults: the authors').

    ``name`` may be a spec ``"name:value"`` (see :func:`parse_spec`)."""
    if ":" in str(name):
        name, first = parse_spec(name)
        hp = {**first, **hp}
    cls = get(name)
    allowed = hyperparameters(name)
    unknown = sorted(set(hp) - set(allowed))
    if unknown:
        raise TypeError(
            f"method {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(allowed) or 'none'}"
        )
    return cls(**hp)


def _import_all() -> None:
    """One module per method; importing a module registers its method(s)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()
