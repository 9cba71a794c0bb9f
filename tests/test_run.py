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
                         ({"epochs": -2}, "'epochs' must be a non-negative integer"),
                         ({"data_root": "/nonexistent/dir"}, "is not a directory")]:
        with pytest.raises(run.ParameterError, match=message):
            run.validate(defaults, bad)
