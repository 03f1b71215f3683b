"""Writing files whole: every file the project writes (results, checkpoints, weights, the data cache) goes
through ``write_atomic``, so a crash, a kill or a full disk leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path):
    """Yield a temporary path beside ``path`` to write to; when the block ends without error it replaces ``path``
    in one rename. The name is unique per writer, so processes writing the same file at once never trip over
    each other's temporary files (the last rename wins, and each rename is of a whole file)."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only folder: say which file, and that the old one is intact
        raise OSError(f"could not write {path} ({e.strerror or e}); the previous {path.name} is unchanged. "
                      "Free some space (or move the folder) and run again") from e
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(data: bytes | str, path: str | Path) -> str:
    """Write ``data`` (text as UTF-8) to ``path`` whole and return its sha256."""
    raw = data.encode() if isinstance(data, str) else data
    with replacing(path) as tmp:
        tmp.write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


def write_all(files: dict[Path, bytes | str]):
    """Write every one of ``files`` whole, or none: each is written beside its place first, and only when all are
    written are they renamed into place, in the order given (so a full disk or a failed write changes nothing)."""
    tmps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            tmps[path] = _temporary(path)
            try:
                tmps[path].write_bytes(data.encode() if isinstance(data, str) else data)
            except OSError as e:
                raise OSError(f"could not write {path} ({e.strerror or e}); none of the {len(files)} files was "
                              "changed. Free some space (or move the folder) and run again") from e
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def _temporary(path: Path) -> Path:
    """A temporary name beside ``path``, unique per writer."""
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def torch_bytes(obj) -> bytes:
    """``obj`` serialised by torch.save."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
