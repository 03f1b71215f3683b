"""Checkpoints: the whole training state, saved and restored by the same code, verified before it is trained on.

A checkpoint file holds {format, sha256, state}: the state's torch-serialised bytes and their sha256, so damage is
found, not trained on. It is read with ``weights_only=True`` (tensors and plain values only), so a hostile file in
a results folder cannot run code. The state carries the run's settings and its data's checksum: a resume under
other settings or on other data is refused, naming each difference.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import TrainConfig
from .files import torch_bytes, write_atomic
from .runfolder import RunConflict, differences


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: unreadable, damaged, or of an older format."""


FORMAT = 2  # 2: the state's bytes with their sha256 (1: the state itself; upgraded by tools/migrate_checkpoint.py)


@dataclass
class Progress:
    """The training loop's own state, beside the model's, the optimiser's and the batches' (their sampler's)."""

    iteration: int = 0  # updates done
    rows: list[dict] = field(default_factory=list)  # log.csv so far
    warmup_end: int | None = None  # iteration at which the warm-up ended (None: still warming up)
    warm: float = 0.0  # wrong predictions since the last warm-up check
    # the training loss and wrong predictions summed since the last row of log.csv: zero at an evaluation point,
    # where checkpoints are normally made; not zero in one made when a time limit stopped the run mid-interval
    window: list[float] = field(default_factory=lambda: [0.0, 0.0])
    wall_s: float = 0.0  # seconds trained, across resumes
    started: str = ""
    # the generator's device: its state does not carry across devices (a CPU generator rejects a CUDA state)
    generator_device: str = "cpu"
    reseeded: list[dict] = field(default_factory=list)  # resumes on another device: where, and from which device
    # restarts from the beginning because the checkpoint was missing: the iteration it had reached, and when
    restarted: list[dict] = field(default_factory=list)
    # torch's CPU threads while training (None on CUDA): float sums are split by it, so a resume under another
    # count trains other weights; each change is kept, where it happened and from which count to which
    cpu_threads: int | None = None
    threads_changed: list[dict] = field(default_factory=list)


def save(path: Path, cfg: TrainConfig, data_checksum: str, model, optimizer, batches, progress: Progress):
    """Write the whole training state to ``path``, whole (see ``files.write_atomic``)."""
    write_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": batches.state_dict(),
                 **dataclasses.asdict(progress), "config": cfg.to_dict(), "data_checksum": data_checksum}, path)


def restore(path: Path, cfg: TrainConfig, data_checksum: str, model, optimizer, batches) -> Progress:
    """Load ``path`` into the model, optimiser and batches (``batches.Batches``), and return the loop's progress.

    A checkpoint of another device's generator (a CUDA run resumed on the CPU, or back) cannot restore the
    generator: it is re-seeded from the run's seed and the iteration instead, so the resume is deterministic
    but not bit-identical to an uninterrupted run; ``Progress.reseeded`` (and run.json) records it. A CPU resume
    under another thread count than the checkpoint's is recorded in ``Progress.threads_changed`` (see
    ``note_threads``).
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
    fields = {f.name for f in dataclasses.fields(Progress)}
    progress = Progress(**{k: v for k, v in state.items() if k in fields})  # older checkpoints: CPU generators
    here = batches.generator.device.type
    same_device = progress.generator_device == here
    batches.load_state_dict(state["sampler"], generator=same_device)
    if not same_device:
        batches.generator.manual_seed(reseed(cfg.seed, progress.iteration))
        progress.reseeded.append({"iteration": progress.iteration, "from": progress.generator_device, "to": here})
        progress.generator_device = here
    return progress


def note_threads(progress: Progress, threads: int | None) -> dict | None:
    """Record the CPU thread count ``threads`` (None: not on the CPU) this session trains with; a change from the
    count trained with so far is appended to ``progress.threads_changed`` and returned (else None)."""
    before, progress.cpu_threads = progress.cpu_threads, threads
    if before is None or threads is None or before == threads:
        return None
    progress.threads_changed.append({"iteration": progress.iteration, "from": before, "to": threads})
    return progress.threads_changed[-1]


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
