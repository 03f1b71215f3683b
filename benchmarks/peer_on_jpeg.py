"""How far the JPEG stand-in sits from official CIFAR-10: the peer's networks (trained on the official
images) evaluated on the whole JPEG test set, with their own ImageNet normalisation. Written: a JSON summary (what
the README's table and findings are made from) and a markdown table beside it.

    python -m benchmarks.peer_on_jpeg [--data ../shared/data/cifar10-jpeg.tar.gz] [--peers FOLDER] [--out benchmarks/peer_on_jpeg.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from resnet.steps import predictions
from resnet.files import write_atomic
from resnet.report import peer_rows
from resnet import load_cifar10
from resnet.models import from_peer_checkpoint

from .common import environment, markdown_table

PEERS = Path(__file__).resolve().parent.parent.parent / "shared" / "peers"
REPORTED = {"akamaster-resnet20.th": 8.27, "akamaster-resnet56.th": 6.61}  # official test set, their README
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(PEERS.parent / "data" / "cifar10-jpeg.tar.gz"))
    p.add_argument("--peers", default=str(PEERS), help="the folder of akamaster-resnet20.th and akamaster-resnet56.th")
    p.add_argument("--out", default="benchmarks/peer_on_jpeg.md")
    args = p.parse_args(argv)
    ds = load_cifar10(args.data)
    x = torch.from_numpy(ds.test_x).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    y = torch.from_numpy(ds.test_y)
    peers = []
    for name, reported in REPORTED.items():
        model = from_peer_checkpoint(Path(args.peers) / name)
        wrong = (predictions(model, x) != y).sum().item()
        peers.append({"weights": name, "net": "resnet", "depth": model.depth, "reported": reported,
                      "error": 100 * wrong / len(x)})
    env = environment("cpu")
    summary = {"data": {"source": ds.source, "checksum": ds.checksum, "n": len(x)}, "measured": env, "peers": peers}
    out = Path(args.out)
    write_atomic(json.dumps(summary, indent=1) + "\n", out.with_suffix(".json"))
    text = (f"# Peer weights on the JPEG stand-in test set\n\n{markdown_table(peer_rows(summary))}\n\n"
            f"Measured by `python -m benchmarks.peer_on_jpeg` on {env['device']}, torch {env['torch']}, "
            f"{env['date']}, commit {env['git_commit']}; data {ds.source} (sha256 of decoded arrays "
            f"{ds.checksum[:16]}...). The peer normalises with the ImageNet mean/std, so that is used here.\n")
    write_atomic(text, out)
    print(text)


if __name__ == "__main__":
    main()
