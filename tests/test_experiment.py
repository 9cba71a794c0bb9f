"""The experiment runner: method x seed runs, single-task baselines, parallel runs, resume, tables."""

import numpy as np
import pandas as pd
import pytest

from mtl_src import benchmarks, experiment, methods, report

TRAIN = {"epochs": 2, "batch_size": 50, "lr": 1e-2}


@pytest.fixture()
def bench(tmp_path):
    return benchmarks.make("gradnorm_synth", K=2, n_train=200, n_test=100, data_root=str(tmp_path))


def _values(df):
    v = df[~df.split.isin(["timing"])].sort_values(["method", "seed", "epoch", "split", "metric"])
    return v.reset_index(drop=True)


def test_comparison_lists_every_method_of_the_tables():
    names = experiment.comparison_methods(pi=True)
    assert set(experiment.COMPARISON) <= set(methods.available()), set(experiment.COMPARISON) - set(methods.available())
    assert len(names) == len(experiment.COMPARISON) + len(experiment.PI_VARIANTS)
    for spec in names:
        methods.make(spec)


def test_stl_baseline_is_each_task_trained_alone_and_cached(bench):
    base, rows = experiment.stl_baseline(bench, seeds=[0, 1], **TRAIN)
    assert set(base) == {m.name for m in bench.metrics}
    assert set(rows.method) == {"stl"} and set(rows.seed) == {0, 1}
    # the value for task t0 comes from the run that trained t0 only (method stl:0), mean over seeds
    again, _ = experiment.stl_baseline(bench, seeds=[0, 1], **TRAIN)
    assert again == base  # read from the cache
    cached = list((bench_root(bench) / "stl").glob("gradnorm_synth-*.csv"))
    assert len(cached) == 1
    other, _ = experiment.stl_baseline(bench, seeds=[0], **TRAIN)  # other seeds: another cache entry
    assert len(list((bench_root(bench) / "stl").glob("*.csv"))) == 2
    assert other != base


def bench_root(bench):
    from mtl_src.data import data_root

    return data_root(bench.spec[1]["data_root"])


def test_parallel_runs_equal_serial_runs(bench, tmp_path):
    specs = ["ls", "mgda", "pi:ls"]
    base, _ = experiment.stl_baseline(bench, seeds=[0], **TRAIN)
    bench.stl_baseline = base
    serial = experiment.run(bench, specs, seeds=[0, 1], workers=1, **TRAIN)
    parallel = experiment.run(bench, specs, seeds=[0, 1], workers=2, **TRAIN)
    pd.testing.assert_frame_equal(_values(serial), _values(parallel))
    assert set(serial.method) == set(specs)


def test_results_csv_is_written_and_finished_runs_are_skipped(bench, tmp_path):
    out = tmp_path / "out"
    first = experiment.run(bench, ["ls"], seeds=[0], out_dir=out, **TRAIN)
    csv = out / "results.csv"
    assert csv.exists() and not list(out.glob("*.tmp"))
    pd.testing.assert_frame_equal(experiment.read_results(csv), first.reset_index(drop=True), check_dtype=False)
    both = experiment.run(bench, ["ls", "mgda"], seeds=[0], out_dir=out, **TRAIN)
    ls_rows = both[both.method == "ls"]
    assert len(ls_rows) == len(first)  # ls was not trained again
    assert set(both.method) == {"ls", "mgda"}


def test_unknown_method_fails_before_training(bench, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        experiment.run(bench, ["ls", "nope"], seeds=[0], out_dir=tmp_path / "o", **TRAIN)
    assert not (tmp_path / "o" / "results.csv").exists()


def test_study_end_to_end_builds_the_table_from_the_csv(tmp_path):
    study = experiment.Study.prepare("gradnorm_synth", methods=["ls", "pivrg", "stgu"], seeds=[0, 1], epochs=2,
                                     data_root=str(tmp_path / "data"), out_dir=tmp_path / "run", workers=1,
                                     K=3, n_train=150, n_test=60)
    study.train_all()
    table = study.table()
    assert set(table.index) == {"ls", "pivrg", "stgu", "stl"}
    assert abs(table.loc["stl", "delta_m"]) < 1e-9
    assert np.isfinite(table[["delta_m", "var_delta_m", "mr"]].to_numpy()).all()
    assert table.loc["ls", "time x ls"] == pytest.approx(1.0)
    shown = report.display_table(table, study.bench)
    assert "Δm % ↓" in shown.columns and len(shown) == 4
    # PIVRG received per-task drops after epoch 1: its performance weights omega appear in epoch 2
    diag = study.results[(study.results.method == "pivrg") & (study.results.split == "diagnostics")]
    omega = diag[diag.metric.str.startswith("omega_")]
    assert set(omega.epoch) == {2} and set(omega.metric) == {"omega_0", "omega_1", "omega_2"}
    assert omega.groupby("seed").value.sum().to_numpy() == pytest.approx(3.0)  # omega sums to K
    _, freq = report.grouping_frequency(study.results, study.bench.tasks)
    assert np.allclose(np.diag(freq), 1) and ((freq >= 0) & (freq <= 1)).all().all()


def test_study_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        experiment.Study.prepare("multimnst", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        experiment.Study.prepare("gradnorm_synth", profile="huge", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        experiment.Study.prepare("gradnorm_synth", methods=["ls", "mdga"], out_dir=tmp_path)
