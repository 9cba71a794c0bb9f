#!/usr/bin/env python
"""Prepare NYUv2 (3 tasks: 13-class segmentation, depth, surface normals) in the MTAN preprocessed format.

Source: the preprocessed NYUv2 of MTAN (Liu et al. 2019, lorenmt/mtan), which CAGrad, nash-mtl, FAMO
and PIVRG all use: 795 train / 654 val images at 288x384, linked from nash-mtl's
``experiments/nyuv2/README.md`` and mtan's README (Dropbox folder; ``?dl=1`` returns it as one zip,
about 2.6 GB). **No checksum is published** for it: the sha256 of the first download is recorded in
``<data_root>/_downloads/SHA256SUMS.json`` and later downloads must match it. ``--source`` takes the
downloaded zip / tar(.gz), an extracted folder, or a mirror URL.

On-disk format (exactly MTAN's, which ``mtl_src.benchmarks.nyuv2`` reads), ``<data_root>/nyuv2/``::

    MANIFEST.json                 every file (bytes, sha256, shape, dtype), sources, counts
    {train,val}/image/<i>.npy     float (288, 384, 3)  RGB in [0, 1]
    {train,val}/label/<i>.npy     float (288, 384)     class 0..12, -1 = unlabelled
    {train,val}/depth/<i>.npy     float (288, 384, 1)  depth (m), 0 = missing
    {train,val}/normal/<i>.npy    float (288, 384, 3)  unit normals in [-1, 1], 0 = missing
    i = 0 .. n-1 (train 795, val 654); "val" is the test split of all these papers.

Usage::

    python data_scripts/nyuv2.py --data-root DIR [--source ZIP_OR_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MTANSpec, Source, prepare_mtan, run  # noqa: E402

NAME = "nyuv2"
SPEC = MTANSpec(NAME, {"image": (3,), "label": (), "depth": (1,), "normal": (3,)}, (288, 384), 13, "label",
                {"train": 795, "val": 654})
SOURCE = Source(
    "nyuv2_mtan.zip", "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=1", (),
    "no checksum published (lorenmt/mtan and AvivNavon/nash-mtl READMEs give only the link): "
    "sha256 recorded on first download",
)


def main(argv=None) -> None:
    prepare_mtan(argv, SPEC, SOURCE, __doc__)


if __name__ == "__main__":
    sys.exit(run(main))
