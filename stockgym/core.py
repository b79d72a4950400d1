"""The bottom layer: helpers every other part of stockgym may import, and that import
nothing of stockgym's.

- :class:`UsageError`: a bad flag, value or file on the command line.
- :func:`resolve_device`: the one device check of forecasters, envs and agents.
- :func:`torch_threads`: run a block with a given number of torch CPU threads.
- :func:`check_int` / :func:`check_number`: validation with one clear message.
- :func:`write_bytes` / :func:`write_text` / :func:`write_json`: atomic writes (temp file
  in the target directory, fsync, ``os.replace``), so a crash never leaves a half-written
  file under the final name (at worst a ``.NAME.*.tmp`` leftover, which readers ignore
  and :func:`clean_stale_temps` removes on the next start). Files get the permissions
  ``0o666 & ~umask``, as ``open()`` would give them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported only where a device or threads are asked for
    import torch


class UsageError(Exception):
    """A bad flag, value or file on the command line (printed without a traceback)."""


# ------------------------------------------------------------------ device, threads
def resolve_device(
    device: str | torch.device = "auto",
    kinds: tuple[str, ...] | None = ("cpu", "cuda"),
    env: Any = None,
) -> torch.device:
    """``"auto"`` -> the device of a torch vector env if ``env`` is one, else cuda when
    available, else cpu. Anything else must exist here (``ValueError`` naming it
    otherwise) and, unless ``kinds`` is ``None``, be one of ``kinds``."""
    import torch

    if str(device) == "auto":
        env_dev = getattr(env, "device", None)
        if isinstance(env_dev, torch.device):
            return env_dev
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} asked for but CUDA is not available here "
            "(torch sees no CUDA GPU); use 'auto' or 'cpu'"
        )
    if kinds is not None and dev.type not in kinds:
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` CPU threads inside the block (``None``: leave torch's setting)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ number checks
def check_int(name: str, value: Any, lo: int | None = None) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an integer ``>= lo``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")


def check_number(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number in the range
    (``lo`` excluded when ``lo_open``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        rng = ""
        if lo is not None or hi is not None:
            # an open bound is an excluded one: a finite number never reaches +-inf
            left = "(" if lo_open or lo is None else "["
            right = "]" if hi is not None else ")"
            low = lo if lo is not None else "-inf"
            high = hi if hi is not None else "inf"
            rng = f" in {left}{low}, {high}{right}"
        raise ValueError(f"{name} must be a finite number{rng}, got {value!r}")


# ------------------------------------------------------------------ atomic writes
# The names write_bytes gives its temp files: "." + target name + "." + mkstemp's 8
# random characters + ".tmp".
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# A temp file older than this is a leftover of a killed write, not one in progress.
STALE_TEMP_SECONDS = 60.0


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read (set and restore)
    os.umask(mask)
    return mask


def clean_stale_temps(
    directory: str | os.PathLike[str], older_than: float = STALE_TEMP_SECONDS
) -> list[Path]:
    """Remove the temp files of killed :func:`write_bytes` calls in ``directory``: only
    ``.NAME.XXXXXXXX.tmp`` files (our naming) whose last change is more than
    ``older_than`` seconds old. Returns the removed paths; a missing directory is none."""
    root = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not _TEMP_NAME.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime <= older_than:
                continue
            os.unlink(entry.path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        removed.append(root / entry.name)
    return removed


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data`` (temp file, fsync, ``os.replace``); the
    file gets ``0o666 & ~umask`` (mkstemp alone would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o666 & ~current_umask())
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
