"""The multimnist benchmark: overlay protocol, split hygiene, labels, determinism, one LS epoch."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtl_src import benchmarks
from mtl_src.autodiff import loss_parts
from mtl_src.benchmarks.multimnist import MNIST_MEAN, MNIST_STD, load_mnist_5k, overlay_pairs
from mtl_src.train import train


@pytest.fixture(scope="module")
def mnist():
    return load_mnist_5k()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    b = benchmarks.make("multimnist", profile="fast", data_root=str(tmp_path_factory.mktemp("mm")),
                        n_train=600, n_test=300, val_fraction=0.1)
    b.datasets()
    return b


def _com(img):
    img = np.asarray(img, dtype=np.float64)
    w = img.sum()
    rows, cols = np.indices(img.shape)
    return np.array([(rows * img).sum() / w, (cols * img).sum() / w])


def test_source_file_layout(mnist):
    images, labels = mnist
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).tolist() == [500] * 10
    # pixels are row-major 28x28 with the label last: the border is (almost) always blank, and the
    # class means look like digits (a "1" has ink at the centre, a "0" a hole there)
    assert (images[:, 0, :].max(1) > 0).mean() < 0.01 and (images[:, :, 0].max(1) > 0).mean() < 0.01
    assert images.max() == 255
    mean = np.stack([images[labels == c].mean(0) for c in range(10)])
    assert mean[1, 12:16, 12:16].mean() > 3 * mean[0, 12:16, 12:16].mean()


def test_overlay_matches_the_protocol_literally(mnist):
    images, _ = mnist
    a, b = images[:5], images[1000:1005]
    # the public code: 36x36 canvas, a at [0:28], b at [6:34], max where they overlap
    canvas = np.zeros((5, 36, 36))
    canvas[:, 0:28, 0:28] = a
    canvas[:, 6:34, 6:34] = b
    canvas[:, 6:28, 6:28] = np.maximum(a[:, 6:28, 6:28], b[:, 0:22, 0:22])
    got36 = overlay_pairs(a, b, size=36)
    np.testing.assert_array_equal(got36, canvas)
    assert got36.dtype == np.uint8
    # nearest-neighbour resize to 28x28 exactly as PIL (which the public code uses)
    Image = pytest.importorskip("PIL.Image")
    got = overlay_pairs(a, b)
    assert got.shape == (5, 28, 28) and got.dtype == np.uint8
    for k in range(5):
        ref = np.asarray(Image.fromarray(canvas[k].astype(np.uint8)).resize((28, 28), Image.NEAREST))
        np.testing.assert_array_equal(got[k], ref)
    # a single image and flattened inputs work too
    np.testing.assert_array_equal(overlay_pairs(a[0], b[0]), got[0])
    np.testing.assert_array_equal(overlay_pairs(a.reshape(5, -1), b.reshape(5, -1)), got)
    with pytest.raises(ValueError, match="one b per a"):
        overlay_pairs(a, b[:3])


def test_overlay_puts_a_top_left_and_b_bottom_right(mnist):
    images, _ = mnist
    a, b = images[::500], images[250::500]  # one of each class
    zeros = np.zeros_like(a)
    scale = 28 / 36
    for k in range(len(a)):
        com_a = _com(overlay_pairs(a[k], zeros[k]))
        com_b = _com(overlay_pairs(zeros[k], b[k]))
        # expected: the digit's own centre of mass, shifted by 0 (a) or 6 (b) canvas pixels, times 28/36
        # (nearest-neighbour drops 8 of 36 rows/cols, so allow a pixel)
        np.testing.assert_allclose(com_a, (_com(a[k]) + 0.5) * scale - 0.5, atol=1.0)
        np.testing.assert_allclose(com_b, (_com(b[k]) + 6.5) * scale - 0.5, atol=1.0)
        assert (com_a < 13.5).all() and (com_b > 13.5).all()
    # on average the left digit sits up-left of the right one by 6 * 28/36 = 4.7 pixels in both axes
    coms_a = np.array([_com(overlay_pairs(x, np.zeros_like(x))) for x in images[:200]])
    coms_b = np.array([_com(overlay_pairs(np.zeros_like(x), x)) for x in images[:200]])
    np.testing.assert_allclose((coms_b - coms_a).mean(0), [6 * scale, 6 * scale], atol=0.1)


def test_builds_with_right_shapes_dtypes_and_ranges(bench):
    ds = bench.datasets()
    assert set(ds) == {"train", "val", "test"}
    assert [len(ds[s]) for s in ("train", "val", "test")] == [600, 500, 300]  # val: "all" = one per digit
    x, yl, yr = ds["train"].tensors
    assert x.shape == (600, 1, 28, 28) and x.dtype == torch.float32
    assert yl.dtype == yr.dtype == torch.int64
    assert int(yl.min()) >= 0 and int(yl.max()) <= 9 and int(yr.min()) >= 0 and int(yr.max()) <= 9
    lo, hi = -MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD
    assert float(x.min()) == pytest.approx(lo, abs=1e-5) and float(x.max()) == pytest.approx(hi, abs=1e-5)
    assert bench.tasks == ["L", "R"] and [m.name for m in bench.metrics] == ["acc_L", "acc_R"]
    assert all(m.higher_is_better for m in bench.metrics) and bench.stl_baseline is None


def test_no_source_digit_is_shared_between_splits(bench):
    arr = bench.arrays()
    used = {s: set(np.unique(arr[f"{s}_src"])) for s in ("train", "val", "test")}
    pools = {s: set(arr[f"{s}_pool"].tolist()) for s in ("train", "val", "test")}
    for s in used:
        assert used[s] <= pools[s]
    assert not pools["train"] & pools["test"] and not pools["train"] & pools["val"] and not pools["val"] & pools["test"]
    assert len(pools["train"] | pools["val"] | pools["test"]) == 5000
    assert len(pools["test"]) == 1000 and len(pools["val"]) == 500
    assert (arr["train_src"][:, 0] != arr["train_src"][:, 1]).all()


def test_labels_and_images_come_from_the_source_digits(bench, mnist):
    images, labels = mnist
    arr = bench.arrays()
    for s in ("train", "val", "test"):
        src = arr[f"{s}_src"]
        np.testing.assert_array_equal(arr[f"{s}_y"], labels[src])
        np.testing.assert_array_equal(arr[f"{s}_x"], overlay_pairs(images[src[:, 0]], images[src[:, 1]]))
    x, yl, yr = bench.datasets()["test"].tensors
    np.testing.assert_array_equal(yl.numpy(), labels[arr["test_src"][:, 0]])
    np.testing.assert_array_equal(yr.numpy(), labels[arr["test_src"][:, 1]])


def test_classes_are_roughly_balanced(tmp_path):
    b = benchmarks.make("multimnist", profile="paper", data_root=str(tmp_path))  # one composite per digit
    arr = b.arrays()
    for s, n in (("train", 4000), ("test", 1000)):
        y = arr[f"{s}_y"]
        assert len(y) == n
        assert np.bincount(y[:, 0], minlength=10).tolist() == [n // 10] * 10  # each digit once on the left
        right = np.bincount(y[:, 1], minlength=10)
        assert right.min() > 0.7 * n / 10 and right.max() < 1.3 * n / 10


def test_same_seed_same_data_other_seed_other_data(bench, tmp_path):
    opts = dict(n_train=600, n_test=300, val_fraction=0.1)
    again = benchmarks.make("multimnist", data_root=str(tmp_path / "a"), **opts).arrays()
    ref = bench.arrays()
    assert set(again) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k])
    other = benchmarks.make("multimnist", data_root=str(tmp_path / "b"), seed=1, **opts).arrays()
    assert not np.array_equal(other["train_src"], ref["train_src"])
    assert not set(other["test_pool"].tolist()) == set(ref["test_pool"].tolist())


def test_model_shapes_and_representation(bench):
    torch.manual_seed(0)
    model = bench.build_model()
    x = bench.datasets()["train"].tensors[0][:7]
    z, outs = model(x)
    # default: task-specific BNs after conv 2, so Z is the shared trunk's output (conv 1, pool, ReLU)
    assert z.shape == (7, 10, 12, 12) and [o.shape for o in outs] == [(7, 10), (7, 10)]
    assert model.last_shared_parameters()[0].shape == (50, 320)
    (group,) = model.task_bn_groups()
    assert group.weight.shape == (20, 10, 5, 5) and len(group.gamma) == 2
    plain = benchmarks.make("multimnist", task_bn=False).build_model()
    z_plain, _ = plain(x)
    assert z_plain.shape == (7, 50) and not hasattr(plain, "task_bn_groups")
    batch = next(iter(DataLoader(bench.datasets()["train"], batch_size=7)))
    losses = bench.losses(outs, batch)
    assert loss_parts(losses) is not None  # stack_losses: per-task backwards skip the other heads
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    # at initialisation the cross-entropy is near log(10)
    assert float(losses.detach().mean()) == pytest.approx(np.log(10), abs=0.3)
    big = benchmarks.make("multimnist", size=36, task_bn=False).build_model()
    assert big(torch.zeros(2, 1, 36, 36))[0].shape == (2, 50)
    big = benchmarks.make("multimnist", size=36).build_model()
    assert [o.shape for o in big(torch.zeros(2, 1, 36, 36))[1]] == [(2, 10), (2, 10)]


def test_task_bn_model_parameters_and_paths(bench):
    """Shared = trunk + tail convs/FC; task-specific = each task's BNs + head; task k's output uses BN_k only."""
    torch.manual_seed(0)
    model = bench.build_model()
    shared, specific = model.shared_parameters(), model.task_parameters()
    assert {id(p) for p in shared} | {id(p) for p in specific} == {id(p) for p in model.parameters()}
    assert not {id(p) for p in shared} & {id(p) for p in specific}
    x = bench.datasets()["train"].tensors[0][:16]
    _, outs = model(x)
    for k in range(2):
        g = torch.autograd.grad(outs[k].sum(), model.task_parameters_of(1 - k) , allow_unused=True)
        assert all(gi is None for gi in g)  # the other task's BNs and head are not reached
        g = torch.autograd.grad(outs[k].sum(), model.task_parameters_of(k))
        assert all(gi is not None for gi in g)


@pytest.mark.parametrize("method", ["connection_strength", "mgda_ub", "gradnorm", "stgu", "stl:1"])
def test_every_kind_of_method_trains_the_task_bn_lenet(bench, method):
    df = train(bench, method, epochs=1, batch_size=100).frame()
    test = df[df.split == "test"]
    assert len(test) == 2 and np.isfinite(test.value).all()
    shares = df[df.metric.str.startswith("top_share_l0_")]
    if method == "connection_strength":  # the real method, not its fallback: priorities are measured
        assert len(shares) == 2 and shares.value.sum() == pytest.approx(1.0)
    else:
        assert shares.empty


def test_evaluate_counts_correctly(bench):
    class Oracle(torch.nn.Module):  # a "model" that reads the labels it was given
        def __init__(self, ds):
            super().__init__()
            self.lookup = {x.numpy().tobytes(): (int(a), int(b)) for x, a, b in zip(*ds.tensors)}

        def forward(self, x):
            lab = torch.tensor([self.lookup[xi.numpy().tobytes()] for xi in x])
            return torch.zeros(len(x), 50), [torch.nn.functional.one_hot(lab[:, 0], 10).float(),
                                               torch.nn.functional.one_hot((lab[:, 1] + 1) % 10, 10).float()]

    ds = bench.datasets()["test"]
    model = Oracle(ds).train()
    vals = bench.evaluate(model, DataLoader(ds, batch_size=64), torch.device("cpu"))
    assert vals == {"acc_L": 1.0, "acc_R": 0.0}
    assert model.training
    assert bench.kpis(vals).tolist() == [1.0, 0.0]


def test_ls_trains_one_epoch_and_evaluates_every_metric(bench):
    res = train(bench, "ls", epochs=1, batch_size=64, lr=1e-3, eval_splits=("val", "test"))
    df = res.frame()
    for s in ("val", "test"):
        got = df[df.split == s].set_index("metric").value
        assert set(got.index) == {"acc_L", "acc_R"}
        assert np.isfinite(got).all() and ((got >= 0) & (got <= 1)).all()
    loss = df[(df.split == "train") & df.metric.str.startswith("loss_")].value
    assert len(loss) == 2 and np.isfinite(loss).all()


def test_training_defaults_and_bad_options(tmp_path):
    fast = benchmarks.make("multimnist", data_root=str(tmp_path)).training()
    paper = benchmarks.make("multimnist", profile="paper", data_root=str(tmp_path)).training()
    for tr in (fast, paper):
        assert set(tr) == {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "lr_schedule"}
    assert paper["epochs"] == 100 and paper["lr_schedule"] == "step:10:0.85"
    with pytest.raises(ValueError, match="n_train"):
        benchmarks.make("multimnist", n_train=0)
    with pytest.raises(ValueError, match="val_fraction"):
        benchmarks.make("multimnist", n_val=10)
    with pytest.raises(ValueError, match="test_fraction"):
        benchmarks.make("multimnist", test_fraction=1.5)
