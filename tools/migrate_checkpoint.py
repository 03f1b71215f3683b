"""Upgrade a run's checkpoint to the current format (its state's sha256 inside), keeping its contents exactly.

    python tools/migrate_checkpoint.py results/<study>/<run>/checkpoint.pt

Format 1 (settings and data checksum inside, no sha256) came before the checksum; it is read with
weights_only=True (tensors and plain values only), checked to be a training state, and written whole in format 2.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resnet.trainer import read_checkpoint, write_checkpoint  # noqa: E402

KEYS = {"model", "optimizer", "sampler", "rows", "warmup_end", "warm", "iteration", "wall_s", "started", "config",
        "data_checksum"}


def main(path: str) -> int:
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "format" in state:
        print(f"{path}: already format {state['format']}")
        return 0
    if not isinstance(state, dict) or not KEYS <= set(state):
        print(f"{path}: not a format-1 checkpoint (keys {sorted(state) if isinstance(state, dict) else type(state)})")
        return 1
    write_checkpoint(state, path)
    again = read_checkpoint(path)
    assert again["iteration"] == state["iteration"] and all(
        torch.equal(again["model"][k], state["model"][k]) for k in state["model"])
    print(f"{path}: upgraded, iteration {state['iteration']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
