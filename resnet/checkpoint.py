"""Checkpoints: the whole training state, saved and restored by the same code, verified before it is trained on.

A checkpoint file holds {format, sha256, state}: the state's torch-serialised bytes and their sha256, so damage is
found, not trained on. It is read with ``weights_only=True`` (tensors and plain values only), so a hostile file in
a results folder cannot run code. The state carries the run's settings and its data's checksum: a resume under
other settings or on other data is refused, naming each difference.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from .config import TrainConfig
from .files import torch_bytes, write_atomic
from .runfolder import RunConflict, differences


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: unreadable, damaged, or of an older format."""


FORMAT = 2  # 2: the state's bytes with their sha256 (1: the state itself; upgraded by tools/migrate_checkpoint.py)


def save(path: Path, cfg: TrainConfig, data_checksum: str, model, optimizer, batches, loop: dict):
    """Write the whole training state to ``path``, whole (see ``files.write_atomic``): the model's, the optimiser's,
    the batches' (``batches.Batches``), and ``loop``, the training loop's own (plain values, the trainer's)."""
    write_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": batches.state_dict(),
                 **loop, "config": cfg.to_dict(), "data_checksum": data_checksum}, path)


def restore(path: Path, cfg: TrainConfig, data_checksum: str, model, optimizer, batches) -> dict:
    """Load ``path`` into the model, optimiser and batches, and return the training loop's own state as saved.

    A checkpoint of another device's generator (a CUDA run resumed on the CPU, or back) cannot restore the
    generator: it is re-seeded from the run's seed and the iteration instead, so the resume is deterministic
    but not bit-identical to an uninterrupted run; the loop's ``reseeded`` (and run.json) records it.
    """
    state = read_state(path)
    if "config" not in state or "data_checksum" not in state:
        raise CheckpointError(f"{path}: checkpoint without its settings and data checksum (an older format); "
                              "migrate it (see docs/results-format.md) or delete it to restart the run")
    diffs = differences(TrainConfig.from_dict(state["config"]), cfg)
    if state["data_checksum"] != data_checksum:
        diffs.append(f"data checksum {state['data_checksum'][:12]}… (this data: {data_checksum[:12]}…)")
    if diffs:
        raise RunConflict(f"{path} was made with other settings or data: {'; '.join(diffs)}. "
                          "Resume it with its own settings, or delete it to restart")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    loop = {k: v for k, v in state.items() if k not in ("model", "optimizer", "sampler", "config", "data_checksum")}
    here, saved = batches.generator.device.type, loop.get("generator_device", "cpu")  # older checkpoints: the CPU's
    batches.load_state_dict(state["sampler"], generator=saved == here)
    if saved != here:
        batches.generator.manual_seed(reseed(cfg.seed, loop["iteration"]))
        loop["reseeded"] = loop.get("reseeded", []) + [{"iteration": loop["iteration"], "from": saved, "to": here}]
        loop["generator_device"] = here
    return loop


def reseed(seed: int, iteration: int) -> int:
    """The generator seed for a run resumed on another device at ``iteration``: fixed by the two, unlike any
    seed the run used before."""
    return int.from_bytes(hashlib.sha256(f"resnet-reseed:{seed}:{iteration}".encode()).digest()[:8], "little")


def write_state(state: dict, path: Path):
    """Save ``state`` in this format: its bytes with their sha256."""
    write_atomic(state_bytes(state), path)


def state_bytes(state: dict) -> bytes:
    """``state`` as a checkpoint file holds it (``write_state``)."""
    raw = torch_bytes(state)
    return torch_bytes({"format": FORMAT, "sha256": hashlib.sha256(raw).hexdigest(),
                        "state": torch.frombuffer(bytearray(raw), dtype=torch.uint8)})


def read_state(path: Path | io.BytesIO, name: str | None = None) -> dict:
    """The state saved by ``write_state``, verified; tensors and plain values only, never code. Errors name
    ``name`` if given (e.g. an archive's member read from memory), else ``path``."""
    source, path = path, name or path
    advice = "Delete it to restart the run from the beginning"
    try:
        outer = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged or hostile file
        # torch's own message may advise weights_only=False, which would let a hostile file run code: not repeated
        raise CheckpointError(f"{path}: unreadable checkpoint (damaged, truncated or not a checkpoint: "
                              f"{type(e).__name__}). {advice}") from e
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of format {FORMAT} (an older one is upgraded by "
                              f"python tools/migrate_checkpoint.py {path}). {advice}")
    raw = outer["state"].numpy().tobytes()
    if hashlib.sha256(raw).hexdigest() != outer["sha256"]:
        raise CheckpointError(f"{path}: damaged checkpoint (its sha256 does not match its contents). {advice}")
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # a generator's state stays on the CPU
