"""The papermill runner validates parameters before running anything."""

import textwrap

import pytest

from mtl_src import run

NB = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A tiny notebook

    ```{code-cell} ipython3
    :tags: [parameters]

    iterations = 10
    lr = 1e-3
    device = "cpu"
    methods = ["ls", "mgda"]
    out_dir = None
    ```

    ```{code-cell} ipython3
    import json, os
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        json.dump({"iterations": iterations, "methods": methods}, open(os.path.join(out_dir, "r.json"), "w"))
    assert iterations < 1000, "too many"
    ```
    """
)


@pytest.fixture
def nb_path(tmp_path):
    p = tmp_path / "tiny.md"
    p.write_text(NB)
    return p


def test_reads_the_parameters_cell(nb_path):
    params = run.read_parameters(run._load_notebook(nb_path))
    assert params == {"iterations": 10, "lr": 1e-3, "device": "cpu", "methods": ["ls", "mgda"], "out_dir": None}


@pytest.mark.parametrize(
    "args,message",
    [
        (["-p", "iteration", "5"], "unknown parameter 'iteration'; this notebook takes: iterations, lr"),
        (["-p", "iterations", "-3"], "'iterations' must be a non-negative integer"),
        (["-p", "iterations", "many"], "'iterations' must be of type int"),
        (["-p", "methods", "[ls, mgdaa]"], "unknown method 'mgdaa'"),
        (["-p", "lr", "fast"], "'lr' must be of type float"),
    ],
)
def test_bad_parameters_give_one_clear_message_and_run_nothing(nb_path, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run.main([str(nb_path), *args, "--out-dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_cuda_absent_is_reported(nb_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert run.main([str(nb_path), "-p", "device", "cuda", "--dry-run"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_missing_notebook(tmp_path, capsys):
    assert run.main([str(tmp_path / "nope.md")]) == 2
    assert "not found" in capsys.readouterr().err


def test_runs_with_parameters_and_renames_the_folder(nb_path, tmp_path):
    pytest.importorskip("papermill")
    out = tmp_path / "run1"
    assert run.main([str(nb_path), "-p", "iterations", "42", "-p", "methods", "[pcgrad]", "--out-dir", str(out)]) == 0
    assert (out / "tiny.ipynb").exists()
    assert '"iterations": 42' in (out / "r.json").read_text()
    assert not (tmp_path / "run1.partial").exists()


def test_a_failing_run_is_marked_failed(nb_path, tmp_path, capsys):
    pytest.importorskip("papermill")
    out = tmp_path / "run2"
    assert run.main([str(nb_path), "-p", "iterations", "5000", "--out-dir", str(out)]) == 1
    assert not out.exists() and (tmp_path / "run2.failed" / "tiny.ipynb").exists()
    assert "the notebook failed" in capsys.readouterr().err


def test_experiment_parameters_are_validated():
    """The experiment chapters' parameters: methods "all" or a list, profile, benchmark, seeds, data_root."""
    defaults = {"benchmark": None, "profile": "fast", "methods": "all", "seeds": None, "epochs": None,
                "data_root": None}
    ok = run.validate(defaults, {"methods": ["ls", "pi:nash_mtl"], "profile": "paper", "benchmark": "qm9",
                                 "seeds": [0, 1, 2], "epochs": 3})
    assert ok["methods"] == ["ls", "pi:nash_mtl"] and ok["seeds"] == [0, 1, 2]
    assert run.validate(defaults, {"methods": "all"}) == {"methods": "all"}
    for bad, message in [({"methods": ["ls", "pi:mdga"]}, "unknown method 'mdga'"),
                         ({"profile": "huge"}, "unknown profile 'huge'"),
                         ({"benchmark": "multimnst"}, "unknown benchmark 'multimnst'"),
                         ({"seeds": [0, -1]}, "'seeds' must be a non-empty list"),
                         ({"epochs": -2}, "'epochs' must be a positive integer"),
                         ({"epochs": 0}, "'epochs' must be a positive integer"),
                         ({"seeds": 0}, "'seeds' must be a non-empty list"),
                         ({"seeds": [0, 0]}, "distinct"),
                         ({"seeds": [0.5]}, "'seeds' must be a non-empty list"),
                         ({"data_root": "/nonexistent/dir"}, "is not a directory")]:
        with pytest.raises(run.ParameterError, match=message):
            run.validate(defaults, bad)


EXP_DEFAULTS = {"benchmark": None, "profile": "fast", "methods": "all", "seeds": None, "epochs": None,
                "device": "cpu", "data_root": None}


def test_seeds_as_a_count_mean_range():
    assert run.validate(EXP_DEFAULTS, {"seeds": 3})["seeds"] == [0, 1, 2]
    from mtl_src.experiment import Study

    assert Study.prepare("gradnorm_synth", seeds=3, K=2, n_train=10, n_test=5).seeds == [0, 1, 2]


def test_prepared_data_needs_its_manifest(tmp_path):
    """A chapter whose benchmark reads a prepared dataset is refused up front without its MANIFEST.json."""
    empty = tmp_path / "empty"
    empty.mkdir()
    # the MultiMNIST chapter's paper profile reads multimnist_full: the message names the data script
    with pytest.raises(run.ParameterError, match=r"multimnist_full.*MANIFEST\.json is missing.*"
                                                 r"python data_scripts/multimnist_full\.py --data-root"):
        run.validate(EXP_DEFAULTS, {"profile": "paper", "data_root": str(empty)}, notebook="01_multimnist")
    with pytest.raises(run.ParameterError, match=r"data_scripts/nyuv2\.py"):
        run.validate(EXP_DEFAULTS, {"profile": "paper", "data_root": str(empty)}, notebook="03_synthscenes")
    with pytest.raises(run.ParameterError, match=r"data_scripts/celeba\.py"):
        run.validate(EXP_DEFAULTS, {"benchmark": "celeba", "data_root": str(empty)}, notebook="01_multimnist")
    # embedded / generated benchmarks need none
    assert run.validate(EXP_DEFAULTS, {"data_root": str(empty)}, notebook="01_multimnist") == {"data_root": str(empty)}
    # a prepared one passes (presence and sizes; hashes are checked when the run loads it)
    from fixtures_data import prepared_multimnist_full

    root = prepared_multimnist_full(tmp_path / "root")
    assert run.validate(EXP_DEFAULTS, {"profile": "paper", "data_root": str(root)}, notebook="01_multimnist")
    (root / "multimnist_full" / "test_labels.npy").write_bytes(b"short")
    with pytest.raises(run.ParameterError, match=r"test_labels\.npy is corrupt"):
        run.validate(EXP_DEFAULTS, {"profile": "paper", "data_root": str(root)}, notebook="01_multimnist")


def test_paper_profile_on_the_cpu_warns(tmp_path, capsys):
    nb = tmp_path / "exp.md"
    nb.write_text(NB.replace("iterations = 10", 'profile = "fast"\nbenchmark = "gradnorm_synth"'))
    assert run.main([str(nb), "--profile", "paper", "--dry-run"]) == 0
    assert "warning: the paper profile" in capsys.readouterr().err
    assert run.main([str(nb), "--dry-run"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_paper_profile_smoke_run_on_a_fixture(tmp_path):
    """Issue 7's CPU fallback: the MultiMNIST chapter, paper profile, on a tiny multimnist_full prepared by
    its data script from the IDX fixture: one method, one seed, one epoch, through the runner."""
    pytest.importorskip("papermill")
    from pathlib import Path

    from fixtures_data import prepared_multimnist_full
    from mtl_src.experiment import read_results

    root = prepared_multimnist_full(tmp_path / "root", n_train=256, n_test=200)  # 200: no accuracy of 0
    out = tmp_path / "run"
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "experiments" / "01_multimnist.md"
    rc = run.main([str(nb), "--profile", "paper", "-p", "data_root", str(root), "-p", "methods", "[ls]",
                   "-p", "seeds", "[0]", "-p", "epochs", "1", "--out-dir", str(out)])
    assert rc == 0, sorted(p.name for p in tmp_path.iterdir())
    assert (out / "01_multimnist.ipynb").exists()
    results = read_results(out / "results.csv")
    assert set(results.benchmark) == {"multimnist_full"} and set(results.method) == {"ls"}
    test = results[results.split == "test"]
    assert set(test.metric) == {"acc_L", "acc_R"} and test.value.between(0, 1).all()
    assert (out / "run_config.json").exists() and (out / "stl.csv").exists()
