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
from .placement import cpu_threads_per_run, measure_runs_per_gpu, most_runs_per_gpu, place, visible_gpus
from .runfolder import finished_meta
from .trainer import Stopped, progress_bar, stop_on_signals, train

STOPPED = 130  # a parallel run's exit status when a signal stopped it, its checkpoint written


def sweep(configs: list[TrainConfig], results_dir: str | Path = "results", *, parallel: int | str = "auto",
          stop_at: int | None = None, time_limit: float | None = None, progress: bool = True) -> list[dict]:
    """Train, in the order given, every config not yet finished in ``results_dir``, and return their metadata.

    ``parallel`` N > 1 runs N at once, each in its own process (which ends if this one is killed); with several
    GPUs visible, N per GPU, each process seeing one GPU; on the CPU, each with 1/N of this process's threads.
    'auto' (the default): one at a time without CUDA; on CUDA, per network as many at once as
    ``placement.measure_runs_per_gpu`` finds the GPU has room for. A process's output goes to ``train.log`` in its
    run folder.
    ``stop_at`` stops each run at that iteration (see ``train``). ``time_limit`` (seconds) covers the whole sweep:
    each run stops at a checkpoint before it, and runs not reached are not started (nor returned); the next
    call resumes where this one stopped.
    """
    keys = [(c.study, c.name) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate runs in the sweep: {sorted({'/'.join(k) for k in keys if keys.count(k) > 1})}")
    if parallel != "auto" and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise ValueError(f"parallel must be 'auto' or a whole number of runs at once, 1 or more, not {parallel!r}")
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
    started = _parallel(pending, shares, results_dir, gpus, stop_at, deadline, progress)
    return [results.read_meta(c.run_dir(results_dir) / results.META_FILE) for c in configs
            if c in started or c not in pending]


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


def _parallel(pending: list[TrainConfig], shares: list[float], results_dir, gpus: int, stop_at,
              deadline, progress: bool = False) -> list[TrainConfig]:
    """Run ``pending`` in order, each taking its share of a device (``placement.place``; GPUs by index when more
    than one is visible), each in a child process given its settings (as in run.json) and, where it has one, its
    GPU alone; return the configs started. SIGINT (Ctrl-C) or SIGTERM stops the sweep: no run starts after it,
    each running one is sent SIGTERM once, checkpoints after its current update and exits, and then ``Stopped``
    is raised; a run stopped by a signal from elsewhere stops the sweep the same way. The children are stopped
    if this call ends early otherwise (an error, a second signal) and end by themselves if this process is killed."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    queue, loads, running, started, failed = list(zip(pending, shares)), [0.0] * max(1, gpus), [], [], []
    stopped: list[str] = []
    bars: dict[str, _RunBar] = {}  # one progress bar per running run, following its log.csv
    per_device = -(-len(pending) // max(1, gpus))  # at most this many share a device: 4 runs in 10 slots are 4
    try:
        with stop_on_signals() as asked:
            while (queue and not _out_of_time(deadline) and not (asked["signal"] or stopped)) or running:
                while (queue and not _out_of_time(deadline) and not (asked["signal"] or stopped)
                       and (device := place(loads, queue[0][1])) is not None):
                    c, share = queue.pop(0)
                    loads[device] += share
                    running.append((c, _start_child(c, share, device, results_dir, gpus, stop_at, deadline,
                                                    per_device, env), device, share))
                    started.append(c)
                    if progress:
                        bars[c.name] = _RunBar(c, results_dir)
                if (asked["signal"] or stopped) and asked.setdefault("forwarded", False) is False:
                    asked["forwarded"], asked["first"] = True, stopped[:1]  # the run stopped from elsewhere, if any
                    for _, child_process, _, _ in running:
                        child_process.terminate()  # SIGTERM, once: each checkpoints and exits
                time.sleep(0.5)
                for run in list(running):
                    c, child_process, device, share = run
                    if c.name in bars:
                        bars[c.name].follow()
                    if child_process.poll() is not None:
                        running.remove(run)
                        loads[device] -= share
                        if c.name in bars:
                            bars.pop(c.name).close()
                            if child_process.returncode == 0:
                                print(result_line(results.read_meta(c.run_dir(results_dir) / results.META_FILE)),
                                      flush=True)
                        if child_process.returncode == STOPPED:
                            stopped.append(c.name)
                        elif child_process.returncode:
                            failed.append(f"{c.name} (see {c.run_dir(results_dir) / results.LOG_FILE})")
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


def _start_child(c: TrainConfig, share: float, device: int, results_dir, gpus: int, stop_at, deadline,
                 per_device: int, env: dict) -> subprocess.Popen:
    """One parallel run's process (on GPU ``device`` where several are visible), its output in its run folder's
    train.log."""
    gpu = {"CUDA_VISIBLE_DEVICES": str(device)} if gpus > 1 and c.device in ("auto", "cuda") else {}
    on_cpu = c.device == "cpu" or (c.device == "auto" and gpus == 0)
    job = {"config": c.to_dict(), "results": str(results_dir), "stop_at": stop_at,
           "time_limit": _time_left(deadline), "parent": os.getpid(),
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
    """A parallel sweep's run: its job (settings, results folder, limits) read as JSON from stdin."""
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
    cfg = TrainConfig.from_dict(job["config"])
    if job["cpu_threads"]:  # runs sharing the CPU split its cores (run.json records the count)
        import torch

        torch.set_num_threads(job["cpu_threads"])
    try:
        train(cfg, job["results"], stop_at=job["stop_at"], time_limit=job["time_limit"], progress=False,
              concurrent_runs=job["concurrent_runs"])
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {cfg.name}: {e}", file=sys.stderr)
        sys.exit(1)
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(STOPPED)
