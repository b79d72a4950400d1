"""Atomic file writes, used by every part that writes results or caches.

A file is written to a temporary name in its target directory, flushed, fsync'd and
moved into place with ``os.replace``, so a crash or an error never leaves a
half-written file under the final name (at worst a ``.*.tmp`` leftover, which readers
ignore).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data`` (temp file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (NaN/inf rejected)."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
