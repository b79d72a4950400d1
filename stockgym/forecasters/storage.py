"""Atomic writes for run directories, checkpoints and the forecast cache.

Every file is written to a temporary name in its target directory, flushed, fsync'd
and moved into place with ``os.replace``; a directory (a run, a checkpoint) is built in
a temporary sibling and renamed at the end, so a crash or an error never leaves a
half-written result under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.core import current_umask, write_bytes, write_json, write_text  # noqa: F401 (re-exported)


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Read a JSON file; a missing or unreadable file raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def check_new_dir(path: str | os.PathLike[str]) -> Path:
    """Raise ``ValueError`` unless ``path`` is absent or an empty directory."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(
            f"{path} already exists and is not an empty directory; choose another "
            "(--run-dir on the command line)"
        )
    return path


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to fill; rename it to ``path`` on success.

    On an exception the temporary directory is removed and ``path`` is left as it was.
    ``path`` must be absent or an empty directory.
    """
    path = check_new_dir(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the parent of run dir {path}: {exc}") from exc
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; outputs follow the umask
    try:
        yield tmp
        check_new_dir(path)
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def default_run_dir(kind: str, *parts: str | None, root: str | os.PathLike[str] = "runs") -> Path:
    """A new directory name ``runs/<kind>/<YYYYmmdd-HHMMSS>-<parts...>`` (not created)."""
    stamp = pd.Timestamp.now().strftime("%Y%m%d-%H%M%S")
    name = "-".join([stamp, *(slug(p) for p in parts if p)])
    base = Path(root) / kind / name
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def slug(text: str) -> str:
    """A short file-name-safe version of ``text``."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))
    return keep.strip("._")[:40] or "x"


def data_hash(prices: pd.DataFrame) -> str:
    """SHA-256 of a frame's dates, column labels and values (hex)."""
    h = hashlib.sha256()
    h.update(
        np.asarray(
            prices.index.asi8
            if isinstance(prices.index, pd.DatetimeIndex)
            else prices.index.to_numpy()
        ).tobytes()
    )
    h.update(json.dumps([str(c) for c in prices.columns]).encode())
    for j in range(prices.shape[1]):
        col = prices.iloc[:, j]
        values = col.to_numpy(dtype="float64", na_value=np.nan)
        h.update(values.tobytes())
    return h.hexdigest()
