"""mtl_src.stats: known answers (hand-computed or textbook) for intervals, paired tests, Holm, verdicts and ranks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from mtl_src import stats as S


def t2_quantile(q: float) -> float:
    """Student-t quantile with 2 d.o.f. in closed form: t = (2q - 1) / sqrt(2 q (1 - q))."""
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def t3_cdf(t: float) -> float:
    """Student-t CDF with 3 d.o.f. in closed form."""
    u = t / math.sqrt(3)
    return 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi


# ------------------------------------------------------------------------------------------------
# interval
# ------------------------------------------------------------------------------------------------


def test_interval_known_answer():
    mean, low, high = S.interval([1.0, 2.0, 3.0])
    half = t2_quantile(0.975) / math.sqrt(3)  # sd = 1
    assert half == pytest.approx(2.4841, abs=1e-4)
    assert mean == 2.0
    assert (low, high) == pytest.approx((2 - half, 2 + half), rel=1e-12)
    # a lower level gives a narrower interval (90%: t(0.95, 2) = 2.9200)
    _, low90, high90 = S.interval([1.0, 2.0, 3.0], level=0.90)
    assert (high90 - low90) / 2 == pytest.approx(t2_quantile(0.95) / math.sqrt(3), rel=1e-12)


def test_interval_single_value_and_bad_input():
    mean, low, high = S.interval([4.5])
    assert mean == 4.5 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match=r"nan.*inf|positions \[1, 3\]"):
        S.interval([1.0, np.nan, 2.0, np.inf])
    with pytest.raises(ValueError, match="no values"):
        S.interval([])
    with pytest.raises(ValueError, match="level"):
        S.interval([1.0, 2.0], level=95)


# ------------------------------------------------------------------------------------------------
# holm
# ------------------------------------------------------------------------------------------------


def test_holm_textbook_example():
    adj = S.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_nan_stays_nan_and_is_not_counted():
    adj = S.holm([0.01, np.nan, 0.04, 0.03, np.nan, 0.005])
    assert np.isnan(adj[[1, 4]]).all()
    # m = 4, not 6: the same answer as without the NaNs
    np.testing.assert_allclose(adj[[0, 2, 3, 5]], [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert np.isnan(S.holm([np.nan, np.nan])).all()


def test_holm_caps_at_one_monotone_and_at_least_raw(rng):
    np.testing.assert_allclose(S.holm([0.5, 0.6]), [1.0, 1.0])
    p = rng.uniform(0, 0.2, size=40)
    adj = S.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)
    # the smallest p is multiplied by m (Bonferroni), the largest by 1 (unless a smaller one is larger)
    assert adj[order[0]] == pytest.approx(min(1.0, 40 * p[order[0]]))
    # without the running maximum (3 * 0.02 = 0.06 > 2 * 0.025 = 0.05) the step-down would not be monotone
    np.testing.assert_allclose(S.holm([0.02, 0.025, 0.9]), [0.06, 0.06, 0.9])
    with pytest.raises(ValueError, match="outside"):
        S.holm([0.1, 1.2])


# ------------------------------------------------------------------------------------------------
# paired_difference
# ------------------------------------------------------------------------------------------------


def test_paired_difference_hand_computed_t():
    a = np.array([5.0, 7.0, 9.0, 4.0])
    b = np.array([3.0, 4.0, 6.0, 4.0])
    # d = [2, 3, 3, 0]: mean 2, sd = sqrt(6/3) = sqrt(2), se = sqrt(2)/2, t = 2 sqrt(2), 3 d.o.f.
    t = 2 * math.sqrt(2)
    p_hand = 2 * (1 - t3_cdf(t))
    assert p_hand == pytest.approx(0.0662, abs=1e-4)
    r = S.paired_difference(a, b)
    assert r["n"] == 4 and r["diff"] == pytest.approx(2.0)
    assert r["p"] == pytest.approx(p_hand, rel=1e-9)
    half = st.t.ppf(0.975, 3) * math.sqrt(2) / 2
    assert (r["low"], r["high"]) == pytest.approx((2 - half, 2 + half), rel=1e-12)
    # the sign follows a - b
    r2 = S.paired_difference(b, a)
    assert r2["diff"] == pytest.approx(-2.0) and r2["p"] == pytest.approx(r["p"])
    assert (r2["low"], r2["high"]) == pytest.approx((-r["high"], -r["low"]))


def test_paired_difference_matches_scipy_ttest_rel():
    a = np.array([12.1, 11.4, 13.0, 12.7, 11.9, 12.4])
    b = np.array([11.8, 11.9, 12.1, 12.0, 11.0, 12.3])
    res = st.ttest_rel(a, b)
    r = S.paired_difference(a, b, level=0.9)
    assert r["p"] == pytest.approx(res.pvalue, rel=1e-12)
    assert r["diff"] == pytest.approx(np.mean(a - b), rel=1e-12)
    ci = res.confidence_interval(0.9)
    assert (r["low"], r["high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    # not the unpaired (independent samples) test
    assert r["p"] != pytest.approx(st.ttest_ind(a, b).pvalue, rel=1e-3)


def test_paired_difference_zero_variance_cases():
    a = np.array([1.0, 2.5, -3.0])
    same = S.paired_difference(a, a.copy())
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "p": 1.0, "n": 3}
    # constant shift, including one that rounding turns into a few ulps of spread
    for shift in (2.0, -0.7):
        b = np.array([0.1, 0.2, 0.3])
        r = S.paired_difference(b + shift, b)
        assert r["p"] == 0.0
        assert r["diff"] == pytest.approx(shift) and r["low"] == r["diff"] == r["high"]
        assert all(math.isfinite(r[k]) for k in ("diff", "low", "high", "p"))
    # (0.1 + 2) - 0.1 etc. is not exactly 2 for every pair: the tolerance must catch that spread
    b = np.array([0.1, 0.2, 0.3])
    assert np.ptp((b + 2.0) - b) > 0
    # a tiny real spread is not zero variance
    r = S.paired_difference([1.0, 1.0, 1.0 + 1e-6], [0.0, 0.0, 0.0])
    assert 0.0 < r["p"] < 1e-5 and r["low"] < r["high"]


def test_paired_difference_n_below_two_and_errors():
    r = S.paired_difference([3.0], [1.0])
    assert r["n"] == 1 and r["diff"] == 2.0
    assert math.isnan(r["p"]) and math.isnan(r["low"]) and math.isnan(r["high"])
    with pytest.raises(ValueError, match="3 values in a but 2 in b"):
        S.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        S.paired_difference([1.0, np.nan], [1.0, 2.0])


# ------------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------------


def _clear_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2, 3, 4]
    ref = 10 + rng.normal(0, 1.0, 5)  # seed-to-seed spread shared by all methods (paired)
    return pd.DataFrame(
        [ref + 1.0 + rng.normal(0, 0.2, 5), ref - 5 + rng.normal(0, 0.1, 5), ref,
         ref + 5 + rng.normal(0, 0.1, 5)],
        index=["other", "good", "ls", "bad"], columns=seeds)


def test_compare_clear_verdicts_and_order():
    df = S.compare(_clear_frame().drop(index="other"))
    assert df.index.tolist() == ["good", "bad"]
    df = S.compare(_clear_frame().loc[["bad", "ls", "good"]].rename(index={"ls": "ref"}), reference="ref")
    assert df.index.tolist() == ["bad", "good"]
    per_seed = _clear_frame()
    per_seed.loc["same"] = per_seed.loc["ls"]
    df = S.compare(per_seed)
    assert df.index.tolist() == ["other", "good", "bad", "same"]
    assert list(df.columns) == ["diff", "low", "high", "p", "p_adj", "verdict"]
    assert df.loc["good", "verdict"] == "better" and df.loc["bad", "verdict"] == "worse"
    assert df.loc["same", "verdict"] == "not resolved"
    assert df.loc["same", "p"] == 1.0 and df.loc["same", "diff"] == 0.0
    assert df.loc["good", "diff"] == pytest.approx(-5, abs=0.2)
    assert df.loc["good", "low"] < df.loc["good", "diff"] < df.loc["good", "high"] < 0
    assert df.attrs == {"level": 0.95, "alpha": 0.05, "correction": "holm", "reference": "ls",
                        "higher_is_better": False, "n_seeds": 5, "m": 4}
    np.testing.assert_allclose(df["p_adj"], S.holm(df["p"]))


def test_compare_higher_is_better_flips_verdict():
    df = S.compare(_clear_frame(), higher_is_better=True)
    assert df.loc["good", "verdict"] == "worse" and df.loc["bad", "verdict"] == "better"


def _borderline_frame() -> pd.DataFrame:
    ref = np.array([3.0, -1.0, 0.5, 2.0, 1.0])
    return pd.DataFrame(
        [ref, ref + [1, 2, 3, 0, 1.5], ref + [1, 2, 0, -0.5, 1.5], ref],
        index=["ls", "border", "noisy", "copy"], columns=[10, 11, 12, 13, 14])


def test_compare_holm_changes_borderline_verdict():
    per_seed = _borderline_frame()
    p_raw = st.ttest_1samp([1, 2, 3, 0, 1.5], 0).pvalue
    assert 0.017 < p_raw < 0.05  # resolved alone, not after x3
    holm_df = S.compare(per_seed)
    none_df = S.compare(per_seed, correction="none")
    assert holm_df.loc["border", "p"] == pytest.approx(p_raw)
    assert holm_df.loc["border", "p_adj"] == pytest.approx(3 * p_raw)
    assert holm_df.loc["border", "verdict"] == "not resolved"
    assert none_df.loc["border", "verdict"] == "worse"
    np.testing.assert_array_equal(none_df["p_adj"], none_df["p"])
    assert none_df.attrs["correction"] == "none" and holm_df.attrs["m"] == 3
    # a family of one: Holm is no correction, the borderline method is resolved
    alone = S.compare(per_seed, methods=["border"])
    assert alone.attrs["m"] == 1 and alone.loc["border", "verdict"] == "worse"
    with pytest.raises(ValueError, match="correction"):
        S.compare(per_seed, correction="bonferroni")


def test_compare_methods_subset_and_order():
    df = S.compare(_borderline_frame(), methods=["copy", "ls", "border"])
    assert df.index.tolist() == ["copy", "border"] and df.attrs["m"] == 2
    with pytest.raises(ValueError, match="nope"):
        S.compare(_borderline_frame(), methods=["nope"])
    with pytest.raises(ValueError, match="reference 'mgda'"):
        S.compare(_borderline_frame(), reference="mgda")


def test_compare_mismatched_or_too_few_seeds_raise():
    per_seed = _borderline_frame()
    per_seed.loc["noisy", 12] = np.nan
    with pytest.raises(ValueError, match=r"method 'noisy'.*only reference: \[12\]"):
        S.compare(per_seed)
    # dropping that seed everywhere makes it paired again
    assert S.compare(per_seed.drop(columns=12)).attrs["n_seeds"] == 4
    with pytest.raises(ValueError, match="at least 2"):
        S.compare(_borderline_frame()[[10]])
    one_each = pd.DataFrame({0: [1.0, np.nan], 1: [np.nan, 2.0]}, index=["ls", "a"])
    with pytest.raises(ValueError, match="'ls' has 1 seed"):
        S.compare(one_each)


# ------------------------------------------------------------------------------------------------
# resolvable_difference
# ------------------------------------------------------------------------------------------------


def test_resolvable_difference_hand_example():
    ref = np.array([4.0, -2.0, 7.0])
    per_seed = pd.DataFrame(
        [ref, ref + [1, 2, 3], ref + [0, 3, 6], ref + [1, 1, 1]],  # sd of the differences: 1, 3, 0
        index=["ls", "a", "b", "c"], columns=[0, 1, 2])
    # median sd = 1 (the mean would be 4/3), n = 3, m = 3: t_{1 - 0.05/6, 2} / sqrt(3)
    expected = t2_quantile(1 - 0.05 / 6) / math.sqrt(3)
    assert expected == pytest.approx(7.6488 / math.sqrt(3), rel=1e-4)
    assert S.resolvable_difference(per_seed) == pytest.approx(expected, rel=1e-10)
    # m = 1 is the uncorrected t_{0.975, 2} / sqrt(3) = 2.4841
    assert S.resolvable_difference(per_seed, m=1) == pytest.approx(2.4841, abs=1e-4)
    # methods=[a, b]: median of sd 1 and 3 = 2, m = 2
    assert S.resolvable_difference(per_seed, methods=["a", "b"]) == pytest.approx(
        t2_quantile(1 - 0.05 / 4) * 2 / math.sqrt(3), rel=1e-10)
    with pytest.raises(ValueError, match="m must be"):
        S.resolvable_difference(per_seed, m=0)


def test_resolvable_difference_agrees_with_compare_threshold():
    # a method whose gap equals the resolvable difference sits exactly at the Bonferroni threshold
    ref = np.array([1.0, 5.0, 3.0, 2.0])
    noise = np.array([0.3, -0.1, -0.4, 0.2])  # mean 0, sd s
    delta = S.resolvable_difference(pd.DataFrame([ref, ref + noise], index=["ls", "x"]), m=4)
    per_seed = pd.DataFrame([ref, ref + noise + delta], index=["ls", "x"])
    p = S.compare(per_seed).loc["x", "p"]
    assert 4 * p == pytest.approx(0.05, rel=1e-8)


# ------------------------------------------------------------------------------------------------
# per_seed_rank
# ------------------------------------------------------------------------------------------------


def test_per_seed_rank_hand_example_with_tie():
    rows = [  # (method, seed, acc (higher better), err (lower better)); rows deliberately shuffled
        ("B", 1, 0.9, 1.0), ("A", 0, 0.9, 1.0), ("C", 0, 0.7, 3.0),
        ("A", 1, 0.7, 2.0), ("B", 0, 0.8, 1.0), ("C", 1, 0.8, 3.0),
    ]
    wide = pd.DataFrame([r[2:] for r in rows], columns=["acc", "err"],
                        index=pd.MultiIndex.from_tuples([r[:2] for r in rows], names=["method", "seed"]))
    mr = S.per_seed_rank(wide, {"acc": True, "err": False})
    # seed 0: acc A1 B2 C3, err A1.5 B1.5 (tie) C3 -> A 1.25, B 1.75, C 3
    # seed 1: acc B1 C2 A3, err B1 A2 C3           -> A 2.5,  B 1,    C 2.5
    expected = pd.DataFrame({0: [1.25, 1.75, 3.0], 1: [2.5, 1.0, 2.5]}, index=["A", "B", "C"])
    pd.testing.assert_frame_equal(mr, expected.loc[["B", "A", "C"]], check_names=False,
                                  check_index_type=False, check_column_type=False)
    assert mr.loc["A"].tolist() == [1.25, 2.5]
    # flipping a direction changes the ranks
    flipped = S.per_seed_rank(wide, {"acc": False, "err": False})
    assert flipped.loc["A", 0] == pytest.approx((3 + 1.5) / 2)


def test_per_seed_rank_errors():
    wide = pd.DataFrame({"acc": [0.1, 0.2]},
                        index=pd.MultiIndex.from_tuples([("A", 0), ("B", 0)]))
    with pytest.raises(ValueError, match="acc"):
        S.per_seed_rank(wide, {"err": False})
    with pytest.raises(ValueError, match="two-level"):
        S.per_seed_rank(wide.reset_index(drop=True), {"acc": True})
    bad = wide.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        S.per_seed_rank(bad, {"acc": True})
