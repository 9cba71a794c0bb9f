"""data_scripts/ + the full-scale loaders, end to end on tiny fixtures in the official formats (no network)."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_data import MNIST_FILES, celeba_raw, checksums_for, corrupt, mnist_raw, mtan_archive
from mtl_src import benchmarks
from mtl_src.autodiff import loss_parts
from mtl_src.data import MissingDataError
from mtl_src.train import train

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"
sys.path.insert(0, str(SCRIPTS))
common = importlib.import_module("_common")
ds_mnist = importlib.import_module("multimnist_full")
ds_fashion = importlib.import_module("multifashion")
ds_celeba = importlib.import_module("celeba")
ds_nyuv2 = importlib.import_module("nyuv2")
ds_city = importlib.import_module("cityscapes")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread avoids oversubscription on the 2-core CI (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a URL fails the test: fixtures always come through --source."""
    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[:1]}")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _finite_eval(bench, **kw):
    res = train(bench, "ls", epochs=1, batch_size=kw.pop("batch_size", 4), lr=1e-3, **kw).frame()
    test = res[res.split == "test"].set_index("metric").value
    assert set(test.index) == {m.name for m in bench.metrics}
    assert np.isfinite(test.to_numpy()).all()
    return test


# ------------------------------------------------------------------------------------------------ sources
def test_default_sources_are_https_and_checksummed():
    table = {**{f"mnist:{k}": s for k, s in ds_mnist.SOURCES.items()},
             **{f"fashion:{k}": s for k, s in ds_fashion.SOURCES.items()},
             **{f"celeba:{k}": s for k, s in ds_celeba.SOURCES.items()},
             "nyuv2": ds_nyuv2.SOURCE, "cityscapes": ds_city.SOURCE}
    for key, s in table.items():
        if s.url is None:  # manual download only (Cityscapes): the script explains the step
            assert "register" in s.manual, key
        else:
            assert s.url.startswith("https://"), key
        if s.digests:
            for d in s.digests:
                algo, _, hexd = d.partition(":")
                assert (algo, len(hexd)) in {("md5", 32), ("sha256", 64)}, (key, d)
                int(hexd, 16)
            assert s.provenance, key
        else:  # no published checksum: trust on first use, said so
            assert "no checksum published" in s.provenance, key
    # the official MNIST/Fashion/CelebA files all have a published checksum
    assert all(s.digests for s in [*ds_mnist.SOURCES.values(), *ds_fashion.SOURCES.values(), *ds_celeba.SOURCES.values()])


def test_download_resumes_with_range_and_refuses_http(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 40
    seen = []

    class Resp(io.BytesIO):
        def __init__(self, body, status):
            super().__init__(body)
            self.status = status
            self.headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def fake_urlopen(req, timeout=None):
        rng = req.get_header("Range")
        seen.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        return Resp(payload[start:], 206 if rng else 200)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(payload[:1000])  # an interrupted earlier download
    common.download("https://example.invalid/f.bin", dest)
    assert seen == ["bytes=1000-"] and dest.read_bytes() == payload and not (tmp_path / "f.bin.part").exists()
    with pytest.raises(common.DataScriptError, match="only https"):
        common.download("http://example.invalid/f.bin", tmp_path / "g.bin")


# ------------------------------------------------------------------------------------------------ MNIST family
@pytest.fixture(scope="module")
def mnist_fixture(tmp_path_factory):
    pytest.importorskip("mtl_src.benchmarks.multimnist", reason="overlay_pairs lives in multimnist.py")
    raw = mnist_raw(tmp_path_factory.mktemp("raw_mnist"), n_train=40, n_test=20)
    sums = checksums_for(raw / "sums.json", [raw / f for f in MNIST_FILES])
    return raw, sums


@pytest.mark.parametrize("script,name", [(ds_mnist, "multimnist_full"), (ds_fashion, "multifashion")])
def test_mnist_family_end_to_end(tmp_path, mnist_fixture, script, name):
    from mtl_src.benchmarks.multimnist import overlay_pairs

    raw, sums = mnist_fixture
    script.main(["--data-root", str(tmp_path), "--source", str(raw), "--checksums", str(sums)])
    manifest = json.loads((tmp_path / name / "MANIFEST.json").read_text())
    assert manifest["files"]["train_images.npy"]["shape"] == [40, 28, 28]
    assert manifest["files"]["test_labels.npy"]["dtype"] == "uint8"
    # the composites are exactly the Sener & Koltun overlay of the recorded source digits
    src = common.read_idx(raw / "train-images-idx3-ubyte.gz")
    lab = common.read_idx(raw / "train-labels-idx1-ubyte.gz")
    d = tmp_path / name
    x, y, pairs = (np.load(d / f"train_{k}.npy") for k in ("images", "labels", "pairs"))
    np.testing.assert_array_equal(pairs[:, 0], np.arange(40))  # each digit once on the left
    assert (pairs[:, 0] != pairs[:, 1]).all()
    np.testing.assert_array_equal(x, overlay_pairs(src[pairs[:, 0]], src[pairs[:, 1]], size=28))
    np.testing.assert_array_equal(y, lab[pairs])

    bench = benchmarks.make(name, data_root=str(tmp_path), profile="paper")
    data = bench.datasets()
    assert len(data["train"]) == 40 and len(data["test"]) == 20
    xb, yl, yr = data["train"][:5]
    assert xb.shape == (5, 1, 28, 28) and xb.dtype == torch.float32 and yl.dtype == torch.int64
    mean, std = bench.MEAN, bench.STD
    assert xb.min() >= -mean / std - 1e-5 and xb.max() <= (1 - mean) / std + 1e-5
    assert int(yl.max()) <= 9 and int(yr.min()) >= 0
    acc = _finite_eval(bench, batch_size=16)
    assert ((acc >= 0) & (acc <= 1)).all()


def test_mnist_family_is_deterministic(tmp_path, mnist_fixture):
    raw, sums = mnist_fixture
    for sub, seed in (("a", 0), ("b", 0), ("c", 1)):
        ds_mnist.main(["--data-root", str(tmp_path / sub), "--source", str(raw), "--checksums", str(sums),
                       "--seed", str(seed)])
    p = {s: np.load(tmp_path / s / "multimnist_full" / "train_pairs.npy") for s in "abc"}
    np.testing.assert_array_equal(p["a"], p["b"])
    assert not np.array_equal(p["a"], p["c"])
    b1 = benchmarks.make("multimnist_full", data_root=str(tmp_path / "a"), n_train=10, seed=3).datasets()
    b2 = benchmarks.make("multimnist_full", data_root=str(tmp_path / "a"), n_train=10, seed=3).datasets()
    for t1, t2 in zip(b1["train"].tensors, b2["train"].tensors):
        assert torch.equal(t1, t2)


def test_multifashion_uses_the_debian_package_folder(tmp_path, monkeypatch, mnist_fixture):
    raw, _ = mnist_fixture
    monkeypatch.setattr(ds_fashion, "DEBIAN_DIR", str(raw))
    assert ds_fashion.default_source() == str(raw)
    monkeypatch.setattr(ds_fashion, "DEBIAN_DIR", str(tmp_path / "absent"))
    assert ds_fashion.default_source() is None


def test_raw_checksum_mismatch_names_the_file_and_script(tmp_path, mnist_fixture, capsys):
    raw, _ = mnist_fixture
    rc = common.run(ds_mnist.main, ["--data-root", str(tmp_path), "--source", str(raw)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "checksum mismatch" in err and "train-images-idx3-ubyte.gz" in err and "data_scripts/multimnist_full.py" in err
    assert not (tmp_path / "multimnist_full").exists()


def test_interrupted_preprocessing_leaves_nothing_half_written(tmp_path, mnist_fixture, monkeypatch):
    raw, sums = mnist_fixture
    args = ["--data-root", str(tmp_path), "--source", str(raw), "--checksums", str(sums)]

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ds_mnist, "write_manifest", boom)  # dies after the arrays, before the manifest
    with pytest.raises(KeyboardInterrupt):
        ds_mnist.main(args)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "_downloads") == []
    monkeypatch.undo()
    ds_mnist.main(args)
    before = (tmp_path / "multimnist_full" / "MANIFEST.json").read_text()
    monkeypatch.setattr(ds_mnist, "write_manifest", boom)  # an interrupted --force rebuild keeps the old copy
    with pytest.raises(KeyboardInterrupt):
        ds_mnist.main(args + ["--force", "--seed", "5"])
    assert (tmp_path / "multimnist_full" / "MANIFEST.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multimnist_full"]
    benchmarks.make("multimnist_full", data_root=str(tmp_path)).datasets()


def test_missing_and_corrupt_prepared_files_are_named(tmp_path, mnist_fixture):
    raw, sums = mnist_fixture
    ds_mnist.main(["--data-root", str(tmp_path), "--source", str(raw), "--checksums", str(sums)])
    d = tmp_path / "multimnist_full"
    benchmarks.make("multimnist_full", data_root=str(tmp_path)).datasets()
    assert (d / ".verified.json").exists()
    f = d / "test_images.npy"
    blob = bytearray(f.read_bytes())
    blob[-1] ^= 0xFF  # same size, one flipped byte
    f.write_bytes(bytes(blob))
    with pytest.raises(MissingDataError, match=r"test_images\.npy is corrupt \(checksum mismatch") as e:
        benchmarks.make("multimnist_full", data_root=str(tmp_path)).datasets()
    assert f"python data_scripts/multimnist_full.py --data-root {tmp_path}" in str(e.value)
    f.unlink()
    with pytest.raises(MissingDataError, match=r"test_images\.npy is missing") as e:
        benchmarks.make("multimnist_full", data_root=str(tmp_path)).datasets()
    assert "python data_scripts/multimnist_full.py" in str(e.value)
    (d / "MANIFEST.json").unlink()
    with pytest.raises(MissingDataError, match=r"MANIFEST\.json is missing.*data_scripts/multimnist_full\.py"):
        benchmarks.make("multimnist_full", data_root=str(tmp_path)).datasets()


# ------------------------------------------------------------------------------------------------ CelebA
@pytest.fixture(scope="module")
def celeba_prepared(tmp_path_factory):
    raw = celeba_raw(tmp_path_factory.mktemp("raw_celeba"), n=12)
    sums = checksums_for(raw / "sums.json", [raw / f for f in ("img_align_celeba.zip", "list_attr_celeba.txt",
                                                                "list_eval_partition.txt")])
    root = tmp_path_factory.mktemp("root_celeba")
    ds_celeba.main(["--data-root", str(root), "--source", str(raw), "--checksums", str(sums),
                    "--workers", "1", "--shard-size", "4"])
    return raw, root


def test_celeba_preprocessing_matches_the_official_files(celeba_prepared):
    from PIL import Image

    raw, root = celeba_prepared
    d = root / "celeba"
    manifest = json.loads((d / "MANIFEST.json").read_text())
    assert manifest["protocol"]["splits"] == {"train": 6, "val": 3, "test": 3}
    assert sorted(f for f in manifest["files"] if f.startswith("train_images")) == ["train_images_000.npy",
                                                                                      "train_images_001.npy"]
    names, files, labels = ds_celeba.parse_attributes(raw / "list_attr_celeba.txt")
    val_files = (d / "val_files.txt").read_text().split()
    assert val_files == files[6:9]
    np.testing.assert_array_equal(np.load(d / "val_labels.npy"), labels[6:9])
    shard = np.load(d / "train_images_001.npy", mmap_mode="r")
    assert shard.shape == (2, 64, 64, 3) and shard.dtype == np.uint8
    with zipfile.ZipFile(raw / "img_align_celeba.zip") as zf, Image.open(io.BytesIO(zf.read("img_align_celeba/000005.jpg"))) as im:
        want = np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR))
    np.testing.assert_array_equal(shard[0], want)  # train image #5 = second shard, first row


@pytest.mark.parametrize("model", ["resnet18", "cnn9"])
def test_celeba_loader_trains_and_evaluates(celeba_prepared, model):
    _, root = celeba_prepared
    bench = benchmarks.make("celeba", data_root=str(root), model=model)
    data = bench.datasets()
    assert {k: len(v) for k, v in data.items()} == {"train": 6, "val": 3, "test": 3}
    x, y = data["train"][0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.shape == (40,) and set(y.tolist()) <= {0, 1}
    assert len(bench.tasks) == 40 and len(bench.metrics) == 80
    vals = _finite_eval(bench, batch_size=6, eval_splits=("val", "test"))
    assert ((vals >= 0) & (vals <= 1)).all()
    xb, yb = (torch.stack(t) for t in zip(*(data["train"][i] for i in range(2))))
    losses = bench.losses(bench.build_model()(xb)[1], (xb, yb))
    assert losses.shape == (40,) and loss_parts(losses) is not None
    b2 = benchmarks.make("celeba", data_root=str(root), model=model, n_train=4, seed=1)
    assert np.array_equal(b2.datasets()["train"].index, benchmarks.make(
        "celeba", data_root=str(root), model=model, n_train=4, seed=1).datasets()["train"].index)


def test_celeba_f1_and_accuracy_are_computed_as_famo(celeba_prepared):
    _, root = celeba_prepared
    bench = benchmarks.make("celeba", data_root=str(root), model="cnn9")
    data = bench.datasets()["train"]
    y = torch.stack([data[i][1] for i in range(len(data))])

    class AlwaysOne(torch.nn.Module):  # predicts "present" for every attribute
        def forward(self, x):
            return x, [torch.ones(len(x), 1) for _ in range(40)]

    m = AlwaysOne()
    vals = bench.evaluate(m, torch.utils.data.DataLoader(data, batch_size=4), torch.device("cpu"))
    pos = y.double().mean(0)
    for k, a in enumerate(bench.tasks):
        assert vals[f"acc_{a}"] == pytest.approx(float(pos[k]))
        p, r = float(pos[k]), 1.0 if pos[k] > 0 else 0.0
        assert vals[f"f1_{a}"] == pytest.approx(2 * p * r / (p + r + 1e-8) if p > 0 else 0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------ NYUv2 / Cityscapes
@pytest.fixture(scope="module")
def mtan_prepared(tmp_path_factory):
    out = {}
    for kind, script in (("nyuv2", ds_nyuv2), ("cityscapes", ds_city)):
        base = tmp_path_factory.mktemp(f"raw_{kind}")
        archive = mtan_archive(base / f"{kind}_mtan.zip", kind, n_train=3, n_val=2)
        root = tmp_path_factory.mktemp(f"root_{kind}")
        script.main(["--data-root", str(root), "--source", str(archive)])
        out[kind] = (archive, root)
    return out


@pytest.mark.parametrize("kind", ["nyuv2", "cityscapes"])
def test_mtan_format_end_to_end(mtan_prepared, kind):
    archive, root = mtan_prepared[kind]
    d = root / kind
    manifest = json.loads((d / "MANIFEST.json").read_text())
    assert manifest["protocol"]["counts"] == {"train": 3, "val": 2}
    label_dir = "label" if kind == "nyuv2" else "label_7"
    with zipfile.ZipFile(archive) as zf:
        want = np.load(io.BytesIO(zf.read(f"data/val/{label_dir}/1.npy")))
    np.testing.assert_array_equal(np.load(d / "val" / label_dir / "1.npy"), want)
    # the archive's sha256 was recorded on first use (no published checksum)
    tofu = json.loads((root / "_downloads" / "SHA256SUMS.json").read_text())
    assert tofu[f"{kind}_mtan.zip"] == hashlib.sha256(archive.read_bytes()).hexdigest()

    bench = benchmarks.make(kind, data_root=str(root), augment=True)
    data = bench.datasets()
    assert len(data["train"]) == 3 and len(data["test"]) == 2
    item = data["test"][0]
    H, W = bench.resolution
    assert item[0].shape == (3, H, W) and item[1].shape == (H, W) and item[2].shape == (1, H, W)
    assert all(t.dtype == torch.float32 for t in item)
    assert float(item[1].min()) >= -1 and float(item[1].max()) < bench.CLASSES
    if kind == "nyuv2":
        assert item[3].shape == (3, H, W)
    vals = _finite_eval(bench, batch_size=2)
    assert 0 <= vals["miou"] <= 1 and 0 <= vals["pixacc"] <= 1 and vals["abs_err"] >= 0


def test_mtan_metrics_are_perfect_on_the_ground_truth(mtan_prepared):
    _, root = mtan_prepared["nyuv2"]
    bench = benchmarks.make("nyuv2", data_root=str(root), resolution=(288, 384))
    batch = next(iter(torch.utils.data.DataLoader(bench.datasets()["test"], batch_size=2)))

    class Oracle(torch.nn.Module):
        def forward(self, x):
            label = batch[1].long().clamp_min(0)
            logits = torch.nn.functional.one_hot(label, 13).permute(0, 3, 1, 2).float() * 50
            return x, [logits, batch[2].clone(), batch[3].clone()]

    vals = bench.evaluate(Oracle(), [batch], torch.device("cpu"))
    assert vals["miou"] == pytest.approx(1.0) and vals["pixacc"] == pytest.approx(1.0)
    assert vals["abs_err"] == 0 and vals["rel_err"] == 0
    assert vals["mean_angle"] < 0.1 and vals["within_11.25"] == pytest.approx(1.0)
    losses = bench.losses(Oracle()(batch[0])[1], batch)
    assert loss_parts(losses) is not None  # stack_losses: per-task backwards skip the other heads
    assert losses[1] == 0 and abs(float(losses[2])) < 1e-5 and float(losses[0]) < 1e-6


def test_mtan_checks_and_manual_step(tmp_path, mtan_prepared, capsys):
    # Cityscapes is never downloaded: without --source the script explains the registration step
    rc = common.run(ds_city.main, ["--data-root", str(tmp_path)])
    assert rc == 1 and "register" in capsys.readouterr().err
    # a later archive with another sha256 than the recorded one is refused
    archive, root = mtan_prepared["cityscapes"]
    other = mtan_archive(tmp_path / "cityscapes_mtan.zip", "cityscapes", n_train=3, n_val=2, seed=9)
    rc = common.run(ds_city.main, ["--data-root", str(root), "--source", str(other), "--force"])
    assert rc == 1 and "checksum mismatch" in capsys.readouterr().err
    # wrong shapes are refused with the file named
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for split in ("train", "val"):
            for d in ("image", "label", "depth", "normal"):
                buf = io.BytesIO()
                np.save(buf, np.zeros((10, 10, 3) if d in ("image", "normal") else (10, 10), np.float32))
                zf.writestr(f"{split}/{d}/0.npy", buf.getvalue())
    rc = common.run(ds_nyuv2.main, ["--data-root", str(tmp_path), "--source", str(bad)])
    err = capsys.readouterr().err
    assert rc == 1 and "train/image/0.npy has shape (10, 10, 3)" in err
    assert not (tmp_path / "nyuv2").exists()
    # a prepared file gone missing is named, with the command (Cityscapes: --source, manual download);
    # on a copy: the prepared root is a module fixture that other tests read
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "cityscapes" / "val" / "depth" / "1.npy").unlink()
    with pytest.raises(MissingDataError, match=r"val/depth/1\.npy is missing.*data_scripts/cityscapes\.py.*--source"):
        benchmarks.make("cityscapes", data_root=str(copy)).datasets()


def test_profiles_and_options_are_validated():
    for name in ("multimnist_full", "multifashion", "celeba", "cityscapes", "nyuv2"):
        b = benchmarks.make(name, profile="paper")
        assert b.stl_baseline is None and set(b.training()) == {"epochs", "batch_size", "lr", "optimizer",
                                                                 "weight_decay", "lr_schedule"}
    assert benchmarks.make("celeba", profile="paper", model="cnn9").training()["lr"] == 3e-4
    assert benchmarks.make("nyuv2", profile="paper").training()["batch_size"] == 2
    with pytest.raises(ValueError, match="cnn9"):
        benchmarks.make("celeba", model="vgg")
    with pytest.raises(ValueError, match="segnet"):
        benchmarks.make("nyuv2", model="mtan")
    from mtl_src.benchmarks import cityscapes, nyuv2
    assert set(nyuv2.STL_BASELINE) == {m.name for m in benchmarks.make("nyuv2").metrics}
    assert set(cityscapes.STL_BASELINE) == {m.name for m in benchmarks.make("cityscapes").metrics}



# ------------------------------------------------------------------------------------------------ corrupt files
def _flip_and_expect(root: Path, name: str, rel: str, tmp_path: Path, **make):
    """Copy a prepared root, flip one byte of ``rel`` (size kept), and expect the loader to name the file
    and the data script; the copy keeps the originals (module fixtures) intact."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    benchmarks.make(name, data_root=str(copy), **make).datasets()  # intact: loads (and stamps the hashes)
    corrupt(copy / name / rel)
    with pytest.raises(MissingDataError, match=rf"{rel.replace('.', '[.]')} is corrupt \(checksum mismatch") as e:
        benchmarks.make(name, data_root=str(copy), **make).datasets()
    assert f"python data_scripts/{name}.py --data-root {copy}" in str(e.value)


def test_a_flipped_byte_in_prepared_celeba_is_named(celeba_prepared, tmp_path):
    _, root = celeba_prepared
    shard = sorted(p.name for p in (root / "celeba").glob("train_images_*.npy"))[0]
    _flip_and_expect(root, "celeba", shard, tmp_path)
    _flip_and_expect(root, "celeba", "val_labels.npy", tmp_path / "b")


@pytest.mark.parametrize("kind,rel", [("nyuv2", "train/normal/0.npy"), ("nyuv2", "val/label/1.npy"),
                                      ("cityscapes", "train/depth/2.npy"), ("cityscapes", "val/image/0.npy")])
def test_a_flipped_byte_in_prepared_mtan_data_is_named(mtan_prepared, tmp_path, kind, rel):
    _, root = mtan_prepared[kind]
    _flip_and_expect(root, kind, rel, tmp_path)
