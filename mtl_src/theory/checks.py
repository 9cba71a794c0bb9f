"""Bookkeeping shared by the theorem chapters: a :class:`Check` is one statement's margins over many
random draws (``>= -tol``: the statement held in that draw); a :class:`Ledger` collects a chapter's
checks into its summary table. Tolerances are derived from the size of the quantities subtracted,
never tuned to make a check pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Check", "Ledger", "EPS"]

EPS = float(np.finfo(np.float64).eps)


def _singular(unit: str) -> str:
    """'draws' -> 'draw', 'entries' -> 'entry' (for the printed summary of a check)."""
    return unit[:-3] + "y" if unit.endswith("ies") else unit.rstrip("s")


@dataclass
class Check:
    """Margins of one statement over many draws (``>= -tol``: held in that draw)."""

    name: str
    margins: np.ndarray
    tol: np.ndarray | float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    unit: str = "draws"

    def __post_init__(self) -> None:
        self.margins = np.atleast_1d(np.asarray(self.margins, dtype=float))
        self.tol = np.broadcast_to(np.asarray(self.tol, dtype=float), self.margins.shape)

    @property
    def n(self) -> int:
        return int(self.margins.size)

    @property
    def ok(self) -> np.ndarray:
        """Per draw: did the statement hold (NaN margins count as failures)?"""
        return self.margins >= -self.tol

    @property
    def failures(self) -> int:
        return int(np.sum(~self.ok))

    @property
    def holds(self) -> bool:
        return self.n > 0 and self.failures == 0

    @property
    def worst(self) -> float:
        return float(np.min(self.margins)) if self.n else math.nan

    @classmethod
    def join(cls, name: str, *checks: "Check") -> "Check":
        """One check made of the draws of several."""
        return cls(name, np.concatenate([c.margins for c in checks]),
                   np.concatenate([c.tol for c in checks]), unit=checks[0].unit)

    def __repr__(self) -> str:
        one = _singular(self.unit)
        u = self.unit if self.n != 1 else one
        state = f"holds in every {one}" if self.holds else f"FAILS in {self.failures} of {self.n} {u}"
        i = int(np.argmin(self.margins)) if self.n else 0
        tol = f" (tolerance there {self.tol[i]:.1e})" if self.n and self.tol[i] > 0 else ""
        return f"{self.name}: {self.n} {u}, worst margin {self.worst:+.3e}{tol} -> {state}"


class Ledger:
    """The chapter's results: one row per statement, built only from recorded checks."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, statement: str, source: str, check: Check, verdict: str, *,
               expect_holds: bool = True, counter: Check | None = None) -> None:
        """``check`` tests the statement (expected to hold or, for a refuted claim, to fail);
        ``counter`` is an optional constructed case that must be detected (fail)."""
        consistent = (check.holds == expect_holds) and (counter is None or not counter.holds)
        self.rows.append({
            "statement": statement,
            "source": source,
            "check": check.name,
            "draws": check.n,
            "held in": f"{check.n - check.failures}/{check.n}",
            "worst margin": check.worst,
            "counterexample detected": "" if counter is None else
            f"{counter.failures}/{counter.n} (worst {counter.worst:+.2e})",
            "verdict": verdict if consistent else "UNEXPECTED: the check disagrees with the text",
        })

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def save(self, chapter: str, directory: str | None = None):
        """Write the ledger to ``<LEDGER_DIR>/<chapter>.csv`` for the book's claims-ledger page
        (:data:`mtl_src.evidence.LEDGER_DIR`): claim, source, what was measured, verdict."""
        from pathlib import Path

        from ..evidence import LEDGER_DIR
        from ..experiment import write_csv

        t = self.table()
        out = pd.DataFrame({
            "verdict": t["verdict"], "claim": t["statement"], "source": t["source"],
            "measured": [f"{c}: held in {h} draws (worst margin {w:+.2e})" + (f"; counterexample detected {d}" if d else "")
                         for c, h, w, d in zip(t["check"], t["held in"], t["worst margin"], t["counterexample detected"])],
            "scale": "", "chapter": chapter, "kind": "theory"})
        path = Path(directory or LEDGER_DIR) / f"{chapter.replace('/', '__')}.csv"
        write_csv(out, path)
        return path
