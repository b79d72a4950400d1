"""The signature of a sweep's Tune state. Tune pickles ``tuner.pkl`` and its experiment
and searcher state into ``SWEEP/tune``, and ``stockgym sweep --resume`` has Tune unpickle
them, which can run code. So while Tune runs (:class:`~stockgym.sweep.progress.SignState`)
and when it ends, ``SWEEP/tune.sig`` records this user's HMAC of each such file
(:mod:`stockgym.agents.integrity`), and a resume refuses state without it unless trusted
(``--trust``). No Ray import here."""

from __future__ import annotations

import json
from pathlib import Path

from stockgym.agents.integrity import UntrustedFileError, sign, untrusted_message
from stockgym.core import write_json

TUNE_SIG = "tune.sig"


def tune_state_files(sweep_dir: Path) -> list[Path]:
    """The files of ``SWEEP/tune`` a restore may unpickle: every file at its top
    (``tuner.pkl``, experiment and searcher state) and every ``.pkl`` below."""
    tune_dir = sweep_dir / "tune"
    if not tune_dir.is_dir():
        return []
    top = [f for f in tune_dir.iterdir() if f.is_file() and not f.name.startswith(".")]
    deep = [f for f in tune_dir.rglob("*.pkl") if f.parent != tune_dir]
    return sorted(top + deep)


def sign_tune_state(sweep_dir: Path) -> None:
    """Write ``SWEEP/tune.sig``: ``{relative path: [tag, previous tag]}`` of
    :func:`tune_state_files` (the previous tag keeps a file Tune rewrote just before a
    kill verifiable in its earlier version)."""
    sig_file = sweep_dir / TUNE_SIG
    try:
        old = json.loads(sig_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    tags = {}
    for f in tune_state_files(sweep_dir):
        rel = f.relative_to(sweep_dir).as_posix()
        try:
            tag = sign(f.read_bytes())
        except OSError:  # Tune replaced it meanwhile: signed on the next pass
            continue
        before = [t for t in (old.get(rel) or []) if t != tag][:1]
        tags[rel] = [tag, *before]
    write_json(sig_file, tags)


def check_tune_state(sweep_dir: Path, trust: bool = False) -> None:
    """:class:`UntrustedFileError` naming the first file of :func:`tune_state_files`
    whose tag is not in ``SWEEP/tune.sig`` (nothing is checked with ``trust``)."""
    if trust:
        return
    try:
        tags = json.loads((sweep_dir / TUNE_SIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tags = None
    for f in tune_state_files(sweep_dir):
        rel = f.relative_to(sweep_dir).as_posix()
        if not isinstance(tags, dict):
            why = f"the sweep has no readable signature file ({TUNE_SIG})"
        elif sign(f.read_bytes()) not in (tags.get(rel) or []):
            why = f"{TUNE_SIG} holds no signature of it by this user"
        else:
            continue
        raise UntrustedFileError(untrusted_message(f, "--trust", why))
