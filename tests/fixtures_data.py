"""Tiny datasets in the exact raw and prepared formats of data_scripts/, for loader tests (no network).

* :func:`mnist_raw` — the four IDX ``.gz`` files of MNIST / Fashion-MNIST (official names and headers);
* :func:`celeba_raw` — ``img_align_celeba.zip`` (178x218 JPEGs under ``img_align_celeba/``),
  ``list_attr_celeba.txt`` and ``list_eval_partition.txt`` in the official text formats;
* :func:`mtan_archive` — a zip in the MTAN layout ``<top>/{train,val}/<dir>/<i>.npy`` (float32, the
  published shapes) for NYUv2 or Cityscapes;
* :func:`checksums_for` — a ``--checksums`` JSON accepting the fixture files (they are not the
  official archives, so their published checksums cannot match);
* :func:`prepared_multimnist_full` — a data root with ``multimnist_full`` prepared by its data script
  from :func:`mnist_raw` (for runner and notebook tests);
* :func:`corrupt` — flip one byte of a prepared file in place (same size: only the checksum can tell).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """An unsigned-byte IDX file (gzipped when the name ends in .gz)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    return path


def _digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 uint8 images: a bright bar whose position encodes the label, plus noise."""
    imgs = rng.integers(0, 30, (len(labels), 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        imgs[i, 4 + 2 * int(c): 6 + 2 * int(c), 4:24] = 255
    return imgs


def mnist_raw(directory: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", _digits(labels, rng))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


def celeba_raw(directory: Path, n: int = 12, seed: int = 0, attributes: list[str] | None = None) -> Path:
    """Official-format CelebA files; splits: first half train, then a quarter val, the rest test."""
    from PIL import Image

    from mtl_src.benchmarks.celeba import ATTRIBUTES

    attributes = attributes or ATTRIBUTES
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    vals = rng.choice([-1, 1], size=(n, len(attributes)))
    with zipfile.ZipFile(directory / "img_align_celeba.zip", "w") as zf:
        for i, name in enumerate(names):
            img = np.zeros((218, 178, 3), np.uint8)
            img[..., 0] = int(rng.integers(0, 256))
            img[60:160, 40:140, 1] = 200 if vals[i, 0] > 0 else 50
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            zf.writestr(f"img_align_celeba/{name}", buf.getvalue())
    lines = [str(n), " ".join(attributes)] + [
        f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, vals)]
    (directory / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    split = [0 if i < n // 2 else 1 if i < (3 * n) // 4 else 2 for i in range(n)]
    (directory / "list_eval_partition.txt").write_text("".join(f"{name} {s}\n" for name, s in zip(names, split)))
    return directory


MTAN = {
    "nyuv2": {"dirs": {"image": (3,), "label": (), "depth": (1,), "normal": (3,)}, "hw": (288, 384), "classes": 13},
    "cityscapes": {"dirs": {"image": (3,), "label_7": (), "depth": (1,)}, "hw": (128, 256), "classes": 7},
}


def mtan_sample(kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    spec = MTAN[kind]
    H, W = spec["hw"]
    out = {}
    for d, trail in spec["dirs"].items():
        if d == "image":
            a = rng.random((H, W, 3), dtype=np.float32)
        elif d.startswith("label"):
            a = rng.integers(-1, spec["classes"], (H, W)).astype(np.float32)
        elif d == "depth":
            a = (rng.random((H, W, 1), dtype=np.float32) * 5).astype(np.float32)
            a[: H // 8] = 0  # missing depth
        else:
            v = rng.normal(size=(H, W, 3)).astype(np.float32)
            a = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
            a[: H // 8] = 0
        out[d] = a
    return out


def mtan_archive(path: Path, kind: str, n_train: int = 3, n_val: int = 2, seed: int = 0, top: str = "data") -> Path:
    """A zip in the MTAN layout ``<top>/{train,val}/<dir>/<i>.npy``."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                for d, a in mtan_sample(kind, rng).items():
                    buf = io.BytesIO()
                    np.save(buf, a)
                    zf.writestr(f"{top}/{split}/{d}/{i}.npy", buf.getvalue())
    return path


def checksums_for(path: Path, files: list[Path]) -> Path:
    """A --checksums JSON accepting exactly ``files`` (sha256)."""
    obj = {Path(f).name: [f"sha256:{hashlib.sha256(Path(f).read_bytes()).hexdigest()}"] for f in files}
    Path(path).write_text(json.dumps(obj))
    return Path(path)


def prepared_multimnist_full(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """``root`` with ``multimnist_full/`` prepared by ``data_scripts/multimnist_full.py`` from a tiny
    :func:`mnist_raw` fixture (through ``--source``; no network). Returns ``root``."""
    import importlib
    import sys

    root = Path(root)
    raw = mnist_raw(root.parent / f"{root.name}_raw", n_train=n_train, n_test=n_test)
    sums = checksums_for(raw / "sums.json", [raw / f for f in MNIST_FILES])
    scripts = Path(__file__).resolve().parents[1] / "data_scripts"
    if str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))
    importlib.import_module("multimnist_full").main(
        ["--data-root", str(root), "--source", str(raw), "--checksums", str(sums)])
    return root


def corrupt(path: Path, offset: int = -1) -> Path:
    """Flip every bit of the byte at ``offset`` of ``path`` (default: the last), keeping the size."""
    path = Path(path)
    blob = bytearray(path.read_bytes())
    if not blob:
        raise ValueError(f"corrupt: {path} is empty")
    blob[offset] ^= 0xFF
    path.write_bytes(bytes(blob))
    return path
