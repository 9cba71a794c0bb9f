"""The benchmark trainer: tidy rows, timing split, feedback, checkpoint + resume equivalence."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mtl_src import methods as _methods
from mtl_src.benchmarks.base import Benchmark, Metric, MTLModel
from mtl_src.methods import Feedback, LossWeighting
from mtl_src.train import RESULT_COLUMNS, train


class TinyRegression(Benchmark):
    """K linear-regression tasks on shared random features (for trainer tests)."""

    name = "tiny"

    def __init__(self, K=3, n=96, stl=False):
        self.tasks = [f"t{i}" for i in range(K)]
        self.metrics = [Metric(f"mae_t{i}", f"t{i}", higher_is_better=False) for i in range(K)]
        self.stl_baseline = {m.name: 1.0 for m in self.metrics} if stl else None
        g = torch.Generator().manual_seed(0)
        X = torch.randn(n, 6, generator=g)
        W = torch.randn(6, K, generator=g) * torch.tensor([1.0, 10.0, 0.1][:K] + [1.0] * max(0, K - 3))
        Y = X @ W + 0.1 * torch.randn(n, K, generator=g)
        self._data = {"train": TensorDataset(X[: n // 2], Y[: n // 2]), "test": TensorDataset(X[n // 2 :], Y[n // 2 :])}

    def datasets(self):
        return self._data

    def build_model(self):
        return MTLModel(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8)), [nn.Linear(8, 1) for _ in self.tasks])

    def losses(self, outputs, batch):
        y = batch[1]
        return torch.stack([((o.squeeze(-1) - y[:, i]) ** 2).mean() for i, o in enumerate(outputs)])

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        model.eval()
        err, n = torch.zeros(self.K), 0
        for x, y in loader:
            _, outs = model(x.to(device))
            err += torch.stack([(o.squeeze(-1) - y[:, i]).abs().sum() for i, o in enumerate(outs)])
            n += len(x)
        model.train()
        return {f"mae_t{i}": float(e / n) for i, e in enumerate(err)}


@pytest.mark.parametrize("method", ["ls", "mgda", "pcgrad", "aligned_mtl", "aligned_mtl_ub"])
def test_rows_are_tidy_and_complete(method):
    res = train(TinyRegression(), method, epochs=2, batch_size=16, lr=1e-2)
    df = res.frame()
    assert list(df.columns) == RESULT_COLUMNS
    expected = {"train", "test", "timing"} | ({"diagnostics"} if method != "ls" else set())
    assert set(df.split) == expected
    if method != "ls":  # Gramian weightings log their weights alpha_i, averaged over the epoch's steps
        diag = df[(df.split == "diagnostics") & (df.epoch == 1)].set_index("metric").value
        assert set(diag.index) == {"alpha_0", "alpha_1", "alpha_2"} and np.isfinite(diag).all()
    test = df[df.split == "test"]
    assert len(test) == 2 * 3 and set(test.metric) == {"mae_t0", "mae_t1", "mae_t2"}
    timing = df[(df.split == "timing") & (df.epoch == 2)].set_index("metric").value
    assert (timing >= 0).all()
    parts = timing[["time_forward", "time_backward", "time_aggregation", "time_optimizer"]].sum()
    assert parts == pytest.approx(timing["time_step"], rel=1e-6)
    assert np.isfinite(df.value).all()


def test_training_reduces_the_loss():
    df = train(TinyRegression(), "ls", epochs=40, batch_size=16, lr=3e-2).frame()
    loss = df[df.metric.str.startswith("loss_")].groupby("epoch").value.sum()
    assert loss.iloc[-1] < 0.5 * loss.iloc[0]


@pytest.mark.parametrize("method,hp", [("ls", {}), ("pcgrad", {}), ("cagrad", {})])
def test_resume_gives_the_same_final_numbers(tmp_path, method, hp):
    ck = tmp_path / "ck.pt"
    full = train(TinyRegression(), method, epochs=4, batch_size=16, lr=1e-2, lr_schedule="step:2:0.5", seed=3, **hp)
    part = train(TinyRegression(), method, epochs=4, batch_size=16, lr=1e-2, lr_schedule="step:2:0.5", seed=3,
                 checkpoint=str(ck), interrupt_after=2, **hp)
    assert part.frame().epoch.max() == 2
    resumed = train(TinyRegression(), method, epochs=4, batch_size=16, lr=1e-2, lr_schedule="step:2:0.5", seed=3,
                    checkpoint=str(ck), resume=True, **hp)
    a = full.frame().query("split != 'timing'").reset_index(drop=True)
    b = resumed.frame().query("split != 'timing'").reset_index(drop=True)
    assert a[["epoch", "split", "metric"]].equals(b[["epoch", "split", "metric"]])
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    ck = tmp_path / "ck.pt"
    train(TinyRegression(), "ls", epochs=2, batch_size=16, checkpoint=str(ck), interrupt_after=1)
    with pytest.raises(ValueError, match="belongs to another run"):
        train(TinyRegression(), "mgda", epochs=2, batch_size=16, checkpoint=str(ck), resume=True)


class _FeedbackProbe(LossWeighting):
    """Test-only (registered only inside the test): records the feedback it receives."""

    name = "_feedback_probe"

    def __init__(self):
        self.seen = []

    def loss_weights(self, losses, ctx):
        return torch.ones_like(losses)

    def observe(self, feedback: Feedback):
        self.seen.append(feedback)


def test_feedback_reaches_the_method_once_per_epoch(monkeypatch):
    made = []
    import mtl_src.methods as M

    orig = M.make

    def spy(name, **hp):
        m = orig(name, **hp)
        made.append(m)
        return m

    monkeypatch.setitem(M._REGISTRY, "_feedback_probe", _FeedbackProbe)
    monkeypatch.setattr(M, "make", spy)
    train(TinyRegression(stl=True), "_feedback_probe", epochs=3, batch_size=16)
    fb = made[0].seen
    assert [f.epoch for f in fb] == [0, 1, 2]
    assert all(f.train_losses.shape == (3,) and f.drops.shape == (3,) for f in fb)
    # MAE baseline 1.0 for every task: drop_i = (mae_i - 1) * 100, measured on the train split
    assert fb[-1].source == "train"
    assert torch.isfinite(fb[-1].drops).all() and bool((fb[-1].drops > -100).all())


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="no split"):
        train(TinyRegression(), "ls", epochs=1, eval_splits=("val",))
    with pytest.raises(ValueError, match="lr_schedule"):
        train(TinyRegression(), "ls", epochs=1, lr_schedule="linear")
    with pytest.raises(ValueError, match="unknown method"):
        train(TinyRegression(), "lss", epochs=1)


@pytest.mark.parametrize("spec", sorted(set(_methods.available()) - {"pi"}) + ["pi:ls", "pi:nash_mtl"])
def test_every_method_trains_a_shared_encoder_network(spec):
    """Every registered method (and PI- variants) end to end through the benchmark trainer, with feedback."""
    df = train(TinyRegression(stl=True), spec, epochs=2, batch_size=16, lr=1e-2).frame()
    assert np.isfinite(df.value).all()
    test = df[(df.split == "test") & (df.epoch == 2)]
    assert set(test.metric) == {"mae_t0", "mae_t1", "mae_t2"}
