"""What a sweep will cost on this machine, measured before it starts: a few timed iterations per network.

So that nobody starts a 60-hour CPU study by accident, the notebook prints this table before its sweep. Each
network's training step is timed on the real data, device and precision (fresh batches, after one untimed step),
and one evaluation of the test set on a tenth of it (after one untimed pass); a run's remaining cost is its
remaining iterations times the first plus its remaining evaluations times the second. Checkpoints and process
start are left out.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from . import results
from .config import TrainConfig
from .batches import Batches, device_data
from .steps import make_step, memory_format
from .evaluation import evaluate, resolve_device
from .trainer import build


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_network(cfg: TrainConfig, data, iterations: int = 3, sync_check: bool = False) -> tuple[float, float]:
    """(seconds per training iteration, seconds per evaluation of the whole test set) of ``cfg`` on ``data``.

    ``sync_check``: on CUDA, any wait of the host for the device during the timed iterations is an error
    (torch.cuda.set_sync_debug_mode), as none may happen between two evaluations of a run."""
    device = data.train_x.device
    model, optimizer = build(cfg, device)
    # fresh batches as in training: one batch again and again is learnt by heart within a few steps, and the
    # vanishing gradients that follow turn into denormal floats that slow a CPU step twenty-fold
    batches = Batches(data, cfg.batch_size, cfg.seed, memory_format(device))
    update = make_step(cfg, model, optimizer, torch.zeros(2, dtype=torch.float64, device=device))
    try:
        for i in range(update.untimed + iterations):
            if i == update.untimed:  # the first steps (allocations, kernel choice, a graph's recording) are not timed
                _sync(device)
                start = time.perf_counter()
                if sync_check and device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("error")
            update(*next(batches), cfg.lr)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    _sync(device)
    per_iteration = (time.perf_counter() - start) / iterations
    tenth = max(1, len(data.test_x) // 10)
    for _ in range(2):  # the first pass sets up the kernels for the evaluation batch size: only the second is timed
        start = time.perf_counter()
        evaluate(model, data.test_x[:tenth], data.test_y[:tenth], cfg.precision)  # reads the result: synchronised
    per_evaluation = (time.perf_counter() - start) * len(data.test_x) / tenth
    return per_iteration, per_evaluation


def iterations_left(cfg: TrainConfig, results_dir: str | Path) -> int:
    """Iterations still to train for ``cfg`` in ``results_dir``: from its checkpoint on (run.json records the
    checkpoint's iteration); all of them for a run whose checkpoint is gone, since it restarts from the beginning."""
    meta_path = cfg.run_dir(results_dir) / results.META_FILE
    if not meta_path.exists():
        return cfg.total_iterations
    meta = results.read_meta(meta_path)
    if meta["status"] == "finished":
        return 0
    resumable = (meta_path.parent / results.CHECKPOINT_FILE).exists()
    return cfg.total_iterations - (meta["iterations_done"] if resumable else 0)


def estimate_cost(configs: list[TrainConfig], results_dir: str | Path = "results", iterations: int = 3) -> list[dict]:
    """One row per run still to train: its iterations left, the measured step and evaluation times, and the
    projected hours; finished runs are left out (nothing is timed for them)."""
    rows, loaded = [], {}
    for cfg in configs:
        left = iterations_left(cfg, results_dir)
        if left == 0:
            continue
        device = resolve_device(cfg.device)
        key = (cfg.data, cfg.train_subset, cfg.test_subset, cfg.val_size, str(device))
        if key not in loaded:
            loaded[key] = device_data(cfg, device)
        per_it, per_eval = time_network(dataclasses.replace(cfg, device=str(device)), loaded[key], iterations)
        done = cfg.total_iterations - left
        evaluations = math.ceil(cfg.total_iterations / cfg.eval_every) - done // cfg.eval_every
        rows.append({"run": f"{cfg.study}/{cfg.name}", "iterations left": left, "s / iteration": per_it,
                     "s / evaluation": per_eval, "hours": (left * per_it + evaluations * per_eval) / 3600})
    return rows


def format_cost(rows: list[dict]) -> str:
    """The estimate as plain text, with the total."""
    if not rows:
        return "nothing left to train"
    lines = [f"{'run':<40} {'iterations left':>15} {'s/iter':>8} {'s/eval':>8} {'hours':>7}"]
    for r in rows:
        lines.append(f"{r['run']:<40} {r['iterations left']:>15,} {r['s / iteration']:>8.3f} "
                     f"{r['s / evaluation']:>8.2f} {r['hours']:>7.2f}")
    total = sum(r["hours"] for r in rows)
    lines.append(f"total: {total:.1f} hours on this machine, one run at a time")
    return "\n".join(lines)
