"""Networks and prepared-data checks shared by the full-scale benchmarks (not a benchmark itself).

Networks (written here: torchvision cannot be installed beside this torch):

* :class:`ResNet18Encoder` — Sener & Koltun's CelebA ResNet-18 (``multi_faces_resnet.py`` of
  intel-isl/MultiObjectiveOptimization, Aligned-MTL Table 7): 3x3 stride-1 stem without max-pool,
  four stages of two BasicBlocks (64, 128, 256, 512), ``avg_pool2d(., 4)`` and flatten
  (2,048 features for 64x64 inputs, 512 for 32x32);
* :func:`cnn9_encoder` — the 9-layer CNN of FAMO's ``experiments/celeba/models.py`` that PIVRG uses for
  CelebA: seven 3x3 conv-BN-ReLU layers (64, 128, 128, 256, 256, 512, 512) with three max-pools,
  global average pool, then two 512-unit linear-BN-ReLU layers (Z has 512 features);
* :class:`SegNetSplit` — the shared SegNet encoder-decoder of MTAN / nash-mtl's ``SegNetSplit``
  (filters 64, 128, 256, 512, 512; max-pool with indices / max-unpool); Z is the last decoder feature
  map (B, 64, H, W); :func:`dense_head` is their task head (3x3 conv then 1x1 conv). ``width`` scales
  every filter count (1.0 = the published network; the fast profiles use a narrow copy);

Prepared data: :func:`load_manifest` checks ``<data_root>/<name>/MANIFEST.json`` written by
``data_scripts/<name>.py`` — every listed file present, of the recorded size and sha256 — and raises
:class:`~mtl_src.data.MissingDataError` naming the file and the command that fixes it. Hashes are
checked once per file version: ``.verified.json`` remembers (size, mtime) of files already verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import MissingDataError

__all__ = ["load_manifest", "fix_command", "ResNet18Encoder", "cnn9_encoder", "SegNetSplit", "dense_head",
           "Normalize"]

FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------
# prepared data
# ------------------------------------------------------------------------------------------------

def fix_command(name: str, root: Path, force: bool = False) -> str:
    extra = " --source ARCHIVE (Cityscapes needs a manual, registered download)" if name == "cityscapes" else ""
    return f"python data_scripts/{name}.py --data-root {root}" + (" --force" if force else "") + extra


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(root: Path, name: str, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of the prepared dataset ``<root>/<name>``, after checking every file it lists.

    ``verify=False`` checks presence and sizes only (no hashing).
    """
    d = Path(root) / name
    mf = d / "MANIFEST.json"
    if not mf.is_file():
        raise MissingDataError(
            f"{name}: {mf} is missing, so the dataset is not prepared (or its preparation did not finish). "
            f"Prepare it with: {fix_command(name, root)}  (see data_scripts/README.md)"
        )
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        raise MissingDataError(f"{name}: {mf} is unreadable ({e}); rebuild with: {fix_command(name, root, True)}") from None
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("dataset") != name:
        raise MissingDataError(
            f"{name}: {mf} describes dataset {manifest.get('dataset')!r} format {manifest.get('format_version')!r}, "
            f"this code reads {name!r} format {FORMAT_VERSION}; rebuild with: {fix_command(name, root, True)}"
        )
    stamp_path = d / ".verified.json"
    try:
        stamps = json.loads(stamp_path.read_text()) if verify else {}
    except (OSError, ValueError):
        stamps = {}
    new_stamps = {}
    for rel, info in files.items():
        p = d / rel
        try:
            st = p.stat()
        except FileNotFoundError:
            raise MissingDataError(
                f"{name}: {p} is missing (listed in {mf}); rebuild with: {fix_command(name, root, True)}"
            ) from None
        if st.st_size != info["bytes"]:
            raise MissingDataError(
                f"{name}: {p} is corrupt ({st.st_size} bytes, {info['bytes']} recorded in MANIFEST.json); "
                f"rebuild with: {fix_command(name, root, True)}"
            )
        if verify:
            key = [st.st_size, st.st_mtime_ns, info["sha256"]]
            if stamps.get(rel) != key:
                got = _sha256(p)
                if got != info["sha256"]:
                    raise MissingDataError(
                        f"{name}: {p} is corrupt (checksum mismatch: sha256 {got[:16]}..., MANIFEST.json records "
                        f"{info['sha256'][:16]}...); rebuild with: {fix_command(name, root, True)}"
                    )
            new_stamps[rel] = key
    if verify and new_stamps != stamps:
        try:  # best effort: a read-only data root just re-verifies next time
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(new_stamps, f)
            os.replace(tmp, stamp_path)
        except OSError:
            pass
    return manifest


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------

class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """Sener & Koltun's ResNet-18 for CelebA (no stem max-pool; ``avg_pool2d(., 4)``, flattened)."""

    def __init__(self, in_channels: int = 3, image_size: int = 64):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"ResNet18Encoder: image_size must be a multiple of 32, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, c = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_BasicBlock(c, c_out, stride), _BasicBlock(c_out, c_out, 1)))
            c = c_out
        self.layers = nn.Sequential(*layers)
        self.out_features = 512 * (image_size // 32) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.avg_pool2d(out, 4).flatten(1)


def cnn9_encoder(in_channels: int = 3) -> nn.Sequential:
    """FAMO's CelebA network (``experiments/celeba/models.py``), PIVRG's "9-layer CNN": Z of 512 features."""

    def conv(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv(in_channels, 64), nn.MaxPool2d(2, 2),
        *conv(64, 128), *conv(128, 128), nn.MaxPool2d(2, 2),
        *conv(128, 256), *conv(256, 256), nn.MaxPool2d(2, 2),
        *conv(256, 512), *conv(512, 512), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
        nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
    )


def _conv_bn_relu(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))


class SegNetSplit(nn.Module):
    """The shared SegNet encoder-decoder of MTAN / nash-mtl ``SegNetSplit`` ("standard"): Z = (B, f0, H, W).

    Five encoder stages (conv + 1 or 2 extra convs, 2x2 max-pool with indices) and five mirrored decoder
    stages (max-unpool to the pre-pool size, conv + 1 or 2 extra convs). Xavier-normal init as theirs.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"SegNetSplit: width must be > 0, got {width}")
        f = [max(1, int(round(c * width))) for c in (64, 128, 256, 512, 512)]
        self.out_channels = f[0]
        self.encoder_block = nn.ModuleList([_conv_bn_relu(3, f[0])] + [_conv_bn_relu(f[i], f[i + 1]) for i in range(4)])
        self.decoder_block = nn.ModuleList([_conv_bn_relu(f[0], f[0])] + [_conv_bn_relu(f[i + 1], f[i]) for i in range(4)])
        enc, dec = [_conv_bn_relu(f[0], f[0])], [_conv_bn_relu(f[0], f[0])]
        for i in range(4):
            if i == 0:
                enc.append(_conv_bn_relu(f[1], f[1]))
                dec.append(_conv_bn_relu(f[0], f[0]))
            else:
                enc.append(nn.Sequential(_conv_bn_relu(f[i + 1], f[i + 1]), _conv_bn_relu(f[i + 1], f[i + 1])))
                dec.append(nn.Sequential(_conv_bn_relu(f[i], f[i]), _conv_bn_relu(f[i], f[i])))
        self.conv_block_enc = nn.ModuleList(enc)
        self.conv_block_dec = nn.ModuleList(dec)
        self.down = nn.MaxPool2d(2, 2, return_indices=True)
        self.up = nn.MaxUnpool2d(2, 2)
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        h = x
        for i in range(5):
            h = self.conv_block_enc[i](self.encoder_block[i](h))
            sizes.append(h.shape[-2:])
            h, idx = self.down(h)
            indices.append(idx)
        for i in range(5):
            h = self.up(h, indices[-i - 1], output_size=sizes[-i - 1])
            h = self.conv_block_dec[-i - 1](self.decoder_block[-i - 1](h))
        return h


def dense_head(c_in: int, c_out: int) -> nn.Sequential:
    """MTAN / nash-mtl task head: 3x3 conv (c_in -> c_in) then 1x1 conv (c_in -> c_out)."""
    head = nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1), nn.Conv2d(c_in, c_out, 1))
    _xavier_init(head)
    return head


class Normalize(nn.Module):
    """Unit L2 norm over channels (the surface-normal head's output, as in MTAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
