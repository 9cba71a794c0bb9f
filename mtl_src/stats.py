r"""Seed statistics for method comparisons: t intervals, paired tests, Holm correction, per-seed ranks.

Experiment tables compare many MTL methods trained on one benchmark with :math:`n` *paired* seeds: seed
:math:`s` gives every method the same initialisation and the same batches, so the natural unit of
comparison is the per-seed difference :math:`d_s = x_{\text{method},s} - x_{\text{reference},s}`, not
two independent means. Values arrive as a DataFrame ``per_seed`` (index = method, columns = seeds).

- :func:`interval` - mean and Student-t interval over seeds;
- :func:`paired_difference` - mean paired difference, its t interval and the paired t-test p-value;
- :func:`holm` - Holm-Bonferroni step-down adjusted p-values;
- :func:`compare` - every method against a reference, Holm-corrected over the family, with a verdict;
- :func:`resolvable_difference` - the smallest gap the seeds can resolve (rule of thumb);
- :func:`per_seed_rank` - mean rank (MR) per seed, so MR can get an interval too.

All intervals are two-sided, :math:`\bar x \pm t_{(1+\text{level})/2,\,n-1}\, s/\sqrt n` with the
sample standard deviation :math:`s` (ddof = 1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = ["interval", "holm", "paired_difference", "compare", "resolvable_difference", "per_seed_rank"]

Correction = Literal["holm", "none"]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _check_level(level: float, name: str = "level") -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {level!r}")


def _finite_1d(values: Any, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{what}: non-finite values {x[bad].tolist()} at positions {np.flatnonzero(bad).tolist()}")
    return x


def _t_half_width(sd: float, n: int, level: float) -> float:
    return float(_st.t.ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n))


# ------------------------------------------------------------------------------------------------
# intervals and tests
# ------------------------------------------------------------------------------------------------


def interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    r"""Mean and Student-t confidence interval over seeds.

    Returns ``(mean, low, high)`` with :math:`\bar x \mp t_{(1+\text{level})/2,\,n-1}\, s/\sqrt n`,
    :math:`s` the sample standard deviation (ddof = 1). A single value gives ``(v, nan, nan)`` (no
    spread to estimate). Empty input and non-finite values raise :class:`ValueError`.
    """
    _check_level(level)
    x = _finite_1d(values, "interval")
    if x.size == 0:
        raise ValueError("interval: no values")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half = _t_half_width(float(x.std(ddof=1)), x.size, level)
    return mean, mean - half, mean + half


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    r"""Holm-Bonferroni step-down adjusted p-values.

    With the :math:`m` finite p-values sorted, :math:`p_{(1)} \le \dots \le p_{(m)}`,

    .. math::  \tilde p_{(i)} = \min\Big(1,\ \max_{j \le i}\,(m - j + 1)\, p_{(j)}\Big),

    returned in the input order; rejecting :math:`\tilde p < \alpha` controls the family-wise error
    rate at :math:`\alpha` (Holm 1979). NaN entries stay NaN and do not count in :math:`m`. Values
    outside [0, 1] raise :class:`ValueError`.
    """
    p = np.asarray(pvalues, dtype=float)
    shape = p.shape
    p = p.ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"holm: p-values outside [0, 1]: {p[ok][(p[ok] < 0) | (p[ok] > 1)].tolist()}")
    idx = np.flatnonzero(ok)
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        stepped = (m - np.arange(m)) * p[order]
        out[order] = np.minimum(1.0, np.maximum.accumulate(stepped))
    return out.reshape(shape)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      level: float = 0.95) -> dict[str, float]:
    r"""Paired comparison of ``a`` and ``b`` over the same seeds.

    With :math:`d_s = a_s - b_s`: ``diff`` :math:`= \bar d`; ``low``, ``high`` :math:`= \bar d \mp
    t_{(1+\text{level})/2,\,n-1}\, s_d/\sqrt n`; ``p`` the two-sided paired t-test
    (:func:`scipy.stats.ttest_rel`) of :math:`t = \bar d / (s_d/\sqrt n)`, :math:`n-1` d.o.f.; ``n``.

    Edge cases (never a silent NaN where the answer is determined):

    - all :math:`d_s` equal (zero seed-to-seed spread, up to rounding of ``a - b``): if they are all
      zero, ``p = 1.0`` and the interval is ``(0, 0)``; if they are all equal to :math:`d \ne 0`,
      ``p = 0.0`` and the interval is ``(d, d)`` - with no spread every seed agrees on the sign, so
      the difference is certain as far as these seeds can tell;
    - :math:`n < 2`: ``p``, ``low``, ``high`` are NaN - one pair cannot separate a difference from
      noise (``diff`` is still the single difference).

    Mismatched lengths, empty input and non-finite values raise :class:`ValueError`.
    """
    _check_level(level)
    x = _finite_1d(a, "paired_difference(a)")
    y = _finite_1d(b, "paired_difference(b)")
    if x.size != y.size:
        raise ValueError(f"paired_difference: {x.size} values in a but {y.size} in b")
    n = int(x.size)
    if n == 0:
        raise ValueError("paired_difference: no values")
    d = x - y
    diff = float(d.mean())
    if n < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan, "p": math.nan, "n": n}
    # rounding of a - b leaves a few ulps of spread where the true spread is zero
    tol = 16 * np.finfo(float).eps * max(float(np.abs(x).max()), float(np.abs(y).max()))
    if float(np.ptp(d)) <= tol:
        if abs(diff) <= tol:
            return {"diff": 0.0, "low": 0.0, "high": 0.0, "p": 1.0, "n": n}
        return {"diff": diff, "low": diff, "high": diff, "p": 0.0, "n": n}
    half = _t_half_width(float(d.std(ddof=1)), n, level)
    p = float(_st.ttest_rel(x, y).pvalue)
    return {"diff": diff, "low": diff - half, "high": diff + half, "p": p, "n": n}


# ------------------------------------------------------------------------------------------------
# method families
# ------------------------------------------------------------------------------------------------


def _paired_rows(per_seed: pd.DataFrame, reference: Hashable,
                 methods: Sequence[Hashable] | None) -> tuple[list[Hashable], np.ndarray, dict[Hashable, np.ndarray]]:
    """Validated (methods, reference values, method values) over the seeds the reference has."""
    if not isinstance(per_seed, pd.DataFrame):
        raise TypeError("per_seed must be a DataFrame (index = method, columns = seed)")
    if per_seed.index.has_duplicates:
        raise ValueError(f"per_seed: duplicate methods {per_seed.index[per_seed.index.duplicated()].tolist()}")
    if reference not in per_seed.index:
        raise ValueError(f"reference {reference!r} not in per_seed (methods: {per_seed.index.tolist()})")
    if methods is None:
        names = [m for m in per_seed.index if m != reference]
    else:
        missing = [m for m in methods if m not in per_seed.index]
        if missing:
            raise ValueError(f"methods not in per_seed: {missing}")
        names = [m for m in dict.fromkeys(methods) if m != reference]
    ref_row = per_seed.loc[reference].astype(float)
    ref_seeds = ref_row.index[ref_row.notna()]
    if len(ref_seeds) < 2:
        raise ValueError(f"reference {reference!r} has {len(ref_seeds)} seed(s); at least 2 are needed")
    ref = _finite_1d(ref_row[ref_seeds], f"reference {reference!r}")
    rows: dict[Hashable, np.ndarray] = {}
    for name in names:
        row = per_seed.loc[name].astype(float)
        seeds = row.index[row.notna()]
        if set(seeds) != set(ref_seeds):
            only_m = [s for s in seeds if s not in set(ref_seeds)]
            only_r = [s for s in ref_seeds if s not in set(seeds)]
            raise ValueError(f"method {name!r}: seeds differ from reference {reference!r} "
                             f"(only method: {only_m}, only reference: {only_r})")
        rows[name] = _finite_1d(row[ref_seeds], f"method {name!r}")
    return names, ref, rows


def compare(per_seed: pd.DataFrame, reference: Hashable = "ls", *, higher_is_better: bool = False,
            level: float = 0.95, alpha: float = 0.05, correction: Correction = "holm",
            methods: Sequence[Hashable] | None = None) -> pd.DataFrame:
    r"""Every method against ``reference``, paired over seeds, with a family-wise corrected verdict.

    For each method (all rows but ``reference``, or ``methods``) :func:`paired_difference` of
    ``method - reference`` over the seeds: columns ``diff``, ``low``, ``high`` (t interval at
    ``level``), ``p`` (paired t-test), ``p_adj`` (:func:`holm` over the family of all :math:`m`
    compared methods; ``correction="none"``: ``p_adj = p``) and ``verdict``: ``"better"`` /
    ``"worse"`` when ``p_adj < alpha`` and the difference improves / degrades the metric in its
    direction (lower is better unless ``higher_is_better``), else ``"not resolved"``.

    Every method must have exactly the reference's seeds (missing values = NaN mark absent seeds),
    at least 2 of them; otherwise :class:`ValueError` names the method. Index = method, in the
    order of ``per_seed`` (or of ``methods``). ``df.attrs`` holds ``level``, ``alpha``,
    ``correction``, ``reference``, ``higher_is_better``, ``n_seeds`` and the family size ``m``.
    """
    _check_level(level)
    _check_level(alpha, "alpha")
    if correction not in ("holm", "none"):
        raise ValueError(f"correction must be 'holm' or 'none', got {correction!r}")
    names, ref, rows = _paired_rows(per_seed, reference, methods)
    res = [paired_difference(rows[name], ref, level) for name in names]
    df = pd.DataFrame({k: [r[k] for r in res] for k in ("diff", "low", "high", "p")},
                      index=pd.Index(names, name=per_seed.index.name), dtype=float)
    p = df["p"].to_numpy(float)
    df["p_adj"] = holm(p) if correction == "holm" else p
    sign = 1.0 if higher_is_better else -1.0
    df["verdict"] = [
        "not resolved" if not (pa < alpha) or d == 0 else ("better" if sign * d > 0 else "worse")
        for d, pa in zip(df["diff"], df["p_adj"])
    ]
    df.attrs.update(level=float(level), alpha=float(alpha), correction=correction, reference=reference,
                    higher_is_better=bool(higher_is_better), n_seeds=int(ref.size), m=len(names))
    return df


def resolvable_difference(per_seed: pd.DataFrame, reference: Hashable = "ls", *, alpha: float = 0.05,
                          m: int | None = None, methods: Sequence[Hashable] | None = None) -> float:
    r"""Smallest paired mean difference the seeds can resolve in this family (rule of thumb).

    .. math::  \delta_{\min} = t_{1-\alpha/(2m),\,n-1}\;\frac{s}{\sqrt n},

    with :math:`n` the number of seeds, :math:`s` the median over the compared methods of the
    standard deviation (ddof = 1) of the paired differences to ``reference``, and :math:`m` the family
    size (default: the number of compared methods). The quantile is the Bonferroni one, i.e. the
    threshold the *smallest* p-value must pass under Holm - the worst case for a method's gap.

    This is the gap whose paired t statistic just reaches significance at the *observed* typical
    spread: a minimum-detectable-difference rule of thumb for reading a table, **not** a power
    calculation (a true gap of this size is detected only about half the time).
    """
    _check_level(alpha, "alpha")
    names, ref, rows = _paired_rows(per_seed, reference, methods)
    if not names:
        raise ValueError("resolvable_difference: no methods to compare with the reference")
    fam = len(names) if m is None else int(m)
    if fam < 1:
        raise ValueError(f"family size m must be >= 1, got {m!r}")
    n = ref.size
    s = float(np.median([np.std(rows[name] - ref, ddof=1) for name in names]))
    return float(_st.t.ppf(1.0 - alpha / (2.0 * fam), n - 1) * s / math.sqrt(n))


def per_seed_rank(wide: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> pd.DataFrame:
    r"""Mean rank (MR) of each method within each seed.

    ``wide`` has a two-level index (method, seed) and one column per metric. Within each seed, each
    metric ranks the methods of that seed (1 = best in the metric's direction from
    ``higher_is_better``; ties get their average rank), and

    .. math::  \mathrm{MR}_{k,s} = \frac1J \sum_{j=1}^{J} \operatorname{rank}_{j}(x_{k,s,j}).

    Returns a DataFrame with index = method (order of first appearance) and columns = seed (sorted), ready for
    :func:`interval` per row. A method absent from a seed is NaN there (and the others are ranked
    without it, so keep the method set equal across seeds for comparable ranks). Non-finite values,
    duplicate (method, seed) rows and metrics missing from ``higher_is_better`` raise
    :class:`ValueError`.
    """
    if not isinstance(wide.index, pd.MultiIndex) or wide.index.nlevels != 2:
        raise ValueError("per_seed_rank: wide needs a two-level (method, seed) index")
    if wide.index.has_duplicates:
        raise ValueError(f"per_seed_rank: duplicate (method, seed) rows "
                         f"{wide.index[wide.index.duplicated()].tolist()}")
    missing = [c for c in wide.columns if c not in higher_is_better]
    if missing:
        raise ValueError(f"per_seed_rank: no direction in higher_is_better for metrics {missing}")
    if wide.shape[1] == 0:
        raise ValueError("per_seed_rank: no metric columns")
    vals = wide.to_numpy(float)
    if not np.all(np.isfinite(vals)):
        bad = [c for c, ok in zip(wide.columns, np.isfinite(vals).all(0)) if not ok]
        raise ValueError(f"per_seed_rank: missing or non-finite values in metrics {bad}")
    by_seed = wide.astype(float).groupby(level=1, sort=False)
    ranks = pd.DataFrame({c: by_seed[c].rank(ascending=not bool(higher_is_better[c]), method="average")
                          for c in wide.columns})
    mr = ranks.mean(axis=1).unstack(level=1)
    methods = wide.index.get_level_values(0).unique()
    seeds = wide.index.get_level_values(1).unique()
    try:
        seeds = seeds.sort_values()
    except TypeError:  # unorderable seed labels: keep the order of first appearance
        pass
    return mr.reindex(index=methods, columns=seeds)
