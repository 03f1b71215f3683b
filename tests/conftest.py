"""Shared fixtures: CIFAR-10 for the real-data tests, a small learnable source written on the fly for the rest,
tiny sources of every format, fast tiny runs.

Most tests need images, not CIFAR-10: they train on ``SMALL_SOURCE``, 1,000 training and 500 test images drawn
here (each class a coloured pattern plus noise, so a tiny network learns them in a few dozen iterations). The tests
that need CIFAR-10 itself (``real_data``, ``real_source``) take, in this order: ``RESNET_TEST_DATA``; the JPEG
stand-in beside the checkout (``../shared/data/cifar10-jpeg.tar.gz``); the project's default source, the official
archive (downloaded and md5-checked into the cache). With none of them they are skipped, saying how to enable them;
with ``RESNET_REQUIRE_DATA=1`` (CI) they fail instead, so a run never goes green by skipping them.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet import TrainConfig, build_model, load_cifar10
from resnet.data import CLASSES, DataError, to_device
from resnet.files import torch_bytes, write_atomic
from resnet.results import META_FIELDS, write_csv, write_meta

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"  # where this project's own machines keep it
PEERS = ROOT.parent / "shared" / "peers"  # a peer's official-data weights, where present
SMALL_SOURCE = ROOT / ".cache" / "tests" / "cifar10-small.tar"  # written by the session fixture below
HOW_TO_GET_DATA = (
    "set RESNET_TEST_DATA to a CIFAR-10 source (the official archive's cifar-10-batches-py folder, or an image "
    "tree/archive such as the JPEG stand-in, see README's 'Choosing the data'), or run where the official download "
    "is reachable")


def _small_images(seed: int, per_class: int) -> np.ndarray:
    """``per_class`` 32x32 RGB images of each class: the class's fixed coloured pattern plus noise."""
    patterns = np.random.default_rng(1234).integers(0, 256, (10, 4, 4, 3)).repeat(8, 1).repeat(8, 2)
    noise = np.random.default_rng(seed).normal(0, 40, (10, per_class, 32, 32, 3))
    return np.clip(patterns[:, None] + noise, 0, 255).astype(np.uint8)


def write_small_source(path: Path = SMALL_SOURCE) -> Path:
    """An image archive {train,test}/<class>/<i>.png of 100 training and 50 test images per class (deterministic
    bytes, so its cache entry is reused from one test run to the next)."""
    from PIL import Image

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for split, seed, per_class in (("train", 0, 100), ("test", 1, 50)):
            for c, images in enumerate(_small_images(seed, per_class)):
                for i, img in enumerate(images):
                    png = io.BytesIO()
                    Image.fromarray(img).save(png, format="png")
                    info = tarfile.TarInfo(f"cifar10-small/{split}/{CLASSES[c]}/{i:04d}.png")
                    info.size = len(png.getvalue())
                    tar.addfile(info, io.BytesIO(png.getvalue()))
    raw = buf.getvalue()
    if not (path.exists() and path.read_bytes() == raw):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(raw, path)
    return path


@pytest.fixture(scope="session", autouse=True)
def small_source() -> Path:
    return write_small_source()


@pytest.fixture(scope="session")
def small_data(small_source):
    """The small learnable source's 1,000 training and 500 test images on the CPU."""
    return to_device(load_cifar10(str(small_source)), "cpu", train_subset=1000, test_subset=500)


@pytest.fixture(scope="session")
def full_size_source(tmp_path_factory) -> Path:
    """Random images at CIFAR-10's counts (50,000 training, 10,000 test), in the official format: for code that
    asks for all of the images (Figure 7, the cost benchmark), where their content does not matter."""
    return write_official(tmp_path_factory.mktemp("full-size") / "cifar-10-batches-py", 5000, 1000)


def find_real_source() -> tuple[str | None, str]:
    """The CIFAR-10 source for the real-data tests (see the module docstring), or None and why there is none."""
    if os.environ.get("RESNET_TEST_DATA"):
        return os.environ["RESNET_TEST_DATA"], ""
    if STANDIN.exists():
        return str(STANDIN), ""
    try:
        load_cifar10("official")
        return "official", ""
    except DataError as e:
        return None, str(e).split(";")[0]


@pytest.fixture(scope="session")
def real_source() -> str:
    """A CIFAR-10 source (a path or 'official'); the test is skipped without one (failed with RESNET_REQUIRE_DATA=1)."""
    source, why = find_real_source()
    if source is None:
        no_data(f"no CIFAR-10 source ({why}): {HOW_TO_GET_DATA}")
    return source


@pytest.fixture(scope="session")
def real_data(real_source):
    """All of CIFAR-10 from ``real_source``, decoded once (cached in .cache/)."""
    try:
        return load_cifar10(real_source)
    except DataError as e:  # RESNET_TEST_DATA names something that is not CIFAR-10: say so, always
        pytest.fail(f"RESNET_TEST_DATA={real_source}: {e}")


@pytest.fixture(scope="session")
def peers() -> Path:
    """The folder of a peer's official-data weights (akamaster-resnet20.th, akamaster-resnet56.th): RESNET_TEST_PEERS,
    else ../shared/peers; the test is skipped without them (failed with RESNET_REQUIRE_DATA=1)."""
    folder = Path(os.environ.get("RESNET_TEST_PEERS", PEERS))
    if not (folder / "akamaster-resnet20.th").exists():
        no_data(f"no peer weights in {folder}: set RESNET_TEST_PEERS to a folder holding akamaster-resnet20.th and "
                "akamaster-resnet56.th (the ResNet-20 and ResNet-56 of pretrained_models/ in "
                "github.com/akamaster/pytorch_resnet_cifar10, renamed)")
    return folder


OFFICIAL_IMAGES = ROOT.parent / "shared" / "data" / "cifar10-partial-png.tar.gz"  # official test images 0–999


@pytest.fixture(scope="session")
def official_test_images():
    """The 1,000 official test images of cifar10-partial-png.tar.gz (RESNET_TEST_OFFICIAL_IMAGES, else beside the
    checkout) as benchmarks/official_images.py reads them; the test is skipped without them (failed with
    RESNET_REQUIRE_DATA=1)."""
    from benchmarks.official_images import test_images

    path = Path(os.environ.get("RESNET_TEST_OFFICIAL_IMAGES", OFFICIAL_IMAGES))
    if not path.exists():
        no_data(f"no official test images at {path}: set RESNET_TEST_OFFICIAL_IMAGES to cifar10-partial-png.tar.gz "
                "(official CIFAR-10 test images 0–999 as PNG, {train,test}/<class>/NNNNN.png)")
    return test_images(path)


def no_data(why: str):
    """Skip a test that needs data this machine does not have; under RESNET_REQUIRE_DATA=1, fail it."""
    if os.environ.get("RESNET_REQUIRE_DATA") == "1":
        pytest.fail(f"{why} (RESNET_REQUIRE_DATA=1: the real-data tests must run)")
    pytest.skip(why)


def tiny_config(**kw) -> TrainConfig:
    """A depth-8 net, batch 32, a few dozen iterations: seconds on the CPU."""
    base = dict(depth=8, batch_size=32, iterations=40, milestones=(20, 30), eval_every=10, checkpoint_every=10,
                data=str(SMALL_SOURCE), train_subset=1000, test_subset=500, device="cpu")
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
    weights_sha256 = write_atomic(torch_bytes(model.state_dict()), run_dir / "weights.pt")  # as the trainer saves them
    meta = {k: None for k in META_FIELDS} | dict(
        name=cfg.name, status="finished", config=cfg.to_dict(), data_source="fixture", data_checksum="0" * 64,
        n_train=50_000, n_val=0, n_test=10_000, torch=torch.__version__, device_name="none", git_commit="fixture",
        parameters=sum(p.numel() for p in model.parameters()), iterations_done=iterations, warmup_end=0,
        final_test_error=float(test[-1]), best_test_error=float(test.min()), best_test_iteration=int(its[-1]),
        final_train_error=float(test[-1] - 2), wall_s=1.0, weights_sha256=weights_sha256, started="2026-01-01T00:00:00", finished="2026-01-01T00:01:00")
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


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core, at most 4) the cores are split between the
    workers, so that the workers and the processes their tests start do not oversubscribe the CPU."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)

