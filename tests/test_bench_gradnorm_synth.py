"""The gradnorm_synth benchmark: targets follow the formula, scales, determinism, K up to 40, one LS epoch."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtl_src import benchmarks
from mtl_src.autodiff import loss_parts
from mtl_src.benchmarks.gradnorm_synth import default_sigmas, targets
from mtl_src.train import train


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    b = benchmarks.make("gradnorm_synth", data_root=str(tmp_path_factory.mktemp("gn")), K=4, n_train=400, n_test=200)
    b.datasets()
    return b


def test_builds_with_right_shapes_dtypes_and_ranges(bench):
    ds = bench.datasets()
    assert set(ds) == {"train", "test"}
    x, y = ds["train"].tensors
    assert x.shape == (400, 250) and y.shape == (400, 4, 100)
    assert x.dtype == y.dtype == torch.float32
    np.testing.assert_allclose(x.norm(dim=1).numpy(), 1.0, rtol=1e-5)  # unit-norm inputs
    assert float(x.abs().max()) <= 1.0
    sig = torch.as_tensor(bench.sigmas, dtype=torch.float32)
    assert (y.abs() <= sig[None, :, None] * (1 + 1e-6)).all()  # |sigma tanh| <= sigma (no noise)
    assert len(ds["test"]) == 200
    assert bench.tasks == ["t0", "t1", "t2", "t3"]
    assert {m.name for m in bench.metrics} == {f"{k}_t{i}" for k in ("loss", "rel_loss") for i in range(4)}
    assert not any(m.higher_is_better for m in bench.metrics) and bench.stl_baseline is None


def test_targets_follow_the_formula(bench):
    arr = bench.arrays()
    B, eps, sigma = arr["B"], arr["eps"], arr["sigma"]
    assert B.shape == (100, 250) and eps.shape == (4, 100, 250)
    np.testing.assert_array_equal(sigma, bench.sigmas)
    for s in ("train", "test"):
        x = arr[f"{s}_x"].astype(np.float64)
        # recompute sigma_i tanh((B + eps_i) x) task by task, sample by sample, without the helper
        for i in range(4):
            ref = sigma[i] * np.tanh(x @ (B + eps[i]).T)
            np.testing.assert_allclose(arr[f"{s}_y"][:, i], ref, rtol=1e-4, atol=1e-4 * sigma[i])
    np.testing.assert_allclose(targets(arr["test_x"].astype(np.float64), B, eps, sigma), arr["test_y"],
                               rtol=1e-4, atol=1e-2)
    # the paper's distributions: B ~ N(0, 10^2), eps ~ N(0, 3.5^2)
    assert B.std() == pytest.approx(10.0, rel=0.02) and abs(B.mean()) < 0.2
    assert eps.std() == pytest.approx(3.5, rel=0.02)


def test_sigma_scaling_shows_in_target_variances(bench):
    y = bench.arrays()["train_y"].astype(np.float64)
    sigma = bench.sigmas
    np.testing.assert_allclose(sigma, default_sigmas(4), rtol=0)
    assert sigma[0] == 1.0 and sigma[-1] == pytest.approx(100.0)
    var = y.var(axis=(0, 2))
    np.testing.assert_allclose(var / var[0], sigma**2 / sigma[0] ** 2, rtol=0.1)
    # explicit sigmas are used as given
    b = benchmarks.make("gradnorm_synth", K=2, sigmas=[1.0, 100.0], n_train=50, n_test=10, data_root=bench.data_root)
    yb = b.arrays()["train_y"]
    assert yb[:, 1].std() / yb[:, 0].std() == pytest.approx(100.0, rel=0.1)


def test_noise_is_added_relative_to_sigma(tmp_path):
    clean = benchmarks.make("gradnorm_synth", K=3, n_train=300, n_test=10, data_root=str(tmp_path)).arrays()
    noisy = benchmarks.make("gradnorm_synth", K=3, n_train=300, n_test=10, noise=0.1, data_root=str(tmp_path)).arrays()
    np.testing.assert_array_equal(clean["train_x"], noisy["train_x"])
    resid = (noisy["train_y"] - clean["train_y"]).std(axis=(0, 2))
    np.testing.assert_allclose(resid, 0.1 * clean["sigma"], rtol=0.05)


def test_same_seed_same_data_other_seed_other_data(bench, tmp_path):
    again = benchmarks.make("gradnorm_synth", data_root=str(tmp_path / "a"), K=4, n_train=400, n_test=200).arrays()
    ref = bench.arrays()
    assert set(again) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k])
    other = benchmarks.make("gradnorm_synth", data_root=str(tmp_path / "b"), K=4, n_train=400, n_test=200, seed=1).arrays()
    assert not np.array_equal(other["B"], ref["B"]) and not np.array_equal(other["train_y"], ref["train_y"])


def test_forty_tasks_build_fast(tmp_path):
    import time

    t0 = time.perf_counter()
    b = benchmarks.make("gradnorm_synth", K=40, n_train=200, n_test=50, data_root=str(tmp_path))
    ds = b.datasets()
    assert time.perf_counter() - t0 < 10.0
    assert ds["train"].tensors[1].shape == (200, 40, 100)
    z, outs = b.build_model()(ds["train"].tensors[0][:3])
    assert z.shape == (3, 100) and len(outs) == 40 and outs[0].shape == (3, 100)


def test_model_losses_metrics_and_kpis(bench):
    torch.manual_seed(0)
    model = bench.build_model()
    linears = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(100, 250), (100, 100), (100, 100), (100, 100)]
    assert model.last_shared_parameters()[0] is linears[-1].weight
    batch = next(iter(DataLoader(bench.datasets()["train"], batch_size=16)))
    _, outs = model(batch[0])
    losses = bench.losses(outs, batch)
    assert loss_parts(losses) is not None  # stack_losses: per-task backwards skip the other heads
    ref = torch.stack([((o - batch[1][:, i]) ** 2).mean() for i, o in enumerate(outs)])
    torch.testing.assert_close(losses, ref)

    class Zero(torch.nn.Module):  # predicts 0: loss_t = mean(y_t^2), rel_loss_t = that / sigma_t^2
        def forward(self, x):
            return torch.zeros(len(x), 100), [torch.zeros(len(x), 100) for _ in range(4)]

    test = bench.datasets()["test"]
    vals = bench.evaluate(Zero(), DataLoader(test, batch_size=64), torch.device("cpu"))
    msq = test.tensors[1].double().pow(2).mean(dim=(0, 2)).numpy()
    for i in range(4):
        assert vals[f"loss_t{i}"] == pytest.approx(msq[i], rel=1e-6)
        assert vals[f"rel_loss_t{i}"] == pytest.approx(msq[i] / bench.sigmas[i] ** 2, rel=1e-6)
        assert 0.5 < vals[f"rel_loss_t{i}"] < 1.0  # E[tanh^2] of mostly saturated units
    k = bench.kpis(vals)
    assert k.shape == (4,) and (k >= 0).all() and (k < 0.1).all()  # predicting 0 explains ~nothing
    assert torch.isnan(bench.kpis({})).all()


def test_ls_trains_one_epoch_and_evaluates_every_metric(bench):
    res = train(bench, "ls", epochs=1, batch_size=100, lr=1e-3)
    df = res.frame()
    got = df[df.split == "test"].set_index("metric").value
    assert set(got.index) == {m.name for m in bench.metrics}
    assert np.isfinite(got).all() and (got > 0).all()
    loss = df[(df.split == "train") & df.metric.str.startswith("loss_")].value
    assert len(loss) == 4 and np.isfinite(loss).all()


def test_training_defaults_and_bad_options():
    for prof in ("fast", "paper"):
        tr = benchmarks.make("gradnorm_synth", profile=prof).training()
        assert set(tr) == {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "lr_schedule"}
    with pytest.raises(ValueError, match="K must be"):
        benchmarks.make("gradnorm_synth", K=0)
    with pytest.raises(ValueError, match="sigmas must be"):
        benchmarks.make("gradnorm_synth", K=3, sigmas=[1.0, 2.0])
    with pytest.raises(ValueError, match="sigmas must be"):
        benchmarks.make("gradnorm_synth", K=2, sigmas=[1.0, -2.0])
    with pytest.raises(ValueError, match="noise"):
        benchmarks.make("gradnorm_synth", noise=-1.0)
    with pytest.raises(ValueError, match="n_train"):
        benchmarks.make("gradnorm_synth", n_train=0)
