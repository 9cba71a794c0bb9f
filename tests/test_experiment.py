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
    assert np.isfinite(table[["delta_m", "var_delta_m"]].to_numpy()).all()
    assert np.isfinite(table.drop(index="stl")["mr"]).all() and np.isnan(table.loc["stl", "mr"])  # STL is not ranked
    assert study.table_problems(table) == []
    assert study.table_problems(table.drop(index="ls")) != []
    falls, curve = study.loss_falls()
    assert list(curve.index) == [1, 2] and falls == bool(curve.iloc[1] < curve.iloc[0])
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))  # finished runs leave no checkpoint
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


def test_study_validates_seeds_and_epochs(tmp_path):
    kw = dict(out_dir=tmp_path, data_root=str(tmp_path / "d"), K=2, n_train=20, n_test=10)
    assert experiment.Study.prepare("gradnorm_synth", seeds=3, **kw).seeds == [0, 1, 2]  # int n = range(n)
    for bad in (0, -1, [], [0, -1], [0, 0], [1.5], "0", True):
        with pytest.raises(ValueError, match="seeds"):
            experiment.Study.prepare("gradnorm_synth", seeds=bad, **kw)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="epochs"):
            experiment.Study.prepare("gradnorm_synth", epochs=bad, **kw)


def test_one_epoch_study_has_no_loss_comparison(tmp_path):
    study = experiment.Study.prepare("gradnorm_synth", methods=["ls"], seeds=[0], epochs=1, workers=1,
                                     data_root=str(tmp_path / "d"), out_dir=tmp_path / "r", K=2, n_train=40, n_test=20)
    study.train_all()
    falls, curve = study.loss_falls()
    assert falls is None and len(curve) == 1


def test_another_configuration_in_the_same_out_dir_is_refused(bench, tmp_path):
    out = tmp_path / "out"
    experiment.run(bench, ["ls"], seeds=[0], out_dir=out, **TRAIN)
    experiment.run(bench, ["ls", "mgda"], seeds=[0], out_dir=out, **TRAIN)  # same configuration: resumes
    with pytest.raises(ValueError, match="another configuration.*lr"):
        experiment.run(bench, ["ls"], seeds=[0], out_dir=out, **{**TRAIN, "lr": 0.1})
    other = benchmarks.make("gradnorm_synth", K=2, n_train=100, n_test=100, data_root=bench.spec[1]["data_root"])
    with pytest.raises(ValueError, match="another configuration.*bench"):
        experiment.run(other, ["ls"], seeds=[0], out_dir=out, **TRAIN)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (out / "results.csv").rename(legacy / "results.csv")
    with pytest.raises(ValueError, match="configuration is unknown"):
        experiment.run(bench, ["ls"], seeds=[0], out_dir=legacy, **TRAIN)


def test_an_interrupted_run_resumes_from_its_checkpoint(bench, tmp_path):
    """A checkpoint left by an interrupted run under out_dir/checkpoints is resumed: same final numbers."""
    from mtl_src.train import train

    out = tmp_path / "out"
    full = experiment.run(bench, ["ls"], seeds=[0], **TRAIN)
    ck = out / "checkpoints" / "ls-seed0.pt"
    train(bench, "ls", seed=0, checkpoint=str(ck), interrupt_after=1, **TRAIN)  # stopped after epoch 1
    assert ck.exists()
    resumed = experiment.run(bench, ["ls"], seeds=[0], out_dir=out, **TRAIN)
    pd.testing.assert_frame_equal(_values(full), _values(resumed))
    assert not ck.exists()


def test_published_baselines(tmp_path):
    from mtl_src.benchmarks import cityscapes, nyuv2, qm9
    from mtl_src import paper_tables

    for mod in (nyuv2, cityscapes, qm9):  # every published table names exactly the benchmark's metrics
        b = benchmarks.make(mod.__name__.rsplit(".", 1)[1], profile="paper", data_root=str(tmp_path))
        assert experiment.published_baseline(b) == mod.STL_BASELINE
    assert experiment.published_baseline(benchmarks.make("gradnorm_synth", profile="paper")) is None
    # QM9's constant is the one PIVRG's tables are recomputed from
    assert tuple(qm9.STL_BASELINE.values()) == paper_tables.QM9_STL
    # Study: published by default in the paper profile where a benchmark has them, trained elsewhere
    study = experiment.Study.prepare("gradnorm_synth", data_root=str(tmp_path), out_dir=tmp_path / "o", K=2,
                                     n_train=20, n_test=10)
    assert study.baseline_source == "trained"
    with pytest.raises(ValueError, match="no published single-task baseline"):
        experiment.Study.prepare("gradnorm_synth", baseline="published", data_root=str(tmp_path), out_dir=tmp_path / "o",
                                 K=2, n_train=20, n_test=10)
    with pytest.raises(ValueError, match="baseline must be"):
        experiment.Study.prepare("gradnorm_synth", baseline="stl", data_root=str(tmp_path), out_dir=tmp_path / "o")


def test_paper_profile_defaults_to_the_published_baseline(tmp_path):
    from mtl_src.benchmarks import qm9

    study = experiment.Study.prepare("qm9", profile="paper", data_root=str(tmp_path), out_dir=tmp_path / "o")
    assert study.baseline_source == "published"
    assert study.train_baseline() == qm9.STL_BASELINE and study.stl_rows is None  # nothing trained
    assert study.bench.stl_baseline == qm9.STL_BASELINE  # PIVRG / PI-* get their drops against it
    trained = experiment.Study.prepare("qm9", profile="paper", baseline="trained", data_root=str(tmp_path),
                                       out_dir=tmp_path / "o")
    assert trained.baseline_source == "trained"
