"""Evidence layer: per-seed values, intervals, paired verdicts, claim ledger, reference runs, provenance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mtl_src import evidence, methods, provenance, reference
from mtl_src.benchmarks.base import Metric


class _Bench:
    name = "toy"
    tasks = ["a", "b"]
    metrics = [Metric("acc_a", "a", True), Metric("err_b", "b", False)]


def _results(values: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    rows = []
    for method, per_seed in values.items():
        for seed, (acc, err) in enumerate(per_seed):
            for epoch in (1, 2):  # only the last epoch counts
                scale = 1.0 if epoch == 2 else 0.5
                rows.append(dict(benchmark="toy", method=method, seed=seed, epoch=epoch, split="test",
                                 metric="acc_a", task="a", value=acc * scale))
                rows.append(dict(benchmark="toy", method=method, seed=seed, epoch=epoch, split="test",
                                 metric="err_b", task="b", value=err / scale))
            rows.append(dict(benchmark="toy", method=method, seed=seed, epoch=2, split="timing",
                             metric="time_step", task="", value=0.01 * (1 + seed)))
    return pd.DataFrame(rows)


BASE = {"acc_a": 0.8, "err_b": 1.0}


def test_per_seed_delta_m_var_and_rank_by_hand():
    r = _results({"ls": [(0.8, 1.0)] * 3, "good": [(0.88, 0.9)] * 3, "bad": [(0.72, 1.2)] * 3})
    ps = evidence.per_seed(r, _Bench, BASE)
    # Delta m = mean of relative drops: good: (-10% , -10%) -> -10; bad: (+10%, +20%) -> 15
    assert ps.loc[("good", 0), "delta_m"] == pytest.approx(-10.0)
    assert ps.loc[("bad", 1), "delta_m"] == pytest.approx(15.0)
    assert ps.loc[("bad", 1), "var_delta_m"] == pytest.approx(25.0)  # population variance of (10, 20)
    assert ps.loc[("good", 2), "mr"] == 1.0 and ps.loc[("bad", 2), "mr"] == 3.0
    assert ps.loc[("ls", 1), "time_step"] == pytest.approx(0.02)


def test_per_seed_leaves_out_methods_that_miss_seeds():
    r = _results({"ls": [(0.8, 1.0)] * 3, "half": [(0.9, 0.9)] * 2})
    ps = evidence.per_seed(r, _Bench, BASE)
    assert ps.attrs["incomplete"] == ["half"]
    assert "half" not in ps.index.get_level_values("method")


def test_verdicts_and_claims_follow_the_paired_differences():
    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.002, 5)  # noqa: E731
    ls = [(0.8 + a, 1.0 + b) for a, b in zip(noise(), noise())]
    good = [(a + 0.05, b - 0.05) for a, b in ls]
    same = [(a + e, b) for (a, b), e in zip(ls, noise())]
    r = _results({"ls": ls, "good": good, "same": same})
    ps = evidence.per_seed(r, _Bench, BASE)
    v = evidence.versus(ps, "ls")
    assert v.loc["good", "verdict"] == "better" and v.loc["same", "verdict"] == "not resolved"
    ledger = evidence.ClaimLedger("test/chapter")
    ledger.claim_better(ps, "good", ["ls", "same"], claim="good wins", source="here")
    ledger.claim_better(ps, "ls", ["good"], claim="ls wins", source="here")
    ledger.claim_better(ps, "same", ["ls"], claim="same wins", source="here")
    ledger.claim_better(ps, "absent", ["ls"], claim="absent wins", source="here")
    assert ledger.table().verdict.tolist() == ["reproduced", "contradicted", "not resolved", "not testable here"]
    with pytest.raises(ValueError):
        ledger.record("x", "y", "z", "probably")


def test_summary_intervals_and_display():
    r = _results({"ls": [(0.8, 1.0), (0.82, 1.0), (0.84, 1.0)], "other": [(0.9, 1.0)] * 3})
    ps = evidence.per_seed(r, _Bench, BASE)
    s = evidence.summary(ps)
    # acc_a of ls: mean 0.82, sd 0.02, t(0.975, 2) = 4.3027 -> half width 0.04969
    assert s.loc["ls", "acc_a"] == pytest.approx(0.82)
    assert s.loc["ls", "acc_a high"] - s.loc["ls", "acc_a"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-5)
    text = evidence.display_summary(s, _Bench, verdicts=evidence.versus(ps).verdict)
    assert text.loc["ls", "Δm vs LS"] == "reference" and "[" in text.loc["ls", "acc_a ↑"]


def test_ledger_save_roundtrip(tmp_path):
    ledger = evidence.ClaimLedger("experiments/x")
    ledger.record("c", "s", "m", "not resolved")
    path = ledger.save(tmp_path)
    back = pd.read_csv(path)
    assert path.name == "experiments__x.csv" and back.verdict.tolist() == ["not resolved"]
    assert back.kind.tolist() == ["experiment"]


def test_ls_steps_takes_K_optimizer_steps_per_batch():
    import torch

    from mtl_src.methods import Forward, StepContext

    w = torch.zeros(3, requires_grad=True)
    calls = {"n": 0}

    def forward():
        calls["n"] += 1
        return Forward(torch.stack([(w - 1).pow(2).sum(), (w + 1).pow(2).sum(), w.pow(2).sum()]))

    opt = torch.optim.SGD([w], lr=0.1)
    steps = []
    orig = opt.step
    opt.step = lambda *a, **k: (steps.append(1), orig(*a, **k))[1]
    res = methods.make("ls_steps").step(StepContext(forward, [w], opt))
    assert len(steps) == 3 and calls["n"] == 3 and res.info["optimizer_steps"] == 3
    assert len(res.losses) == 3
    methods.make("ls_steps", steps=2).step(StepContext(forward, [w], opt))
    assert len(steps) == 5
    with pytest.raises(ValueError):
        methods.make("ls_steps", steps=0)


def test_provenance_records_runs_and_detects_changed_training_code(tmp_path):
    env = provenance.environment()
    assert env["packages"]["torch"].startswith("2.") and env["cpu"]
    provenance.record_run(tmp_path, "ls", 0, 1.5, env)
    provenance.record_run(tmp_path, "ls", 1, 2.5, env)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert len(prov["invocations"]) == 1 and prov["runs"]["ls|1"]["wall_s"] == 2.5
    head = provenance.git("rev-parse", "HEAD")
    if head is None:
        pytest.skip("no git history here")
    first = provenance.git("rev-list", "--max-parents=0", "HEAD").splitlines()[0]
    assert provenance.training_code_changed(first) is True   # the first commit had other training code
    assert provenance.training_code_changed(None) is None


def test_reference_compress_resume_and_load(tmp_path):
    from mtl_src.experiment import Study

    out = tmp_path / "multimnist"
    st = Study.prepare("multimnist", profile="fast", methods=["ls"], seeds=[0, 1], epochs=1, out_dir=out,
                       workers=1, n_train=64, n_test=32)
    st.train_all()
    gz = reference.compress(out)
    assert gz.name == "results.csv.gz" and not (out / "results.csv").exists()
    st2 = Study.prepare("multimnist", profile="fast", methods=["ls", "mgda"], seeds=[0, 1], epochs=1, out_dir=out,
                        workers=1, n_train=64, n_test=32)
    st2.train_all()   # resumes into the compressed file: ls is not re-trained
    ref = reference.from_study(st2)
    assert ref.methods == ["ls", "mgda"] and ref.seeds == [0, 1] and ref.complete() == {}
    prov = ref.provenance
    assert set(prov["runs"]) >= {"ls|0", "ls|1", "mgda|0", "mgda|1"}
    assert "trained at commit" in ref.status()
    sample = reference.reproduce(ref, [("mgda", 1)], epochs=1)
    assert len(sample) > 0 and sample.abs_diff.max() < 1e-9  # same machine, same code: the same numbers


def test_runner_sends_the_reference_profile_to_results_reference(capsys):
    from mtl_src import run

    assert run.main(["notebooks/experiments/01_multimnist.md", "--profile", "reference", "--dry-run"]) == 0
    assert '"out_dir": "results/reference/multimnist"' in capsys.readouterr().out
    assert run.main(["notebooks/experiments/01_multimnist.md", "--profile", "reference", "-p", "out_dir", "/tmp/x",
                     "--dry-run"]) == 0
    assert '"out_dir": "/tmp/x"' in capsys.readouterr().out


def test_runner_refuses_the_reference_profile_where_a_benchmark_has_none(capsys):
    from mtl_src import run

    assert run.main(["notebooks/experiments/04_qm9.md", "--profile", "reference", "--dry-run"]) == 2
    assert "has no reference profile yet" in capsys.readouterr().err


def test_training_paths_of_a_benchmark_leave_out_the_other_benchmarks():
    paths = provenance.training_paths("multimnist")
    assert ":(exclude)mtl_src/benchmarks/qm9.py" in paths
    assert not any(p.endswith("/multimnist.py") for p in paths)   # its own module stays tracked
    assert "mtl_src/methods" in paths and "mtl_src/train.py" in paths
    full = provenance.training_paths("multimnist_full")        # imports multimnist: keeps tracking it
    assert ":(exclude)mtl_src/benchmarks/multimnist.py" not in full
