"""From decoded images to training batches on the device: subsets and the validation split, the paper's
preprocessing, crop and flip, and the batch order.

Preprocessing (section 4.2): pixels scaled to [0, 1] and the per-pixel mean of the training images subtracted;
no division by a std. Augmentation, on the device and per sample: pad 4 zeros on each side of the mean-subtracted
image, take a random 32x32 crop, flip it horizontally with p = 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import CLASSES, Cifar10, DataError, load_cifar10

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
        (a state saved on another device: see ``checkpoint.restore``)."""
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
