"""A run's folder, ``<results>/<study>/<name>/``: whether it already holds this run, and who is training it.

A folder holds one run; the settings of a run's identity (``config.identity_fields``) and the data's name must
match for a folder to be reused, and one process at a time trains it (an flock on ``train.lock``).
"""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

from . import results
from .config import TrainConfig, identity_fields, source_name


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
    meta_path = cfg.run_dir(results_dir) / results.META_FILE
    if not meta_path.exists():
        return None
    meta = results.read_meta(meta_path)
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

    path = Path(run_dir) / results.LOCK_FILE
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
