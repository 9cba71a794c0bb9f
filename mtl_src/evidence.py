r"""What the experiment chapters conclude from a set of runs: per-seed values, intervals, paired
verdicts, trivial baselines and the papers' experimental claims.

    tidy results  ->  :func:`per_seed` (method, seed) x {metrics, Delta m, Var[Delta m_i], MR}
                  ->  :func:`summary`  mean and 95% t interval over seeds of every column
                  ->  :func:`versus`   paired differences to a reference method, Holm-corrected verdicts
                  ->  :class:`ClaimLedger`  a paper's claim, our measurement, reproduced / contradicted /
                      not resolved

Seeds are *paired*: seed s gives every method the same initialisation and the same batches, so a
comparison uses the per-seed differences (:mod:`mtl_src.stats`). Delta m, Var[Delta m_i] and MR are
computed per seed (MR ranks the methods within each seed, STL and the controls excluded), then
averaged, so each gets an interval.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import metrics as _metrics
from . import stats as _stats

__all__ = ["per_seed", "summary", "display_summary", "versus", "display_versus", "trivial_baselines",
           "ClaimLedger", "verdict_of", "LEDGER_DIR", "NOT_RANKED"]

#: rows that are not ranked among the methods (MR): single-task learning and the controls
NOT_RANKED: tuple[str, ...] = ("stl", "ls_steps")

SUMMARY_COLUMNS = ("delta_m", "var_delta_m", "mr")


def per_seed(results: pd.DataFrame, bench, baseline: Mapping[str, float], *, split: str = "test",
             stl_rows: pd.DataFrame | None = None, average: str = "metric") -> pd.DataFrame:
    """One row per (method, seed) at each run's last evaluated epoch: every metric of ``bench``,
    ``delta_m`` (percent, positive = worse than STL, :func:`mtl_src.metrics.delta_m`),
    ``var_delta_m`` (PIVRG's Var[Delta m_i] of that seed's metrics), ``mr`` (mean rank among the
    methods of that seed; NaN for :data:`NOT_RANKED` rows) and ``time_step`` (mean seconds per training
    step of the run, where the results time it)."""
    frame = results if stl_rows is None else pd.concat([results, stl_rows], ignore_index=True)
    names = [m.name for m in bench.metrics]
    hib = {m.name: m.higher_is_better for m in bench.metrics}
    tasks = {m.name: m.task for m in bench.metrics}
    df = frame[(frame.split == split) & frame.metric.isin(names)]
    if df.empty:
        raise ValueError(f"per_seed: no {split!r} rows of the metrics {names}")
    last = df.groupby(["method", "seed"]).epoch.transform("max")
    wide = df[df.epoch == last].pivot_table(index=["method", "seed"], columns="metric", values="value",
                                             aggfunc="mean").reindex(columns=names)
    if wide.isna().any().any():
        raise ValueError(f"per_seed: runs miss metrics: {wide.index[wide.isna().any(axis=1)].tolist()}")
    n = wide.groupby(level="method").size()
    incomplete = n.index[n < n.max()].tolist()
    if incomplete:  # a set still being produced: compare (and rank) only the methods with every seed
        wide = wide.drop(index=incomplete, level="method")
    values = wide.to_numpy(float)
    out = wide.copy()
    out["delta_m"] = np.asarray(_metrics.delta_m(values, baseline, hib, average, tasks)).reshape(-1)
    out["var_delta_m"] = np.asarray(_metrics.var_delta_m(values, baseline, hib)).reshape(-1)
    ranked = wide[~wide.index.get_level_values("method").isin(NOT_RANKED)]
    mr = _stats.per_seed_rank(ranked, hib).stack().rename("mr")
    mr.index.names = ["method", "seed"]
    out = out.join(mr)
    t = results[(results.split == "timing") & (results.metric == "time_step")]
    if not t.empty:  # mean seconds per training step of each run (over its epochs)
        out = out.join(t.groupby(["method", "seed"]).value.mean().rename("time_step"))
    out.attrs["incomplete"] = incomplete
    return out


def summary(ps: pd.DataFrame, *, level: float = 0.95, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and ``level`` t interval over seeds of every column of :func:`per_seed`: columns ``<c>``,
    ``<c> low``, ``<c> high`` and ``n_seeds``; sorted by Delta m."""
    cols = list(columns) if columns is not None else list(ps.columns)
    rows = {}
    for method, g in ps.groupby(level="method", sort=False):
        row: dict[str, float] = {"n_seeds": len(g)}
        for c in cols:
            v = g[c].dropna().to_numpy(float)
            if len(v) == 0:
                row[c] = row[f"{c} low"] = row[f"{c} high"] = np.nan
                continue
            row[c], row[f"{c} low"], row[f"{c} high"] = _stats.interval(v, level)
        rows[method] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "method"
    out.attrs["level"] = level
    return out.sort_values("delta_m") if "delta_m" in out else out


def _ci(m: float, lo: float, hi: float, digits: int) -> str:
    if not np.isfinite(m):
        return ""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def display_summary(summ: pd.DataFrame, bench, *, digits: int = 3, dm_digits: int = 2,
                    time_ratio: pd.Series | None = None, verdicts: pd.Series | None = None) -> pd.DataFrame:
    """The summary as text cells ``mean [low, high]``; arrows give the better direction. ``verdicts``
    (e.g. ``versus(...).verdict``) adds a column "Δm vs LS"; ``time_ratio`` the step time relative to LS."""
    out = pd.DataFrame(index=summ.index)
    if verdicts is not None:
        out["Δm vs LS"] = [verdicts.get(m, "reference" if m == "ls" else "") for m in summ.index]
    out["Δm % ↓"] = [_ci(*summ.loc[m, ["delta_m", "delta_m low", "delta_m high"]], dm_digits) for m in summ.index]
    for mt in bench.metrics:
        arrow = "↑" if mt.higher_is_better else "↓"
        out[f"{mt.name} {arrow}"] = [_ci(*summ.loc[m, [mt.name, f"{mt.name} low", f"{mt.name} high"]], digits)
                                     for m in summ.index]
    out["MR ↓"] = [_ci(*summ.loc[m, ["mr", "mr low", "mr high"]], 1) for m in summ.index]
    out["Var[Δm_i] ↓"] = [_ci(*summ.loc[m, ["var_delta_m", "var_delta_m low", "var_delta_m high"]], 1)
                          for m in summ.index]
    if time_ratio is not None:
        out["time / ls"] = [f"{time_ratio[m]:.2f}" if m in time_ratio and np.isfinite(time_ratio[m]) else ""
                            for m in summ.index]
    return out


def versus(ps: pd.DataFrame, reference: str = "ls", *, column: str = "delta_m", higher_is_better: bool = False,
           methods: Sequence[str] | None = None, level: float = 0.95, alpha: float = 0.05,
           correction: str = "holm") -> pd.DataFrame:
    """Every method (or ``methods``) against ``reference`` on ``column``, paired over seeds:
    :func:`mtl_src.stats.compare` (difference = method - reference, its interval, Holm-adjusted p over the
    family, verdict better / worse / not resolved). ``attrs["resolvable"]`` is the smallest difference
    these seeds resolve in this family (:func:`mtl_src.stats.resolvable_difference`)."""
    wide = ps[column].unstack("seed")
    if methods is None:
        methods = [m for m in wide.index if m not in (reference, "stl")]
    if wide.shape[1] < 2:  # one seed: nothing can be resolved (no spread to test against)
        cmp = pd.DataFrame({"diff": [float(wide.loc[m].iloc[0] - wide.loc[reference].iloc[0]) for m in methods],
                            "low": np.nan, "high": np.nan, "p": np.nan, "p_adj": np.nan,
                            "verdict": "not resolved"}, index=pd.Index(list(methods), name="method"))
        cmp.attrs.update(reference=reference, n_seeds=int(wide.shape[1]), m=len(methods), resolvable=np.nan,
                         column=column, level=level, alpha=alpha, correction=correction)
        return cmp
    cmp = _stats.compare(wide, reference, higher_is_better=higher_is_better, level=level, alpha=alpha,
                         correction=correction, methods=list(methods))
    cmp.attrs["resolvable"] = _stats.resolvable_difference(wide, reference, alpha=alpha, methods=list(methods))
    cmp.attrs["column"] = column
    return cmp


def display_versus(cmp: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The comparison as text: difference [interval], Holm-adjusted p, verdict."""
    ref = cmp.attrs.get("reference", "ls")
    out = pd.DataFrame(index=cmp.index)
    out[f"difference to {ref}"] = [_ci(d, lo, hi, digits) for d, lo, hi in zip(cmp["diff"], cmp["low"], cmp["high"])]
    out["p (paired t)"] = cmp["p"].map(lambda p: f"{p:.3g}")
    out["p (Holm)"] = cmp["p_adj"].map(lambda p: f"{p:.3g}")
    out["verdict"] = cmp["verdict"]
    return out


# ------------------------------------------------------------------------------------------------ trivial baselines


def trivial_baselines(bench) -> dict[str, tuple[float, str]]:
    """What a model that learned nothing from the inputs scores on the test split, per metric:
    ``{metric: (value, how)}``. Classification accuracy: always predicting the most frequent class of
    the training split; regression errors (MAE): predicting the training mean. Benchmarks without a
    rule here give an empty dict."""
    data = bench.datasets()
    out: dict[str, tuple[float, str]] = {}
    if bench.name in ("multimnist", "multimnist_full", "multifashion"):
        train, test = data["train"].tensors, data["test"].tensors
        for k, mt in enumerate(bench.metrics):
            counts = np.bincount(train[1 + k].numpy(), minlength=10)
            top = int(counts.argmax())
            out[mt.name] = (float((test[1 + k].numpy() == top).mean()),
                            f"always class {top} (the most frequent training label)")
    return out


# ------------------------------------------------------------------------------------------------ claims

#: where chapters save their ledgers for the book's claims-ledger page
LEDGER_DIR = Path(os.environ.get("MTL_COMPANION_LEDGERS", Path(__file__).resolve().parent.parent / "build" / "ledgers"))


def verdict_of(better: str, claim_says: str = "better") -> str:
    """A paper claim's verdict from a paired comparison verdict: the claim says the method is
    ``claim_says`` ("better" or "worse"); reproduced when the comparison agrees and is resolved,
    contradicted when resolved the other way, else not resolved at this scale."""
    if better == "not resolved":
        return "not resolved"
    return "reproduced" if better == claim_says else "contradicted"


@dataclass
class ClaimLedger:
    """A chapter's record of the papers' experimental claims: the claim in our words, its source, our
    measurement (with its interval) and the verdict (reproduced / contradicted / not resolved)."""

    chapter: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, claim: str, source: str, measured: str, verdict: str, *, scale: str = "") -> None:
        if verdict not in ("reproduced", "contradicted", "not resolved", "not testable here"):
            raise ValueError(f"verdict must be reproduced / contradicted / not resolved / not testable here, got {verdict!r}")
        self.rows.append({"claim": claim, "source": source, "measured": measured, "verdict": verdict,
                          "scale": scale})

    def claim_better(self, ps: pd.DataFrame, method: str, others: Sequence[str], *, column: str = "delta_m",
                     higher_is_better: bool = False, claim: str, source: str, scale: str = "",
                     digits: int = 2) -> pd.DataFrame:
        """Record the claim "``method`` is better than each of ``others`` on ``column``" from paired
        comparisons (``others - method``, Holm over the family): reproduced when every other method is
        resolved worse, contradicted when any is resolved better, else not resolved. The measurement
        lists the mean paired gaps and which comparisons the seeds resolve. Returns the comparison."""
        have = set(ps.index.get_level_values("method"))
        others = [o for o in others if o in have]
        if method not in have or not others:
            self.record(claim, source, f"no runs of {method if method not in have else 'the methods compared'} "
                        "in this set", "not testable here", scale=scale)
            return pd.DataFrame()
        cmp = versus(ps, method, column=column, higher_is_better=higher_is_better, methods=others)
        worse = [o for o in others if cmp.loc[o, "verdict"] == "worse"]
        better = [o for o in others if cmp.loc[o, "verdict"] == "better"]
        if better:
            verdict = "contradicted"
        elif len(worse) == len(others):
            verdict = "reproduced"
        else:
            verdict = "not resolved"
        sign = -1.0 if not higher_is_better else 1.0  # gain of `method` over o, in the better direction
        gaps = ", ".join(f"{o} {sign * -cmp.loc[o, 'diff']:+.{digits}f}" for o in others)
        measured = (f"{column} advantage of {method} (mean over seeds; positive = {method} better): {gaps}. "
                    f"Resolved (Holm, {cmp.attrs['n_seeds']} seeds): {method} better than "
                    f"{', '.join(worse) or 'none'}; worse than {', '.join(better) or 'none'}; "
                    f"{len(others) - len(worse) - len(better)} of {len(others)} not resolved "
                    f"(smallest resolvable gap {cmp.attrs['resolvable']:.{digits}f})")
        self.record(claim, source, measured, verdict, scale=scale)
        return cmp

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["verdict", "claim", "source", "measured", "scale"])

    def save(self, directory: str | os.PathLike | None = None) -> Path:
        """Write the ledger as CSV to ``<LEDGER_DIR>/<chapter>.csv`` (the claims-ledger page reads it)."""
        from .experiment import write_csv

        path = Path(directory or LEDGER_DIR) / f"{self.chapter.replace('/', '__')}.csv"
        table = self.table().assign(chapter=self.chapter, kind="experiment")
        write_csv(table, path)
        return path
