#!/usr/bin/env python
"""Prepare full-size MultiMNIST (Sener & Koltun 2018): 60,000 train / 10,000 test composites.

Source: the four official MNIST IDX files. Default download:
https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's https mirror of yann.lecun.com/exdb/mnist),
verified against the MD5s listed in torchvision's ``torchvision/datasets/mnist.py`` (``MNIST.resources``).

Protocol (intel-isl/MultiObjectiveOptimization ``multi_task/loaders/multi_mnist_loader.py``, reused by
Aligned-MTL): within each official split, every digit is used once as the *left* (top-left) digit and
gets a uniformly drawn partner from the same split as the *right* (bottom-right) digit (never itself,
as Aligned-MTL's text says "a different image"); the pair is overlaid by
``mtl_src.benchmarks.multimnist.overlay_pairs`` (36x36 canvas, pixelwise max, nearest resize to 28x28).
The partner draw is seeded (``--seed``, recorded in the manifest).

On-disk format, ``<data_root>/multimnist_full/``::

    MANIFEST.json                      files (bytes, sha256, shape, dtype), sources, protocol
    train_images.npy  uint8 (60000, 28, 28)   composites, 0..255
    train_labels.npy  uint8 (60000, 2)        (label of left digit, label of right digit)
    train_pairs.npy   int32 (60000, 2)        indices of (left, right) digits in the MNIST split
    test_images.npy / test_labels.npy / test_pairs.npy     the same for the 10,000 test composites

Usage::

    python data_scripts/multimnist_full.py --data-root DIR [--source DIR_OR_MIRROR_URL] [--seed 0]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DataScriptError, Source, already_prepared, atomic_output, base_parser, load_override, obtain,
    read_idx, resolve_root, run, write_manifest,
)

NAME = "multimnist_full"
_TV = "MD5 from torchvision/datasets/mnist.py (MNIST.resources)"
_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SOURCES = {
    "train_images": Source("train-images-idx3-ubyte.gz", _BASE + "train-images-idx3-ubyte.gz",
                           ("md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",), _TV),
    "train_labels": Source("train-labels-idx1-ubyte.gz", _BASE + "train-labels-idx1-ubyte.gz",
                           ("md5:d53e105ee54ea40749a09fcbcd1e9432",), _TV),
    "test_images": Source("t10k-images-idx3-ubyte.gz", _BASE + "t10k-images-idx3-ubyte.gz",
                          ("md5:9fb629c4189551a2d022fa330f9573f3",), _TV),
    "test_labels": Source("t10k-labels-idx1-ubyte.gz", _BASE + "t10k-labels-idx1-ubyte.gz",
                          ("md5:ec29112dd5afa0611ce80d1b7f02629c",), _TV),
}
EXPECTED = {"train": 60000, "test": 10000}
SIZE = 28


def _overlay():
    try:
        from mtl_src.benchmarks.multimnist import overlay_pairs
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        try:
            from mtl_src.benchmarks.multimnist import overlay_pairs
        except ImportError as e:
            raise DataScriptError(f"needs mtl_src.benchmarks.multimnist.overlay_pairs ({e}); run from the "
                                  "repository with the project installed: pip install -e .") from None
    return overlay_pairs


def pair_split(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, overlay) -> dict[str, np.ndarray]:
    """Sener & Koltun pairing of one split: each digit once on the left, a random other one on the right."""
    n = len(images)
    if n < 2 or len(labels) != n:
        raise DataScriptError(f"a split needs >= 2 images and one label per image (got {n} images, {len(labels)} labels)")
    left = np.arange(n)
    right = rng.integers(0, n, n)
    same = right == left
    while same.any():
        right[same] = rng.integers(0, n, int(same.sum()))
        same = right == left
    x = np.asarray(overlay(images[left], images[right], size=SIZE))
    if x.dtype != np.uint8:  # overlay keeps the input dtype; be strict about what goes on disk
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return {"images": x, "labels": np.stack([labels[left], labels[right]], 1).astype(np.uint8),
            "pairs": np.stack([left, right], 1).astype(np.int32)}


def prepare(argv=None, *, name: str = NAME, sources: dict[str, Source] = SOURCES, description: str = __doc__,
            default_source: str | None = None) -> Path:
    p = base_parser(name, description)
    p.add_argument("--seed", type=int, default=0, help="seed of the random right-digit partners (default 0)")
    args = p.parse_args(argv)
    root = resolve_root(args.data_root)
    out = root / name
    if already_prepared(out, args.force):
        return out
    override = load_override(args.checksums)
    spec = args.source if args.source is not None else default_source
    paths = {k: obtain(s, spec, name=name, script=name, root=root, override=override) for k, s in sources.items()}
    overlay = _overlay()
    rng = np.random.default_rng([args.seed, 2018])
    with atomic_output(out) as tmp:
        for split in ("train", "test"):
            images = read_idx(paths[f"{split}_images"])
            labels = read_idx(paths[f"{split}_labels"])
            if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
                raise DataScriptError(f"{paths[split + '_images']}: expected (N, 28, 28) images with N labels, got "
                                      f"{images.shape} and {labels.shape}")
            if labels.max(initial=0) > 9:
                raise DataScriptError(f"{paths[split + '_labels']}: labels must be 0..9")
            if len(images) != EXPECTED[split]:
                print(f"warning: {split} split has {len(images)} images, the official one {EXPECTED[split]}",
                      file=sys.stderr)
            arrays = pair_split(images, labels, rng, overlay)
            for key, arr in arrays.items():
                np.save(tmp / f"{split}_{key}.npy", arr)
        write_manifest(tmp, dataset=name, script=name,
                       sources={s.filename: _sha(paths[k]) for k, s in sources.items()},
                       protocol={"seed": args.seed, "size": SIZE, "pairing": "each digit once on the left, "
                                 "uniform other partner on the right, within the split",
                                 "overlay": "mtl_src.benchmarks.multimnist.overlay_pairs"})
    print(f"prepared {out}")
    return out


def _sha(path: Path) -> str:
    from _common import file_digest
    return file_digest(path)


def main(argv=None) -> None:
    prepare(argv)


if __name__ == "__main__":
    sys.exit(run(main))
