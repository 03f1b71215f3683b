"""Sweeps: every missing run of a list, in order, one at a time or several at once (e.g. small networks filling
one GPU), within a time limit, resumable by running the same sweep again.

Where a parallel sweep's runs go, and how many share a GPU.

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

What a sweep will cost on this machine, measured before it starts: a few timed iterations per network.

So that nobody starts a 60-hour CPU study by accident, the notebook prints this table before its sweep. Each
network's training step is timed on the real data, device and precision (fresh batches, after one untimed step),
and one evaluation of the test set on a tenth of it (after one untimed pass); a run's remaining cost is its
remaining iterations times the first plus its remaining evaluations times the second. Checkpoints and process
start are left out.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import results
from .config import TrainConfig, resolve_source
from .data import Batches, device_data, load_cifar10
from .results import finished_meta
from .steps import LAYOUT, LAYOUTS, evaluate, make_step, resolve_device
from .trainer import Stopped, build, progress_bar, stop_on_signals, train, train_together


STOPPED = 130  # a parallel run's exit status when a signal stopped it, its checkpoint written


def sweep(configs: list[TrainConfig], results_dir: str | Path = "results", *, parallel: int | str = "auto",
          together: bool | str = "auto", stop_at: int | None = None, time_limit: float | None = None,
          progress: bool = True) -> list[dict]:
    """Train, in the order given, every config not yet finished in ``results_dir``, and return their metadata.

    ``parallel`` N > 1 runs N at once, each in its own process (which ends if this one is killed); with several
    GPUs visible, N per GPU, each process seeing one GPU; on the CPU, each with 1/N of this process's threads.
    'auto' (the default): one at a time without CUDA; on CUDA, per network as many at once as
    ``measure_runs_per_gpu`` finds the GPU has room for. A process's output goes to ``train.log`` in its
    run folder (a group's: in its first run's).
    ``together``: the runs at once on one device train in one process, one update of each in turn
    (``trainer.train_together``: each run is the run it would be alone), not in a process each: one process
    per GPU, or this one where there is a single device. 'auto' (the default): on CUDA, where processes
    without MPS would take turns on the GPU; not on the CPU, where separate processes share the cores better.
    ``stop_at`` stops each run at that iteration (see ``train``). ``time_limit`` (seconds) covers the whole sweep:
    each run stops at a checkpoint before it, and runs not reached are not started (nor returned); the next
    call resumes where this one stopped.
    """
    keys = [(c.study, c.name) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate runs in the sweep: {sorted({'/'.join(k) for k in keys if keys.count(k) > 1})}")
    if parallel != "auto" and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise ValueError(f"parallel must be 'auto' or a whole number of runs at once, 1 or more, not {parallel!r}")
    if together not in ("auto", True, False):
        raise ValueError(f"together must be 'auto', True or False, not {together!r}")
    # Every conflict with the results folder is reported before anything trains.
    pending = [c for c in configs if finished_meta(c, results_dir) is None]
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    if progress and len(pending) < len(configs):
        print(f"already finished: {', '.join(c.name for c in configs if c not in pending)}", flush=True)
    gpus = visible_gpus() if any(c.device in ("auto", "cuda") for c in pending) else 0
    if gpus <= 1 and (parallel == 1 or (parallel == "auto" and gpus == 0)):
        return _serial(configs, pending, results_dir, stop_at, deadline, progress)
    for source in {resolve_source(c.data) for c in pending}:
        load_cifar10(source)  # decoded once, here: processes starting on a cold cache would each decode it
    shares = _shares(pending, parallel, gpus, progress)
    if gpus <= 1 and min(shares, default=1) == 1:  # measured: no room for a second run on the one GPU
        return _serial(configs, pending, results_dir, stop_at, deadline, progress)
    if together == "auto":
        together = gpus > 0 and any(c.device != "cpu" for c in pending)
    if together and gpus <= 1:  # one device: its runs in this process
        trained = train_together(pending, results_dir, shares=shares, stop_at=stop_at,
                                 time_limit=_time_left(deadline), progress=progress)
        if progress:
            for meta in trained:
                print(result_line(meta), flush=True)
        started = pending[:len(trained)]  # runs start in order: those not started are the last
        return [results.read_meta(c.run_dir(results_dir) / results.META_FILE) for c in configs
                if c in started or c not in pending]
    jobs = _groups(pending, shares, gpus) if together else [([c], [s], s) for c, s in zip(pending, shares)]
    started = _parallel(jobs, results_dir, gpus, stop_at, deadline, progress)
    return [results.read_meta(c.run_dir(results_dir) / results.META_FILE) for c in configs
            if c not in pending or (c in started and (c.run_dir(results_dir) / results.META_FILE).exists())]


def _shares(pending: list[TrainConfig], parallel: int | str, gpus: int, progress: bool) -> list[float]:
    """Each pending run's share of its device: 1/parallel, or (auto) 1/k for a network k of which fit at once."""
    if parallel != "auto":
        return [1 / parallel] * len(pending)
    on_gpu = [c for c in pending if c.device in ("auto", "cuda")]
    per_gpu = measure_runs_per_gpu(on_gpu, most_runs_per_gpu(gpus)) if on_gpu else {}
    if progress:
        print("runs at once per GPU, measured: " + ", ".join(f"{n}-{d}: {k}" for (n, d), k in per_gpu.items()))
    return [1 / per_gpu.get((c.net, c.depth), 1) for c in pending]


def result_line(meta: dict) -> str:
    """A run's outcome in one line, as a sweep prints it when the run ends."""
    error = meta.get("final_test_error")
    return (f"{meta['name']}: {meta['status']} at iteration {meta['iterations_done']}"
            + (f", final test error {error:.2f}%" if error is not None else ""))


def _time_left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.perf_counter()


def _serial(configs, pending, results_dir, stop_at, deadline, progress) -> list[dict]:
    metas = []
    for c in configs:
        if c in pending and deadline is not None and _time_left(deadline) <= 0:
            break
        meta = train(c, results_dir, stop_at=stop_at, time_limit=_time_left(deadline), progress=progress)
        metas.append(meta)
        if progress and c in pending:
            print(result_line(meta), flush=True)
        if meta["status"] != "finished" and (stop_at is None or meta["iterations_done"] < stop_at):
            break  # stopped by the time limit: the next run would not fit either
    return metas


def _groups(pending: list[TrainConfig], shares: list[float], gpus: int) -> list[tuple[list, list, float]]:
    """The jobs of a sweep whose runs train together on several GPUs: one per GPU, its runs taken in turn from
    the sweep's order (so that each GPU has its share of the small networks and of the large)."""
    return [(pending[g::gpus], shares[g::gpus], 1.0) for g in range(gpus) if pending[g::gpus]]


def _parallel(jobs: list[tuple[list[TrainConfig], list[float], float]], results_dir, gpus: int, stop_at,
              deadline, progress: bool = False) -> list[TrainConfig]:
    """Run ``jobs`` in order, each a child process training its runs (one, or several together with their
    shares of the device) and taking its share of a device (``place``; GPUs by index when more than one is
    visible), given their settings (as in run.json) and, where it has one, its GPU alone; return the configs
    started. SIGINT (Ctrl-C) or SIGTERM stops the sweep: no run starts after it,
    each running one is sent SIGTERM once, checkpoints after its current update and exits, and then ``Stopped``
    is raised; a run stopped by a signal from elsewhere stops the sweep the same way. The children are stopped
    if this call ends early otherwise (an error, a second signal) and end by themselves if this process is killed."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    queue, loads, running, started, failed = list(jobs), [0.0] * max(1, gpus), [], [], []
    stopped: list[str] = []
    bars: dict[str, _RunBar] = {}  # one progress bar per running run, following its log.csv
    per_device = -(-len(jobs) // max(1, gpus))  # at most this many share a device: 4 runs in 10 slots are 4
    try:
        with stop_on_signals() as asked:
            while (queue and not _out_of_time(deadline) and not (asked["signal"] or stopped)) or running:
                while (queue and not _out_of_time(deadline) and not (asked["signal"] or stopped)
                       and (device := place(loads, queue[0][2])) is not None):
                    group, shares, share = queue.pop(0)
                    loads[device] += share
                    running.append((group, _start_child(group, shares, share, device, results_dir, gpus, stop_at,
                                                        deadline, per_device, env), device, share))
                    started += group
                    if progress:
                        bars.update((c.name, _RunBar(c, results_dir)) for c in group)
                if (asked["signal"] or stopped) and asked.setdefault("forwarded", False) is False:
                    asked["forwarded"], asked["first"] = True, stopped[:1]  # the run stopped from elsewhere, if any
                    for _, child_process, _, _ in running:
                        child_process.terminate()  # SIGTERM, once: each checkpoints and exits
                time.sleep(0.5)
                for run in list(running):
                    group, child_process, device, share = run
                    for c in group:
                        if c.name in bars:
                            bars[c.name].follow()
                    if child_process.poll() is not None:
                        running.remove(run)
                        loads[device] -= share
                        for c in group:
                            if c.name in bars:
                                bars.pop(c.name).close()
                                meta_path = c.run_dir(results_dir) / results.META_FILE
                                if child_process.returncode == 0 and meta_path.exists():
                                    print(result_line(results.read_meta(meta_path)), flush=True)
                        names = ", ".join(c.name for c in group)
                        if child_process.returncode == STOPPED:
                            stopped.append(names)
                        elif child_process.returncode:
                            failed.append(f"{names} (see {group[0].run_dir(results_dir) / results.LOG_FILE})")
    finally:
        for bar in bars.values():
            bar.close()
        for _, child_process, _, _ in running:  # only when leaving early: every child has ended otherwise
            child_process.terminate()
            child_process.wait()
    if failed:
        raise RuntimeError(f"runs failed: {'; '.join(failed)}; the others ran to the end")
    if asked["signal"] or stopped:
        why = f"by {asked['signal']}" if asked["signal"] else f"as {asked['first'][0]} was stopped by a signal"
        raise Stopped(f"sweep stopped {why}; checkpointed: {', '.join(stopped) or 'none'}; the same command "
                      "resumes it")
    return started


class _RunBar:
    """A parallel run's progress bar in the sweep's process: its iteration and last test error, read from the
    run's log.csv whenever that changes (its process logs there at each evaluation)."""

    def __init__(self, cfg: TrainConfig, results_dir):
        self.path, self.seen = cfg.run_dir(results_dir) / results.CSV_FILE, None
        self.bar = progress_bar(cfg.total_iterations, self._last()[0], cfg.name)

    def _last(self) -> tuple[int, str | None]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return 0, None
        if len(lines) < 2:
            return 0, None
        row = dict(zip(lines[0].split(","), lines[-1].split(",")))
        return int(row["iteration"]), row.get("test_error")

    def follow(self):
        stamp = self.path.stat().st_mtime_ns if self.path.exists() else None
        if stamp == self.seen:
            return
        self.seen = stamp
        iteration, test_error = self._last()
        self.bar.update(iteration - self.bar.n)
        if test_error:
            self.bar.set_postfix(test_err=f"{float(test_error):.2f}")

    def close(self):
        self.bar.close()


def _start_child(group: list[TrainConfig], shares: list[float], share: float, device: int, results_dir, gpus: int,
                 stop_at, deadline, per_device: int, env: dict) -> subprocess.Popen:
    """One parallel job's process (on GPU ``device`` where several are visible), training one run, or the runs of
    ``group`` together with their ``shares``; its output in its (first) run folder's train.log."""
    c = group[0]
    gpu = {"CUDA_VISIBLE_DEVICES": str(device)} if gpus > 1 and c.device in ("auto", "cuda") else {}
    on_cpu = c.device == "cpu" or (c.device == "auto" and gpus == 0)
    job = {"configs": [g.to_dict() for g in group], "shares": shares, "results": str(results_dir),
           "stop_at": stop_at, "time_limit": _time_left(deadline), "parent": os.getpid(),
           "concurrent_runs": min(round(1 / share), per_device),
           "cpu_threads": cpu_threads_per_run(round(1 / share)) if on_cpu else None}
    c.run_dir(results_dir).mkdir(parents=True, exist_ok=True)
    with open(c.run_dir(results_dir) / results.LOG_FILE, "a") as log:
        child_process = subprocess.Popen([sys.executable, "-c", "from resnet.sweeps import child; child()"],
                                         stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                         env=env | gpu, text=True)
    child_process.stdin.write(json.dumps(job))
    child_process.stdin.close()
    return child_process


def _out_of_time(deadline: float | None) -> bool:
    return deadline is not None and _time_left(deadline) <= 0


def child():
    """A parallel sweep's run, or group of runs trained together: its job (settings, results folder, limits) read
    as JSON from stdin."""
    import signal
    import threading

    job = json.loads(sys.stdin.read())

    def watch_parent():  # a sweep killed (even with kill -9) takes its runs with it: none trains on unseen
        while os.getppid() == job["parent"]:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True).start()
    # Ctrl-C reaches every process of the terminal's group: the sweep alone answers it, by sending SIGTERM once
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = [TrainConfig.from_dict(c) for c in job["configs"]]
    if job["cpu_threads"]:  # runs sharing the CPU split its cores (run.json records the count)
        import torch

        torch.set_num_threads(job["cpu_threads"])
    try:
        if len(group) == 1:
            train(group[0], job["results"], stop_at=job["stop_at"], time_limit=job["time_limit"], progress=False,
                  concurrent_runs=job["concurrent_runs"])
        else:
            train_together(group, job["results"], shares=job["shares"], stop_at=job["stop_at"],
                           time_limit=job["time_limit"], progress=False)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {', '.join(c.name for c in group)}: {e}", file=sys.stderr)
        sys.exit(1)
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(STOPPED)


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
    batches = Batches(data, cfg.batch_size, cfg.seed, LAYOUTS[LAYOUT])
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
