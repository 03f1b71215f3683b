"""The paper's trainer: SGD on whole batches resident on the device, evaluated once per epoch.

A run lives in ``<results>/<study>/<name>/`` (``TrainConfig.run_dir``): ``log.csv`` (one row per evaluation),
``run.json`` (settings, data, device, outcome), ``checkpoint.pt`` while it runs,
``weights.pt`` (fp32 state dict) once finished. Every file is written whole
(temporary file, then rename); an interrupted run resumes from its last
checkpoint and ends exactly where an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import results
from .config import TrainConfig, identity_fields
from .data import BatchSampler, DeviceData, load_cifar10, random_crop_flip, resolve_source, source_name, to_device
from .models import build_model, count_parameters


clock = time.perf_counter  # the trainer's clock for time limits and timings (a test replaces it)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class RunConflict(RuntimeError):
    """A results folder already holds a different run under the same name."""


class RunLocked(RuntimeError):
    """Another process is training this run."""


LOCK_FILE = "train.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold the run folder's exclusive lock while training it; a second process is refused, told which holds it.

    An flock, released by the kernel on any exit of its process (a crash or kill -9 included), so no lock
    outlives its process and none needs clearing by hand. The file names its holder, for the message.
    """
    import fcntl

    path = run_dir / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(f"{run_dir} is being trained by {holder}; wait for it to stop, or stop it") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {platform.node()}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.seek(0)
        handle.truncate()
        handle.close()  # releases the lock


def learning_rate(iteration: int, cfg: TrainConfig, warming_up: bool = False) -> float:
    """The lr for the update made at ``iteration`` (0-based): warm-up lr, else lr / decay^(milestones passed)."""
    if warming_up:
        return cfg.warmup_lr
    return cfg.lr / cfg.lr_decay ** sum(iteration >= m for m in cfg.lr_milestones)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32", batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, error %) of ``model`` in eval mode on the given images."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            logits = model(x[i:i + batch_size]).float()
        t = y[i:i + batch_size]
        sums += torch.stack([F.cross_entropy(logits, t, reduction="sum").double(), (logits.argmax(1) != t).sum().double()])
    model.train(was_training)
    loss, wrong = sums.tolist()
    return loss / len(x), 100.0 * wrong / len(x)


def step(model, optimizer, x: torch.Tensor, y: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD update on the batch (x, y); returns the (loss, logits), still on the device."""
    with autocast(x.device, precision):
        logits = model(x)  # (B, 10)
        loss = F.cross_entropy(logits.float(), y)  # BN, the loss and the weights stay fp32 under bf16 autocast
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def build(cfg: TrainConfig, device: torch.device):
    """The network of ``cfg`` on ``device`` (channels-last on CUDA), seeded by cfg.seed, and its SGD optimiser."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).to(memory_format=memory_format(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, optimizer


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def prepare_data(cfg: TrainConfig, device) -> DeviceData:
    return to_device(load_cifar10(cfg.data), device, train_subset=cfg.train_subset,
                     test_subset=cfg.test_subset, val_size=cfg.val_size)


def _save(obj, path: Path) -> str:
    """Write ``obj`` whole (temporary file, then rename) and return the file's sha256."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    _write_bytes(buf.getvalue(), path)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _write_bytes(data: bytes, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
    except OSError as e:  # disk full, read-only folder: say which file, and that the old one is intact
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not write {path} ({e.strerror or e}); the previous {path.name} is unchanged. "
                      "Free some space (or move the results folder) and run again") from e
    os.replace(tmp, path)


CHECKPOINT_FORMAT = 2  # 2: the state's bytes with their sha256, so damage is found, not trained on


def save_checkpoint(state: dict, path: Path):
    """The training state, with a sha256 of its bytes inside the same file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    raw = buf.getvalue()
    _save({"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(raw).hexdigest(),
           "state": torch.frombuffer(bytearray(raw), dtype=torch.uint8)}, path)


def read_checkpoint(path: Path) -> dict:
    """The training state saved by ``save_checkpoint``, verified; tensors and plain values only, never code."""
    advice = "Delete it to restart the run from the beginning"
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged or hostile file
        # torch's own message may advise weights_only=False, which would let a hostile file run code: not repeated
        raise RunConflict(f"{path}: unreadable checkpoint (damaged, truncated or not a checkpoint: "
                          f"{type(e).__name__}). {advice}") from e
    if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
        raise RunConflict(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT} (an older one is upgraded by "
                          f"python tools/migrate_checkpoint.py {path}). {advice}")
    raw = outer["state"].numpy().tobytes()
    if hashlib.sha256(raw).hexdigest() != outer["sha256"]:
        raise RunConflict(f"{path}: damaged checkpoint (its sha256 does not match its contents). {advice}")
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # the generator state stays on the CPU


def _differences(recorded: TrainConfig, requested: TrainConfig) -> list[str]:
    # The folder holding the data may differ between machines; the data's name may not (official vs the JPEG
    # stand-in), nor any setting of the run's identity (the device and checkpoint interval are not).
    diffs = [] if source_name(recorded.data) == source_name(requested.data) else [
        f"data {source_name(recorded.data)!r} (asked for {source_name(requested.data)!r})"]
    for name in identity_fields():
        was, asked = getattr(recorded, name), getattr(requested, name)
        if name != "data" and was != asked:
            diffs.append(f"{name} {was!r} (asked for {asked!r})")
    return diffs


def finished_meta(cfg: TrainConfig, results_dir: str | Path) -> dict | None:
    """The metadata of ``cfg``'s finished run in ``results_dir``, or None when it is missing or unfinished.

    Raises RunConflict when the folder holds a run of that name with other settings or other data.
    """
    meta_path = cfg.run_dir(results_dir) / results.META_FILE
    if not meta_path.exists():
        return None
    meta = results.read_meta(meta_path)
    diffs = _differences(TrainConfig.from_dict(meta["config"]), cfg)
    if diffs:
        raise RunConflict(f"{meta_path.parent} holds a run with other settings: {'; '.join(diffs)}. "
                          "Move it away or choose another results folder")
    return meta if meta["status"] == "finished" else None


def train(cfg: TrainConfig, results_dir: str | Path = "results", *, data: DeviceData | None = None,
          stop_at: int | None = None, time_limit: float | None = None, progress: bool = True) -> dict:
    """Train (or resume, or recognise as finished) the run ``cfg`` in ``results_dir`` and return its metadata.

    ``stop_at`` ends the call at the first evaluation point at or past that iteration; ``time_limit`` (seconds
    from this call) ends it at the last evaluation point from which one more evaluation interval, timed on the
    one just done, would not fit. Either leaves a checkpoint to resume from (status 'running').
    """
    call_start = clock()
    cfg = dataclasses.replace(cfg, data=resolve_source(cfg.data))
    run_dir = cfg.run_dir(results_dir)
    finished = finished_meta(cfg, results_dir)
    if finished is not None:
        return finished
    # the device and the data first: a bad device or missing data leaves no empty run folder behind
    device = resolve_device(cfg.device)
    if data is None:
        data = prepare_data(cfg, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        # checked again under the lock: another process may have finished the run meanwhile
        return finished_meta(cfg, results_dir) or _train(cfg, run_dir, device, data, stop_at, time_limit, progress,
                                                         call_start)


def _train(cfg: TrainConfig, run_dir: Path, device: torch.device, data: DeviceData, stop_at: int | None,
           time_limit: float | None, progress: bool, call_start: float) -> dict:
    meta_path = run_dir / results.META_FILE
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, optimizer = build(cfg, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)
    sampler = BatchSampler(len(data.train_x), cfg.batch_size, generator)

    meta = {
        "name": cfg.name, "status": "running", "config": cfg.to_dict(),
        "data_source": data.source, "data_checksum": data.checksum,
        "n_train": len(data.train_x), "n_val": 0 if data.val_x is None else len(data.val_x), "n_test": len(data.test_x),
        "torch": torch.__version__, "device_name": _device_name(device), "git_commit": _git_commit(),
        "parameters": count_parameters(model), "iterations_done": 0, "warmup_end": None if cfg.uses_warmup else 0,
        "final_test_error": None, "best_test_error": None, "best_test_iteration": None,
        "final_train_error": None, "wall_s": 0.0,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None,
        # float sums depend on how work is split: a resume is bit-for-bit only with the same thread count
        "cpu_threads": torch.get_num_threads(),
    }
    rows: list[dict] = []
    warm_state = 0.0
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        # loaded on the CPU: a generator's state must stay a CPU tensor whatever its device
        ckpt = _load_checkpoint(ckpt_path, cfg, data.checksum)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["sampler"])
        rows, meta["warmup_end"] = ckpt["rows"], ckpt["warmup_end"]
        warm_state = ckpt["warm"]
        meta["wall_s"], meta["started"] = ckpt["wall_s"], ckpt["started"]
        meta["iterations_done"] = ckpt["iteration"]
    results.write_meta(meta, meta_path)

    it = meta["iterations_done"]
    # Metrics stay on the device and are read only at evaluation points (and warm-up checks); image counts
    # are known on the host, so nothing in the loop waits for the GPU.
    window = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, wrong since the last row
    warm = torch.tensor(warm_state, dtype=torch.float64, device=device)  # wrong since the last warm-up check
    session_start = clock()
    wall_before = meta["wall_s"]
    last_row_time, last_row_it = session_start, it
    bar = _progress_bar(cfg.total_iterations, it, cfg.name, enabled=progress)
    model.train()
    while it < cfg.total_iterations:
        lr = learning_rate(it, cfg, warming_up=meta["warmup_end"] is None)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = sampler.next()
        x = random_crop_flip(data.train_x[idx], generator).contiguous(memory_format=memory_format(device))  # (B, 3, 32, 32)
        y = data.train_y[idx]
        loss, logits = step(model, optimizer, x, y, cfg.precision)
        wrong = (logits.argmax(1) != y).sum().double()
        window += torch.stack([loss.detach().double() * len(y), wrong])
        it += 1
        bar.update(1)

        if meta["warmup_end"] is None:
            warm += wrong
            if it % cfg.warmup_check_every == 0 or it >= cfg.warmup_max_iterations:
                seen_w = (it - 1) % cfg.warmup_check_every + 1  # iterations since the last check
                wrong_w = warm.item()  # one host sync per check, only during the warm-up
                warm.zero_()
                if 100 * wrong_w / (seen_w * cfg.batch_size) < cfg.warmup_until_error or it >= cfg.warmup_max_iterations:
                    meta["warmup_end"] = it

        if it % cfg.eval_every and it != cfg.total_iterations:
            continue
        loss_sum, wrong_sum = window.tolist()
        seen = (it - last_row_it) * cfg.batch_size
        window.zero_()
        if not math.isfinite(loss_sum):
            meta["status"] = "diverged"
            results.write_meta(meta, meta_path)
            bar.close()
            last = rows[-1]["iteration"] if rows else 0
            kept = (f"the last good checkpoint {ckpt_path}" if ckpt_path.exists()
                    else "no checkpoint (none was written yet: the run restarts from the beginning)")
            raise TrainingDiverged(
                f"{cfg.name}: training loss became {loss_sum / seen} between iterations {last} and {it}; "
                f"kept the rows so far in {run_dir / results.CSV_FILE} and {kept}")
        test_loss, test_error = evaluate(model, data.test_x, data.test_y, cfg.precision)
        val_loss, val_error = (evaluate(model, data.val_x, data.val_y, cfg.precision)
                               if data.val_x is not None else (None, None))
        now = clock()
        interval = now - last_row_time  # training and evaluation since the previous row
        rows.append({
            "iteration": it, "epoch": it * cfg.batch_size / len(data.train_x), "lr": lr,
            "train_loss": loss_sum / seen, "train_error": 100 * wrong_sum / seen,
            "test_loss": test_loss, "test_error": test_error, "val_loss": val_loss, "val_error": val_error,
            "elapsed_s": wall_before + now - session_start,
            "images_per_s": (it - last_row_it) * cfg.batch_size / max(now - last_row_time, 1e-9),
        })
        last_row_time, last_row_it = clock(), it
        results.write_csv(rows, run_dir / results.CSV_FILE)
        bar.set_postfix(train_err=f"{rows[-1]['train_error']:.2f}", test_err=f"{test_error:.2f}")
        meta.update(iterations_done=it, wall_s=rows[-1]["elapsed_s"])

        if it == cfg.total_iterations:
            break
        stopping = (stop_at is not None and it >= stop_at) or (
            time_limit is not None and now - call_start + interval > time_limit)
        if it % cfg.checkpoint_every == 0 or stopping:
            # settings and data identity ride along, so a resume under other settings or data is refused
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "sampler": sampler.state_dict(), "rows": rows, "warmup_end": meta["warmup_end"],
                             "warm": warm.item(), "iteration": it, "wall_s": meta["wall_s"], "started": meta["started"],
                             "config": cfg.to_dict(), "data_checksum": data.checksum}, ckpt_path)
            results.write_meta(meta, meta_path)
            if stopping:
                bar.close()
                return meta
    bar.close()

    weights = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    meta["weights_sha256"] = _save(weights, run_dir / results.WEIGHTS_FILE)
    best = min(rows, key=lambda r: r["test_error"])
    meta.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                final_test_error=rows[-1]["test_error"], final_train_error=rows[-1]["train_error"],
                best_test_error=best["test_error"], best_test_iteration=best["iteration"])
    results.write_meta(meta, meta_path)  # written last: its status marks the run complete
    ckpt_path.unlink(missing_ok=True)
    return meta


def _load_checkpoint(path: Path, cfg: TrainConfig, data_checksum: str) -> dict:
    """A checkpoint of ``cfg``'s run on this data; anything else is refused, naming what differs."""
    ckpt = read_checkpoint(path)
    if "config" not in ckpt or "data_checksum" not in ckpt:
        raise RunConflict(f"{path}: checkpoint without its settings and data checksum (an older format); "
                          "migrate it (see README) or delete it to restart the run")
    diffs = _differences(TrainConfig.from_dict(ckpt["config"]), cfg)
    if ckpt["data_checksum"] != data_checksum:
        diffs.append(f"data checksum {ckpt['data_checksum'][:12]}… (this data: {data_checksum[:12]}…)")
    if diffs:
        raise RunConflict(f"{path} was made with other settings or data: {'; '.join(diffs)}. "
                          "Resume it with its own settings, or delete it to restart")
    return ckpt


def _progress_bar(total: int, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="it", disable=not enabled, mininterval=1.0)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _git_commit() -> str:
    import subprocess

    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_weights(run_dir: str | Path, device="cpu"):
    """The trained model of a finished run (eval mode), and its metadata."""
    run_dir = Path(run_dir)
    meta = results.read_meta(run_dir / results.META_FILE)
    if meta["status"] != "finished":
        raise ValueError(f"{run_dir}: run is {meta['status']}, not finished")
    cfg = TrainConfig.from_dict(meta["config"])
    path = run_dir / results.WEIGHTS_FILE
    raw = path.read_bytes()
    if "weights_sha256" in meta and hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
        raise results.ResultsError(f"{path}: damaged (its sha256 is not the one {results.META_FILE} records); "
                                   "restore it from git or retrain the run")
    try:
        state = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise results.ResultsError(f"{path}: unreadable weights (damaged, truncated or not a state dict: "
                                   f"{type(e).__name__}); restore it from git or retrain the run") from e
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def evaluate_run(run_dir: str | Path, data: str | None = None, device: str = "auto") -> dict:
    """Test error of a finished run's saved weights, on its own data source or on ``data``.

    The per-pixel mean is that of the evaluated source's training images (the same as in training when the
    source is the run's own)."""
    dev = resolve_device(device)
    model, meta = load_weights(run_dir, dev)
    cfg = TrainConfig.from_dict(meta["config"])
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    dd = prepare_data(cfg, dev)
    loss, error = evaluate(model, dd.test_x, dd.test_y, cfg.precision)
    return {"name": meta["name"], "data_source": dd.source, "data_checksum": dd.checksum, "test_loss": loss,
            "test_error": error, "recorded_test_error": meta["final_test_error"],
            "same_data": dd.checksum == meta["data_checksum"]}


def sweep(configs: list[TrainConfig], results_dir: str | Path = "results", *, parallel: int = 1,
          stop_at: int | None = None, time_limit: float | None = None, progress: bool = True) -> list[dict]:
    """Train, in the order given, every config not yet finished in ``results_dir``, and return their metadata.

    ``parallel`` > 1 runs that many at once (separate processes, e.g. to fill one GPU with small networks).
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

    def time_left() -> float | None:
        return None if deadline is None else deadline - time.perf_counter()

    def out_of_time() -> bool:
        return deadline is not None and time_left() <= 0

    if parallel <= 1:
        metas = []
        for c in configs:
            if c in pending and out_of_time():
                break
            meta = train(c, results_dir, stop_at=stop_at, time_limit=time_left(), progress=progress)
            metas.append(meta)
            if meta["status"] != "finished" and (stop_at is None or meta["iterations_done"] < stop_at):
                break  # stopped by the time limit: the next run would not fit either
        return metas
    import subprocess
    import sys

    from .config import config_to_args

    running: list[tuple[TrainConfig, subprocess.Popen]] = []
    started, failed = set(), []
    while (pending and not out_of_time()) or running:
        while pending and len(running) < parallel and not out_of_time():
            c = pending.pop(0)
            limits = ([] if stop_at is None else ["--stop-at", str(stop_at)]) + (
                [] if deadline is None else ["--time-limit", str(time_left())])
            cmd = [sys.executable, "-m", "resnet", "train", "--results", str(results_dir), "--quiet", *limits,
                   *config_to_args(c)]
            running.append((c, subprocess.Popen(cmd)))
            started.add(c)
        time.sleep(1.0)
        for c, p in list(running):
            if p.poll() is not None:
                running.remove((c, p))
                if p.returncode:
                    failed.append(c.name)
    if failed:
        raise RuntimeError(f"runs failed: {', '.join(failed)} (see their output above and their run.json)")
    return [results.read_meta(c.run_dir(results_dir) / results.META_FILE) for c in configs
            if c in started or c not in pending]


def pretrained(name: str, results_dir: str | Path | None = None, device="cpu", study: str | None = None):
    """A committed model by run name ('resnet56-seed0') or network ('resnet56', lowest seed), in eval mode.

    Looked for in every study under ``results_dir`` (or in ``study`` only); where several hold it, the longest
    schedule wins, then the official data, then the lowest seed.
    """
    root = Path(results_dir) if results_dir is not None else Path(__file__).resolve().parent.parent / "results"
    studies = [root / study] if study else sorted(p for p in root.glob("*") if p.is_dir())
    candidates = []
    for folder in studies:
        for meta_path in folder.glob(f"*/{results.META_FILE}"):
            run = meta_path.parent.name
            seed = run.rsplit("-seed", 1)[-1]
            if run != name and not (run.startswith(f"{name}-seed") and seed.isdigit()):
                continue
            meta = results.read_meta(meta_path)
            if meta["status"] == "finished":
                cfg = TrainConfig.from_dict(meta["config"])
                candidates.append(((-cfg.total_iterations, meta["data_source"] != "official", cfg.seed, folder.name),
                                   meta_path.parent))
    if not candidates:
        available = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob(f"*/*/{results.META_FILE}"))
        raise FileNotFoundError(f"no finished run named {name!r} in {root}; available: {available or 'none'}")
    return load_weights(min(candidates)[1], device)[0]
