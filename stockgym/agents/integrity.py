"""Integrity and trust of the files stockgym writes and later reads back.

Two kinds of sidecar files sit beside the files they protect (what they protect and
why: ``SECURITY.md``):

``FILE.sha256``
    SHA-256 digests of ``FILE`` (checkpoints and models our agents load with
    ``weights_only=True``): they catch corruption (flipped bytes, truncation, a stray
    edit). Anyone can recompute a digest, so they are no defence against a tamperer;
    these files cannot run code when loaded anyway.
``FILE.sig``
    HMAC-SHA256 tags of ``FILE`` keyed by this user's secret (:func:`signing_key`), for
    files whose loaders unpickle (stable-baselines3 zips, Ray Tune's sweep state): only a
    file this user's stockgym wrote carries a valid tag, and it is checked *before* the
    file is unpickled. ``trust=True`` (the CLI's ``--trust``) skips the check.

Both sidecars hold one hex value a line, newest first, at most two: the sidecar is
written before its file, listing the new value and the previous one, so a process killed
between the two writes leaves a pair that still verifies (the old file, listed second).

:func:`check_fields` validates a record read back (a checkpoint dict, ``config.json``)
against a small schema, one line per problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockgym import core

#: environment variable naming the config dir that holds the signing key
CONFIG_DIR_ENV = "STOCKGYM_CONFIG_DIR"
KEY_FILE = "signing.key"
DIGEST_SUFFIX = ".sha256"
SIG_SUFFIX = ".sig"
#: what the HMAC covers besides the file's bytes (a version for the tag format)
_SIG_CONTEXT = b"stockgym.sig.v1\0"


class UntrustedFileError(ValueError):
    """A file that could run code when loaded carries no valid signature of this user."""


# ------------------------------------------------------------------ the secret
def config_dir() -> Path:
    """``$STOCKGYM_CONFIG_DIR``, else ``platformdirs.user_config_dir("stockgym")``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("stockgym"))


def signing_key() -> bytes:
    """This user's 32-byte signing secret, ``config_dir()/signing.key`` (hex), created
    on first use readable by the user only (0600, its dir 0700)."""
    path = config_dir() / KEY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # written whole under a temp name, then linked: no reader sees a partial key,
        # and of two processes creating it at once the first link wins for both
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fh.fileno(), 0o600)  # whatever the umask
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError(f"signing key {path} is unreadable (expected hex); delete it to renew")
    return key


# ------------------------------------------------------------------ digests and tags
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign(data: bytes) -> str:
    """``HMAC-SHA256(key, "stockgym.sig.v1\\0" + data)`` as hex."""
    return hmac.new(signing_key(), _SIG_CONTEXT + data, hashlib.sha256).hexdigest()


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _entries(sidecar: Path) -> list[str]:
    try:
        lines = sidecar.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []
    return [w for w in lines if len(w) == 64 and all(c in "0123456789abcdef" for c in w)]


def write_with_digest(path: str | Path, data: bytes, signed: bool = False) -> Path:
    """Atomically write ``data`` to ``path``, its SHA-256 to ``path.sha256`` and, when
    ``signed``, this user's tag to ``path.sig`` (sidecars first: see the module
    docstring)."""
    path = Path(path)
    sides = [(DIGEST_SUFFIX, sha256_hex(data))] + ([(SIG_SUFFIX, sign(data))] if signed else [])
    for suffix, value in sides:
        side = _sidecar(path, suffix)
        core.write_text(side, "\n".join([value, *_entries(side)[:1]]) + "\n")
    return core.write_bytes(path, data)


def read_verified(
    path: str | Path, signed: bool = False, trust: bool = False, flag: str = "--trust"
) -> bytes:
    """The bytes of ``path``, checked against ``path.sha256`` when there is one
    (``ValueError`` naming the file on a mismatch; files written before digests existed
    have none and are read as they are) and, when ``signed`` and not ``trust``, against
    ``path.sig`` (:class:`UntrustedFileError` naming the file and ``flag``)."""
    path = Path(path)
    data = path.read_bytes()
    side = _sidecar(path, DIGEST_SUFFIX)
    if side.is_file():
        expected = _entries(side)
        got = sha256_hex(data)
        if got not in expected:
            raise ValueError(
                f"{path} is corrupt: its SHA-256 {got[:16]}... does not match {side.name} "
                f"({(expected or ['nothing readable'])[0][:16]}...); it changed after "
                "stockgym wrote it"
            )
    if signed and not trust:
        check_signed(path, data, flag)
    return data


def untrusted_message(path: Path, flag: str, why: str) -> str:
    return (
        f"refusing to load {path}: {why}; it can run code when loaded. If you trust it, pass {flag}"
    )


def check_signed(path: Path, data: bytes, flag: str = "--trust") -> None:
    """:class:`UntrustedFileError` unless ``path.sig`` lists this user's tag of ``data``."""
    side = _sidecar(path, SIG_SUFFIX)
    if not side.is_file():
        raise UntrustedFileError(
            untrusted_message(path, flag, f"it has no signature ({side.name})")
        )
    tag = sign(data)
    if not any(hmac.compare_digest(tag, e) for e in _entries(side)):
        raise UntrustedFileError(
            untrusted_message(path, flag, f"{side.name} is not this user's signature of it")
        )


# ------------------------------------------------------------------ record schemas
#: a schema: ``{key: (types, required)}`` or ``{key: (types, required, check)}`` where
#: ``check(value) -> str | None`` returns a problem
Schema = dict[str, tuple]


def check_fields(obj: Any, schema: Schema, where: str) -> None:
    """``ValueError`` listing every key of ``obj`` that is missing or has the wrong type
    or value for ``schema`` (one line each, prefixed by ``where``)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(obj).__name__}")
    problems = []
    for key, spec in schema.items():
        types, required = spec[0], spec[1]
        if key not in obj:
            if required:
                problems.append(f"{where}: missing key {key!r}")
            continue
        value = obj[key]
        if isinstance(value, bool) and bool not in _as_tuple(types):
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in _as_tuple(types))
            problems.append(f"{where}: {key!r} must be {names}, got {type(value).__name__}")
        elif len(spec) > 2 and value is not None:
            problem = spec[2](value)
            if problem:
                problems.append(f"{where}: {key!r} {problem}")
    if problems:
        raise ValueError("\n".join(problems))


def _as_tuple(types: Any) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def at_least(lo: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be >= {lo}, got {v}"


def finite_number(v: Any) -> str | None:
    return None if math.isfinite(v) and v >= 0 else f"must be a finite number >= 0, got {v}"


def non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors (or floats) in a nested dict / list that hold
    NaN or infinity."""
    import torch  # here: the signing helpers serve torch-free callers too

    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "value")
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            bad.append(prefix or "value")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += non_finite(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += non_finite(v, f"{prefix}[{i}]")
    return bad


# ------------------------------------------------------------------ agent checkpoints
def _check_schedule(s: dict) -> str | None:
    ok = all(
        isinstance(s.get(k), int) and not isinstance(s.get(k), bool) for k in ("start", "total")
    )
    if not ok or s["start"] < 0 or s["total"] < 1:
        return f"must be {{'start': int >= 0, 'total': int >= 1}}, got {s}"
    return None


#: the keys of an agent checkpoint (see :mod:`stockgym.agents.base`)
CHECKPOINT_SCHEMA = {
    "algo": (str, True),
    "config": (dict, True),
    "observation_space": (dict, True),
    "action_space": (dict, True),
    "encoder": (dict, True),
    "model": (dict, True),
    "optimizer": (dict, True),
    "num_timesteps": (int, True, at_least(0)),
    "schedule": ((dict, type(None)), False, _check_schedule),
    "rng": (dict, True),
    "extra": (dict, False),
}


def check_checkpoint(ckpt: Any, path: str) -> None:
    """``ValueError`` (one line per problem, naming ``path``) unless ``ckpt`` has every
    key of :data:`CHECKPOINT_SCHEMA` with its type, a step counter inside its ``learn``
    call's schedule and only finite weights and optimizer state."""
    check_fields(ckpt, CHECKPOINT_SCHEMA, path)
    sched = ckpt.get("schedule")
    if sched is not None and not sched["start"] <= ckpt["num_timesteps"]:
        raise ValueError(
            f"{path}: 'num_timesteps' {ckpt['num_timesteps']} is before its learn() call's "
            f"first step {sched['start']}"
        )
    bad = non_finite(ckpt["model"], "model") + non_finite(ckpt["optimizer"], "optimizer")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(
            f"{path}: non-finite values (NaN or inf) in {', '.join(bad[:3])}{more}; "
            "refusing a corrupt or diverged model"
        )
