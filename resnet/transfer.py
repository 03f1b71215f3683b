"""Studies that travel: a study's runs packed into one archive (optionally split into parts of a given size), and
unpacked into a results folder with the same checks as training, so that a study trained on a GPU box, a cluster
or a notebook service comes home in one file and resumes or re-plots here.

The archive is a tar of ``manifest.json`` (the sha256 of every file) and ``<study>/<run>/<file>`` for each run:
run.json and log.csv, with weights.pt when finished, the checkpoint when not (exported only when asked; a run
checkpointed before its first evaluation has no log.csv yet, and travels without one).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterable

from . import results, trainer
from .config import TrainConfig
from .files import write_all
from .results import RunConflict, differences, load_run, run_lock
from .trainer import git_commit

FORMAT = 1
MANIFEST = "manifest.json"
FINISHED_FILES = (results.WEIGHTS_FILE, results.CSV_FILE, results.META_FILE)  # run.json last: it marks completion
RUNNING_FILES = (results.CHECKPOINT_FILE, results.CSV_FILE, results.META_FILE)
EARLY_FILES = (results.CHECKPOINT_FILE, results.META_FILE)  # running, checkpointed before its first evaluation


def export_study(study: str | Path, out: str | Path, *, unfinished: bool = False,
                 part_mb: float | None = None, names: Iterable[str] | None = None) -> list[Path]:
    """Pack the runs of the study folder ``study`` into ``out`` (or ``out.part000``, ``out.part001``, ... of at
    most ``part_mb`` MB each) and return the files written; what an earlier export left at that name goes. Finished
    runs always; unfinished ones (their checkpoints) when ``unfinished``; only the runs ``names`` when given. Each
    run is a consistent snapshot (``_snapshot``), taken without its lock: a run may train meanwhile, and the
    folder may be read-only."""
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
        snapshot = _snapshot(meta_path.parent, unfinished)
        if snapshot is None:
            continue
        meta, files = snapshot
        runs[meta_path.parent.name] = {"status": meta["status"], "iterations_done": meta["iterations_done"],
                                       "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}
        members.update({f"{study.name}/{meta_path.parent.name}/{n}": b for n, b in files.items()})
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
    if part_mb is None or len(raw) <= part_mb * 1e6:
        pieces = {out: raw}
    else:
        size = int(part_mb * 1e6)
        if size < 1:
            raise ValueError(f"part size must be positive, got {part_mb} MB")
        count = -(-len(raw) // size)
        if count > MAX_PARTS:
            raise ValueError(f"{study}: {len(raw) / 1e6:.1f} MB in parts of {part_mb} MB would be {count:,} parts, "
                             f"more than {MAX_PARTS:,}; choose a larger part size")
        pieces = {out.with_name(f"{out.name}.part{i:03d}"): raw[i * size:(i + 1) * size] for i in range(count)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_all(pieces)
    for stale in [out, *out.parent.glob(f"{out.name}.part[0-9][0-9][0-9]")]:  # an earlier export's, never read with these
        if stale not in pieces:
            stale.unlink(missing_ok=True)
    return list(pieces)


SNAPSHOT_TRIES = 20


def _snapshot(run_dir: Path, unfinished: bool) -> tuple[dict, dict[str, bytes]] | None:
    """A run's run.json and files as one consistent state, or None if the run does not travel (diverged; running
    without ``unfinished``; started, with nothing trained yet). The trainer replaces each file whole, run.json
    last: run.json read before and after the others and the same both times, and a running run's checkpoint at
    run.json's iteration, is a state the trainer left; otherwise it is read again. A running run travels as of its
    checkpoint: the evaluations logged since (log.csv is written at each, the checkpoint every few) are left out,
    since its resume logs them again."""
    meta_path = run_dir / results.META_FILE
    for _ in range(SNAPSHOT_TRIES):
        before = meta_path.read_bytes()
        meta = results.read_meta(meta_path)
        running = meta["status"] == "running"
        if meta["status"] == "diverged" or (running and not unfinished):
            return None
        if running and meta["iterations_done"] == 0 and not (run_dir / results.CHECKPOINT_FILE).exists():
            return None
        names = FINISHED_FILES if meta["status"] == "finished" else RUNNING_FILES
        if running and not (run_dir / results.CSV_FILE).exists():  # not evaluated yet, if its checkpoint agrees
            names = EARLY_FILES
        try:
            files = {n: (run_dir / n).read_bytes() for n in names if n != results.META_FILE}
        except FileNotFoundError as e:  # a run that finished meanwhile removed its checkpoint; else a file is lost
            files = None
            if meta_path.read_bytes() == before:
                raise results.ResultsError(f"{run_dir}: {meta['status']} run without {Path(e.filename).name}") from None
        if files is not None and running:
            files = _as_of_checkpoint(meta, files, run_dir)
        if files is not None and meta_path.read_bytes() == before:
            return meta, files | {results.META_FILE: before}
        time.sleep(0.05)
    raise results.ResultsError(f"{run_dir}: its files changed each of the {SNAPSHOT_TRIES} times they were read "
                               "(a run writing very often?); export again")


def _as_of_checkpoint(meta: dict, files: dict[str, bytes], run_dir: Path) -> dict[str, bytes] | None:
    """A running run's files with its log cut where its checkpoint's ends, or None if the checkpoint is not at
    run.json's iteration or the log does not reach it (caught between two writes: read again)."""
    name = results.CHECKPOINT_FILE
    state = trainer.read_checkpoint(io.BytesIO(files[name]), name=str(run_dir / name))
    if state["iteration"] != meta["iterations_done"]:
        return None
    if not state["rows"]:  # checkpointed before its first evaluation: any log is of evaluations since
        return {n: data for n, data in files.items() if n != results.CSV_FILE}
    if results.CSV_FILE not in files:
        if not (run_dir / results.CSV_FILE).exists():  # the trainer writes the log first: lost
            raise results.ResultsError(f"{run_dir}: running run without {results.CSV_FILE}, though its checkpoint "
                                       f"has logged {len(state['rows'])} evaluations")
        return None
    lines = files[results.CSV_FILE].splitlines(keepends=True)
    last = str(state["rows"][-1]["iteration"]).encode()
    for end, line in enumerate(lines[1:], start=2):
        if line.split(b",", 1)[0] == last:
            return files | {results.CSV_FILE: b"".join(lines[:end])}
    return None


MAX_PARTS = 1000  # part names have three digits
# An archive larger than this is no study archive: the largest study (ten networks, five seeds each, checkpoints
# of ResNet-110 at ~14 MB) is well under 1 GB; reading a larger file into memory is refused before it starts.
MAX_ARCHIVE_BYTES = 2 * 2**30


def _read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the members of an archive, checked: the file itself when it is there, else its parts
    (``path.part000``, ...; also when given the first part)."""
    if path.name.endswith(".part000"):
        path = path.with_name(path.name[: -len(".part000")])
    parts = sorted(path.parent.glob(f"{path.name}.part[0-9][0-9][0-9]"))
    if path.exists():
        parts = []
    elif not parts:
        raise FileNotFoundError(f"{path}: no such archive (nor its parts {path.name}.part000, ...)")
    elif [p.name for p in parts] != [f"{path.name}.part{i:03d}" for i in range(len(parts))]:
        raise ValueError(f"{path}: parts missing between {parts[0].name} and {parts[-1].name}")
    size = sum(p.stat().st_size for p in parts or [path])
    if size > MAX_ARCHIVE_BYTES:
        raise ValueError(f"{path}: {size / 2**30:.1f} GiB, larger than any study archive (at most "
                         f"{MAX_ARCHIVE_BYTES / 2**30:.0f} GiB); not read")
    try:
        raw = b"".join(p.read_bytes() for p in parts) if parts else path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        manifest = json.loads(members.pop(MANIFEST))
    except (tarfile.TarError, KeyError, json.JSONDecodeError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"{path}: not a study archive, or a part is missing or damaged ({type(e).__name__})") from e
    except MemoryError:
        raise ValueError(f"{path}: {size / 1e6:,.0f} MB do not fit in this machine's memory") from None
    _check_manifest(manifest, path)
    expected = {f"{manifest['study']}/{run}/{n}": sha for run, r in manifest["runs"].items() for n, sha in r["files"].items()}
    if set(members) != set(expected):
        raise ValueError(f"{path}: members {sorted(set(members) ^ set(expected))} do not match its manifest")
    for name, sha in expected.items():
        if hashlib.sha256(members[name]).hexdigest() != sha:
            raise ValueError(f"{path}: {name} is damaged (its sha256 is not the manifest's)")
    return manifest, members


def _check_manifest(manifest, path: Path):
    """One line naming what is wrong with an archive's manifest, if anything is."""
    def plain(name) -> bool:  # a folder name, never a path
        return isinstance(name, str) and name not in ("", ".", "..") and not set(name) & {"/", "\\", "\0"}

    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: its manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: archive format {manifest.get('format')!r}, expected {FORMAT}")
    if not plain(manifest.get("study")):
        raise ValueError(f"{path}: its manifest's study {manifest.get('study')!r} is not a folder name")
    if not isinstance(manifest.get("runs"), dict) or not manifest["runs"]:
        raise ValueError(f"{path}: its manifest lists no runs")
    for run, entry in manifest["runs"].items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not plain(run) or not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ValueError(f"{path}: its manifest's entry for run {run!r} is malformed")
        if set(files) not in (set(FINISHED_FILES), set(RUNNING_FILES), set(EARLY_FILES)):  # a run's own files alone
            raise ValueError(f"{path}: run {run!r} with files {sorted(files)}")


def import_study(archive: str | Path, results_dir: str | Path = "results") -> dict[str, str]:
    """Unpack a study archive into ``results_dir``; return what happened to each run ('added', 'updated',
    'already here', 'kept: ...'). Every run is first put through each check that reading, loading and resuming it
    here would make (``_checked``); then, holding every run's lock, all of them are installed, or none (a run
    being trained here, another run of that name, another finished result, a full disk: nothing changes)."""
    archive = Path(archive)
    manifest, members = _read_archive(archive)
    study_dir = Path(results_dir) / manifest["study"]
    incoming = {}
    for run, entry in manifest["runs"].items():
        files = {n: members[f"{manifest['study']}/{run}/{n}"] for n in entry["files"]}
        incoming[run] = (_checked(archive, manifest["study"], run, files), files)
    created = [p for p in (Path(results_dir), study_dir, *(study_dir / r for r in incoming)) if not p.exists()]
    try:
        with contextlib.ExitStack() as locks:
            for run in sorted(incoming):
                (study_dir / run).mkdir(parents=True, exist_ok=True)
                locks.enter_context(run_lock(study_dir / run))
            outcome = {run: _verdict(study_dir / run, meta) for run, (meta, _) in incoming.items()}
            writes, leftovers = {}, []
            for run, (meta, files) in incoming.items():
                if outcome[run] in ("added", "updated"):
                    run_dir = study_dir / run
                    files = _restart_recorded(run_dir, meta, files)
                    # run.json last: its status marks the run complete
                    writes.update({run_dir / n: files[n] for n in (*FINISHED_FILES, results.CHECKPOINT_FILE)
                                   if n in files and n != results.META_FILE})
                    writes[run_dir / results.META_FILE] = files[results.META_FILE]
                    if meta["status"] == "finished":  # a finished run's leftover checkpoint goes
                        leftovers.append(run_dir / results.CHECKPOINT_FILE)
            write_all(writes)
            for path in leftovers:
                path.unlink(missing_ok=True)
    except BaseException:
        for folder in reversed(created):  # a refused import leaves no folder of its own behind
            (folder / results.LOCK_FILE).unlink(missing_ok=True)
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return outcome


def _checked(archive: Path, study: str, run: str, files: dict[str, bytes]) -> dict:
    """The run's run.json, once its files (put in a scratch folder) pass every check that ``load_runs`` and, for a
    finished run, ``load_run`` make (schema, log, the outcome against the log, the weights' sha256 and fit), or,
    for a running one, resuming would (its checkpoint whole and that of its run.json's settings, data and
    iteration). Errors name the archive's member."""

    label = f"{archive}:{study}/{run}"
    with tempfile.TemporaryDirectory(prefix="resnet-import-") as scratch:
        run_dir = Path(scratch) / study / run
        run_dir.mkdir(parents=True)
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
        try:
            meta = results.read_meta(run_dir / results.META_FILE)
            cfg = TrainConfig.from_dict(meta["config"])
            if (cfg.study, cfg.name) != (study, run):
                raise ValueError(f"{run_dir} holds the run {cfg.study}/{cfg.name}")
            if meta["status"] == "diverged":
                raise ValueError(f"{run_dir}: a diverged run (only finished and running runs travel)")
            results.load_runs(scratch, finished_only=False)
            if meta["status"] == "finished":
                load_run(run_dir)
            else:
                _resumable(run_dir, meta)
        except (results.ResultsError, RunConflict, trainer.CheckpointError, ValueError) as e:
            raise type(e)(str(e).replace(str(run_dir), label)) from None
    return meta


def _resumable(run_dir: Path, meta: dict):
    """Raise CheckpointError unless the running run's checkpoint is whole, RunConflict unless it is the one its
    run.json and log describe."""
    state = trainer.read_checkpoint(run_dir / results.CHECKPOINT_FILE)
    diffs = differences(TrainConfig.from_dict(state["config"]), TrainConfig.from_dict(meta["config"]))
    if state["data_checksum"] != meta["data_checksum"]:
        diffs.append(f"data checksum {state['data_checksum'][:12]}… (run.json's: {meta['data_checksum'][:12]}…)")
    if state["iteration"] != meta["iterations_done"]:
        diffs.append(f"iteration {state['iteration']} (run.json's: {meta['iterations_done']})")
    # the log as the checkpoint holds it is log.csv's (none yet: a restarted run's log.csv is the lost one's, replaced
    # at its first evaluation)
    logged = [row["iteration"] for row in state["rows"]]
    if logged and logged != results.read_csv(run_dir / results.CSV_FILE)["iteration"].tolist():
        diffs.append(f"a log of {len(logged)} rows to iteration {logged[-1]} (log.csv's differ)")
    if diffs:
        raise RunConflict(f"{run_dir / results.CHECKPOINT_FILE} is not the checkpoint of its run.json and log: "
                          f"{'; '.join(diffs)}")


def _restart_recorded(run_dir: Path, meta: dict, files: dict[str, bytes]) -> dict[str, bytes]:
    """``files``, with the restart of the run here recorded in their run.json (and checkpoint) if that run lost its
    checkpoint (run.json records training done, no trainer.pt): as the trainer records a restart it makes itself
    (``restarted``: the iteration lost; when the archive's run began)."""
    path = run_dir / results.META_FILE
    if not path.exists() or (run_dir / results.CHECKPOINT_FILE).exists():
        return files
    here = results.read_meta(path)
    if here["status"] == "finished" or here["iterations_done"] == 0:
        return files
    record = {"lost_iteration": here["iterations_done"], "restarted": meta["started"]}
    ours = meta.get("restarted", [])
    restarted = ours + [r for r in [*here.get("restarted", []), record] if r not in ours]
    files = files | {results.META_FILE: results.meta_text(meta | {"restarted": restarted}).encode()}
    if results.CHECKPOINT_FILE in files:
        state = trainer.read_checkpoint(io.BytesIO(files[results.CHECKPOINT_FILE]))
        files[results.CHECKPOINT_FILE] = trainer.checkpoint_bytes(state | {"restarted": restarted})
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
    lost = not (run_dir / results.CHECKPOINT_FILE).exists()
    if meta["status"] == "finished" or meta["iterations_done"] > here["iterations_done"] or lost:
        return "updated"
    return f"kept: here at iteration {here['iterations_done']}, the archive at {meta['iterations_done']}"
