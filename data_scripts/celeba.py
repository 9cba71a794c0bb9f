#!/usr/bin/env python
"""Prepare CelebA for 40-attribute multi-task classification, images resized to 64x64.

Sources (the official CelebA release, Liu et al. 2015, "Align&Cropped Images" on Google Drive):
``img_align_celeba.zip`` (1.44 GB, 202,599 JPEGs 178x218), ``list_attr_celeba.txt`` (40 binary
attributes, -1/1), ``list_eval_partition.txt`` (official split: 0 train 162,770 / 1 val 19,867 /
2 test 19,962). MD5s from torchvision's ``torchvision/datasets/celeba.py`` (``CelebA.file_list``).
Google Drive often answers large downloads with a quota page: then download the three files in a
browser (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) and pass the folder with ``--source``
(the official nested layout Img/ Anno/ Eval/ is found too).

Preprocessing (Sener & Koltun 2018 and FAMO/PIVRG both resize the aligned 178x218 image to 64x64
without cropping): each JPEG is decoded with Pillow, converted to RGB and resized to 64x64 with
bilinear (antialiased) filtering, as ``torchvision.transforms.Resize((64, 64))`` does on PIL images.

On-disk format, ``<data_root>/celeba/`` (memory-mappable with ``np.load(..., mmap_mode="r")``)::

    MANIFEST.json                          files (bytes, sha256, shape, dtype), sources, protocol, attributes
    {split}_images_{k:03d}.npy  uint8 (n_k, 64, 64, 3)   RGB shards of at most --shard-size images
    {split}_labels.npy          uint8 (N, 40)             attributes as 0/1, in list_attr_celeba.txt order
    {split}_files.txt           N lines                   JPEG names, same order
    attributes.txt              40 lines                  attribute names
    split in train, val, test (official partition)

Usage::

    python data_scripts/celeba.py --data-root DIR [--source DIR] [--workers N] [--shard-size 20000]
"""

from __future__ import annotations

import io
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DataScriptError, Source, already_prepared, atomic_output, base_parser, file_digest, load_override,
    obtain, resolve_root, run, write_manifest,
)

NAME = "celeba"
SIZE = 64
SPLITS = ("train", "val", "test")
EXPECTED = {"train": 162770, "val": 19867, "test": 19962}
_TV = "MD5 from torchvision/datasets/celeba.py (CelebA.file_list)"
_GD = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
SOURCES = {
    "images": Source("img_align_celeba.zip", _GD + "0B7EVK8r0v71pZjFTYXZWM3FlRnM",
                     ("md5:00d2c5bc6d35e252742224ab0c1e8fcb",), _TV),
    "attributes": Source("list_attr_celeba.txt", _GD + "0B7EVK8r0v71pblRyaVFSWGxPY0U",
                         ("md5:75e246fa4810816ffd6ee81facbd244c",), _TV),
    "partition": Source("list_eval_partition.txt", _GD + "0B7EVK8r0v71pY0NSMzRuSXJEVkk",
                        ("md5:d32c9cbf5e040fd4025c592c306e6668",), _TV),
}


def parse_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, labels (N, 40) uint8 0/1) from list_attr_celeba.txt."""
    lines = path.read_text().splitlines()
    try:
        n = int(lines[0].strip())
        names = lines[1].split()
        rows = [ln.split() for ln in lines[2:2 + n]]
    except (IndexError, ValueError):
        raise DataScriptError(f"{path}: not in the list_attr_celeba.txt format (count, names, rows)") from None
    if len(names) != 40 or len(rows) != n or any(len(r) != 41 for r in rows):
        raise DataScriptError(f"{path}: expected 40 attribute names and {n} rows of a file name + 40 values")
    vals = np.array([[int(v) for v in r[1:]] for r in rows])
    if not np.isin(vals, (-1, 1)).all():
        raise DataScriptError(f"{path}: attribute values must be -1 or 1")
    return names, [r[0] for r in rows], (vals > 0).astype(np.uint8)


def parse_partition(path: Path) -> dict[str, int]:
    out = {}
    for ln in path.read_text().splitlines():
        parts = ln.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataScriptError(f"{path}: bad line {ln!r} (expected '<file> <0|1|2>')")
        out[parts[0]] = int(parts[1])
    return out


def _decode(blobs: list[bytes]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataScriptError("CelebA preprocessing needs Pillow: pip install pillow") from None
    out = np.empty((len(blobs), SIZE, SIZE, 3), np.uint8)
    for i, b in enumerate(blobs):
        with Image.open(io.BytesIO(b)) as im:
            out[i] = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    return out


def _zip_members(zf: zipfile.ZipFile) -> dict[str, str]:
    """JPEG base name -> member name (the official zip nests them under img_align_celeba/)."""
    return {Path(m).name: m for m in zf.namelist() if m.lower().endswith(".jpg")}


def main(argv=None) -> None:
    p = base_parser(NAME, __doc__)
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: all CPUs; 1: in-process)")
    p.add_argument("--shard-size", type=int, default=20000, help="images per .npy shard (default 20000)")
    args = p.parse_args(argv)
    if args.shard_size < 1:
        raise DataScriptError("--shard-size must be >= 1")
    root = resolve_root(args.data_root)
    out = root / NAME
    if already_prepared(out, args.force):
        return
    override = load_override(args.checksums)
    paths = {k: obtain(s, args.source, name=NAME, script=NAME, root=root, override=override) for k, s in SOURCES.items()}
    attr_names, files, labels = parse_attributes(paths["attributes"])
    part = parse_partition(paths["partition"])
    missing = [f for f in files if f not in part]
    if missing:
        raise DataScriptError(f"{paths['partition']}: no split for {len(missing)} images (e.g. {missing[0]})")
    try:
        zf = zipfile.ZipFile(paths["images"])
    except zipfile.BadZipFile:
        raise DataScriptError(f"{paths['images']} is not a zip archive; delete it and re-run") from None
    import os
    workers = args.workers or os.cpu_count() or 1
    with zf, atomic_output(out) as tmp:
        members = _zip_members(zf)
        absent = [f for f in files if f not in members]
        if absent:
            raise DataScriptError(f"{paths['images']}: {len(absent)} images of list_attr_celeba.txt are missing "
                                  f"(e.g. {absent[0]}); the archive is incomplete")
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            for s_code, split in enumerate(SPLITS):
                sel = [i for i, f in enumerate(files) if part[f] == s_code]
                if len(sel) != EXPECTED[split]:
                    print(f"warning: {split} has {len(sel)} images, the official split {EXPECTED[split]}", file=sys.stderr)
                np.save(tmp / f"{split}_labels.npy", labels[sel])
                (tmp / f"{split}_files.txt").write_text("".join(files[i] + "\n" for i in sel))
                for k, start in enumerate(range(0, max(len(sel), 1), args.shard_size)):
                    chunk = sel[start:start + args.shard_size]
                    shard = np.lib.format.open_memmap(tmp / f"{split}_images_{k:03d}.npy", mode="w+",
                                                      dtype=np.uint8, shape=(len(chunk), SIZE, SIZE, 3))
                    step = 500
                    blocks = [[zf.read(members[files[i]]) for i in chunk[j:j + step]] for j in range(0, len(chunk), step)]
                    decoded = pool.map(_decode, blocks) if pool else map(_decode, blocks)
                    pos = 0
                    for arr in decoded:
                        shard[pos:pos + len(arr)] = arr
                        pos += len(arr)
                    shard.flush()
                    del shard
                    print(f"{split}: {min(start + args.shard_size, len(sel))}/{len(sel)} images", file=sys.stderr)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        (tmp / "attributes.txt").write_text("".join(a + "\n" for a in attr_names))
        write_manifest(tmp, dataset=NAME, script=NAME,
                       sources={s.filename: file_digest(paths[k]) for k, s in SOURCES.items()},
                       protocol={"size": SIZE, "resize": "PIL bilinear to 64x64, no crop", "attributes": attr_names,
                                 "splits": {s: int(sum(part[f] == i for f in files)) for i, s in enumerate(SPLITS)}})
    print(f"prepared {out}")


if __name__ == "__main__":
    sys.exit(run(main))
