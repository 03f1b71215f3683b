"""Where a parallel sweep's runs go, and how many share a GPU.

Each run takes a share of one GPU: 1/N with ``--parallel N``; with ``--parallel auto`` (the default), 1/k for a
network the GPU trains k at once without slowing the set down (``runs_per_gpu``). A run starts on the least
loaded GPU with room for its share, the GPUs filled before doubling up, in the sweep's order.

How k is chosen: a small network's step leaves most of a large GPU idle (its time goes to launching kernels, not
to running them), so runs side by side cost little more than one. The measurement that says so without starting
processes is the step at a larger batch: if a batch of 4 x 128 images takes barely longer than one of 128, the
GPU has room for about four runs. ``measure_runs_per_gpu`` times each network's step at batch 128 x k for
k = 1, 2, 4, 8 (a few seconds per network, before the sweep starts) and takes the fewest runs at once that reach
90% of the best throughput measured, within the GPU's memory and at most one run per CPU core. This is a proxy:
separate processes share a GPU less well than one large batch does (without MPS their kernels take turns);
``benchmarks/gpu_check.py`` measures the runs at once for real, beside the choice this rule makes.
"""
from __future__ import annotations

import dataclasses
import os

from .config import TrainConfig

BATCH_MULTIPLES = (1, 2, 4, 8)
ENOUGH = 0.9  # of the best throughput: more runs at once than reach it only slow each run down
MEMORY_USE = 0.8  # of the GPU's memory, at most, for the runs together
CONTEXT_BYTES = 600 * 2**20  # a process's CUDA context and allocator slack, beside its measured peak


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_runs_at_once(text: str) -> int | str:
    """A sweep's ``parallel`` from text (a flag, RESNET_PARALLEL): 'auto' or a whole number, 1 or more."""
    if text.strip() == "auto":
        return "auto"
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"runs at once: expected 'auto' or a whole number, 1 or more, not {text!r}")
    return int(text)


def runs_per_gpu(step_seconds: dict[int, float], most: int) -> int:
    """From one network's seconds per step at batch multiples k (``{k: seconds}``, k = 1 included): the fewest
    runs at once whose throughput, taken as that of batch k x 128, reaches ENOUGH of the best measured; at most
    ``most`` and at least 1 (also when nothing was measured: not even one batch fitted in memory, which the run
    itself will then report)."""
    throughput = {k: k / s for k, s in step_seconds.items() if k <= most}
    if not throughput:
        return 1
    best = max(throughput.values())
    return max(1, min(k for k, t in throughput.items() if t >= ENOUGH * best))


def place(loads: list[float], share: float) -> int | None:
    """The device (index into ``loads``, each the summed shares of the runs on it) a run taking ``share`` of one
    starts on: the least loaded (the lowest index among equals) if it has room; None if no device has."""
    device = min(range(len(loads)), key=lambda i: (loads[i], i))
    return device if loads[device] + share <= 1 + 1e-9 else None


def cpu_threads_per_run(runs_at_once: int, threads: int | None = None) -> int:
    """torch's intra-op threads for each of ``runs_at_once`` runs sharing the CPU: this process's ``threads``
    (torch's, by default one per core) split between them, at least one each. Without the split, every run's
    process would take all the threads, and N runs would fight over the cores (benchmarks/cpu_parallel.md
    measures what the split gains over one run at a time)."""
    import torch

    return max(1, (threads or torch.get_num_threads()) // max(1, runs_at_once))


def most_runs_per_gpu(gpus: int) -> int:
    """One run per CPU core at most (each process launches its own kernels), eight at most per GPU."""
    return max(1, min(max(BATCH_MULTIPLES), (os.cpu_count() or 1) // max(1, gpus)))


def measure_runs_per_gpu(configs: list[TrainConfig], most: int, iterations: int = 10,
                         device: str = "cuda") -> dict[tuple[str, int], int]:
    """``runs_per_gpu`` for each network of ``configs`` (by (net, depth)), timed on ``device`` (GPU 0 by default)
    with the first config's data, precision and step. On CUDA, bounded by memory too: the GPU's, over the peak
    of one run (its data included) at its own batch size."""
    import torch

    from .batches import device_data
    from .cost import time_network

    device = torch.device("cuda", 0) if device == "cuda" else torch.device(device)
    cuda = device.type == "cuda"
    data = device_data(configs[0], device)
    choice = {}
    for cfg in configs:
        key = (cfg.net, cfg.depth)
        if key in choice:
            continue
        seconds, peak = {}, 0
        for k in (k for k in BATCH_MULTIPLES if k <= most and k * cfg.batch_size <= len(data.train_x)):
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            try:
                seconds[k] = time_network(dataclasses.replace(cfg, batch_size=k * cfg.batch_size, device=str(device)),
                                          data, iterations)[0]
            except torch.cuda.OutOfMemoryError:
                break
            if k == 1 and cuda:
                peak = torch.cuda.max_memory_allocated(device)
        if cuda:  # the peak includes the run's copy of the data
            usable = torch.cuda.get_device_properties(device).total_memory * MEMORY_USE
            most_here = min(most, max(1, int(usable // (peak + CONTEXT_BYTES))))
        choice[key] = runs_per_gpu(seconds, most_here if cuda else most)
    del data
    if cuda:
        torch.cuda.empty_cache()
    return choice
