r"""PIVRG's printed result tables, transcribed as data, and their Delta m / Var[Delta m_i] recomputed.

**These are the PIVRG authors' reported numbers** (PIVRG preprint, published at CVPR 2025; most
baseline rows are copied there from the Nash-MTL, FAMO and FairGrad papers), transcribed from the
preprint of Qin et al., "PIVRG" (CVPR 2025; ``pivrg2025`` in ``book/references.bib``):

- Table 1: NYUv2 (9 metrics, 3 tasks), MR and Delta m;
- Table 2: Cityscapes (4 metrics, 2 tasks), MR and Delta m; CelebA (MR and Delta m only, no metrics);
- Table 3: QM9 (11 metrics = 11 tasks), MR and Delta m;
- Table 5: PI-* integration on NYUv2, Delta m and Var[Delta m_i];
- Tables 9, 10, 11: Delta m and Var[Delta m_i] on NYUv2, QM9, Cityscapes (no metrics: recomputed from
  the metric rows of Tables 1, 3, 2).

Values are kept as the printed strings so that the number of printed decimals is known; bold marks
are dropped. :func:`recompute` recomputes Delta m, Var[Delta m_i] and MR from the printed metrics with
:mod:`mtl_src.metrics`, with **one** convention for every table, found from the rows and not tuned per
row: per-metric drops :math:`\delta_j = (-1)^{l_j}(M_j - B_j)/B_j\times100` (positive = worse);
Delta m = their mean over all metrics pooled; Var = their population variance (ddof 0) over the
metrics. (NYUv2 LS, printed 5.59 / 259.13: pooled 5.589 / 259.131; per-task averaging would give
-0.878, the sample variance 291.52, the variance of the 3 per-task drops 231.47.) The STL values
:math:`B_j` are those of the public Nash-MTL code of Navon et al. (ICML 2022; ``navon2022nash``) in
the tables' units: they equal the printed STL rows of Tables 1 and 2; Table 3 prints them truncated (60.576 as
60.57). MR ranks the methods of the table (not STL) per metric, ties averaged.

A recomputed value *agrees* when it is within the rounding of the printed numbers (column
``q tol`` of :func:`recompute`):

- Delta m: half the last printed digit of every metric, propagated (exactly: Delta m is linear), plus
  half the last digit of the printed Delta m. The authors computed Delta m from unrounded metrics
  (differences up to 0.1 on Cityscapes), so the inputs' rounding must be allowed for.
- Var[Delta m_i]: likewise, to first order in the inputs' rounding, plus the second-order term
  (1/n) sum e_j^2 and half the printed last digit. Most printed values are in fact reproduced *to the
  last printed digit* from the rounded metrics (e.g. QM9 LS 59317.63, NYUv2 LS 259.13), so the authors
  evidently computed Var from the printed metrics; :data:`VAR_NOT_TO_THE_DIGIT` lists those that are
  not (they may still be within rounding).
- MR: each other method whose printed value of a metric lies within rounding of this one's may be
  ordered either way at full precision, moving the rank by 1 (by 1/2 for a printed tie); these moves,
  averaged over the metrics, plus half the printed last digit.

The values that do not agree are listed in :data:`ERRATA` with the recomputed value; the tests fail
if a new disagreement appears or a listed one disappears. (Only PIVRG's tables are transcribed; the
Aligned-MTL, Connection Strength and STGU tables are not.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import metrics

__all__ = ["PaperTable", "TABLES", "ERRATA", "VAR_NOT_TO_THE_DIGIT", "recompute", "disagreements",
           "var_digit_mismatches"]


@dataclass(frozen=True)
class PaperTable:
    """One printed table: per-method metric values (as printed) and printed summary columns."""

    key: str
    source: str
    benchmark: str
    metrics: tuple[str, ...]
    tasks: tuple[str, ...]
    higher_is_better: tuple[bool, ...]
    #: STL values used for Delta m (the public code's, in the table's units)
    baseline: tuple[float, ...]
    #: printed rows: method -> strings (metric values, then the ``summaries`` columns; "" = not printed)
    text: tuple[tuple[str, tuple[str, ...]], ...]
    #: names of the printed summary columns after the metrics ("mr", "delta_m", "var_delta_m")
    summaries: tuple[str, ...]
    #: the printed STL row (strings), or None
    stl: tuple[str, ...] | None = None
    #: key of the table whose metric rows this table's summaries refer to (Tables 9-11)
    metrics_from: str | None = None

    def frame(self) -> pd.DataFrame:
        """Printed values as floats (NaN where nothing is printed), one row per method."""
        cols = self.columns
        return pd.DataFrame([[_f(s) for s in vals] for _, vals in self.text],
                            index=[m for m, _ in self.text], columns=cols)

    def decimals(self) -> pd.DataFrame:
        """Number of printed decimals of each cell (for the rounding tolerance)."""
        cols = self.columns
        return pd.DataFrame([[_dec(s) for s in vals] for _, vals in self.text],
                            index=[m for m, _ in self.text], columns=cols)

    @property
    def columns(self) -> list[str]:
        """The printed columns: the metrics (unless they come from ``metrics_from``), then the summaries."""
        return ([] if self.metrics_from else list(self.metrics)) + list(self.summaries)

    @property
    def methods(self) -> list[str]:
        return [m for m, _ in self.text]


def _f(s: str) -> float:
    return float(s) if s.strip() else float("nan")


def _dec(s: str) -> int:
    s = s.strip()
    return len(s.split(".")[1]) if "." in s else 0


def _rows(block: str, n: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for line in block.strip().splitlines():
        parts = line.split()
        name, vals = parts[0], parts[1:]
        vals = vals + [""] * (n - len(vals))
        if len(vals) != n:
            raise ValueError(f"transcription: row {name} has {len(vals)} values, expected {n}")
        out.append((name, tuple(vals)))
    return tuple(out)


NYU_METRICS = ("miou", "pix_acc", "abs_err", "rel_err", "mean", "median", "within_11.25", "within_22.5", "within_30")
NYU_TASKS = ("segmentation",) * 2 + ("depth",) * 2 + ("normal",) * 5
NYU_HIB = (True, True, False, False, False, False, True, True, True)
# nash-mtl experiments/nyuv2/utils.py BASE (fractions x 100 for mIoU, pixel accuracy and "within")
NYU_STL = (38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15)

CITY_METRICS = ("miou", "pix_acc", "abs_err", "rel_err")
CITY_TASKS = ("segmentation",) * 2 + ("depth",) * 2
CITY_HIB = (True, True, False, False)
CITY_STL = (74.01, 93.16, 0.0125, 27.77)

QM9_METRICS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")
QM9_HIB = (False,) * 11
QM9_STL = (0.0671, 0.1814, 60.576, 53.915, 0.5027, 4.539, 58.838, 64.244, 63.852, 66.223, 0.07212)

_T1 = """
LS        39.29 65.33 0.5493 0.2263 28.15 23.96 22.09 47.50 61.08 11.78  5.59
SI        38.45 64.27 0.5354 0.2201 27.60 23.37 22.53 48.57 62.32 10.22  4.39
RLW       37.17 63.77 0.5759 0.2410 28.27 24.18 22.26 47.05 60.62 14.22  7.78
DWA       39.11 65.31 0.5510 0.2285 27.61 23.18 24.17 50.18 62.39 10.67  3.57
UW        36.87 63.17 0.5446 0.2260 27.04 22.61 23.54 49.05 63.65 10.33  4.05
MGDA      30.47 59.90 0.6070 0.2555 24.88 19.45 29.18 56.88 69.36  8.11  1.38
PCGrad    38.06 64.64 0.5550 0.2325 27.41 22.80 23.86 49.83 63.14 10.89  3.97
GradDrop  39.39 65.12 0.5455 0.2279 27.48 22.96 23.38 49.44 62.87  9.89  3.58
CAGrad    39.79 65.49 0.5486 0.2250 26.31 21.58 25.61 52.36 65.58  6.89  0.20
IMTL-G    39.35 65.60 0.5426 0.2256 26.02 21.19 26.20 53.13 66.24  6.11 -0.76
MoCo      40.30 66.07 0.5575 0.2135 26.67 21.83 25.61 51.78 64.85  6.22  0.16
Nash-MTL  40.13 65.93 0.5261 0.2171 25.26 20.08 28.40 55.47 68.15  3.67 -4.04
FAMO      38.88 64.90 0.5474 0.2194 25.06 19.57 29.21 56.61 68.98  5.33 -4.10
FairGrad  39.74 66.01 0.5377 0.2236 24.84 19.60 29.26 56.58 69.16  3.44 -4.66
PIVRG     39.90 65.74 0.5365 0.2243 24.30 18.80 30.95 58.26 70.38  2.33 -6.50
"""

_T2_CITY = """
LS        75.18 93.49 0.0155 46.77  8.75 22.60
SI        70.95 91.73 0.0161 33.83 11.25 14.11
RLW       74.57 93.41 0.0158 47.79 11.25 24.38
DWA       75.24 93.52 0.0160 44.37  8.50 21.45
UW        72.02 92.85 0.0140 30.13  7.75  5.89
MGDA      68.84 91.54 0.0309 33.50 11.75 44.14
PCGrad    75.13 93.48 0.0154 42.07  9.00 18.29
GradDrop  75.27 93.53 0.0157 47.54  8.00 23.73
CAGrad    75.16 93.48 0.0141 37.60  7.75 11.64
IMTL-G    75.33 93.49 0.0135 38.41  6.00 11.10
Nash-MTL  75.41 93.66 0.0129 35.02  3.50  6.82
FAMO      74.54 93.29 0.0145 32.59  8.25  8.13
FairGrad  75.72 93.68 0.0134 32.25  2.25  5.18
PIVRG     75.82 93.65 0.0126 27.87  1.50 -0.54
"""

_T2_CELEBA = """
LS         7.65  4.15
SI         9.43  7.20
RLW        6.65  1.46
DWA        8.32  3.20
UW         6.95  3.23
MGDA      12.88 14.85
PCGrad     8.03  3.17
GradDrop   9.45  3.29
CAGrad     7.62  2.48
IMTL-G     5.88  0.84
Nash-MTL   6.30  2.84
FAMO       5.97  1.21
FairGrad   6.62  0.37
PIVRG      3.25 -0.96
"""

_T3 = """
LS        0.106 0.325  73.57  89.67 5.19 14.06 143.4  144.2  144.6  140.3  0.128  9.09 177.6
SI        0.309 0.345 149.8  135.7  1.00  4.50  55.3   55.75  55.82  55.27 0.112  5.55  77.8
RLW       0.113 0.340  76.95  92.76 5.86 15.46 156.3  157.1  157.6  153.0  0.137 10.64 203.8
DWA       0.107 0.325  74.06  90.61 5.09 13.99 142.3  143.0  143.4  139.3  0.125  8.82 175.3
UW        0.386 0.425 166.2  155.8  1.06  4.99  66.4   66.78  66.80  66.24 0.122  7.27 108.0
MGDA      0.217 0.368 126.8  104.6  3.22  5.69  88.37  89.4   89.32  88.01 0.120  8.91 120.5
PCGrad    0.106 0.293  75.85  88.33 3.94  9.15 116.36 116.8  117.2  114.5  0.110  7.27 125.7
CAGrad    0.118 0.321  83.51  94.81 3.21  6.93 113.99 114.3  114.5  112.3  0.116  8.18 112.8
IMTL-G    0.136 0.287  98.31  93.96 1.75  5.69 101.4  102.4  102.0  100.1  0.096  7.18  77.2
Nash-MTL  0.102 0.248  82.95  81.89 2.42  5.38  74.5   75.02  75.10  74.16 0.093  4.36  62.0
FAMO      0.15  0.30   94.0   95.2  1.63  4.95  70.82  71.2   71.2   70.3  0.10   5.73  58.5
FairGrad  0.117 0.253  87.57  84.00 2.15  5.07  70.89  71.17  71.21  70.88 0.095  4.73  57.9
PIVRG     0.125 0.226  94.80  81.98 1.41  3.87  57.79  57.90  58.09  57.86 0.085  3.00  33.6
"""

_T5 = """
LS           39.29 65.33 0.5493 0.2263 28.15 23.96 22.09 47.50 61.08  5.59 259.1
PI-LS        40.59 66.24 0.5330 0.2191 26.66 21.80 25.19 51.94 65.05 -0.06 173.2
RLW          37.17 63.77 0.5759 0.2410 28.27 24.18 22.26 47.05 60.62  7.78 205.3
PI-RLW       39.86 64.86 0.5744 0.2410 27.38 22.84 22.75 49.58 63.26  4.52 170.5
DWA          39.11 65.31 0.5510 0.2285 27.61 23.18 24.17 50.18 62.39  3.57 191.9
PI-DWA       40.55 66.31 0.5480 0.2261 26.63 21.97 25.03 51.42 64.67  0.78 158.8
UW           36.87 63.17 0.5446 0.2260 27.04 22.61 23.54 49.05 63.65  4.05 190.7
PI-UW        40.23 65.84 0.5182 0.2147 26.13 21.14 26.25 53.09 66.09 -1.71 158.7
MGDA         30.47 59.90 0.6070 0.2555 24.88 19.45 29.18 56.88 69.36  1.38  68.6
PI-MGDA      35.45 63.04 0.6025 0.2364 24.32 18.59 31.06 58.73 70.62 -3.45  36.6
Nash-MTL     40.13 65.93 0.5261 0.2171 25.26 20.08 28.40 55.47 68.15 -4.04 108.0
PI-Nash-MTL  42.14 66.83 0.5317 0.2259 24.79 19.46 29.46 56.93 69.30 -5.77  70.7
"""

# Tables 9-11: Delta m and Var only (the metric values come from Tables 1, 3, 2)
_T9 = """
LS        5.59  259.13
SI        4.39  247.77
RLW       7.78  205.32
DWA       3.57  191.93
UW        4.05  190.73
MGDA      1.38   68.65
PCGrad    3.97  173.67
GradDrop  3.58  204.45
CAGrad    0.20  137.94
IMTL-G   -0.76  124.03
MoCo      0.16  163.07
Nash-MTL -4.04  108.03
FAMO     -4.10   74.66
FairGrad -4.66   71.59
PIVRG    -6.50   52.21
"""

_T10 = """
LS        177.6 59317.63
SI         77.8 11807.60
RLW       203.8 77380.19
DWA       175.3 56660.16
UW        108.0 18171.92
MGDA      120.5 20533.84
PCGrad    125.7 31570.73
CAGrad    112.8 18343.53
IMTL-G     77.2  3309.90
Nash-MTL   62.0 10385.12
FAMO       58.5  3963.84
FairGrad   57.9  7705.27
PIVRG      33.6  3196.32
"""

_T11 = """
LS        22.60 803.24
SI        14.11 133.23
RLW       24.38 879.98
DWA       21.45 630.71
UW         5.89  21.32
MGDA      44.14 3588.05
PCGrad    18.29 466.50
GradDrop  23.73 871.26
CAGrad    11.64 220.86
IMTL-G    11.10 261.86
MoCo       9.90 126.75
Nash-MTL   6.82 128.77
FAMO       8.13  73.43
FairGrad   5.18  53.26
PIVRG     -0.54   1.55
"""

_SRC = "PIVRG preprint (CVPR 2025), "
_nyu = dict(metrics=NYU_METRICS, tasks=NYU_TASKS, higher_is_better=NYU_HIB, baseline=NYU_STL)
_city = dict(metrics=CITY_METRICS, tasks=CITY_TASKS, higher_is_better=CITY_HIB, baseline=CITY_STL)
_qm9 = dict(metrics=QM9_METRICS, tasks=QM9_METRICS, higher_is_better=QM9_HIB, baseline=QM9_STL)
_none = dict(metrics=(), tasks=(), higher_is_better=(), baseline=())

#: every transcribed table, by key
TABLES: dict[str, PaperTable] = {t.key: t for t in [
    PaperTable("pivrg_t1", _SRC + "Table 1", "nyuv2", **_nyu, text=_rows(_T1, 11), summaries=("mr", "delta_m"),
               stl=tuple("38.30 63.76 0.6754 0.2780 25.01 19.21 30.14 57.20 69.15".split())),
    PaperTable("pivrg_t2_cityscapes", _SRC + "Table 2 (Cityscapes)", "cityscapes", **_city,
               text=_rows(_T2_CITY, 6), summaries=("mr", "delta_m"), stl=tuple("74.01 93.16 0.0125 27.77".split())),
    PaperTable("pivrg_t2_celeba", _SRC + "Table 2 (CelebA)", "celeba", **_none, text=_rows(_T2_CELEBA, 2),
               summaries=("mr", "delta_m")),
    PaperTable("pivrg_t3", _SRC + "Table 3", "qm9", **_qm9, text=_rows(_T3, 13), summaries=("mr", "delta_m"),
               stl=tuple("0.067 0.181 60.57 53.91 0.502 4.53 58.8 64.2 63.8 66.2 0.072".split())),
    PaperTable("pivrg_t5", _SRC + "Table 5", "nyuv2", **_nyu, text=_rows(_T5, 11),
               summaries=("delta_m", "var_delta_m")),
    PaperTable("pivrg_t9", _SRC + "Table 9", "nyuv2", **_nyu, text=_rows(_T9, 2),
               summaries=("delta_m", "var_delta_m"), metrics_from="pivrg_t1"),
    PaperTable("pivrg_t10", _SRC + "Table 10", "qm9", **_qm9, text=_rows(_T10, 2),
               summaries=("delta_m", "var_delta_m"), metrics_from="pivrg_t3"),
    PaperTable("pivrg_t11", _SRC + "Table 11", "cityscapes", **_city, text=_rows(_T11, 2),
               summaries=("delta_m", "var_delta_m"), metrics_from="pivrg_t2_cityscapes"),
]}


def _metric_source(table: PaperTable) -> PaperTable:
    return TABLES[table.metrics_from] if table.metrics_from else table


def recompute(table: PaperTable | str) -> pd.DataFrame:
    """Printed vs recomputed Delta m, Var[Delta m_i] and MR of every method of ``table``.

    Columns, for each printed summary ``q`` in ``delta_m``, ``var_delta_m``, ``mr``: ``q printed``,
    ``q recomputed`` (NaN where the metrics are not printed, e.g. MoCo in Table 11), ``q diff``
    (recomputed - printed), ``q tol`` (rounding bound: printed inputs' and output's half last digit
    propagated, see the module docstring) and ``q agrees``.
    Var and Delta m are recomputed for every table with metrics (also where not printed).
    """
    t = TABLES[table] if isinstance(table, str) else table
    src = _metric_source(t)
    out = pd.DataFrame(index=t.methods)
    if not src.metrics:
        return out
    vals, dec = src.frame(), src.decimals()
    have = [m for m in t.methods if m in vals.index]
    V = vals.loc[have, list(src.metrics)].to_numpy(float)
    half = 0.5 * 10.0 ** -dec.loc[have, list(src.metrics)].to_numpy(float)  # half a printed digit
    B = np.asarray(src.baseline, float)
    drops = metrics.relative_drops(V, B, src.higher_is_better)
    err = 100.0 * half / np.abs(B)  # bound on each drop's rounding error
    n = V.shape[1]
    rec = {
        "delta_m": (metrics.delta_m(V, B, src.higher_is_better), err.mean(1)),
        "var_delta_m": (metrics.var_delta_m(V, B, src.higher_is_better),
                        (2 * np.abs(drops - drops.mean(1, keepdims=True)) * err).sum(1) / n + (err**2).sum(1) / n),
    }
    if "mr" in t.summaries:
        mr = metrics.mean_rank(pd.DataFrame(V, index=have, columns=src.metrics), src.higher_is_better)
        # printed values within rounding of each other may be ordered either way at full precision:
        # each such pair can move a rank by 1 (by 0.5 when printed equal, from the averaged tie)
        close = np.abs(V[:, None, :] - V[None, :, :]) <= half[:, None, :] + half[None, :, :] + 1e-12
        shift = np.where(V[:, None, :] == V[None, :, :], 0.5, 1.0) * close
        shift[np.arange(len(have)), np.arange(len(have)), :] = 0.0
        rec["mr"] = (mr.to_numpy(), shift.sum((1, 2)) / n)
    printed, pdec = t.frame(), t.decimals()
    for q in ("delta_m", "var_delta_m", "mr"):
        if q not in rec:
            continue
        r = pd.Series(np.nan, index=t.methods)
        tol = pd.Series(np.nan, index=t.methods)
        r[have], tol[have] = rec[q]
        if q in t.summaries:
            p = printed[q]
            out[f"{q} printed"] = p
            out[f"{q} recomputed"] = r
            out[f"{q} diff"] = r - p
            out[f"{q} tol"] = tol + 0.5 * 10.0 ** -pdec[q].astype(float) + 1e-9
            out[f"{q} agrees"] = ((r - p).abs() <= out[f"{q} tol"]).where(r.notna())
            if q == "var_delta_m":
                same = [bool(np.round(x, int(d)) == y) if np.isfinite(x) else np.nan
                        for x, d, y in zip(r, pdec[q], p)]
                out[f"{q} same digits"] = pd.Series(same, index=t.methods, dtype=object)
        else:
            out[f"{q} recomputed"] = r
    return out


def disagreements() -> dict[tuple[str, str, str], tuple[float, float]]:
    """Every (table, method, quantity) whose recomputed value is outside the rounding bound of the
    printed one: ``{key: (printed, recomputed)}``."""
    found = {}
    for key in TABLES:
        r = recompute(key)
        for q in ("delta_m", "var_delta_m", "mr"):
            col = f"{q} agrees"
            if col not in r:
                continue
            for m in r.index[r[col] == False]:  # noqa: E712 (NaN = not recomputable, not a disagreement)
                found[(key, m, q)] = (float(r.loc[m, f"{q} printed"]), float(r.loc[m, f"{q} recomputed"]))
    return found


def var_digit_mismatches() -> set[tuple[str, str]]:
    """(table, method) whose printed Var[Delta m_i] differs from the one recomputed from the printed
    metrics, rounded to the printed digits."""
    found = set()
    for key in TABLES:
        r = recompute(key)
        if "var_delta_m same digits" in r:
            found |= {(key, m) for m in r.index[r["var_delta_m same digits"] == False]}  # noqa: E712
    return found


#: printed values that the printed metrics do not reproduce even allowing for rounding:
#: (table, method, quantity) -> (printed, recomputed, 3 decimals). Kept equal to :func:`disagreements`
#: by the tests. The NYUv2 IMTL-G and QM9 DWA / UW rows are baseline rows PIVRG copied from earlier papers;
#: QM9 UW misses the rounding bound by only 0.005.
ERRATA: dict[tuple[str, str, str], tuple[float, float]] = {
    ("pivrg_t1", "IMTL-G", "delta_m"): (-0.76, -0.600),
    ("pivrg_t9", "IMTL-G", "delta_m"): (-0.76, -0.600),
    ("pivrg_t3", "DWA", "delta_m"): (175.3, 174.763),
    ("pivrg_t10", "DWA", "delta_m"): (175.3, 174.763),
    ("pivrg_t3", "UW", "delta_m"): (108.0, 107.663),
    ("pivrg_t10", "UW", "delta_m"): (108.0, 107.663),
    ("pivrg_t5", "Nash-MTL", "var_delta_m"): (108.0, 102.405),
    ("pivrg_t9", "Nash-MTL", "var_delta_m"): (108.03, 102.405),
}

#: (table, method) whose printed Var[Delta m_i] is not the one recomputed from the printed metrics to
#: the last printed digit (includes the Nash-MTL entries of :data:`ERRATA`; the others are within
#: rounding: NYUv2 DWA 191.93 vs 191.73, PCGrad 173.67 vs 173.665, PI-UW 158.7 vs 158.78,
#: QM9 PIVRG 3196.32 vs 3179.80). Kept equal to :func:`var_digit_mismatches` by the tests.
VAR_NOT_TO_THE_DIGIT: set[tuple[str, str]] = {
    ("pivrg_t5", "DWA"), ("pivrg_t9", "DWA"), ("pivrg_t9", "PCGrad"), ("pivrg_t5", "PI-UW"),
    ("pivrg_t10", "PIVRG"), ("pivrg_t5", "Nash-MTL"), ("pivrg_t9", "Nash-MTL"),
}
