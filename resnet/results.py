"""Results files: their schema, written down once and validated when read, and the runs read back from them.

Runs live in ``<results>/<study>/<run>/`` (a study: one data source, schedule and precision).
A run folder holds ``log.csv`` (CSV_COLUMNS, one row per evaluation),
``run.json`` (META_FIELDS) and, once finished, ``weights.pt``; while unfinished, ``checkpoint.pt``; while a process
trains it, ``train.lock``; trained by a parallel sweep, ``train.log``. Their names are declared here alone.

A run's folder, ``<results>/<study>/<name>/``: whether it already holds this run, and who is training it.

A folder holds one run; the settings of a run's identity (``config.identity_fields``) and the data's name must
match for a folder to be reused, and one process at a time trains it (an flock on ``train.lock``).

Finished runs: finding them, loading their weights (verified), and evaluating them again.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import TrainConfig, identity_fields, network_name, paper_protocol, source_name, study_label
from .data import DataError, DeviceData, cached_source, device_data
from .files import write_atomic
from .models import CifarNet, build_model
from .steps import evaluate, resolve_device


if TYPE_CHECKING:  # pandas is imported where tables are read or made: loading a model needs torch alone
    import pandas as pd

CSV_FILE, META_FILE, WEIGHTS_FILE = "log.csv", "run.json", "weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"  # an unfinished run's state (``trainer.save_checkpoint``), removed once it finishes
LOCK_FILE = "train.lock"  # held by the process training the run (``run_lock``)
LOG_FILE = "train.log"  # a parallel sweep's run: its process's output

# column: meaning (units). Rows are written at every evaluation point.
CSV_COLUMNS = {
    "iteration": "iterations done (int)",
    "epoch": "images seen / training images",
    "lr": "learning rate of the last update",
    "train_loss": "mean cross-entropy over the augmented batches since the previous row",
    "train_error": "error (%) over the augmented batches since the previous row",
    "test_loss": "mean cross-entropy on the test set (eval mode)",
    "test_error": "error (%) on the test set (eval mode)",
    "val_loss": "as test_loss, on the held-out validation set (empty without one)",
    "val_error": "as test_error, on the held-out validation set (empty without one)",
    "elapsed_s": "wall seconds of training so far, evaluations included, across resumes",
    "images_per_s": "training images per second since the previous row",
}
OPTIONAL_COLUMNS = ("val_loss", "val_error")

STATUSES = ("running", "finished", "diverged")
# field: type(s). None is allowed where the type tuple holds type(None).
NUM, OPT_NUM, OPT_INT = (int, float), (int, float, type(None)), (int, type(None))
META_FIELDS = {
    "name": str, "status": str, "config": dict,
    "data_source": str, "data_checksum": str, "n_train": int, "n_val": int, "n_test": int,
    "torch": str, "device_name": str, "git_commit": str, "parameters": int,
    "iterations_done": int, "warmup_end": OPT_INT,
    "final_test_error": OPT_NUM, "best_test_error": OPT_NUM, "best_test_iteration": OPT_INT,
    "final_train_error": OPT_NUM, "wall_s": NUM, "started": str, "finished": (str, type(None)),
}
# fields that older runs may lack, checked when present
OPTIONAL_META_FIELDS = {
    "weights_sha256": str,  # of weights.pt, checked when the weights are loaded
    "cpu_threads": int,  # torch's intra-op threads while training (a resume is bit-for-bit only with as many)
    "note": str,  # how a run was changed after training (e.g. moved into its study folder)
    # the last session's numerics on CUDA (see provenance.numerics): TF32 and cuDNN's algorithm choice
    "tf32_matmul": bool, "tf32_cudnn": bool, "cudnn_benchmark": bool, "cudnn_deterministic": bool,
    "concurrent_runs": int,  # runs sharing the device at once in the last session, at most (a parallel sweep's)
    "reseeded": list,  # resumes on another device, whose generator was re-seeded (see checkpoint.restore)
    "restarted": list,  # restarts from the beginning after the checkpoint was lost (see trainer._lost_checkpoint)
    "threads_changed": list,  # CPU resumes under another thread count (see trainer.note_threads)
    "layout": str,  # of the weights and batches while training, 'channels_last' or 'contiguous' (see steps.LAYOUT)
    "devices": list,  # the devices it trained on, each from an iteration on (see trainer.note_device)
}


class ResultsError(ValueError):
    """A results file is missing or malformed."""


def write_meta(meta: dict, path: Path):
    check_meta(meta, path)
    write_atomic(meta_text(meta), path)


def meta_text(meta: dict) -> str:
    """run.json's text for ``meta``."""
    return json.dumps(meta, indent=1, sort_keys=False) + "\n"


def read_meta(path: Path) -> dict:
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from e
    check_meta(meta, path)
    return meta


def _typed(value, types) -> bool:
    """isinstance, except that a bool is no number (JSON's true is not 1)."""
    return isinstance(value, types) and (types is bool or not isinstance(value, bool))


def check_meta(meta, path):
    """Raise ResultsError, naming ``path``, unless ``meta`` has every field of META_FIELDS with its type."""
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    for key, types in META_FIELDS.items():
        if key not in meta:
            raise ResultsError(f"{path}: field {key!r} missing")
        if not _typed(meta[key], types):
            raise ResultsError(f"{path}: field {key!r} has type {type(meta[key]).__name__}")
    for key, types in OPTIONAL_META_FIELDS.items():
        if key in meta and not _typed(meta[key], types):
            raise ResultsError(f"{path}: field {key!r} has type {type(meta[key]).__name__}")
    if meta["status"] not in STATUSES:
        raise ResultsError(f"{path}: status {meta['status']!r} is not one of {STATUSES}")
    if meta["status"] == "finished" and meta["final_test_error"] is None:
        raise ResultsError(f"{path}: finished run without final_test_error")
    for key in PERCENT_FIELDS:
        if meta[key] is not None and not (math.isfinite(meta[key]) and 0 <= meta[key] <= 100):
            raise ResultsError(f"{path}: field {key!r} is {meta[key]}, not a percentage in [0, 100]")
    for key in COUNT_FIELDS:
        value = meta.get(key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ResultsError(f"{path}: field {key!r} is {value}, not a count or duration (finite, not negative)")
    try:
        cfg = TrainConfig.from_dict(meta["config"])
    except (ValueError, TypeError) as e:
        raise ResultsError(f"{path}: field 'config': {e}") from None
    missing = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(meta["config"]) - LATER_SETTINGS)
    if missing:
        raise ResultsError(f"{path}: field 'config' lacks the settings {missing}")
    if meta["name"] != cfg.name:
        raise ResultsError(f"{path}: field 'name' is {meta['name']!r}, but its settings make the run {cfg.name!r}")
    if meta["iterations_done"] > cfg.total_iterations:
        raise ResultsError(f"{path}: field 'iterations_done' is {meta['iterations_done']}, past the run's "
                           f"{cfg.total_iterations} iterations")
    for key, fields in HISTORY_FIELDS.items():
        for entry in meta.get(key, []):
            if not (isinstance(entry, dict) and set(entry) == set(fields)
                    and all(_typed(entry[f], t) for f, t in fields.items())):
                raise ResultsError(f"{path}: field {key!r} has an entry {entry!r}, expected "
                                   f"{{{', '.join(f'{f!r}: {t.__name__}' for f, t in fields.items())}}}")


# settings added after runs were recorded without them: how a run was run, not what it is (older runs' steps
# were eager)
LATER_SETTINGS = {"cuda_graph"}
PERCENT_FIELDS = ("final_test_error", "best_test_error", "final_train_error")
COUNT_FIELDS = ("n_train", "n_val", "n_test", "parameters", "iterations_done", "warmup_end", "best_test_iteration",
                "wall_s", "cpu_threads", "concurrent_runs")
# the entries of run.json's histories: a resume on another device; a restart after a lost checkpoint; a resume
# under another CPU thread count
HISTORY_FIELDS = {"reseeded": {"iteration": int, "from": str, "to": str},
                  "restarted": {"lost_iteration": int, "restarted": str},
                  "threads_changed": {"iteration": int, "from": int, "to": int},
                  "devices": {"iteration": int, "device": str}}


def write_csv(rows: list[dict], path: Path):
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # repr(float(...)) keeps every digit, also of numpy scalars (whose own repr is 'np.float64(...)')
        writer.writerow({k: "" if row[k] is None else repr(float(row[k])) if isinstance(row[k], float) else row[k]
                         for k in CSV_COLUMNS})
    write_atomic(buf.getvalue(), path)


def read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not a readable CSV ({e})") from e
    if list(df.columns) != list(CSV_COLUMNS):
        raise ResultsError(f"{path}: columns {list(df.columns)}, expected {list(CSV_COLUMNS)}")
    if df.empty:
        raise ResultsError(f"{path}: no rows")
    for col in CSV_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise ResultsError(f"{path}: column {col!r} has a non-number in row {int(bad.idxmax()) + 1}")
        finite = values.dropna().map(math.isfinite)
        if not finite.all() or (col not in OPTIONAL_COLUMNS and values.isna().any()):
            raise ResultsError(f"{path}: column {col!r} has empty or non-finite values")
        df[col] = values
    if not df["iteration"].is_monotonic_increasing or df["iteration"].duplicated().any():
        raise ResultsError(f"{path}: iterations are not strictly increasing")
    df["iteration"] = df["iteration"].astype(int)
    return df


@dataclass
class Run:
    path: Path
    meta: dict
    log: pd.DataFrame

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def devices(self) -> list[str]:
        """The devices the run trained on, by name, in order (run.json's ``devices``; older runs: their last one)."""
        return [d["device"] for d in self.meta.get("devices", [])] or [self.meta["device_name"]]

    @property
    def study(self) -> str:
        """The study's folder name, e.g. 'cifar10-jpeg-1of8-bf16' (from the settings, not the folder)."""
        return TrainConfig.from_dict(self.config).study


def load_runs(results_dir: str | Path, finished_only: bool = True) -> list[Run]:
    """Every run folder (one holding run.json) below ``results_dir``, of every study, validated, sorted by
    study and name."""
    import pandas as pd

    runs = []
    for meta_path in sorted(Path(results_dir).rglob(META_FILE)):
        meta = read_meta(meta_path)
        if meta_path.parent.name != meta["name"]:  # a copy (e.g. '-backup') would count as another seed
            raise ResultsError(f"{meta_path.parent} holds the run {meta['name']!r}: a run's folder bears its "
                               "name; rename it, or move the copy out of the results folder")
        if finished_only and meta["status"] != "finished":
            continue
        csv_path = meta_path.parent / CSV_FILE
        if meta["status"] != "finished" and not csv_path.exists():  # started, not yet evaluated
            log = pd.DataFrame(columns=list(CSV_COLUMNS))
        else:
            log = read_csv(csv_path)
        if meta["status"] == "finished":
            total = TrainConfig.from_dict(meta["config"]).total_iterations
            if log["iteration"].iloc[-1] != total:
                raise ResultsError(f"{meta_path.parent}: finished run whose log ends at iteration "
                                   f"{log['iteration'].iloc[-1]}, not {total}")
            _agrees_with_log(meta, log, meta_path, total)
            if not (meta_path.parent / WEIGHTS_FILE).exists():
                raise ResultsError(f"{meta_path.parent}: finished run without {WEIGHTS_FILE}")
        runs.append(Run(meta_path.parent, meta, log))
    return sorted(runs, key=lambda r: (r.study, r.meta["name"]))


def _agrees_with_log(meta: dict, log: pd.DataFrame, path: Path, total: int):
    """A finished run's recorded outcome is its log's: final and best errors, the best's iteration, the iterations."""
    best = log.loc[log["test_error"].idxmin()]
    recorded = {"final_test_error": (meta["final_test_error"], log["test_error"].iloc[-1], "the last test error"),
                "final_train_error": (meta["final_train_error"], log["train_error"].iloc[-1], "the last training error"),
                "best_test_error": (meta["best_test_error"], best["test_error"], "the lowest test error"),
                "best_test_iteration": (meta["best_test_iteration"], int(best["iteration"]), "the lowest test error's iteration"),
                "iterations_done": (meta["iterations_done"], total, "the run's iterations")}
    for key, (value, logged, what) in recorded.items():
        if value != logged:
            raise ResultsError(f"{path}: {key} {value} is not {what} of {CSV_FILE} ({logged})")


def by_study(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs grouped by study, studies in name order."""
    studies: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.study):
        studies.setdefault(run.study, []).append(run)
    return studies


class RunConflict(RuntimeError):
    """A results folder already holds a different run under the same name."""


class RunLocked(RuntimeError):
    """Another process is training this run."""


def differences(recorded: TrainConfig, requested: TrainConfig) -> list[str]:
    """What makes ``requested`` another run than ``recorded``, one phrase per setting ([] for the same run).

    The folder holding the data may differ between machines; the data's name may not (official vs the JPEG
    stand-in), nor any setting of the run's identity (the device and checkpoint interval are not)."""
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
    meta_path = cfg.run_dir(results_dir) / META_FILE
    if not meta_path.exists():
        return None
    meta = read_meta(meta_path)
    diffs = differences(TrainConfig.from_dict(meta["config"]), cfg)
    if diffs:
        raise RunConflict(f"{meta_path.parent} holds a run with other settings: {'; '.join(diffs)}. "
                          "Move it away or choose another results folder")
    return meta if meta["status"] == "finished" else None


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold the run folder's exclusive lock while training it; a second process is refused, told which holds it.

    An flock, released by the kernel on any exit of its process (a crash or kill -9 included), so no lock
    outlives its process and none needs clearing by hand. The file names its holder, for the message.
    """
    import fcntl

    path = Path(run_dir) / LOCK_FILE
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


@dataclass
class LoadedRun:
    """A finished run's trained network (eval mode, on ``device``) and its metadata."""

    model: CifarNet
    meta: dict
    device: torch.device

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["config"])

    def data(self, source: str | None = None) -> DeviceData:
        """The run's own data (its subsets and split), or the same images of another ``source``; the per-pixel mean
        is that of the source's training images (as in training when the source is the run's own). See
        ``own_source`` for where the run's own data is looked for."""
        cfg = dataclasses.replace(self.config, data=source or own_source(self.meta))
        dd = device_data(cfg, self.device)
        if source is None and cfg.data != self.meta["config"]["data"] and dd.checksum != self.meta["data_checksum"]:
            from .data import DataError

            raise DataError(f"RESNET_DATA ({cfg.data}) is not the data {self.meta['name']} was trained on: its "
                            f"images' sha256 is {dd.checksum[:12]}…, the run's {self.meta['data_checksum'][:12]}… "
                            f"({self.meta['data_source']}); pass --data to evaluate on other images on purpose")
        return dd


def own_source(meta: dict) -> str:
    """Where a run's own data is on this machine: the path run.json records, else RESNET_DATA (a copy moved
    elsewhere, or on another machine), else the cache's decoded copy of the images of the run's checksum, else a
    DataError naming the data by name and checksum."""
    import os


    recorded = meta["config"]["data"]
    if recorded == "official" or Path(recorded).exists():
        return recorded
    elsewhere = os.environ.get("RESNET_DATA", "")
    if elsewhere and Path(elsewhere).exists():
        return elsewhere  # its checksum is compared with the run's by whoever evaluates (``same_data``)
    cached = cached_source(meta["data_checksum"])
    if cached is not None:
        return str(cached)
    raise DataError(f"the data {meta['name']} was trained on ({meta['data_source']}, decoded images' sha256 "
                    f"{meta['data_checksum'][:12]}…) is not at {recorded} on this machine, nor in the data cache: "
                    "pass --data (or set RESNET_DATA to) a copy of it")


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """The finished run in ``run_dir``: its weights, checked against the sha256 in run.json, in a fresh network."""
    run_dir, device = Path(run_dir), resolve_device(str(device))
    meta = read_meta(run_dir / META_FILE)
    if meta["status"] != "finished":
        raise ValueError(f"{run_dir}: run is {meta['status']}, not finished")
    path = run_dir / WEIGHTS_FILE
    raw = path.read_bytes()
    if "weights_sha256" in meta and hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
        raise ResultsError(f"{path}: damaged (its sha256 is not the one {META_FILE} records); "
                                   "restore it from git or retrain the run")
    try:
        state = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise ResultsError(f"{path}: unreadable weights (damaged, truncated or not a state dict: "
                                   f"{type(e).__name__}); restore it from git or retrain the run") from e
    model = build_model(TrainConfig.from_dict(meta["config"]))
    model.load_state_dict(state)
    return LoadedRun(model.to(device).eval(), meta, device)


def evaluate_run(run_dir: str | Path, data: str | None = None, device: str = "auto",
                 precision: str | None = None) -> dict:
    """Test error of a finished run's saved weights, on its own data source or on ``data``, in the run's own
    precision or in ``precision``."""
    run = load_run(run_dir, device)
    dd = run.data(data)
    loss, error = evaluate(run.model, dd.test_x, dd.test_y, precision or run.config.precision)
    return {"name": run.meta["name"], "data_source": dd.source, "data_checksum": dd.checksum, "test_loss": loss,
            "test_error": error, "recorded_test_error": run.meta["final_test_error"],
            "same_data": dd.checksum == run.meta["data_checksum"]}


def find_run(name: str, results_dir: str | Path | None = None, study: str | None = None) -> Path:
    """The folder of a finished run by run name ('resnet56-seed0') or network ('resnet56', 'resnet20B').

    Looked for in every study under ``results_dir`` (default: the committed results) or in ``study`` only; where
    several hold it, a run of the paper's protocol wins, then the longest schedule, then the official data, then
    the lowest seed.
    """

    root = Path(results_dir) if results_dir is not None else Path(__file__).resolve().parent.parent / "results"
    studies = [root / study] if study else sorted(p for p in root.glob("*") if p.is_dir())
    candidates = []
    for folder in studies:
        for meta_path in folder.glob(f"*/{META_FILE}"):
            meta = read_meta(meta_path)
            cfg = TrainConfig.from_dict(meta["config"])
            if meta["status"] == "finished" and name in (cfg.name, network_name(cfg.net, cfg.depth, cfg.shortcut)):
                candidates.append(((not paper_protocol(meta["config"]), -cfg.total_iterations,
                                    meta["data_source"] != "official", cfg.seed, folder.name), meta_path.parent))
    if not candidates:
        available = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob(f"*/*/{META_FILE}"))
        raise FileNotFoundError(f"no finished run named {name!r} in {root}; available: {available or 'none'}")
    return min(candidates)[1]


def pretrained(name: str, results_dir: str | Path | None = None, device="cpu", study: str | None = None,
               quiet: bool = False) -> CifarNet:
    """A committed model (eval mode) by run name or network; see ``find_run`` for which run is chosen, which is
    said on stderr (unless ``quiet``) and kept as the model's ``run`` attribute (its folder)."""
    import sys

    path = find_run(name, results_dir, study)
    run = load_run(path, device)
    run.model.run = path
    if not quiet:
        config = run.meta["config"]
        protocol = "" if paper_protocol(config) else ", not the paper's protocol"
        print(f"{name}: the weights of {path.parent.name}/{path.name} ({study_label(config)}{protocol}; test error "
              f"{run.meta['final_test_error']:.2f}% on {run.meta['data_source']})", file=sys.stderr)
    return run.model
