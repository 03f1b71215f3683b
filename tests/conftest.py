"""Shared fixtures: the JPEG stand-in data, tiny sources written on the fly, fast tiny runs."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet import TrainConfig, build_model, load_cifar10, to_device
from resnet.data import CLASSES
from resnet.results import META_FIELDS, write_csv, write_meta

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The tests train and check on real CIFAR-10 images: by default the JPEG stand-in beside the checkout.
JPEG_ARCHIVE = Path(os.environ.get("RESNET_TEST_DATA", SHARED / "data" / "cifar10-jpeg.tar.gz")).resolve()
PEERS = SHARED / "peers"


@pytest.fixture(scope="session")
def jpeg():
    """The whole JPEG stand-in for CIFAR-10, decoded once (cached in .cache/)."""
    if not JPEG_ARCHIVE.exists():
        pytest.fail(f"{JPEG_ARCHIVE} is missing: the tests need CIFAR-10 images (set RESNET_TEST_DATA)")
    return load_cifar10(str(JPEG_ARCHIVE))


@pytest.fixture(scope="session")
def small_data(jpeg):
    """1,000 training and 500 test images of the real data on the CPU."""
    return to_device(jpeg, "cpu", train_subset=1000, test_subset=500)


def tiny_config(**kw) -> TrainConfig:
    """A depth-8 net, batch 32, a few dozen iterations: seconds on the CPU."""
    base = dict(depth=8, batch_size=32, iterations=40, milestones=(20, 30), eval_every=10, checkpoint_every=10,
                data=str(JPEG_ARCHIVE), train_subset=1000, test_subset=500, device="cpu")
    return TrainConfig(**{**base, **kw})


FIXTURE_STUDY = "fixture-full-fp32"  # where fake_run puts runs of the paper's settings


def fake_run(results, final_test, seed=0, config: TrainConfig | None = None, **cfg_kw):
    """A finished run folder with a made-up, smoothly falling curve (fixture data, not a result), for ``config``
    or a run of the paper's settings changed by ``cfg_kw``."""
    cfg = config or TrainConfig(**{"data": "fixture", "seed": seed, "eval_every": 1000, "checkpoint_every": 1000, **cfg_kw})
    iterations = cfg.total_iterations
    run_dir = cfg.run_dir(results)
    run_dir.mkdir(parents=True)
    its = np.arange(1000, iterations + 1, 1000)
    test = final_test + 30 * np.exp(-4 * its / iterations)
    rows = [dict(iteration=int(i), epoch=i * 128 / 50_000, lr=0.1, train_loss=1.0, train_error=float(t - 2),
                 test_loss=1.0, test_error=float(t), val_loss=None, val_error=None, elapsed_s=float(i) / 100,
                 images_per_s=1000.0) for i, t in zip(its, test)]
    write_csv(rows, run_dir / "log.csv")
    model = build_model(cfg)
    torch.save(model.state_dict(), run_dir / "weights.pt")
    meta = {k: None for k in META_FIELDS} | dict(
        name=cfg.name, status="finished", config=cfg.to_dict(), data_source="fixture", data_checksum="0" * 64,
        n_train=50_000, n_val=0, n_test=10_000, torch=torch.__version__, device_name="none", git_commit="fixture",
        parameters=sum(p.numel() for p in model.parameters()), iterations_done=iterations, warmup_end=0,
        final_test_error=float(test[-1]), best_test_error=float(test.min()), best_test_iteration=int(its[-1]),
        final_train_error=float(test[-1] - 2), wall_s=1.0, started="2026-01-01T00:00:00", finished="2026-01-01T00:01:00")
    write_meta(meta, run_dir / "run.json")
    return run_dir


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def write_official(folder: Path, per_class_train: int = 2, per_class_test: int = 1) -> Path:
    """A tiny folder in the official python format (cifar-10-batches-py)."""
    folder.mkdir(parents=True)
    labels_train = np.repeat(np.arange(10), per_class_train)
    chunks = np.array_split(np.arange(len(labels_train)), 5)
    x = random_images(len(labels_train))
    for i, idx in enumerate(chunks, start=1):
        data = x[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": data, b"labels": labels_train[idx].tolist()}, f)
    labels_test = np.repeat(np.arange(10), per_class_test)
    xt = random_images(len(labels_test), seed=1).transpose(0, 3, 1, 2).reshape(len(labels_test), -1)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": xt, b"labels": labels_test.tolist()}, f)
    return folder


def write_tree(folder: Path, per_class: int = 1, fmt: str = "png", classes=CLASSES) -> Path:
    """A tiny image tree {train,test}/<class>/<i>.<fmt> of random 32x32 RGB images."""
    from PIL import Image

    for split in ("train", "test"):
        for c, name in enumerate(classes):
            d = folder / split / name
            d.mkdir(parents=True)
            for i, img in enumerate(random_images(per_class, seed=c)):
                Image.fromarray(img).save(d / f"{i:04d}.{fmt}")
    return folder


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh, empty cache folder (so tests of sources never read the shared cache)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNET_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield


@pytest.fixture(autouse=True)
def _close_figures():
    """Each test's figures closed after it (pyplot keeps every figure open until closed)."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
