"""Shared machinery of the data scripts: sources, resumable download, checksums, atomic output, manifests.

Every ``data_scripts/<name>.py`` follows the same steps::

    obtain the raw files (local --source file/dir, a mirror URL, or the default https source)
      -> verify each against its published checksum (md5/sha256; or trust-on-first-use, recorded)
      -> preprocess into a temporary sibling folder  <data_root>/.<name>.tmp-XXXX
      -> write MANIFEST.json (every file: bytes, sha256, shape, dtype) and rename to <data_root>/<name>

so an interrupted run never leaves a half-written ``<data_root>/<name>``; a previous complete copy is
only replaced after the new one is complete. Downloads go to ``<data_root>/_downloads/<name>/`` as
``<file>.part`` and resume with an HTTP Range request.

Only the standard library and numpy are needed here (the scripts import Pillow or mtl_src when they
need them). No network is touched unless a URL is actually downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataScriptError", "Source", "file_digest", "verify", "download", "obtain", "atomic_output",
    "write_manifest", "read_idx", "base_parser", "run", "resolve_root", "FORMAT_VERSION",
]

#: version of the on-disk layout written by the scripts (the loaders check it)
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class DataScriptError(RuntimeError):
    """A failure with one clear message (what is wrong, which file, and the command that fixes it)."""


@dataclass(frozen=True)
class Source:
    """One raw file of a dataset.

    ``url``: default https location (None: cannot be downloaded automatically, see ``manual``).
    ``digests``: accepted checksums as ``"md5:<hex>"`` / ``"sha256:<hex>"``; empty means no checksum is
    published, and the sha256 of the first download is recorded and enforced afterwards
    (trust on first use, file ``<data_root>/_downloads/SHA256SUMS.json``).
    ``provenance``: where the checksums come from (cited in the scripts and their README).
    """

    filename: str
    url: str | None
    digests: tuple[str, ...] = ()
    provenance: str = ""
    manual: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


def resolve_root(path: str | os.PathLike | None) -> Path:
    """The data root, as :func:`mtl_src.data.data_root` resolves it (argument, $MTL_COMPANION_DATA, ~/.cache)."""
    root = Path(path or os.environ.get("MTL_COMPANION_DATA") or Path.home() / ".cache" / "mtl-companion")
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _tofu_path(root: Path) -> Path:
    return root / "_downloads" / "SHA256SUMS.json"


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def verify(path: Path, source: Source, *, script: str, root: Path,
           override: dict[str, list[str]] | None = None) -> str:
    """Check ``path`` against the accepted digests of ``source``; return its sha256.

    ``override`` (from ``--checksums FILE``) replaces the accepted digests of the files it names
    (for a mirror that repackages the archives). With no digest at all, trust on first use.
    """
    digests = list(source.digests)
    if override and source.filename in override:
        digests = list(override[source.filename])
    sha = file_digest(path, "sha256")
    if not digests:
        record = _load_json(_tofu_path(root))
        known = record.get(source.filename)
        if known is None:
            record[source.filename] = sha
            _write_json_atomic(_tofu_path(root), record)
            print(f"note: no checksum is published for {source.filename}; recorded its sha256 {sha} in "
                  f"{_tofu_path(root)} (later downloads must match it)", file=sys.stderr)
            return sha
        digests = [f"sha256:{known}"]
    for d in digests:
        algo, _, want = d.partition(":")
        got = sha if algo == "sha256" else file_digest(path, algo)
        if got.lower() == want.lower():
            return sha
    raise DataScriptError(
        f"checksum mismatch for {path}: expected {' or '.join(digests)} ({source.provenance or 'recorded'}), "
        f"got sha256:{sha}. The file is corrupt or not the official {source.filename}: delete it and re-run "
        f"`python data_scripts/{script}.py` (or pass --checksums FILE for a repackaged mirror)."
    )


def download(url: str, dest: Path, *, retries: int = 5, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (https only), resuming ``dest.part`` with an HTTP Range request."""
    if not url.startswith("https://"):
        raise DataScriptError(f"refusing to download {url!r}: only https:// URLs are used (or pass a local --source)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "mtl-companion-data-scripts/1"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                ctype = resp.headers.get("Content-Type", "")
                if "text/html" in ctype:
                    raise DataScriptError(
                        f"{url} answered with an HTML page instead of {dest.name} (a quota, login or "
                        "confirmation page). Download the file in a browser and pass it with --source PATH."
                    )
                mode = "ab" if (have and status == 206) else "wb"  # 200: the server ignored Range
                total = resp.headers.get("Content-Length")
                total = int(total) + (have if mode == "ab" else 0) if total else None
                with open(part, mode) as f:
                    while True:
                        block = resp.read(_CHUNK)
                        if not block:
                            break
                        f.write(block)
            if total is not None and part.stat().st_size != total:
                raise OSError(f"short read ({part.stat().st_size} of {total} bytes)")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # range not satisfiable: .part already complete
                os.replace(part, dest)
                return dest
            if attempt == retries or e.code in (401, 403, 404):
                raise DataScriptError(f"download of {url} failed: HTTP {e.code}. Download it by hand and pass "
                                      f"--source PATH") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            if attempt == retries:
                raise DataScriptError(f"download of {url} failed after {retries} attempts ({e}); re-running the "
                                      f"same command resumes from {part}") from None
        time.sleep(min(2 ** attempt, 30))
    raise AssertionError("unreachable")


def _find_local(directory: Path, source: Source) -> Path | None:
    names = (source.filename, *source.aliases)
    for name in names:
        p = directory / name
        if p.is_file():
            return p
    for name in names:  # official layouts nest files (CelebA: Img/, Anno/, Eval/)
        hits = sorted(directory.rglob(name))
        if hits:
            return hits[0]
    return None


def obtain(source: Source, spec: str | None, *, name: str, script: str, root: Path,
           override: dict[str, list[str]] | None = None) -> Path:
    """Path of a verified local copy of ``source``.

    ``spec`` (``--source``): None (the default https URL), a local file, a local folder holding the
    file (searched recursively), or a mirror URL (a folder URL the file name is appended to, or the
    file's own URL).
    """
    if spec is not None and not spec.startswith(("https://", "http://")):
        p = Path(spec).expanduser()
        if p.is_dir():
            found = _find_local(p, source)
            if found is None:
                raise DataScriptError(f"--source {p}: no {source.filename} in that folder (searched recursively)")
            path = found
        elif p.is_file():
            path = p
        else:
            raise DataScriptError(f"--source {p} does not exist")
        verify(path, source, script=script, root=root, override=override)
        return path
    if spec is None:
        url = source.url
        if url is None:
            raise DataScriptError(source.manual or f"{source.filename} cannot be downloaded automatically; "
                                                   f"pass it with --source PATH")
    else:
        url = spec if spec.rstrip("/").endswith(source.filename) else spec.rstrip("/") + "/" + source.filename
    dest = root / "_downloads" / name / source.filename
    if not dest.exists():
        download(url, dest)
    try:
        verify(dest, source, script=script, root=root, override=override)
    except DataScriptError:
        dest.unlink()  # never keep a bad download: the next run fetches it again
        raise
    return dest


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; on success it replaces ``final`` atomically.

    On any exception (KeyboardInterrupt included) the temporary folder is removed and ``final`` (a
    previous complete copy, if any) is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the dataset should be as readable as any folder
    try:
        yield tmp
        if not (tmp / "MANIFEST.json").exists():
            raise DataScriptError(f"internal error: {final.name} was built without a MANIFEST.json")
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _describe(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        info["shape"] = list(arr.shape)
        info["dtype"] = str(arr.dtype)
        del arr
    return info


def write_manifest(directory: Path, *, dataset: str, script: str, sources: dict[str, str],
                   protocol: dict[str, Any]) -> dict[str, Any]:
    """Describe every file under ``directory`` in ``directory/MANIFEST.json`` (written last)."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != "MANIFEST.json":
            files[p.relative_to(directory).as_posix()] = _describe(p)
    manifest = {
        "dataset": dataset, "format_version": FORMAT_VERSION, "created_by": f"data_scripts/{script}.py",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sources_sha256": sources,
        "protocol": protocol, "files": files,
    }
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format; gzip or not) as a uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataScriptError(f"{path} is not a readable (gzipped) IDX file ({e})") from None
    if len(raw) < 4:
        raise DataScriptError(f"{path} is truncated")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataScriptError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataScriptError(f"{path}: header says shape {shape} but holds {data.size} values (truncated?)")
    return data.reshape(shape).copy()


def base_parser(script: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python data_scripts/{script}.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None,
                   help="data root (default: $MTL_COMPANION_DATA or ~/.cache/mtl-companion); "
                        f"the dataset goes to <data-root>/{script}/")
    p.add_argument("--source", default=None,
                   help="a local file or folder with the raw files, or a mirror https URL, instead of the "
                        "default source")
    p.add_argument("--checksums", default=None,
                   help="JSON file {filename: [\"md5:<hex>\" | \"sha256:<hex>\", ...]} replacing the published "
                        "checksums of the files it names (for a mirror that repackages them)")
    p.add_argument("--force", action="store_true", help="rebuild even if a complete copy exists")
    return p


def load_override(path: str | None) -> dict[str, list[str]] | None:
    if path is None:
        return None
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataScriptError(f"--checksums {path}: not a readable JSON file ({e})") from None
    return {k: [v] if isinstance(v, str) else list(v) for k, v in obj.items()}


def already_prepared(out: Path, force: bool) -> bool:
    if (out / "MANIFEST.json").exists() and not force:
        print(f"{out} is already prepared (MANIFEST.json present); use --force to rebuild")
        return True
    return False


def run(main, argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`DataScriptError` prints one line and exits with status 1."""
    try:
        main(argv)
    except DataScriptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# The MTAN / nash-mtl preprocessed format (NYUv2, Cityscapes): per-sample .npy files
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MTANSpec:
    """What one dataset in the MTAN layout ``{train,val}/<dir>/<i>.npy`` holds.

    ``dirs``: folder -> trailing shape after (H, W): () for a label map, (1,) depth, (3,) image/normal.
    """

    name: str
    dirs: dict[str, tuple[int, ...]]
    hw: tuple[int, int]
    classes: int
    label_dir: str
    expected: dict[str, int]


_MTAN_RE = None


def _mtan_member(path: str, dirs: Sequence[str]) -> tuple[str, str, int] | None:
    """(split, dir, index) of an archive member like ``.../train/image/12.npy`` (None if not one)."""
    import re
    global _MTAN_RE
    if _MTAN_RE is None:
        _MTAN_RE = re.compile(r"(?:^|/)(train|val)/([A-Za-z0-9_]+)/(\d+)\.npy$")
    m = _MTAN_RE.search(path.replace("\\", "/"))
    if not m or m.group(2) not in dirs:
        return None
    return m.group(1), m.group(2), int(m.group(3))


def _copy_mtan_members(src: Path, tmp: Path, dirs: Sequence[str]) -> None:
    """Copy (from a folder) or extract (from a .zip / .tar[.gz]) every MTAN sample file into ``tmp``."""
    import tarfile
    import zipfile

    def target(split: str, d: str, i: int) -> Path:
        t = tmp / split / d / f"{i}.npy"
        t.parent.mkdir(parents=True, exist_ok=True)
        return t

    if src.is_dir():
        for p in sorted(src.rglob("*.npy")):
            hit = _mtan_member(p.relative_to(src).as_posix(), dirs)
            if hit:
                shutil.copyfile(p, target(*hit))
        return
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                hit = _mtan_member(info.filename, dirs)
                if hit and not info.is_dir():
                    with zf.open(info) as fi, open(target(*hit), "wb") as fo:
                        shutil.copyfileobj(fi, fo, _CHUNK)
        return
    if tarfile.is_tarfile(src):
        with tarfile.open(src) as tf:
            for info in tf:
                hit = _mtan_member(info.name, dirs)
                if hit and info.isfile():
                    fi = tf.extractfile(info)
                    with fi, open(target(*hit), "wb") as fo:
                        shutil.copyfileobj(fi, fo, _CHUNK)
        return
    raise DataScriptError(f"{src} is neither a folder, a .zip nor a .tar(.gz) archive")


def _check_mtan(tmp: Path, spec: MTANSpec, src: Path, script: str) -> dict[str, int]:
    counts = {}
    for split in ("train", "val"):
        n = None
        for d in spec.dirs:
            folder = tmp / split / d
            idx = sorted(int(p.stem) for p in folder.glob("*.npy")) if folder.is_dir() else []
            if not idx:
                raise DataScriptError(f"{src}: no {split}/{d}/<i>.npy files; is it the MTAN-preprocessed {spec.name}?")
            if idx != list(range(len(idx))):
                raise DataScriptError(f"{src}: {split}/{d} files are not numbered 0..{len(idx) - 1} (gaps or extras)")
            if n is not None and len(idx) != n:
                raise DataScriptError(f"{src}: {split} has {n} samples in one folder and {len(idx)} in {d}")
            n = len(idx)
        counts[split] = n
        if n != spec.expected[split]:
            print(f"warning: {spec.name} {split} has {n} samples, the published set {spec.expected[split]}", file=sys.stderr)
        for d, trail in spec.dirs.items():
            for i in range(n):
                p = tmp / split / d / f"{i}.npy"
                try:
                    arr = np.load(p, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise DataScriptError(f"{src}: {split}/{d}/{i}.npy is not a readable .npy ({e})") from None
                want = (*spec.hw, *trail)
                if arr.shape != want or arr.dtype.kind != "f":
                    raise DataScriptError(f"{src}: {split}/{d}/{i}.npy has shape {arr.shape} dtype {arr.dtype}; "
                                          f"the MTAN format has float {want}")
                if d == spec.label_dir:
                    lab = np.asarray(arr)
                    if not (np.all(lab == np.round(lab)) and lab.min() >= -1 and lab.max() < spec.classes):
                        raise DataScriptError(f"{src}: {split}/{d}/{i}.npy holds values outside the classes "
                                              f"-1 (ignore), 0..{spec.classes - 1}")
                del arr
    return counts


def prepare_mtan(argv: Sequence[str] | None, spec: MTANSpec, source: Source, description: str) -> Path:
    """Build ``<data_root>/<name>/`` in the MTAN layout from an archive or folder (see nyuv2.py / cityscapes.py)."""
    p = base_parser(spec.name, description)
    args = p.parse_args(argv)
    root = resolve_root(args.data_root)
    out = root / spec.name
    if already_prepared(out, args.force):
        return out
    override = load_override(args.checksums)
    src_dir = Path(args.source).expanduser() if args.source and not args.source.startswith(("https://", "http://")) else None
    if src_dir is not None and src_dir.is_dir() and any(src_dir.rglob("train/image")):
        src, sources = src_dir, {"folder": str(src_dir)}
        print(f"note: using the extracted folder {src_dir} (no archive checksum to verify)", file=sys.stderr)
    else:
        if src_dir is not None and src_dir.is_file():
            verify(src_dir, source, script=spec.name, root=root, override=override)
            src = src_dir
        else:
            src = obtain(source, args.source, name=spec.name, script=spec.name, root=root, override=override)
        sources = {source.filename: file_digest(src)}
    with atomic_output(out) as tmp:
        _copy_mtan_members(src, tmp, list(spec.dirs))
        counts = _check_mtan(tmp, spec, src, spec.name)
        write_manifest(tmp, dataset=spec.name, script=spec.name, sources=sources,
                       protocol={"layout": "MTAN: {train,val}/<dir>/<i>.npy", "dirs": {k: list(v) for k, v in spec.dirs.items()},
                                 "hw": list(spec.hw), "classes": spec.classes, "label_dir": spec.label_dir,
                                 "counts": counts})
    print(f"prepared {out}")
    return out
