#!/usr/bin/env python
"""Prepare MultiFashion: the MultiMNIST protocol (Sener & Koltun 2018) on Fashion-MNIST, 60,000 / 10,000.

Source: the four official Fashion-MNIST IDX files (Xiao et al. 2017). Looked for, in order:

1. ``--source`` (a folder holding the four ``*-idx?-ubyte.gz`` files, or a mirror https URL);
2. ``/usr/share/datasets/fashion-mnist/`` — installed by Debian's package ``dataset-fashion-mnist``
   (``apt-get install dataset-fashion-mnist``, 30 MB), no download needed;
3. https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/ (official repo).

Checksums: the official files' MD5s as listed by torchvision (``torchvision/datasets/mnist.py``,
``FashionMNIST.resources``). Debian recompressed the same IDX data, so its ``.gz`` files have other MD5s;
those are accepted too, as recorded from package ``dataset-fashion-mnist 0.0~git20200523.55506a9-1``
(Debian bookworm; the .deb's own SHA256 39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
is signed through Debian's archive).

Pairing, overlay and the on-disk format are those of ``data_scripts/multimnist_full.py`` (same file
names, under ``<data_root>/multifashion/``); labels are the Fashion-MNIST classes 0..9.

Usage::

    python data_scripts/multifashion.py --data-root DIR [--source DIR_OR_MIRROR_URL] [--seed 0]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Source, run  # noqa: E402
from multimnist_full import prepare  # noqa: E402

NAME = "multifashion"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_BASE = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
_PROV = ("official MD5 from torchvision/datasets/mnist.py (FashionMNIST.resources); Debian's recompressed "
         "copy from dataset-fashion-mnist 0.0~git20200523.55506a9-1")
SOURCES = {
    "train_images": Source("train-images-idx3-ubyte.gz", _BASE + "train-images-idx3-ubyte.gz",
                           ("md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d", "md5:cf8536b0aa1a6ac5fa3f23001093305c"), _PROV),
    "train_labels": Source("train-labels-idx1-ubyte.gz", _BASE + "train-labels-idx1-ubyte.gz",
                           ("md5:25c81989df183df01b3e8a0aad5dffbe", "md5:10bea18fdb374794d4bb42e356e600c9"), _PROV),
    "test_images": Source("t10k-images-idx3-ubyte.gz", _BASE + "t10k-images-idx3-ubyte.gz",
                          ("md5:bef4ecab320f06d8554ea6380940ec79", "md5:f78720b4224f21cce2f2ccf2d7a94c9a"), _PROV),
    "test_labels": Source("t10k-labels-idx1-ubyte.gz", _BASE + "t10k-labels-idx1-ubyte.gz",
                          ("md5:bb300cfdad3c16e7a12a480ee83cd310", "md5:0d30e22e447f3c33dab9ed536400ac01"), _PROV),
}


def default_source() -> str | None:
    """The Debian package's folder when it is installed and complete, else None (= download)."""
    d = Path(DEBIAN_DIR)
    if all((d / s.filename).is_file() for s in SOURCES.values()):
        return str(d)
    return None


def main(argv=None) -> None:
    prepare(argv, name=NAME, sources=SOURCES, description=__doc__, default_source=default_source())


if __name__ == "__main__":
    sys.exit(run(main))
