"""A sweep's search space: ``[space]`` entries (a grid list, or ``{choice | uniform |
loguniform | randint = ...}`` for random and Optuna searches), parsed and checked before
any trial starts."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any

#: Search-space kinds besides a plain list (a grid).
KINDS = ("choice", "uniform", "loguniform", "randint")
#: ``[space]`` paths that are tables (descended into); every other path is a leaf.
TABLES = ("data", "env", "agent", "data.options")
#: Keys the sweep sets itself.
RESERVED = {
    "seed": "training seeds go in [sweep] seeds = [...] (repeats of every configuration)",
    "run_dir": "the sweep puts each run in SWEEP_DIR/runs/",
    "progress": "trials run without progress bars",
}


class SweepError(ValueError):
    """A bad sweep file or search-space entry (raised before any trial starts)."""


# ------------------------------------------------------------------ search-space entries
@dataclass(frozen=True)
class Entry:
    """One ``[space]`` entry: ``key`` (dotted TrainConfig path), ``kind`` (``grid`` or
    one of :data:`KINDS`), ``values`` (grid / choice values, or ``(lo, hi)``)."""

    key: str
    kind: str
    values: tuple

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def describe(self) -> str:
        if self.kind == "grid":
            return f"{self.key} = {list(self.values)!r}"
        return f"{self.key} = {{{self.kind} = {list(self.values)!r}}}"

    def corners(self) -> list[Any]:
        """Values to check before the sweep starts: every grid / choice value, or both
        ends of a range."""
        return list(self.values)

    def sample(self, rng: Any) -> Any:
        """One draw (``rng``: ``numpy.random.Generator``), as a plain Python value."""
        if self.kind == "choice":
            return copy.deepcopy(self.values[int(rng.integers(len(self.values)))])
        lo, hi = self.values
        if self.kind == "uniform":
            return float(rng.uniform(lo, hi))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if self.kind == "randint":
            return int(rng.integers(lo, hi + 1))
        raise SweepError(f"{self.key}: a grid entry is not sampled")

    def tune_domain(self) -> Any:
        """The Ray Tune search domain (used by the Optuna search)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        lo, hi = self.values
        if self.kind == "uniform":
            return tune.uniform(lo, hi)
        if self.kind == "loguniform":
            return tune.loguniform(lo, hi)
        if self.kind == "randint":
            return tune.randint(lo, hi + 1)  # Tune's upper end is exclusive
        raise SweepError(f"{self.key}: Optuna cannot grid over a list")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "values": list(self.values)}


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_entry(key: str, value: Any) -> Entry:
    """An :class:`Entry` from a TOML value (``SweepError`` naming the entry)."""
    where = f"[space] {key}"
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where} is an empty list; give at least one value")
        no_duplicates(where, value)
        return Entry(key, "grid", tuple(value))
    if not isinstance(value, dict):
        raise SweepError(
            f"{where} = {value!r} is a fixed value; a search-space entry is a list (grid) "
            f"or a table {{choice | uniform | loguniform | randint = [...]}} (fixed values "
            "belong in [train])"
        )
    if len(value) != 1:
        raise SweepError(
            f"{where} = {value!r}: give exactly one of {', '.join(KINDS)} "
            "(e.g. {loguniform = [1e-4, 1e-2]})"
        )
    ((kind, args),) = value.items()
    if kind not in KINDS:
        raise SweepError(
            f"{where}: unknown search kind {kind!r}; use a list (grid) or one of {', '.join(KINDS)}"
        )
    if not isinstance(args, list):
        raise SweepError(f"{where}: {kind} takes a list, got {args!r}")
    if kind == "choice":
        if not args:
            raise SweepError(f"{where}: choice needs at least one value")
        no_duplicates(where, args)
        return Entry(key, kind, tuple(args))
    if len(args) != 2:
        raise SweepError(f"{where}: {kind} takes [lo, hi], got {args!r}")
    lo, hi = args
    if kind == "randint":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
            raise SweepError(f"{where}: randint takes two integers [lo, hi], got {args!r}")
        if lo > hi:
            raise SweepError(f"{where}: randint needs lo <= hi, got {args!r}")
        return Entry(key, kind, (lo, hi))
    if not (is_number(lo) and is_number(hi)):
        raise SweepError(f"{where}: {kind} takes two finite numbers [lo, hi], got {args!r}")
    if not lo < hi:
        raise SweepError(f"{where}: {kind} needs lo < hi, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise SweepError(f"{where}: loguniform needs 0 < lo < hi, got {args!r}")
    return Entry(key, kind, (float(lo), float(hi)))


def no_duplicates(where: str, values: list[Any]) -> None:
    seen = [json.dumps(v, sort_keys=True) for v in values]
    dup = sorted({v for v in seen if seen.count(v) > 1})
    if dup:
        raise SweepError(f"{where} lists {', '.join(dup)} more than once")


def parse_space(space: Any) -> list[Entry]:
    """The ``[space]`` table as entries (nested tables flattened to dotted keys)."""
    if space is None:
        return []
    if not isinstance(space, dict):
        raise SweepError(f"[space] must be a table of entries, got {space!r}")
    entries: list[Entry] = []

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for k, v in table.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if not all(key.split(".")):
                raise SweepError(f"[space] bad key {key!r}; use e.g. agent.learning_rate")
            if isinstance(v, dict) and key in TABLES:
                walk(key, v)
            else:
                entries.append(parse_entry(key, v))

    walk("", space)
    for e in entries:
        root = e.key.split(".")[0]
        if e.key in RESERVED or root in RESERVED:
            raise SweepError(f"[space] {e.key}: {RESERVED.get(e.key, RESERVED.get(root))}")
    keys = [e.key for e in entries]
    for a in keys:
        for b in keys:
            if a != b and b.startswith(a + "."):
                raise SweepError(f"[space] sets both {a} and {b}")
    return entries
