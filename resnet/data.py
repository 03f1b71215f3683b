"""CIFAR-10 sources: finding, decoding and caching the images (batches.py takes them to the device).

Sources (``TrainConfig.data``):
  * ``"official"``: the official python archive, downloaded into the cache
    folder when missing and md5-checked (the default, for machines with a network);
  * a path to an official ``cifar-10-batches-py`` folder;
  * a path to an image tree or archive (``.tar.gz``, ``.tar``, ``.zip`` or a
    folder) laid out ``{train,test}/<class>/*.{png,jpg}`` with the ten
    official class names (e.g. ``../shared/data/cifar10-jpeg.tar.gz``).
  * ``""``: the environment variable ``RESNET_DATA`` if set, else ``"official"``.

Decoded images are cached as ``.npz`` under ``RESNET_CACHE`` (default:
``.cache/`` beside the package), keyed by a hash of the source's contents.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import resolve_source, source_name
from .files import replacing

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
OFFICIAL_DIR = "cifar-10-batches-py"
OFFICIAL_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
DOWNLOAD_TIMEOUT_S = 60  # without a byte for this long, a download is given up
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(ValueError):
    """The dataset is missing, malformed or not what was asked for."""


@dataclass(frozen=True)
class Cifar10:
    """Decoded images, uint8 (N, 32, 32, 3), and int64 labels, with where they came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str  # 'official' or the file name of the image tree/archive
    checksum: str  # sha256 of the decoded arrays, independent of the container


def cache_dir() -> Path:
    return Path(os.environ.get("RESNET_CACHE", Path(__file__).resolve().parent.parent / ".cache"))


def load_cifar10(data: str = "", *, download: bool = True) -> Cifar10:
    """Decode a CIFAR-10 source (see the module docstring), through the cache."""
    data = resolve_source(data)
    if data == "official":
        path = cache_dir() / OFFICIAL_DIR
        if not path.is_dir():
            if not download:
                raise DataError(f"official CIFAR-10 not found at {path} and download=False")
            _download_official(path)
    else:
        path = Path(data)
        if not path.exists():
            raise DataError(f"dataset not found: {path}")
        if path.parent == cache_dir() and path.name.startswith("cifar10-") and path.suffix == ".npz":
            return _from_cache(path)  # a source decoded here before, found by its checksum (``cached_source``)
    is_official = (path / "data_batch_1").exists()
    name = source_name(data)
    key = _fingerprint(path)
    cached = cache_dir() / f"cifar10-{key[:16]}.npz"
    arrays = _read_cache(cached) if cached.exists() else None
    if arrays is not None:
        checksum = arrays.pop("checksum")
    else:
        arrays = _read_official(path) if is_official else _read_image_tree(path)
        checksum = _array_checksum(arrays)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with replacing(cached) as tmp, open(tmp, "wb") as fh:  # processes decoding at once each write their own
            np.savez(fh, checksum=checksum, source=name, **arrays)
    return Cifar10(**arrays, source=name, checksum=checksum)


def cached_source(checksum: str) -> Path | None:
    """The cache's decoded copy of the images whose checksum is ``checksum`` (a source decoded on this machine
    before, wherever it is now), usable as a source; None if the cache holds none."""
    for path in sorted(cache_dir().glob("cifar10-*.npz")):
        try:
            with np.load(path) as z:
                if str(z["checksum"]) == checksum:
                    return path
        except Exception:  # noqa: BLE001 - a damaged entry is no match (it is rewritten when its source is read)
            continue
    return None


def _from_cache(path: Path) -> Cifar10:
    arrays = _read_cache(path)
    if arrays is None:
        raise DataError(f"{path}: a damaged cache entry; read the data from its source again")
    with np.load(path) as z:  # entries written before the source's name was kept say only their own
        source = str(z["source"]) if "source" in z.files else path.name
    return Cifar10(**{k: v for k, v in arrays.items() if k != "checksum"}, source=source, checksum=arrays["checksum"])


def _read_cache(cached: Path) -> dict | None:
    """The decoded arrays and their checksum from a cache file, verified; None (after a warning naming the file)
    when it is damaged or truncated: the cache is derived data, decoded again and rewritten."""
    import warnings

    try:
        with np.load(cached) as z:
            arrays = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
            checksum = str(z["checksum"])
        if _array_checksum(arrays) == checksum:
            return {**arrays, "checksum": checksum}
        problem = "its arrays do not match their checksum"
    except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many kinds for a damaged file
        problem = f"unreadable ({type(e).__name__})"
    warnings.warn(f"data cache {cached} is damaged ({problem}): decoding the source again to rewrite it",
                  stacklevel=3)
    return None


def _download_official(folder: Path):
    """Download the official archive, check its md5, and extract its batches into ``folder``: all or nothing (a
    failed, truncated or altered download leaves nothing behind in the cache)."""
    import tempfile
    import urllib.request

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
        archive, md5 = Path(tmp) / "cifar-10-python.tar.gz", hashlib.md5()
        try:
            with urllib.request.urlopen(OFFICIAL_URL, timeout=DOWNLOAD_TIMEOUT_S) as response, open(archive, "wb") as out:
                while chunk := response.read(1 << 20):
                    md5.update(chunk)
                    out.write(chunk)
                declared = response.headers.get("Content-Length")
                if declared is not None and out.tell() != int(declared):
                    raise ConnectionError(f"cut short at {out.tell():,} of {int(declared):,} bytes")
        except Exception as e:  # no network, proxy, a cut connection, a full disk: say what to do instead
            raise DataError(
                f"could not download official CIFAR-10 from {OFFICIAL_URL} ({type(e).__name__}: {e}); "
                "without a network pass --data PATH (an image tree or archive, e.g. the JPEG stand-in "
                "cifar10-jpeg.tar.gz) or set RESNET_DATA") from e
        if md5.hexdigest() != OFFICIAL_MD5:
            raise DataError(f"the download of {OFFICIAL_URL} has md5 {md5.hexdigest()}, not the official "
                            f"{OFFICIAL_MD5} (cut short or altered); nothing was kept, run again")
        staged = Path(tmp) / OFFICIAL_DIR
        staged.mkdir()
        try:
            with tarfile.open(archive) as tar:  # only the batches, by name: no member chooses where it lands
                for name in OFFICIAL_BATCHES:
                    (staged / name).write_bytes(tar.extractfile(f"{OFFICIAL_DIR}/{name}").read())
        except (KeyError, tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"the download of {OFFICIAL_URL} is not the official archive ({e}); nothing was kept") from e
        os.replace(staged, folder)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles an official batch (a dict of a uint8 array, labels and file names) and nothing else: a crafted
    file that names any other global (``os.system``, ...) is refused instead of run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _fingerprint(path: Path) -> str:
    """The cache's key: the source's contents (an archive's bytes, the official batches', or every file of an
    image tree with its path), so an edited file is never served from a stale cache, whatever its time stamp."""
    h = hashlib.sha256()
    if path.is_file():
        files = [path]
    elif (path / "data_batch_1").exists():
        files = [path / name for name in OFFICIAL_BATCHES]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{path}: an official CIFAR-10 batches folder without {', '.join(missing)}; "
                            "re-extract cifar-10-python.tar.gz there")
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path and not (path / "data_batch_1").exists():  # a tree's file names are its labels
            h.update(f"{f.relative_to(path)}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _array_checksum(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in ("train_x", "train_y", "test_x", "test_y"):
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def _read_official(path: Path) -> dict:
    def batch(name):
        f = path / name
        try:
            with open(f, "rb") as fh:
                d = _BatchUnpickler(fh, encoding="bytes").load()
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return x, np.asarray(d[b"labels"], dtype=np.int64)
        except FileNotFoundError:
            raise DataError(f"official CIFAR-10 batch missing: {f}") from None
        except Exception as e:
            raise DataError(f"corrupt CIFAR-10 batch {f}: {e}") from e

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return dict(train_x=np.concatenate([x for x, _ in train]), train_y=np.concatenate([y for _, y in train]),
                test_x=test_x, test_y=test_y)


# No 32x32 image file comes near this (raw RGB is 3,072 bytes): a larger one is refused before it is read
MAX_IMAGE_BYTES = 2**20


def _image_members(path: Path):
    """Yield (name, bytes) of every image file in a folder, tar or zip archive; each file's size is checked before
    it is read."""
    def sized(name: str, size: int) -> str:
        if size > MAX_IMAGE_BYTES:
            raise DataError(f"{path}: {name} is {size:,} bytes, far more than a 32x32 image; not read")
        return name

    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                yield sized(p.relative_to(path).as_posix(), p.stat().st_size), p.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                if info.filename.lower().endswith(IMAGE_SUFFIXES):
                    yield sized(info.filename, info.file_size), z.read(info)
    else:
        try:
            with tarfile.open(path) as t:
                for m in t:
                    if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES):
                        yield sized(m.name, m.size), t.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot read {path} as a folder, .tar, .tar.gz or .zip archive: {e}") from e


def _read_image_tree(path: Path) -> dict:
    from PIL import Image

    found = {"train": [], "test": []}  # (class index, name, pixels)
    for name, raw in _image_members(path):
        parts = name.split("/")
        if len(parts) < 3 or parts[-3] not in found or parts[-2] not in CLASSES:
            raise DataError(
                f"{path}: unexpected image {name!r}; expected {{train,test}}/<class>/<file> "
                f"with classes {', '.join(CLASSES)}")
        try:
            with Image.open(io.BytesIO(raw)) as im:  # reads the header only: the size is checked before decoding
                if im.size != (32, 32) or im.mode != "RGB":
                    raise DataError(f"{path}: {name} is {im.size[0]}x{im.size[1]} {im.mode}, not 32x32 RGB")
                im.load()
                pixels = np.asarray(im, dtype=np.uint8)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: corrupt image {name}: {e}") from e
        found[parts[-3]].append((CLASSES.index(parts[-2]), name, pixels))
    arrays = {}
    for split, items in found.items():
        if not items:
            raise DataError(f"{path}: no images under {split}/ (expected {split}/<class>/<file>)")
        missing = sorted(set(CLASSES) - {CLASSES[c] for c, _, _ in items})
        if missing:
            raise DataError(f"{path}: no {split} images of class(es) {', '.join(missing)}")
        items.sort(key=lambda t: (t[0], t[1]))
        arrays[f"{split}_x"] = np.stack([p for _, _, p in items])
        arrays[f"{split}_y"] = np.array([c for c, _, _ in items], dtype=np.int64)
    return arrays
