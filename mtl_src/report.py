"""Tables and figures of the experiment chapters, built from tidy results (never typed in).

    results (tidy, :data:`mtl_src.train.RESULT_COLUMNS`)  ->  :func:`results_table`  ->  the chapter's table
                                                          ->  :func:`learning_curves`, :func:`fairness_scatter`,
                                                              :func:`group_counts`, :func:`grouping_frequency`,
                                                              :func:`priority_share`
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import metrics as _metrics

__all__ = [
    "step_time_ratio", "results_table", "display_table", "learning_curves", "fairness_scatter",
    "group_counts", "grouping_frequency", "priority_share",
]


def step_time_ratio(results: pd.DataFrame, reference: str = "ls") -> pd.Series:
    """Mean seconds per training step of each method divided by ``reference``'s (same run set)."""
    t = results[(results.split == "timing") & (results.metric == "time_step")]
    per = t.groupby("method", sort=False).value.mean()
    if reference not in per.index:
        return pd.Series(np.nan, index=per.index, name=f"time x {reference}")
    return (per / per[reference]).rename(f"time x {reference}")


def results_table(results: pd.DataFrame, bench, baseline: Mapping[str, float], *, split: str = "test",
                  stl_rows: pd.DataFrame | None = None, average: str = "metric") -> pd.DataFrame:
    """Per-method table: metrics (mean and sd over seeds), Delta m +- sd, MR, Var[Delta m_i], time x ls.

    Delta m is in percent, positive = worse than single-task learning (lower is better), averaged over
    metrics as nash-mtl / FAMO / PIVRG do (``average="task"`` averages over tasks first, as LibMTL).
    ``stl_rows`` (from :func:`mtl_src.experiment.stl_baseline`) adds the single-task row (Delta m = 0 by
    construction when its seeds are the baseline's). Methods are sorted by Delta m.
    """
    frame = results if stl_rows is None else pd.concat([results, stl_rows], ignore_index=True)
    table = _metrics.summarize(frame, baseline, metrics=bench.metrics, split=split, benchmark=bench.name,
                               average=average)
    table = table.join(step_time_ratio(results))
    return table.sort_values("delta_m")


def display_table(table: pd.DataFrame, bench, digits: int = 2) -> pd.DataFrame:
    """The table as text cells 'mean ± sd', arrows on metric names (higher ↑ / lower ↓ is better)."""
    out = pd.DataFrame(index=table.index)

    def pm(m: float, s: float) -> str:
        return f"{m:.{digits}f}" if not np.isfinite(s) else f"{m:.{digits}f} ± {s:.{digits}f}"

    for mt in bench.metrics:
        arrow = "↑" if mt.higher_is_better else "↓"
        out[f"{mt.name} {arrow}"] = [pm(m, s) for m, s in zip(table[mt.name], table[f"{mt.name} sd"])]
    out["Δm % ↓"] = [pm(m, s) for m, s in zip(table["delta_m"], table["delta_m sd"])]
    out["MR ↓"] = table["mr"].map(lambda v: "" if not np.isfinite(v) else f"{v:.2f}")  # STL is not ranked
    out["Var[Δm_i] ↓"] = table["var_delta_m"].map(lambda v: f"{v:.1f}")
    if "time x ls" in table:
        out["time / ls"] = table["time x ls"].map(lambda v: "" if not np.isfinite(v) else f"{v:.2f}")
    out["seeds"] = table["n_seeds"]
    out.index.name = "method"
    return out


def learning_curves(results: pd.DataFrame, *, split: str = "train", prefix: str = "loss_",
                    methods: Sequence[str] | None = None, logy: bool = True) -> sns.FacetGrid:
    """Per-task curves of ``prefix*`` metrics over epochs, one panel per task, mean and sd over seeds."""
    df = results[(results.split == split) & results.metric.str.startswith(prefix)].copy()
    if methods is not None:
        df = df[df.method.isin(methods)]
    if df.empty:
        raise ValueError(f"learning_curves: no rows for split {split!r} and metrics {prefix}*")
    df["task"] = df.metric.str.slice(len(prefix))
    grid = sns.relplot(data=df, x="epoch", y="value", hue="method", col="task", kind="line", errorbar="sd",
                       col_wrap=min(4, df.task.nunique()), height=2.6, aspect=1.2, facet_kws={"sharey": False})
    if logy:
        for ax in grid.axes.flat:
            ax.set_yscale("log")
    grid.set_titles("{col_name}")
    grid.set_ylabels(f"{split} {prefix.rstrip('_')}")
    return grid


def fairness_scatter(table: pd.DataFrame, ax: plt.Axes | None = None, *, highlight: Sequence[str] = ("pivrg",)
                     ) -> plt.Axes:
    """Delta m (x) against Var[Delta m_i] (y) per method, as PIVRG's Fig. 1 (lower-left is better)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.2))
    rows = table.drop(index=[i for i in table.index if str(i) == "stl"], errors="ignore")
    colours = ["tab:red" if m in highlight else "tab:blue" for m in rows.index]
    ax.scatter(rows["delta_m"], rows["var_delta_m"], c=colours, s=28, zorder=3)
    for m, r in rows.iterrows():
        ax.annotate(str(m), (r["delta_m"], r["var_delta_m"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("Δm (%), lower is better")
    ax.set_ylabel("Var[Δm_i], lower is fairer")
    ax.grid(alpha=0.3)
    return ax


def _diag(results: pd.DataFrame, method: str) -> pd.DataFrame:
    return results[(results.split == "diagnostics") & (results.method == method)]


def group_counts(results: pd.DataFrame, method: str = "stgu", ax: plt.Axes | None = None) -> plt.Axes:
    """STGU's mean number of task groups per step over epochs (STGU Fig. 3, left), per seed."""
    df = _diag(results, method)
    df = df[df.metric == "n_groups"]
    if df.empty:
        raise ValueError(f"group_counts: no 'n_groups' diagnostics for method {method!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    sns.lineplot(data=df, x="epoch", y="value", errorbar="sd", ax=ax, marker="o")
    ax.set_ylabel("task groups per step")
    ax.set_title(f"{method}: number of groups")
    return ax


def grouping_frequency(results: pd.DataFrame, tasks: Sequence[str], method: str = "stgu",
                       ax: plt.Axes | None = None) -> tuple[plt.Axes, pd.DataFrame]:
    """How often each pair of tasks was updated in the same group (STGU Fig. 3, right), over training.

    Reads the per-step indicators ``together_t{i}_t{j}`` that :class:`~mtl_src.methods.stgu.STGU` reports
    (epoch means; averaged here over epochs and seeds); the diagonal is 1.
    """
    df = _diag(results, method)
    K = len(tasks)
    F = np.eye(K)
    pat = re.compile(r"together_t(\d+)_t(\d+)$")
    found = False
    for metric, values in df.groupby("metric").value:
        m = pat.match(metric)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            F[i, j] = F[j, i] = float(values.mean())
            found = True
    if not found:
        raise ValueError(f"grouping_frequency: no 'together_t*_t*' diagnostics for method {method!r}")
    freq = pd.DataFrame(F, index=list(tasks), columns=list(tasks))
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * K + 2.5, 0.6 * K + 1.8))
    sns.heatmap(freq, vmin=0, vmax=1, annot=K <= 12, fmt=".2f", cmap="viridis", ax=ax, square=True)
    ax.set_title(f"{method}: share of steps updated together")
    return ax, freq


def priority_share(results: pd.DataFrame, tasks: Sequence[str], method: str = "connection_strength",
                   layer: int | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """Share of shared channels whose top-priority task is k, over epochs (Connection Strength Fig. 5).

    Reads ``top_share_l{layer}_t{k}``; ``layer=None`` averages over layers.
    """
    df = _diag(results, method)
    pat = re.compile(r"top_share_l(\d+)_t(\d+)$")
    parts = df.metric.str.extract(pat)
    df = df.assign(layer=pd.to_numeric(parts[0]), k=pd.to_numeric(parts[1])).dropna(subset=["layer"])
    if df.empty:
        raise ValueError(f"priority_share: no 'top_share_l*_t*' diagnostics for method {method!r}")
    if layer is not None:
        df = df[df.layer == layer]
    df = df.assign(task=[tasks[int(k)] for k in df.k])
    share = df.groupby(["epoch", "task"], sort=False).value.mean().unstack("task").reindex(columns=list(tasks))
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    share.plot.area(ax=ax, stacked=True, alpha=0.85, linewidth=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of channels")
    where = "all layers" if layer is None else f"layer {layer}"
    ax.set_title(f"{method}: top-priority task ({where})")
    ax.legend(title="task", fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return ax
