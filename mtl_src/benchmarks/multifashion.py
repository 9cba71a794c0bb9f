"""MultiFashion: the MultiMNIST protocol (Sener & Koltun 2018) on Fashion-MNIST, 60,000 / 10,000.

Used as a harder two-task image benchmark (Lin et al. 2019, Pareto MTL, introduced the name): two
Fashion-MNIST articles overlaid by :func:`~mtl_src.benchmarks.multimnist.overlay_pairs` (top-left /
bottom-right, 36x36 canvas, max, nearest resize to 28x28), tasks "L" and "R" (10 classes each),
cross-entropy losses, accuracy per task, the MultiMNIST LeNet.

Data: prepared by ``python data_scripts/multifashion.py --data-root DIR`` from the official Fashion-MNIST
IDX files — taken from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``)
when installed, else downloaded over https and checked against torchvision's MD5s. Same on-disk format
as ``multimnist_full`` (``<data_root>/multifashion/{train,test}_{images,labels,pairs}.npy`` + MANIFEST.json).

What differs: inputs are normalised with Fashion-MNIST's own pixel statistics (mean 0.2860, std 0.3530
of the training images) instead of MNIST's; none of the four papers reports MultiFashion, so there are
no paper numbers or published single-task baselines (:data:`STL_BASELINE` is None). Profiles and
training settings are those of :class:`~mtl_src.benchmarks.multimnist_full.MultiMNISTFull`.
"""

from __future__ import annotations

from . import register
from .multimnist_full import MultiMNISTFull

__all__ = ["MultiFashion", "STL_BASELINE"]

#: no published single-task baseline: the book trains the ``stl`` method itself
STL_BASELINE: dict[str, float] | None = None


@register("multifashion")
class MultiFashion(MultiMNISTFull):
    """Two-article MultiFashion from all 70,000 Fashion-MNIST images (data_scripts/multifashion.py)."""

    MEAN, STD = 0.2860, 0.3530
