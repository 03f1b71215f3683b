"""Studies that travel: a study's runs packed into one archive (optionally split into parts of a given size), and
unpacked into a results folder with the same checks as training, so that a study trained on a GPU box, a cluster
or a notebook service comes home in one file and resumes or re-plots here.

The archive is a tar of ``manifest.json`` (the sha256 of every file) and ``<study>/<run>/<file>`` for each run:
run.json and log.csv, with weights.pt when finished, checkpoint.pt when not (exported only when asked).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Iterable

from . import checkpoint, results
from .config import TrainConfig
from .files import write_atomic
from .provenance import git_commit
from .runfolder import RunConflict, differences, run_lock
from .trainer import CHECKPOINT_FILE

FORMAT = 1
MANIFEST = "manifest.json"
FINISHED_FILES = (results.WEIGHTS_FILE, results.CSV_FILE, results.META_FILE)  # run.json last: it marks completion
RUNNING_FILES = (CHECKPOINT_FILE, results.CSV_FILE, results.META_FILE)


def export_study(study: str | Path, out: str | Path, *, unfinished: bool = False,
                 part_mb: float | None = None, names: Iterable[str] | None = None) -> list[Path]:
    """Pack the runs of the study folder ``study`` into ``out`` (or ``out.part000``, ``out.part001``, ... of at
    most ``part_mb`` MB each) and return the files written. Finished runs always; unfinished ones (their
    checkpoints) when ``unfinished``; only the runs ``names`` when given. Each run is read under its lock, so none
    is caught half-written."""
    study = Path(study)
    runs, members = {}, {}
    meta_paths = sorted(study.glob(f"*/{results.META_FILE}"))
    if names is not None:
        names = set(names)
        missing = names - {m.parent.name for m in meta_paths}
        if missing:
            raise ValueError(f"{study}: no run {', '.join(sorted(missing))} to export")
        meta_paths = [m for m in meta_paths if m.parent.name in names]
    for meta_path in meta_paths:
        run_dir = meta_path.parent
        with run_lock(run_dir):
            meta = results.read_meta(meta_path)
            if meta["status"] == "diverged" or (meta["status"] == "running" and not unfinished):
                continue
            names = FINISHED_FILES if meta["status"] == "finished" else RUNNING_FILES
            missing = [n for n in names if not (run_dir / n).exists()]
            if missing:
                raise results.ResultsError(f"{run_dir}: {meta['status']} run without {', '.join(missing)}")
            files = {n: (run_dir / n).read_bytes() for n in names}
        runs[run_dir.name] = {"status": meta["status"], "iterations_done": meta["iterations_done"],
                              "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}
        members.update({f"{study.name}/{run_dir.name}/{n}": b for n, b in files.items()})
    if not runs:
        raise ValueError(f"{study}: no {'finished or running' if unfinished else 'finished'} runs to export")
    manifest = {"format": FORMAT, "study": study.name, "runs": runs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "git_commit": git_commit()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {MANIFEST: json.dumps(manifest, indent=1).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    raw, out = buf.getvalue(), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if part_mb is None or len(raw) <= part_mb * 1e6:
        write_atomic(raw, out)
        return [out]
    size = int(part_mb * 1e6)
    if size < 1:
        raise ValueError(f"part size must be positive, got {part_mb} MB")
    parts = [out.with_name(f"{out.name}.part{i:03d}") for i in range(-(-len(raw) // size))]
    for i, part in enumerate(parts):
        write_atomic(raw[i * size:(i + 1) * size], part)
    return parts


def _read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the members of an archive (or of its parts, given the first or their common name)."""
    if path.name.endswith(".part000"):
        path = path.with_name(path.name[: -len(".part000")])
    parts = sorted(path.parent.glob(f"{path.name}.part[0-9][0-9][0-9]"))
    if not path.exists() and not parts:
        raise FileNotFoundError(f"{path}: no such archive (nor its parts {path.name}.part000, ...)")
    if parts and [p.name for p in parts] != [f"{path.name}.part{i:03d}" for i in range(len(parts))]:
        raise ValueError(f"{path}: parts missing between {parts[0].name} and {parts[-1].name}")
    raw = b"".join(p.read_bytes() for p in parts) if parts else path.read_bytes()
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        manifest = json.loads(members.pop(MANIFEST))
    except (tarfile.TarError, KeyError, json.JSONDecodeError, EOFError) as e:
        raise ValueError(f"{path}: not a study archive, or a part is missing or damaged ({type(e).__name__})") from e
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: archive format {manifest.get('format')!r}, expected {FORMAT}")
    for run, entry in manifest["runs"].items():  # only a run's own files: no other path is ever written
        if set(entry["files"]) not in (set(FINISHED_FILES), set(RUNNING_FILES)):
            raise ValueError(f"{path}: run {run!r} with files {sorted(entry['files'])}")
    expected = {f"{manifest['study']}/{run}/{n}": sha for run, r in manifest["runs"].items() for n, sha in r["files"].items()}
    if set(members) != set(expected):
        raise ValueError(f"{path}: members {sorted(set(members) ^ set(expected))} do not match its manifest")
    for name, sha in expected.items():
        if hashlib.sha256(members[name]).hexdigest() != sha:
            raise ValueError(f"{path}: {name} is damaged (its sha256 is not the manifest's)")
    return manifest, members


def import_study(archive: str | Path, results_dir: str | Path = "results") -> dict[str, str]:
    """Unpack a study archive into ``results_dir``; return what happened to each run ('added', 'updated',
    'already here', 'kept: ...'). Nothing is written unless every file checks out; a run is refused (RunConflict)
    where the results folder holds another run of that name (other settings or data) or another finished result."""
    manifest, members = _read_archive(Path(archive))
    study = manifest["study"]
    incoming = {}
    for run, entry in manifest["runs"].items():
        files = {n: members[f"{study}/{run}/{n}"] for n in entry["files"]}
        meta = json.loads(files[results.META_FILE])
        results.check_meta(meta, f"{archive}:{study}/{run}/{results.META_FILE}")
        cfg = TrainConfig.from_dict(meta["config"])
        if (cfg.study, cfg.name) != (study, run):
            raise ValueError(f"{archive}: {study}/{run} holds the run {cfg.study}/{cfg.name}")
        if meta["status"] == "running":
            checkpoint.read_state(io.BytesIO(files[CHECKPOINT_FILE]))  # verified before anything is written
        incoming[run] = (meta, files)
    outcome = {run: _verdict(Path(results_dir) / study / run, meta) for run, (meta, _) in incoming.items()}
    for run, (meta, files) in incoming.items():
        if outcome[run] in ("added", "updated"):
            run_dir = Path(results_dir) / study / run
            _install(run_dir, meta, _restart_recorded(run_dir, meta, files))
    return outcome


def _restart_recorded(run_dir: Path, meta: dict, files: dict[str, bytes]) -> dict[str, bytes]:
    """``files``, with the restart of the run here recorded in their run.json (and checkpoint) if that run lost its
    checkpoint (run.json records training done, no checkpoint.pt): as the trainer records a restart it makes itself
    (``restarted``: the iteration lost; when the archive's run began)."""
    path = run_dir / results.META_FILE
    if not path.exists() or (run_dir / CHECKPOINT_FILE).exists():
        return files
    here = results.read_meta(path)
    if here["status"] == "finished" or here["iterations_done"] == 0:
        return files
    record = {"lost_iteration": here["iterations_done"], "restarted": meta["started"]}
    ours = meta.get("restarted", [])
    restarted = ours + [r for r in [*here.get("restarted", []), record] if r not in ours]
    files = files | {results.META_FILE: results.meta_text(meta | {"restarted": restarted}).encode()}
    if CHECKPOINT_FILE in files:
        state = checkpoint.read_state(io.BytesIO(files[CHECKPOINT_FILE]))
        files[CHECKPOINT_FILE] = checkpoint.state_bytes(state | {"restarted": restarted})
    return files


def _verdict(run_dir: Path, meta: dict) -> str:
    """What importing the run ``meta`` into ``run_dir`` does, or a RunConflict."""
    if not (run_dir / results.META_FILE).exists():
        return "added"
    here = results.read_meta(run_dir / results.META_FILE)
    diffs = differences(TrainConfig.from_dict(here["config"]), TrainConfig.from_dict(meta["config"]))
    if here["data_checksum"] != meta["data_checksum"]:
        diffs.append(f"data checksum {here['data_checksum'][:12]}… (the archive's: {meta['data_checksum'][:12]}…)")
    if diffs:
        raise RunConflict(f"{run_dir} holds another run than the archive's: {'; '.join(diffs)}")
    if here["status"] == "finished" and meta["status"] == "finished":
        if here.get("weights_sha256") != meta.get("weights_sha256"):
            raise RunConflict(f"{run_dir} holds another finished result of this run (test error "
                              f"{here['final_test_error']}, the archive's {meta['final_test_error']}); move one away")
        return "already here"
    if here["status"] == "finished":
        return "kept: finished here, unfinished in the archive"
    # a run here without its checkpoint (lost with another machine) has nothing to resume from: the archive's wins
    lost = not (run_dir / CHECKPOINT_FILE).exists()
    if meta["status"] == "finished" or meta["iterations_done"] > here["iterations_done"] or lost:
        return "updated"
    return f"kept: here at iteration {here['iterations_done']}, the archive at {meta['iterations_done']}"


def _install(run_dir: Path, meta: dict, files: dict[str, bytes]):
    """Write a run's files under its lock, run.json last; a finished run's leftover checkpoint goes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        for name in (n for n in (*FINISHED_FILES, CHECKPOINT_FILE) if n in files and n != results.META_FILE):
            write_atomic(files[name], run_dir / name)
        write_atomic(files[results.META_FILE], run_dir / results.META_FILE)
        if meta["status"] == "finished":
            (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
