#!/usr/bin/env python
"""Prepare Cityscapes (2 tasks: 7-class segmentation, depth) in the MTAN preprocessed format, 128x256.

Cityscapes (Cordts et al. 2016) may only be downloaded after registering and accepting its licence,
so this script never downloads it. The manual step:

1. register at https://www.cityscapes-dataset.com/register/ and accept the terms of use;
2. download the MTAN-preprocessed 2-task version (Liu et al. 2019, lorenmt/mtan README, "Cityscapes"
   link; used unchanged by CAGrad, nash-mtl, FAMO and PIVRG): 2,975 train / 500 val images at 128x256
   with 7-class (and 19-class) labels and disparity-derived depth, one zip of about 2.3 GB;
3. run ``python data_scripts/cityscapes.py --data-root DIR --source PATH/TO/the.zip`` (a .zip, .tar(.gz)
   or the extracted folder).

**No checksum is published** for that archive: its sha256 is recorded on first use in
``<data_root>/_downloads/SHA256SUMS.json`` and enforced afterwards.

On-disk format (exactly MTAN's, which ``mtl_src.benchmarks.cityscapes`` reads), ``<data_root>/cityscapes/``::

    MANIFEST.json                  every file (bytes, sha256, shape, dtype), sources, counts
    {train,val}/image/<i>.npy      float (128, 256, 3)  RGB in [0, 1]
    {train,val}/label_7/<i>.npy    float (128, 256)     class 0..6, -1 = void
    {train,val}/depth/<i>.npy      float (128, 256, 1)  depth (inverse disparity scale), 0 = missing
    i = 0 .. n-1 (train 2975, val 500); "val" is the test split of these papers. label_19 is not kept.

Usage::

    python data_scripts/cityscapes.py --data-root DIR --source ZIP_OR_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MTANSpec, Source, prepare_mtan, run  # noqa: E402

NAME = "cityscapes"
SPEC = MTANSpec(NAME, {"image": (3,), "label_7": (), "depth": (1,)}, (128, 256), 7, "label_7",
                {"train": 2975, "val": 500})
MANUAL = ("Cityscapes needs registration, so it is never downloaded automatically: register at "
          "https://www.cityscapes-dataset.com/register/, download the MTAN-preprocessed 128x256 2-task archive "
          "(linked from the lorenmt/mtan README), then run: python data_scripts/cityscapes.py --data-root DIR "
          "--source PATH/TO/ARCHIVE.zip  (see data_scripts/README.md)")
SOURCE = Source("cityscapes_mtan.zip", None, (),
                "no checksum published (lorenmt/mtan README gives only the link): sha256 recorded on first use",
                manual=MANUAL)


def main(argv=None) -> None:
    prepare_mtan(argv, SPEC, SOURCE, __doc__)


if __name__ == "__main__":
    sys.exit(run(main))
