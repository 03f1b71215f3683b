"""The paper's trainer: SGD on whole batches resident on the device, evaluated once per epoch.

A run lives in ``<results>/<study>/<name>/`` (``TrainConfig.run_dir``): ``log.csv`` (one row per evaluation),
``run.json`` (settings, data, device, outcome), ``checkpoint.pt`` while it runs, ``weights.pt`` (fp32 state
dict) once finished. Every file is written whole; an interrupted run resumes from its last checkpoint and ends
exactly where an uninterrupted one would.

The checkpoint: the whole training state, saved and restored by the same code, verified before it is trained on.

A checkpoint file holds {format, sha256, state}: the state's torch-serialised bytes and their sha256, so damage is
found, not trained on. It is read with ``weights_only=True`` (tensors and plain values only), so a hostile file in
a results folder cannot run code. The state carries the run's settings and its data's checksum: a resume under
other settings or on other data is refused, naming each difference.

Provenance, where a number came from: the device, the code's commit, the versions and the numerical settings in force.

Recorded in every run's ``run.json`` and beside every benchmark, so that a result can be traced and rerun.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import results
from .config import TrainConfig, resolve_source
from .data import Batches, DeviceData, device_data
from .files import torch_bytes, write_atomic
from .models import build_model, count_parameters
from .results import RunConflict, differences, finished_meta, run_lock
from .steps import LAYOUT, LAYOUTS, evaluate, make_step, older_layout, resolve_device


clock = time.perf_counter  # the trainer's clock for time limits and timings (a test replaces it)


class Stopped(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM (a scheduler, ``kill``) after its current update, its checkpoint
    written: running the same command again resumes it exactly. A KeyboardInterrupt, so that what called it (a
    sweep, the notebook) stops too."""


@contextlib.contextmanager
def stop_on_signals():
    """While the block runs, SIGINT and SIGTERM only ask to stop: the returned dict's "signal" is set, for the
    training loop to check after each update; a second signal stops at once (every file is written whole all the
    same). Where another handler is installed (a job scheduler's, say), or off the main thread, it is left alone."""
    asked: dict = {"signal": None}

    def ask(signum, frame):
        if asked["signal"] is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped at once")
        asked["signal"] = signal.Signals(signum).name

    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(sig) is default:
                installed[sig] = signal.signal(sig, ask)
    try:
        yield asked
    finally:
        for sig, before in installed.items():
            signal.signal(sig, before)


@dataclass
class Progress:
    """The training loop's own state, kept in the checkpoint beside the model's, the optimiser's and the batches'."""

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
    layout: str = LAYOUT  # of the weights and batches (steps.LAYOUTS), kept for the run's life on a device
    # the devices the run trained on, by name, each with the iteration from which it did (note_device)
    devices: list[dict] = field(default_factory=list)


PROGRESS_FIELDS = {f.name for f in dataclasses.fields(Progress)}  # older checkpoints lack the newer ones


def note_threads(progress: Progress, threads: int | None) -> dict | None:
    """Record the CPU thread count ``threads`` (None: not on the CPU) this session trains with; a change from the
    count trained with so far is appended to ``progress.threads_changed`` and returned (else None)."""
    before, progress.cpu_threads = progress.cpu_threads, threads
    if before is None or threads is None or before == threads:
        return None
    progress.threads_changed.append({"iteration": progress.iteration, "from": before, "to": threads})
    return progress.threads_changed[-1]


def note_device(progress: Progress, name: str, recorded: str | None = None):
    """Record in ``progress.devices`` that the run trains on the device ``name`` from its current iteration on,
    unless it already did. A checkpoint older than this record trained on ``recorded`` (its run.json's device),
    or, where it moved between devices, on the device types its ``reseeded`` history names."""
    if not progress.devices and progress.iteration > 0 and recorded:
        moves = [m for m in progress.reseeded if m["iteration"] < progress.iteration]  # not this resume's own move
        progress.devices = [{"iteration": 0, "device": moves[0]["from"] if moves else recorded}] + [
            {"iteration": m["iteration"], "device": m["to"]} for m in moves]
        if progress.devices[-1]["device"] == ("cpu" if recorded.startswith("cpu") else "cuda"):  # the last: by name
            progress.devices[-1]["device"] = recorded
    if not progress.devices or progress.devices[-1]["device"] != name:
        progress.devices.append({"iteration": progress.iteration, "device": name})


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def learning_rate(iteration: int, cfg: TrainConfig, warming_up: bool = False) -> float:
    """The lr for the update made at ``iteration`` (0-based): warm-up lr, else lr / decay^(milestones passed)."""
    if warming_up:
        return cfg.warmup_lr
    return cfg.lr / cfg.lr_decay ** sum(iteration >= m for m in cfg.lr_milestones)


def warmup_check(iteration: int, cfg: TrainConfig) -> bool:
    """Whether the warm-up is checked after ``iteration`` updates: every warmup_check_every, and at its cap."""
    return iteration % cfg.warmup_check_every == 0 or iteration >= cfg.warmup_max_iterations


def warmup_ended(iteration: int, error: float, cfg: TrainConfig) -> bool:
    """At a check after ``iteration`` updates, with training error ``error`` (%) since the previous check: the
    warm-up ends once the error is below warmup_until_error (the paper: 80%), or at warmup_max_iterations."""
    return error < cfg.warmup_until_error or iteration >= cfg.warmup_max_iterations


def build(cfg: TrainConfig, device: torch.device, layout: str = LAYOUT):
    """The network of ``cfg`` on ``device`` in ``layout`` (steps.LAYOUTS), seeded by cfg.seed, and its SGD optimiser."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).to(memory_format=LAYOUTS[layout])
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, optimizer


def train(cfg: TrainConfig, results_dir: str | Path = "results", *, data: DeviceData | None = None,
          stop_at: int | None = None, time_limit: float | None = None, progress: bool = True,
          concurrent_runs: int = 1) -> dict:
    """Train (or resume, or recognise as finished) the run ``cfg`` in ``results_dir`` and return its metadata.

    ``stop_at`` ends the call at the first evaluation point at or past that iteration; ``time_limit`` (seconds
    from this call) ends it at the last evaluation point from which one more evaluation interval, timed on the
    one just done, would not fit, or, where an interval outlasts the limit all the same (the first one after a
    start, or a slower one), at the first iteration past the limit. Either leaves a checkpoint to resume from
    (status 'running'), and the resumed run ends exactly where an uninterrupted one would. So does SIGINT
    (Ctrl-C) or SIGTERM, after the current update, and then raises ``Stopped`` (see ``stop_on_signals``).
    ``concurrent_runs`` (how many runs share the device, e.g. in a parallel sweep) is recorded in run.json.
    """
    deadline = None if time_limit is None else clock() + time_limit
    with stop_on_signals() as asked:
        meta = _drive(_run(cfg, results_dir, {} if data is None else data, stop_at, deadline, progress, concurrent_runs, asked))
    if _asked(asked):  # it came as the run finished: what called this stops all the same
        raise Stopped(f"{cfg.name}: {meta['status']} when {asked['signal']} came; stopped")
    return meta


def train_together(configs: list[TrainConfig], results_dir: str | Path = "results", *,
                   shares: list[float] | None = None, data: DeviceData | None = None, stop_at: int | None = None,
                   time_limit: float | None = None, progress: bool = True) -> list[dict]:
    """Train several runs in this one process, one update of each in turn, and return the metadata of those
    started, in the order given.

    Each run is exactly the run ``train`` makes of it alone (its own data order, warm-up, evaluations,
    checkpoints and files; on the CPU bit for bit, tested); on CUDA each has its own stream, so that the device
    works on one run's update while the host queues the next one's (with graphed steps, one launch each).
    ``shares``: each run's share of the device (by default all at once): runs start in the order given while
    the shares of those running fit in one; a run waiting for room is not started once the time limit has
    passed or has stopped a run. ``stop_at``, ``time_limit`` (from this call) and signals act on every run as in ``train``.
    A run that fails (diverges, or is refused) stops alone: the others train on, and then the failures are
    raised together (one run alone: its own error).
    """
    names = [f"{c.study}/{c.name}" for c in configs]
    if len(set(names)) < len(names):
        raise ValueError(f"duplicate runs: {', '.join(sorted({n.split('/')[1] for n in names if names.count(n) > 1}))}")
    if shares is None:
        shares = [1 / max(1, len(configs))] * len(configs)
    deadline = None if time_limit is None else clock() + time_limit
    queue, running, load, done, failed, stopped = list(zip(configs, shares)), [], 0.0, {}, [], []
    loaded = {} if data is None else data
    started, out_of_time = 0, False
    with stop_on_signals() as asked:
        while queue or running:
            # the first run always starts (as ``train`` does); the others once there is room, within the time
            while (queue and (not running or load + queue[0][1] <= 1 + 1e-9) and not _asked(asked) and not (
                    started and (out_of_time or (deadline is not None and clock() > deadline)))):
                cfg, share = queue.pop(0)
                at_once = min(round(1 / share), len(configs))
                running.append(_Turn(cfg, share, _run(cfg, results_dir, loaded, stop_at, deadline, progress,
                                                       at_once, asked)))
                load, started = load + share, started + 1
            if not running:
                break  # out of time, or asked to stop, before the next run could start
            for turn in list(running):
                try:
                    turn.step()
                    continue
                except StopIteration as end:
                    done[turn.cfg] = meta = end.value
                    # stopped by the time limit: a run started now would not fit either
                    out_of_time |= meta["status"] != "finished" and (stop_at is None or
                                                                    meta["iterations_done"] < stop_at)
                except Stopped as e:
                    stopped.append((turn.cfg, e))
                except Exception as e:  # noqa: BLE001 - a failed run stops alone; all are raised together
                    failed.append((turn.cfg, e))
                running.remove(turn)
                load -= turn.share
    _synchronize(configs)
    if len(configs) == 1 and (failed or stopped):
        raise (failed or stopped)[0][1]
    if failed:
        raise RuntimeError("runs failed: " + "; ".join(str(e) if str(e).startswith(c.name) else f"{c.name}: {e}"
                                                      for c, e in failed)
                           + ("; the others ran to the end" if done else ""))
    if stopped or _asked(asked):
        checkpointed = [c.name for c in configs if c in dict(stopped)]
        raise Stopped(f"stopped by {asked['signal'] or 'a signal'}; checkpointed: {', '.join(checkpointed) or 'none'}; "
                      "the same command resumes them")
    return [done[c] for c in configs if c in done]


class _Turn:
    """A run of ``train_together``: its generator (``_run``), stepped one update at a time on its own CUDA
    stream (none on the CPU)."""

    def __init__(self, cfg: TrainConfig, share: float, run):
        self.cfg, self.share, self.run, self.stream = cfg, share, run, None

    def step(self):
        if self.stream is None and torch.cuda.is_available() and resolve_device(self.cfg.device).type == "cuda":
            self.stream = torch.cuda.Stream()
            self.stream.wait_stream(torch.cuda.current_stream())  # the data, copied to the device before
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            next(self.run)


def _synchronize(configs: list[TrainConfig]):
    """Wait for every run's stream: the device's memory is freed and reused only after the runs are done with it."""
    if torch.cuda.is_available() and any(c.device in ("auto", "cuda") or c.device.startswith("cuda") for c in configs):
        torch.cuda.synchronize()


def _drive(run):
    """Step a run's generator (``_run``) to its end; its return value."""
    while True:
        try:
            next(run)
        except StopIteration as end:
            return end.value


def _run(cfg: TrainConfig, results_dir, data: DeviceData | dict, stop_at: int | None, deadline: float | None,
         progress: bool, concurrent_runs: int, asked: dict):
    """One run, as a generator that yields before each update and returns run.json's contents: ``train`` steps it
    to its end, ``train_together`` steps several in turn. It holds the run's lock from its first step to its end.
    ``data``: the run's data, or a dict of the data loaded so far (by what selects it), shared by the runs of one
    call so that each data set is on the device once."""
    cfg = dataclasses.replace(cfg, data=resolve_source(cfg.data))
    run_dir = cfg.run_dir(results_dir)
    finished = finished_meta(cfg, results_dir)
    if finished is not None:
        return finished
    # the device and the data first: a bad device or missing data leaves no empty run folder behind
    device = resolve_device(cfg.device)
    if isinstance(data, dict):
        key = (cfg.data, cfg.train_subset, cfg.test_subset, cfg.val_size, str(device))
        data = data[key] if key in data else data.setdefault(key, device_data(cfg, device))
    created = [d for d in (run_dir, run_dir.parent) if not d.exists()]  # the run's folder, its study's
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(run_dir):
            # checked again under the lock: another process may have finished the run meanwhile
            meta = finished_meta(cfg, results_dir)
            if meta is None:
                meta = yield from _train(cfg, run_dir, device, data, stop_at, deadline, progress, concurrent_runs,
                                         asked)
    except BaseException:
        if run_dir in created and {p.name for p in run_dir.iterdir()} <= {results.LOCK_FILE}:  # refused: none written
            (run_dir / results.LOCK_FILE).unlink(missing_ok=True)
            for folder in created:
                if not any(folder.iterdir()):
                    folder.rmdir()
        raise
    return meta


def _train(cfg: TrainConfig, run_dir: Path, device: torch.device, data: DeviceData, stop_at: int | None,
           deadline: float | None, progress: bool, concurrent_runs: int, asked: dict | None = None) -> dict:
    if device.type == "cuda":  # cuDNN's fastest algorithms, unless deterministic ones are asked for (bit-for-bit checks)
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    model, optimizer = build(cfg, device)
    batches = Batches(data, cfg.batch_size, cfg.seed, LAYOUTS[LAYOUT])
    ckpt_path = run_dir / results.CHECKPOINT_FILE
    p = Progress(warmup_end=None if cfg.uses_warmup else 0, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 generator_device=device.type)
    if ckpt_path.exists():
        loop = restore_checkpoint(ckpt_path, cfg, data.checksum, model, optimizer, batches)
        p = Progress(**{k: v for k, v in loop.items() if k in PROGRESS_FIELDS})
        recorded = results.read_meta(run_dir / results.META_FILE) if (run_dir / results.META_FILE).exists() else {}
        if p.cpu_threads is None and device.type == "cpu":  # a checkpoint older than its thread count: run.json's
            p.cpu_threads = recorded.get("cpu_threads")
        note_device(p, device_name(device), recorded.get("device_name"))
        model.to(memory_format=LAYOUTS[p.layout])  # the run goes on in its own layout (the values are unchanged)
        batches.memory_format = LAYOUTS[p.layout]
    else:
        p.restarted = _lost_checkpoint(run_dir)
        note_device(p, device_name(device))
    changed = note_threads(p, torch.get_num_threads() if device.type == "cpu" else None)
    if changed:
        print(f"{cfg.name}: resumed at iteration {changed['iteration']:,} with {changed['to']} CPU threads, trained "
              f"so far with {changed['from']}: its float sums are split otherwise, so from here it is not bit-for-bit "
              "the uninterrupted run (run.json's 'threads_changed' records it)", file=sys.stderr, flush=True)
    meta = _meta(cfg, data, device, model, p) | {"concurrent_runs": concurrent_runs}  # the last session's
    results.write_meta(meta, run_dir / results.META_FILE)

    # Metrics stay on the device and are read only at evaluation points (and warm-up checks); image counts
    # are known on the host, so nothing in the loop waits for the GPU.
    window = torch.tensor(p.window, dtype=torch.float64, device=device)  # loss sum, wrong since the last row
    update = make_step(cfg, model, optimizer, window)
    warm = torch.tensor(p.warm, dtype=torch.float64, device=device)  # wrong since the last warm-up check
    timer = _Timer(p)
    bar = progress_bar(cfg.total_iterations, p.iteration, cfg.name, enabled=progress)
    model.train()
    while p.iteration < cfg.total_iterations:
        yield  # one update per step of the generator: train_together steps runs in turn
        lr = learning_rate(p.iteration, cfg, warming_up=p.warmup_end is None)
        wrong = update(*next(batches), lr)  # adds the batch's loss and errors to window
        p.iteration += 1
        bar.update(1)
        if p.warmup_end is None:
            warm += wrong
            if warmup_check(p.iteration, cfg):
                seen = ((p.iteration - 1) % cfg.warmup_check_every + 1) * cfg.batch_size  # since the last check
                if warmup_ended(p.iteration, 100 * warm.item() / seen, cfg):  # one host sync per check
                    p.warmup_end = p.iteration
                warm.zero_()
        if p.iteration % cfg.eval_every == 0 or p.iteration == cfg.total_iterations:
            train_sums = window.tolist()  # the loss sum and wrong predictions since the last row: a host sync
            window.zero_()
            _stop_if_diverged(cfg, train_sums[0], p, run_dir, meta)
            p.rows.append(_evaluation_row(cfg, model, data, train_sums, lr, timer, p))
            results.write_csv(p.rows, run_dir / results.CSV_FILE)
            bar.set_postfix(train_err=f"{p.rows[-1]['train_error']:.2f}", test_err=f"{p.rows[-1]['test_error']:.2f}")
            if p.iteration == cfg.total_iterations:
                break
            stopping = (stop_at is not None and p.iteration >= stop_at) or (
                deadline is not None and clock() + timer.last_interval > deadline) or _asked(asked)
        else:
            # an interval that outlasts the limit (the first after a start, or one slower than the last), or a
            # signal, stops where it is, its training sums kept in the checkpoint, so the resume stays exact
            stopping = (deadline is not None and clock() > deadline) or _asked(asked)
            if not stopping:
                continue
            _stop_if_diverged(cfg, window[0].item(), p, run_dir, meta)
        if p.iteration % cfg.checkpoint_every == 0 or stopping:
            p.warm, p.window = warm.item(), window.tolist()
            timer.tick()
            save_checkpoint(ckpt_path, cfg, data.checksum, model, optimizer, batches, dataclasses.asdict(p))
            results.write_meta(_meta(cfg, data, device, model, p, meta), run_dir / results.META_FILE)
            if stopping:
                bar.close()
                if _asked(asked):
                    raise Stopped(f"{cfg.name}: stopped by {asked['signal']} at iteration {p.iteration:,} of "
                                  f"{cfg.total_iterations:,}, its checkpoint written; the same command resumes it")
                return meta
    bar.close()
    return _finish(model, run_dir, _meta(cfg, data, device, model, p, meta), p)


def _meta(cfg: TrainConfig, data: DeviceData, device: torch.device, model, p: Progress, meta: dict | None = None) -> dict:
    """run.json of a run in progress: its settings, data and provenance, and ``p``'s progress."""
    if meta is None:
        meta = {
            "name": cfg.name, "status": "running", "config": cfg.to_dict(),
            "data_source": data.source, "data_checksum": data.checksum,
            "n_train": len(data.train_x), "n_val": 0 if data.val_x is None else len(data.val_x),
            "n_test": len(data.test_x), "torch": torch.__version__, "device_name": device_name(device),
            "git_commit": git_commit(), "parameters": count_parameters(model),
            "final_test_error": None, "best_test_error": None, "best_test_iteration": None,
            "final_train_error": None, "finished": None, **numerics(device),
        }
    meta.update(iterations_done=p.iteration, warmup_end=p.warmup_end, wall_s=p.wall_s, started=p.started,
                layout=p.layout)
    if p.reseeded:
        meta["reseeded"] = p.reseeded
    if p.restarted:
        meta["restarted"] = p.restarted
    if p.threads_changed:
        meta["threads_changed"] = p.threads_changed
    if p.devices:
        meta["devices"] = p.devices
    return meta


def _lost_checkpoint(run_dir: Path) -> list[dict]:
    """The run's restarts so far, this one added if its checkpoint is missing though run.json records training done
    (the machine or disk that held it is gone): the run restarts from the beginning, says so on stderr, and
    run.json keeps the record (``restarted``). Its old log.csv is replaced at the first evaluation."""
    path = run_dir / results.META_FILE
    if not path.exists():
        return []
    old = results.read_meta(path)
    restarts = old.get("restarted", [])
    if old["iterations_done"] == 0:
        return restarts
    print(f"{old['name']}: {run_dir / results.CHECKPOINT_FILE} is missing, though {path} records "
          f"{old['iterations_done']:,} iterations trained; the run restarts from the beginning (run.json's "
          "'restarted' records it)",
          file=sys.stderr, flush=True)
    return restarts + [{"lost_iteration": old["iterations_done"], "restarted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]


class _Timer:
    """Wall time across resumes, and the length of the last evaluation interval (for the time limit)."""

    def __init__(self, p: Progress):
        self.p, self.session_start, self.wall_before = p, clock(), p.wall_s
        self.row_time, self.row_iteration, self.last_interval = self.session_start, p.iteration, 0.0

    def row(self) -> tuple[float, float]:
        """(images per second since the previous row, wall seconds so far), and start the next interval."""
        now = clock()
        self.last_interval = now - self.row_time  # training and evaluation since the previous row
        rate = (self.p.iteration - self.row_iteration) / max(self.last_interval, 1e-9)
        self.p.wall_s = self.wall_before + now - self.session_start
        self.row_time, self.row_iteration = now, self.p.iteration
        return rate, self.p.wall_s

    def tick(self):
        """Bring the wall time across resumes up to now (for a checkpoint)."""
        self.p.wall_s = self.wall_before + clock() - self.session_start


def _evaluation_row(cfg: TrainConfig, model, data: DeviceData, train_sums: list[float], lr: float, timer: _Timer,
                    p: Progress) -> dict:
    """log.csv's row at this evaluation point, from the training loss and wrong predictions summed since the last
    row (``train_sums``) and an evaluation of the test (and validation) images."""
    loss_sum, wrong_sum = train_sums
    seen = (p.iteration - _last_row(p)) * cfg.batch_size
    test_loss, test_error = evaluate(model, data.test_x, data.test_y, cfg.precision)
    val_loss, val_error = (evaluate(model, data.val_x, data.val_y, cfg.precision)
                           if data.val_x is not None else (None, None))
    rate, elapsed = timer.row()
    return {"iteration": p.iteration, "epoch": p.iteration * cfg.batch_size / len(data.train_x), "lr": lr,
            "train_loss": loss_sum / seen, "train_error": 100 * wrong_sum / seen,
            "test_loss": test_loss, "test_error": test_error, "val_loss": val_loss, "val_error": val_error,
            "elapsed_s": elapsed, "images_per_s": rate * cfg.batch_size}


def _last_row(p: Progress) -> int:
    """The iteration of log.csv's last row (0 before the first): where the training window began."""
    return p.rows[-1]["iteration"] if p.rows else 0


def _asked(asked: dict | None) -> bool:
    return asked is not None and asked["signal"] is not None


def _stop_if_diverged(cfg: TrainConfig, loss_sum: float, p: Progress, run_dir: Path, meta: dict):
    """A non-finite training loss (summed since the last row) stops the run: run.json says 'diverged', the rows so
    far and the last checkpoint, made before it, are kept, and TrainingDiverged says so."""
    if not math.isfinite(loss_sum):
        meta["status"] = "diverged"
        results.write_meta(meta, run_dir / results.META_FILE)
        ckpt = run_dir / results.CHECKPOINT_FILE
        kept = (f"the last good checkpoint {ckpt}" if ckpt.exists()
                else "no checkpoint (none was written yet: the run restarts from the beginning)")
        seen = (p.iteration - _last_row(p)) * cfg.batch_size
        raise TrainingDiverged(
            f"{cfg.name}: training loss became {loss_sum / seen} between iterations {_last_row(p)} and "
            f"{p.iteration}; kept the rows so far in {run_dir / results.CSV_FILE} and {kept}")


def _finish(model, run_dir: Path, meta: dict, p: Progress) -> dict:
    """Save the weights (fp32), complete run.json and remove the checkpoint."""
    weights = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    meta["weights_sha256"] = write_atomic(torch_bytes(weights), run_dir / results.WEIGHTS_FILE)
    best = min(p.rows, key=lambda r: r["test_error"])
    meta.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                final_test_error=p.rows[-1]["test_error"], final_train_error=p.rows[-1]["train_error"],
                best_test_error=best["test_error"], best_test_iteration=best["iteration"])
    results.write_meta(meta, run_dir / results.META_FILE)  # written last: its status marks the run complete
    (run_dir / results.CHECKPOINT_FILE).unlink(missing_ok=True)
    return meta


PROGRESS_ENV = "RESNET_PROGRESS"  # "text": plain-text bars, redrawn every 30 s (a notebook run from a terminal)


def progress_bar(total: int, initial: int, name: str, enabled: bool = True):
    """A run's progress bar (iterations, rate, ETA): a notebook's widget, or text on a terminal; with
    RESNET_PROGRESS=text always text, redrawn at most every 30 s, which a notebook executed from the command line
    (``make study``) streams to the terminal without filling the notebook."""
    import os

    if os.environ.get(PROGRESS_ENV) == "text":
        from tqdm.std import tqdm

        return tqdm(total=total, initial=initial, desc=name, unit="it", disable=not enabled, mininterval=30.0,
                    file=sys.stderr)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="it", disable=not enabled, mininterval=1.0)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: unreadable, damaged, or of an older format."""


# 2: the state's bytes with their sha256 (1: the state itself; upgraded by tools/migrate_checkpoint.py)
CHECKPOINT_FORMAT = 2


def save_checkpoint(path: Path, cfg: TrainConfig, data_checksum: str, model, optimizer, batches, loop: dict):
    """Write the whole training state to ``path``, whole (see ``files.write_atomic``): the model's, the optimiser's,
    the batches' (``data.Batches``), and ``loop``, the training loop's own (plain values, the trainer's)."""
    write_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": batches.state_dict(),
                 **loop, "config": cfg.to_dict(), "data_checksum": data_checksum}, path)


def restore_checkpoint(path: Path, cfg: TrainConfig, data_checksum: str, model, optimizer, batches) -> dict:
    """Load ``path`` into the model, optimiser and batches, and return the training loop's own state as saved.

    A checkpoint of another device's generator (a CUDA run resumed on the CPU, or back) cannot restore the
    generator: it is re-seeded from the run's seed and the iteration instead, so the resume is deterministic
    but not bit-identical to an uninterrupted run; the loop's ``reseeded`` (and run.json) records it.
    """
    state = read_checkpoint(path)
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
        loop["layout"] = LAYOUT  # no exact resume on another device: it goes on in the layout it trains fastest in
    loop.setdefault("layout", older_layout(here))  # a checkpoint older than its layout: the one it trained in
    return loop


def reseed(seed: int, iteration: int) -> int:
    """The generator seed for a run resumed on another device at ``iteration``: fixed by the two, unlike any
    seed the run used before."""
    return int.from_bytes(hashlib.sha256(f"resnet-reseed:{seed}:{iteration}".encode()).digest()[:8], "little")


def write_checkpoint(state: dict, path: Path):
    """Save ``state`` in this format: its bytes with their sha256."""
    write_atomic(checkpoint_bytes(state), path)


def checkpoint_bytes(state: dict) -> bytes:
    """``state`` as a checkpoint file holds it (``write_checkpoint``)."""
    raw = torch_bytes(state)
    return torch_bytes({"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(raw).hexdigest(),
                        "state": torch.frombuffer(bytearray(raw), dtype=torch.uint8)})


def read_checkpoint(path: Path | io.BytesIO, name: str | None = None) -> dict:
    """The state saved by ``write_checkpoint``, verified; tensors and plain values only, never code. Errors name
    ``name`` if given (e.g. an archive's member read from memory), else ``path``."""
    source, path = path, name or path
    advice = "Delete it to restart the run from the beginning"
    try:
        outer = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged or hostile file
        # torch's own message may advise weights_only=False, which would let a hostile file run code: not repeated
        raise CheckpointError(f"{path}: unreadable checkpoint (damaged, truncated or not a checkpoint: "
                              f"{type(e).__name__}). {advice}") from e
    if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT} (an older one is upgraded by "
                              f"python tools/migrate_checkpoint.py {path}). {advice}")
    raw = outer["state"].numpy().tobytes()
    if hashlib.sha256(raw).hexdigest() != outer["sha256"]:
        raise CheckpointError(f"{path}: damaged checkpoint (its sha256 does not match its contents). {advice}")
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # a generator's state stays on the CPU


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3', or 'cpu (x86_64, 2 cores)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def git_commit() -> str:
    """The checkout's commit, with '-dirty' when tracked files differ from it; 'unknown' outside git. A copy of
    a tree without its .git (a copy on another machine) names its commit in RESNET_GIT_COMMIT."""
    if os.environ.get("RESNET_GIT_COMMIT"):
        return os.environ["RESNET_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict:
    """torch, CUDA and cuDNN versions (None where not built with them)."""
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}


def numerics(device: torch.device) -> dict:
    """The settings that change a run's arithmetic beyond its own: threads on the CPU (float sums depend on how
    work is split, so a resume is bit-for-bit only with as many), TF32 on CUDA ("fp32" convolutions are TF32
    under cuDNN's default) and cuDNN's algorithm choice."""
    if device.type != "cuda":
        return {"cpu_threads": torch.get_num_threads()}
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic}
