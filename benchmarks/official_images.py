"""Every committed finished run, and the peer's official-data networks, scored on the only official CIFAR-10 pixels
this project has: official test images 0–999, lossless (``cifar10-partial-png.tar.gz``, see ../shared/data/README.md).

A network trained on the JPEG stand-in is tested there on real CIFAR-10 test images, and the peer's networks,
trained on the official images, on the very same ones: the closest this project comes to separating what the JPEG
data costs from what the reproduction might miss. The images are only scored, never trained on.

    python -m benchmarks.official_images [--images PATH] [--results results] [--out benchmarks/official_images.json]

Each run's images are preprocessed as in its training: minus the per-pixel mean of its own training images (the
1,000 are neither all of a training set nor class-balanced, so their own mean would not be the run's), in the run's
own precision. The peer's networks get their own ImageNet normalisation (benchmarks/peer_on_jpeg.py). Written: the
JSON (each network's error and wrong images, by position in the images' order: by class, then by rank within the
class in official order) and a markdown table beside it; the README and docs/results.md show them through
``python -m resnet report``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from resnet import load_cifar10, load_runs
from resnet.models import from_peer_checkpoint
from resnet.steps import predictions
from resnet.files import write_atomic
from resnet.results import load_run

from .common import environment, markdown_table
from .peer_on_jpeg import IMAGENET_MEAN, IMAGENET_STD, PEERS

IMAGES = PEERS.parent / "data" / "cifar10-partial-png.tar.gz"
OUT = Path(__file__).resolve().parent / "official_images.json"
PEER_NETWORKS = {"akamaster-resnet20.th": ("resnet", 20), "akamaster-resnet56.th": ("resnet", 56)}
WHAT = "official CIFAR-10 test images 0–999, lossless"


def test_images(path: str | Path = IMAGES):
    """The 1,000 official test images as float NCHW in [0, 1], their labels, and the source (its name and the
    sha256 of the decoded images)."""
    ds = load_cifar10(str(path), download=False)
    x = torch.from_numpy(ds.test_x).permute(0, 3, 1, 2).float().div_(255)
    return x, torch.from_numpy(ds.test_y), {"source": ds.source, "checksum": ds.checksum, "n": len(x)}


def wrong(predicted: torch.Tensor, y: torch.Tensor) -> list[int]:
    return torch.nonzero(predicted != y).flatten().tolist()


def score_run(run_dir: str | Path, x: torch.Tensor, y: torch.Tensor, precision: str | None = None) -> dict:
    """A finished run's wrong images among ``x``, preprocessed as in its training, in its own precision (or
    ``precision``)."""
    run = load_run(run_dir, "cpu")
    precision = precision or run.config.precision
    missed = wrong(predictions(run.model, x - run.data().mean, precision), y)
    return {"run": f"{Path(run_dir).parent.name}/{Path(run_dir).name}", "weights_sha256": run.meta["weights_sha256"],
            "precision": precision, "error": 100 * len(missed) / len(x), "wrong": missed}


def score_peer(path: str | Path, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The peer's network's wrong images among ``x`` (fp32, its ImageNet normalisation)."""
    path = Path(path)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    missed = wrong(predictions(from_peer_checkpoint(path), (x - mean) / std), y)
    net, depth = PEER_NETWORKS[path.name]
    return {"weights": path.name, "net": net, "depth": depth,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "precision": "fp32",
            "error": 100 * len(missed) / len(x), "wrong": missed}


def one_entry_a_line(summary: dict) -> str:
    """The JSON with each network's entry (its wrong images among them) on a line of its own."""
    lines = []
    for key, value in summary.items():
        body = (json.dumps(value, ensure_ascii=False) if not isinstance(value, list) else
                "[\n" + ",\n".join(f"  {json.dumps(entry, ensure_ascii=False)}" for entry in value) + "\n ]")
        lines.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default=str(IMAGES), help="cifar10-partial-png.tar.gz")
    p.add_argument("--results", default="results")
    p.add_argument("--peers", default=str(PEERS))
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    x, y, images = test_images(args.images)
    runs = []
    for run in load_runs(args.results):
        runs.append(score_run(run.path, x, y))
        print(f"{runs[-1]['run']}: {runs[-1]['error']:.1f}%", flush=True)
    peers = [score_peer(Path(args.peers) / name, x, y) for name in PEER_NETWORKS]
    summary = {"images": {**images, "what": WHAT}, "measured": environment("cpu"), "runs": runs, "peers": peers}
    out = Path(args.out)
    write_atomic(one_entry_a_line(summary), out)
    rows = [{"network": r["run"], "precision": r["precision"], f"error % ({WHAT}, n = {images['n']:,})":
             f"{r['error']:.1f}"} for r in runs]
    rows += [{"network": f"peer: {r['weights']} (trained on the official images)", "precision": r["precision"],
              f"error % ({WHAT}, n = {images['n']:,})": f"{r['error']:.1f}"} for r in peers]
    env = summary["measured"]
    text = (f"# Every committed run on {WHAT}\n\n{markdown_table(rows)}\n\n"
            f"Measured by `python -m benchmarks.official_images` on {env['device']}, torch {env['torch']}, "
            f"{env['date']}, commit {env['git_commit']}; images {images['source']} (sha256 of decoded arrays "
            f"{images['checksum'][:16]}...). Each run's images minus the per-pixel mean of its own training images, "
            "in its own precision; the peer's with its ImageNet normalisation. Each network's wrong images: "
            f"[{out.name}]({out.name}).\n")
    write_atomic(text, out.with_suffix(".md"))
    print(text)


if __name__ == "__main__":
    main()
