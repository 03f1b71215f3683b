"""CIFAR-10 sources: finding, decoding and caching the images, and taking them to the device as batches.

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

From decoded images to training batches on the device: subsets and the validation split, the paper's
preprocessing, crop and flip, and the batch order.

Preprocessing (section 4.2): pixels scaled to [0, 1] and the per-pixel mean of the training images subtracted;
no division by a std. Augmentation, on the device and per sample: pad 4 zeros on each side of the mean-subtracted
image, take a random 32x32 crop, flip it horizontally with p = 0.5.
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
import torch

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


TRAIN_SIZE, TEST_SIZE = 50_000, 10_000  # the official counts
PAD = 4  # pixels of zero padding on each side before the random crop


def balanced_subset(y: np.ndarray, size: int, what: str) -> np.ndarray:
    """Indices of the first size/10 images of each class (size 0: all images)."""
    if size == 0:
        return np.arange(len(y))
    if size % len(CLASSES):
        raise DataError(f"{what} subset must be a multiple of {len(CLASSES)}, got {size}")
    per_class = size // len(CLASSES)
    picks = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise DataError(f"{what} subset of {size} needs {per_class} images of class {CLASSES[c]}, found {len(idx)}")
        picks.append(idx[:per_class])
    return np.sort(np.concatenate(picks))


def validation_split(y: np.ndarray, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: val_size images held out, stratified by class, with a fixed seed."""
    if val_size % len(CLASSES) or not 0 < val_size < len(y):
        raise DataError(f"val_size must be a positive multiple of 10 below {len(y)}, got {val_size}")
    rng = np.random.default_rng(seed)
    per_class = val_size // len(CLASSES)
    val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(len(CLASSES))])
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, np.sort(val)


@dataclass
class DeviceData:
    """Mean-subtracted float images (N, 3, 32, 32) and labels, resident on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    mean: torch.Tensor  # (3, 32, 32), per-pixel mean of the training images in [0, 1] units
    source: str
    checksum: str


def device_data(cfg, device) -> DeviceData:
    """The images of run ``cfg`` (a TrainConfig) on ``device``: its source, subsets and validation split."""
    return to_device(load_cifar10(cfg.data), device, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                     val_size=cfg.val_size)


def to_device(ds: Cifar10, device, *, train_subset: int = 0, test_subset: int = 0,
              val_size: int = 0, val_seed: int = 0) -> DeviceData:
    """Check counts, choose subsets / the validation split, subtract the mean, move to the device."""
    for what, y, subset, full in (("train", ds.train_y, train_subset, TRAIN_SIZE), ("test", ds.test_y, test_subset, TEST_SIZE)):
        if subset == 0 and len(y) != full:
            raise DataError(
                f"{ds.source}: {len(y)} {what} images, expected {full} (ask for a subset explicitly for smaller data)")
    train_idx = balanced_subset(ds.train_y, train_subset, "train")
    test_idx = balanced_subset(ds.test_y, test_subset, "test")
    val_idx = None
    if val_size:
        keep, val = validation_split(ds.train_y[train_idx], val_size, val_seed)
        train_idx, val_idx = train_idx[keep], train_idx[val]

    def images(x):  # uint8 NHWC -> float NCHW in [0, 1]
        return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().div_(255).contiguous()

    def labels(y):
        return torch.from_numpy(y).to(device)

    train_x = images(ds.train_x[train_idx])
    mean = train_x.mean(dim=0)  # per pixel and channel: (3, 32, 32)
    return DeviceData(
        train_x=train_x.sub_(mean), train_y=labels(ds.train_y[train_idx]),
        test_x=images(ds.test_x[test_idx]).sub_(mean), test_y=labels(ds.test_y[test_idx]),
        val_x=None if val_idx is None else images(ds.train_x[val_idx]).sub_(mean),
        val_y=None if val_idx is None else labels(ds.train_y[val_idx]),
        mean=mean, source=ds.source, checksum=ds.checksum)


def crop_flip(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Zero-pad x (B, C, H, W) by PAD, crop HxW at per-sample offsets (dx, dy) in 0..2*PAD, then flip where ``flip``.

    One gather for the whole batch: the flip is folded into the column index.
    """
    B, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))  # (B, C, H+8, W+8)
    r = torch.arange(H, device=x.device)
    c = torch.arange(W, device=x.device)
    rows = dy[:, None] + r  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], W - 1 - c, c)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last in memory


def random_crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The paper's training augmentation, drawn per sample from ``generator``."""
    B = x.shape[0]
    offsets = torch.randint(0, 2 * PAD + 1, (2, B), device=x.device, generator=generator)
    flip = torch.randint(0, 2, (B,), device=x.device, generator=generator).bool()
    return crop_flip(x, offsets[0], offsets[1], flip)


class BatchSampler:
    """Batches of indices from a fresh permutation each epoch; the last partial batch of an epoch is skipped.

    Keeping every batch at full size keeps BN statistics and the update size as
    in the paper; each epoch drops a different random remainder (80 of 50,000).
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if batch_size > n:
            raise DataError(f"batch size {batch_size} is larger than the {n} training images")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.perm = None
        self.pos = n  # forces a permutation at the first batch

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, device=self.generator.device, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, generator: bool = True):
        """Restore the epoch's permutation and position, and the generator's state unless ``generator`` is False
        (a state saved on another device: see ``trainer.restore_checkpoint``)."""
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.generator.device)
        self.pos = state["pos"]
        if generator:
            self.generator.set_state(state["generator"].cpu())


class Batches:
    """A run's training batches, as the trainer takes them: the next batch's indices from the sampler, its images
    cropped and flipped per sample, laid out in ``memory_format``, with their labels. One seeded generator draws
    both the order and the augmentation; ``state_dict`` is the sampler's (the checkpoint keeps it)."""

    def __init__(self, data: DeviceData, batch_size: int, seed: int,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.images, self.labels, self.memory_format = data.train_x, data.train_y, memory_format
        self.generator = torch.Generator(device=data.train_x.device).manual_seed(seed)
        self.sampler = BatchSampler(len(data.train_x), batch_size, self.generator)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next()
        x = random_crop_flip(self.images[idx], self.generator).contiguous(memory_format=self.memory_format)
        return x, self.labels[idx]  # (B, 3, 32, 32), (B,)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict, generator: bool = True):
        self.sampler.load_state_dict(state, generator)
