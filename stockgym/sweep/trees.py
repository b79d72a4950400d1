"""A sweep trial's training-config tree: built from the base config, the trial's
parameters and seed; dotted keys read and written; paths made absolute; values checked."""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from stockgym.sweep.space import Entry


def get_key(tree: dict[str, Any], dotted: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"`` (``KeyError`` when absent)."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def build_tree(
    base: dict[str, Any], params: dict[str, Any], seed: int, run_dir: str | None = None
) -> dict[str, Any]:
    """A ``stockgym train`` config dict: ``base`` with ``params`` (dotted keys), the
    seed and the run dir set."""
    from stockgym.experiment.config import set_key

    tree = copy.deepcopy(base)
    for key, value in params.items():
        set_key(tree, key, copy.deepcopy(value))
    tree["seed"] = seed
    if run_dir is not None:
        tree["run_dir"] = run_dir
    return tree


def _absolute_paths(tree: dict[str, Any]) -> None:
    """Make the file paths of a train config absolute (relative to the working dir, as
    ``stockgym train`` reads them): Ray runs trials in other working dirs."""
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    agent = tree.get("agent") if isinstance(tree.get("agent"), dict) else {}
    if isinstance(data.get("cache_dir"), str):
        data["cache_dir"] = os.path.abspath(data["cache_dir"])
    if isinstance(agent.get("pretrained"), str):
        agent["pretrained"] = os.path.abspath(agent["pretrained"])
    if data.get("source") == "csv" and isinstance(data.get("symbols"), list):
        data["symbols"] = [os.path.abspath(s) if isinstance(s, str) else s for s in data["symbols"]]


def _absolute_entry(entry: Entry, train: dict[str, Any]) -> Entry:
    """An entry whose values are file paths, with the paths made absolute."""
    csv = isinstance(train.get("data"), dict) and train["data"].get("source") == "csv"

    def fix(v: Any) -> Any:
        if entry.key in ("data.cache_dir", "agent.pretrained") and isinstance(v, str):
            return os.path.abspath(v)
        if entry.key == "data.symbols" and csv:
            group = [v] if isinstance(v, str) else v
            return [os.path.abspath(x) if isinstance(x, str) else x for x in group]
        return v

    if entry.key not in (
        "data.cache_dir",
        "agent.pretrained",
        "data.symbols",
    ) or entry.kind not in ("grid", "choice"):
        return entry
    return Entry(entry.key, entry.kind, tuple(fix(v) for v in entry.values))


def _type_error(key: str, value: Any) -> str | None:
    """A mismatch of ``value`` with the annotated type of the TrainConfig field ``key``
    (``None`` when it fits or the field is not a plain typed field)."""
    from stockgym.experiment import DataSpec, EnvSpec, TrainConfig

    parts = key.split(".")
    if len(parts) == 1:
        cls: type | None = TrainConfig
    elif len(parts) == 2:
        cls = {"data": DataSpec, "env": EnvSpec}.get(parts[0])
    else:
        cls = None
    if cls is None or key == "data.symbols":
        return None
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    ann = fields.get(parts[-1])
    if not isinstance(ann, str):
        return None
    options = [a.strip() for a in ann.split("|")]
    if value is None:
        return None if "None" in options else f"{key} cannot be empty"
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    known = [o for o in options if o in checks or o.startswith(("list", "dict"))]
    if not known:
        return None
    for o in known:
        if o in checks and checks[o](value):
            return None
        if o.startswith("list") and isinstance(value, list):
            return None
        if o.startswith("dict") and isinstance(value, dict):
            return None
    return f"{key} must be {ann.replace(' | None', '')}, got {value!r}"
