"""Results files — their schema, written down once and validated when read — and the error table.

Runs live in ``<results>/<study>/<run>/`` (a study: one data source, schedule and precision).
A run folder holds ``log.csv`` (CSV_COLUMNS, one row per evaluation),
``run.json`` (META_FIELDS) and, once finished, ``weights.pt``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING


from .config import TrainConfig, identity_fields, schedule_label, study_label

if TYPE_CHECKING:  # pandas is imported where tables are read or made: loading a model needs torch alone
    import pandas as pd

CSV_FILE, META_FILE, WEIGHTS_FILE = "log.csv", "run.json", "weights.pt"

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
}


class ResultsError(ValueError):
    """A results file is missing or malformed."""


def _write_atomic(text: str, path: Path):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_meta(meta: dict, path: Path):
    _check_meta(meta, path)
    _write_atomic(json.dumps(meta, indent=1, sort_keys=False) + "\n", path)


def read_meta(path: Path) -> dict:
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from e
    _check_meta(meta, path)
    return meta


def _check_meta(meta, path):
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    for key, types in META_FIELDS.items():
        if key not in meta:
            raise ResultsError(f"{path}: field {key!r} missing")
        if not isinstance(meta[key], types) or isinstance(meta[key], bool):
            raise ResultsError(f"{path}: field {key!r} has type {type(meta[key]).__name__}")
    for key, types in OPTIONAL_META_FIELDS.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise ResultsError(f"{path}: field {key!r} has type {type(meta[key]).__name__}")
    if meta["status"] not in STATUSES:
        raise ResultsError(f"{path}: status {meta['status']!r} is not one of {STATUSES}")
    if meta["status"] == "finished" and meta["final_test_error"] is None:
        raise ResultsError(f"{path}: finished run without final_test_error")


def write_csv(rows: list[dict], path: Path):
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # repr(float(...)) keeps every digit, also of numpy scalars (whose own repr is 'np.float64(...)')
        writer.writerow({k: "" if row[k] is None else repr(float(row[k])) if isinstance(row[k], float) else row[k]
                         for k in CSV_COLUMNS})
    _write_atomic(buf.getvalue(), path)


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
            if meta["final_test_error"] != log["test_error"].iloc[-1]:
                raise ResultsError(f"{meta_path}: final_test_error {meta['final_test_error']} is not the last test "
                                   f"error of {CSV_FILE} ({log['test_error'].iloc[-1]})")
            if not (meta_path.parent / WEIGHTS_FILE).exists():
                raise ResultsError(f"{meta_path.parent}: finished run without {WEIGHTS_FILE}")
        runs.append(Run(meta_path.parent, meta, log))
    return sorted(runs, key=lambda r: (r.study, r.meta["name"]))


def by_study(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs grouped by study, studies in name order."""
    studies: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.study):
        studies.setdefault(run.study, []).append(run)
    return studies


# He et al. 2016, Table 6 (ResNets; 110: best of 5 runs, mean 6.61 ± 0.16) and the plain-net
# final test errors read off Figure 6 (approximate; not printed in the paper).
PAPER_TEST_ERROR = {("resnet", 20): 8.75, ("resnet", 32): 7.51, ("resnet", 44): 7.17, ("resnet", 56): 6.97,
                    ("resnet", 110): 6.43, ("resnet", 1202): 7.93,
                    ("plain", 20): 9.7, ("plain", 32): 10.1, ("plain", 44): 11.4, ("plain", 56): 13.2}
# What peers report on official CIFAR-10 (../shared/PAPER.md); the first two pick the best test epoch.
PEER_TEST_ERROR = {
    "akamaster (best epoch, 200 ep.)": {("resnet", 20): 8.27, ("resnet", 32): 7.37, ("resnet", 44): 6.90,
                                        ("resnet", 56): 6.61, ("resnet", 110): 6.32},
    "a-martyn (best epoch, 164 ep.)": {("resnet", 20): 8.0, ("resnet", 32): 7.51, ("resnet", 44): 7.38,
                                       ("resnet", 56): 7.33, ("plain", 20): 9.5, ("plain", 32): 9.92,
                                       ("plain", 44): 11.35, ("plain", 56): 12.76},
    "nabla0001 (final, mean of 5)": {("resnet", 20): 8.51, ("resnet", 56): 7.40, ("resnet", 110): 7.14,
                                     ("plain", 20): 9.78, ("plain", 56): 12.95},
}


# The settings that make a run the paper's protocol (section 4.2) when they keep their defaults.
PROTOCOL_FIELDS = ("batch_size", "iterations", "lr", "milestones", "lr_decay", "momentum", "weight_decay", "warmup",
                   "warmup_lr", "warmup_until_error", "warmup_max_iterations", "schedule", "train_subset",
                   "test_subset", "val_size")


def paper_protocol(config: dict) -> bool:
    """A run comparable with the paper's Figure 6 / Table 6: plain or option A, the paper's full schedule and
    optimiser, trained on all training images and tested on all test images (the data source is labelled
    beside, not judged, here)."""
    cfg, paper = TrainConfig.from_dict(config), TrainConfig()
    return (cfg.net == "plain" or cfg.shortcut == "A") and all(
        getattr(cfg, f) == getattr(paper, f) for f in PROTOCOL_FIELDS)


def network_label(config: dict) -> str:
    if config["net"] == "plain":
        label = f"plain-{config['depth']}"
    else:
        label = f"ResNet-{config['depth']}" + ("" if config["shortcut"] == "A" else f" ({config['shortcut']})")
    return label + (f" [val {config['val_size']}]" if config.get("val_size") else "")


def _mean_std(values: list[float]) -> str:
    import pandas as pd

    s = pd.Series(values)
    return f"{s.mean():.2f}" if len(s) == 1 else f"{s.mean():.2f} ± {s.std(ddof=1):.2f}"


def error_table(runs: list[Run], peers: bool = False) -> pd.DataFrame:
    """One row per network: final test error (mean ± std over seeds), best-epoch error (labelled), the paper's."""
    import pandas as pd

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        c, cfg = run.config, TrainConfig.from_dict(run.config)
        # seeds of one network: runs equal in every setting of their identity but the seed (and the data's path)
        same = repr([getattr(cfg, f) for f in identity_fields() if f not in ("seed", "data")])
        key = (run.study, c["net"] != "resnet", c["depth"], c["shortcut"], c.get("val_size", 0), same,
               run.meta["data_source"])
        groups.setdefault(key, []).append(run)
    records = []
    for key in sorted(groups):
        group = groups[key]
        c = group[0].config
        cfg = TrainConfig.from_dict(c)
        paper = PAPER_TEST_ERROR.get((c["net"], c["depth"])) if paper_protocol(c) else None
        record = {
            "network": network_label(c),
            "settings": own_settings(cfg),
            "params": group[0].meta["parameters"],
            "seeds": len(group),
            "schedule": schedule_label(cfg.schedule),
            "iterations": cfg.total_iterations,
            "precision": cfg.precision,
            "test error % (final)": _mean_std([r.meta["final_test_error"] for r in group]),
            "train error % (final)": _mean_std([r.meta["final_train_error"] for r in group]),
            "test error % (best epoch, test-picked)": _mean_std([r.meta["best_test_error"] for r in group]),
            "paper": "" if paper is None else (f"{paper:.2f}" + ("~" if c["net"] == "plain" else "")),
            "data": ", ".join(sorted({r.meta["data_source"] for r in group})),
        }
        if peers:
            for peer, values in PEER_TEST_ERROR.items():
                v = values.get((c["net"], c["depth"])) if paper is not None else None
                record[peer] = "" if v is None else f"{v:.2f}"
        records.append(record)
    table = pd.DataFrame.from_records(records)
    if not table.empty and not table["settings"].any():
        table = table.drop(columns="settings")  # all of the paper's: nothing to say
    return table


# shown elsewhere in a table row (network, seeds, schedule, precision, data) or not about what is trained
_SHOWN = ("net", "depth", "shortcut", "seed", "data", "schedule", "precision", "val_size")


def own_settings(cfg: TrainConfig) -> str:
    """The settings of a run's identity that differ from the paper's, e.g. 'lr 0.05, batch_size 64'."""
    paper = TrainConfig()
    return ", ".join(f"{f} {getattr(cfg, f)}" for f in identity_fields()
                     if f not in _SHOWN and getattr(cfg, f) != getattr(paper, f))


def format_table(df: pd.DataFrame) -> str:
    """Stable plain text for the notebook, the README and regression checks."""
    if df.empty:
        return "(no finished runs)"
    return df.to_string(index=False)


def comparable(config: dict) -> bool:
    """A run whose curves and claims can be set beside the paper's within its study: plain or option A, no
    validation split, all training and test images (any schedule, data or precision)."""
    return (config["net"] == "plain" or config["shortcut"] == "A") and not config.get("val_size") and not (
        config.get("train_subset") or config.get("test_subset"))


def findings(runs: list[Run]) -> list[str]:
    """The paper's claims checked, study by study, against finished plain/option-A runs (final errors, mean over
    seeds); the difference from the paper's numbers only for runs of the paper's protocol."""
    lines = []
    for study, study_runs in by_study([r for r in runs if comparable(r.config)]).items():
        lines.append(f"{study_label(study_runs[0].config)}:")
        lines += ["  " + line for line in _study_findings(study_runs)]
    return lines or ["no finished runs to compare with the paper"]


def _study_findings(runs: list[Run]) -> list[str]:
    final: dict[tuple[str, int], list[tuple[float, float]]] = {}
    protocol = {}
    for run in runs:
        c = run.config
        final.setdefault((c["net"], c["depth"]), []).append((run.meta["final_test_error"], run.meta["final_train_error"]))
        protocol[(c["net"], c["depth"])] = paper_protocol(c)
    mean = {k: (sum(t for t, _ in v) / len(v), sum(tr for _, tr in v) / len(v)) for k, v in final.items()}
    lines = []
    for (net, depth), (test, _) in sorted(mean.items()):
        paper = PAPER_TEST_ERROR.get((net, depth))
        label = f"{'ResNet' if net == 'resnet' else 'plain'}-{depth}"
        if paper is not None and protocol[(net, depth)]:
            approx = " (read off Fig. 6)" if net == "plain" else ""
            lines.append(f"{label}: {test:.2f}% vs paper {paper:.2f}%{approx}, {test - paper:+.2f} points")
        elif paper is not None:
            lines.append(f"{label}: {test:.2f}% (not the paper's protocol: not compared with its {paper:.2f}%)")
    for net, claim in (("plain", "deeper plain nets are worse (degradation)"), ("resnet", "deeper ResNets are better")):
        depths = sorted(d for n, d in mean if n == net and d != 1202 and not (net == "plain" and d == 110))
        if len(depths) < 2:
            continue
        for what, i in (("test", 0), ("training", 1)):
            errors = [mean[(net, d)][i] for d in depths]
            ordered = all(a < b for a, b in zip(errors, errors[1:])) if net == "plain" else all(
                a > b for a, b in zip(errors, errors[1:]))
            seq = ", ".join(f"{d}: {e:.2f}" for d, e in zip(depths, errors))
            lines.append(f"{claim}, {what} error: {'holds' if ordered else 'does not hold'} ({seq})")
    return lines
