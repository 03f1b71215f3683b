"""Sweeps: every missing run of a list, in order, one at a time or several at once (e.g. small networks filling
one GPU), within a time limit, resumable by running the same sweep again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import results
from .config import TrainConfig, resolve_source
from .data import load_cifar10
from .runfolder import finished_meta
from .trainer import train

LOG_FILE = "train.log"  # a parallel sweep's run: its process's output


def sweep(configs: list[TrainConfig], results_dir: str | Path = "results", *, parallel: int = 1,
          stop_at: int | None = None, time_limit: float | None = None, progress: bool = True) -> list[dict]:
    """Train, in the order given, every config not yet finished in ``results_dir``, and return their metadata.

    ``parallel`` > 1 runs that many at once, each in its own process (which ends if this one is killed); with
    several GPUs visible, that many per GPU, each process seeing one GPU (``gpu_slots``). A process's output goes
    to ``train.log`` in its run folder.
    ``stop_at`` stops each run at that iteration (see ``train``). ``time_limit`` (seconds) covers the whole sweep:
    each run stops at a checkpoint before it, and runs not reached are not started (nor returned); the next
    call resumes where this one stopped.
    """
    keys = [(c.study, c.name) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate runs in the sweep: {sorted({'/'.join(k) for k in keys if keys.count(k) > 1})}")
    # Every conflict with the results folder is reported before anything trains.
    pending = [c for c in configs if finished_meta(c, results_dir) is None]
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    gpus = visible_gpus() if any(c.device in ("auto", "cuda") for c in pending) else 0
    if parallel <= 1 and gpus <= 1:
        return _serial(configs, pending, results_dir, stop_at, deadline, progress)
    for source in {resolve_source(c.data) for c in pending}:
        load_cifar10(source)  # decoded once, here: processes starting on a cold cache would each decode it
    started = _parallel(pending, results_dir, gpu_slots(gpus, max(1, parallel)), stop_at, deadline)
    return [results.read_meta(c.run_dir(results_dir) / results.META_FILE) for c in configs
            if c in started or c not in pending]


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_slots(gpus: int, per_gpu: int) -> list[int | None]:
    """The places a parallel sweep runs in: ``per_gpu`` on each of ``gpus`` GPUs (by index), filled across the
    GPUs first; or ``per_gpu`` places on the one device there is (None: no GPU is assigned) when gpus <= 1."""
    if gpus <= 1:
        return [None] * per_gpu
    return [gpu for _ in range(per_gpu) for gpu in range(gpus)]


def _time_left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.perf_counter()


def _serial(configs, pending, results_dir, stop_at, deadline, progress) -> list[dict]:
    metas = []
    for c in configs:
        if c in pending and deadline is not None and _time_left(deadline) <= 0:
            break
        meta = train(c, results_dir, stop_at=stop_at, time_limit=_time_left(deadline), progress=progress)
        metas.append(meta)
        if meta["status"] != "finished" and (stop_at is None or meta["iterations_done"] < stop_at):
            break  # stopped by the time limit: the next run would not fit either
    return metas


def _parallel(pending: list[TrainConfig], results_dir, slots: list[int | None], stop_at, deadline) -> list[TrainConfig]:
    """Run ``pending`` in the free ``slots``, each in a child process given its settings (as in run.json) and,
    where its slot names one, one GPU; return the configs started. The children are stopped if this call ends
    early (an error, Ctrl-C) and end by themselves if this process is killed."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    pending, free, running, started, failed = list(pending), list(slots), [], [], []
    per_device = len(slots) // len(set(slots))
    try:
        while (pending and not _out_of_time(deadline)) or running:
            while pending and free and not _out_of_time(deadline):
                c, slot = pending.pop(0), free.pop(0)
                gpu = {} if slot is None or c.device not in ("auto", "cuda") else {"CUDA_VISIBLE_DEVICES": str(slot)}
                job = {"config": c.to_dict(), "results": str(results_dir), "stop_at": stop_at,
                       "time_limit": _time_left(deadline), "parent": os.getpid(), "concurrent_runs": per_device}
                c.run_dir(results_dir).mkdir(parents=True, exist_ok=True)
                with open(c.run_dir(results_dir) / LOG_FILE, "a") as log:
                    child = subprocess.Popen([sys.executable, "-c", "from resnet.sweeps import child; child()"],
                                             stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                             env=env | gpu, text=True)
                child.stdin.write(json.dumps(job))
                child.stdin.close()
                running.append((c, child, slot))
                started.append(c)
            time.sleep(0.5)
            for c, p, slot in list(running):
                if p.poll() is not None:
                    running.remove((c, p, slot))
                    free.append(slot)
                    if p.returncode:
                        failed.append(f"{c.name} (see {c.run_dir(results_dir) / LOG_FILE})")
    finally:
        for _, p, _ in running:  # only when leaving early: every child has ended otherwise
            p.terminate()
            p.wait()
    if failed:
        raise RuntimeError(f"runs failed: {'; '.join(failed)}; the others ran to the end")
    return started


def _out_of_time(deadline: float | None) -> bool:
    return deadline is not None and _time_left(deadline) <= 0


def child():
    """A parallel sweep's run: its job (settings, results folder, limits) read as JSON from stdin."""
    import signal
    import threading

    job = json.loads(sys.stdin.read())

    def watch_parent():  # a sweep killed (even with kill -9) takes its runs with it: none trains on unseen
        while os.getppid() == job["parent"]:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True).start()
    cfg = TrainConfig.from_dict(job["config"])
    try:
        train(cfg, job["results"], stop_at=job["stop_at"], time_limit=job["time_limit"], progress=False,
              concurrent_runs=job["concurrent_runs"])
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {cfg.name}: {e}", file=sys.stderr)
        sys.exit(1)
