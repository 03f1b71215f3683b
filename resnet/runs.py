"""Finished runs: finding them, loading their weights (verified), and evaluating them again."""
from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from . import results
from .config import TrainConfig, network_name
from .batches import DeviceData, device_data
from .models import CifarNet, build_model
from .evaluation import evaluate, resolve_device


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

    from .data import DataError, cached_source

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
    meta = results.read_meta(run_dir / results.META_FILE)
    if meta["status"] != "finished":
        raise ValueError(f"{run_dir}: run is {meta['status']}, not finished")
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
    from .compare import paper_protocol

    root = Path(results_dir) if results_dir is not None else Path(__file__).resolve().parent.parent / "results"
    studies = [root / study] if study else sorted(p for p in root.glob("*") if p.is_dir())
    candidates = []
    for folder in studies:
        for meta_path in folder.glob(f"*/{results.META_FILE}"):
            meta = results.read_meta(meta_path)
            cfg = TrainConfig.from_dict(meta["config"])
            if meta["status"] == "finished" and name in (cfg.name, network_name(cfg.net, cfg.depth, cfg.shortcut)):
                candidates.append(((not paper_protocol(meta["config"]), -cfg.total_iterations,
                                    meta["data_source"] != "official", cfg.seed, folder.name), meta_path.parent))
    if not candidates:
        available = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob(f"*/*/{results.META_FILE}"))
        raise FileNotFoundError(f"no finished run named {name!r} in {root}; available: {available or 'none'}")
    return min(candidates)[1]


def pretrained(name: str, results_dir: str | Path | None = None, device="cpu", study: str | None = None,
               quiet: bool = False) -> CifarNet:
    """A committed model (eval mode) by run name or network; see ``find_run`` for which run is chosen, which is
    said on stderr (unless ``quiet``) and kept as the model's ``run`` attribute (its folder)."""
    import sys

    from .compare import paper_protocol
    from .config import study_label

    path = find_run(name, results_dir, study)
    run = load_run(path, device)
    run.model.run = path
    if not quiet:
        config = run.meta["config"]
        protocol = "" if paper_protocol(config) else ", not the paper's protocol"
        print(f"{name}: the weights of {path.parent.name}/{path.name} ({study_label(config)}{protocol}; test error "
              f"{run.meta['final_test_error']:.2f}% on {run.meta['data_source']})", file=sys.stderr)
    return run.model
