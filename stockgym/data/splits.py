"""Date-based train / validation / test splits and walk-forward folds.

Splits are chronological and never shuffled; their boundaries depend only on the dates,
never on prices. Validation is carved from before the test period; the test period is
for the final backtest only (never for early stopping or model selection).

``split(prices)`` with nothing named uses the project default: test = the last 20% of
dates, validation = the last 20% of what remains, train = the rest (64 / 16 / 20).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stockgym.data.errors import DataError
from stockgym.data.validate import to_timestamp

PARTS = ("train", "valid", "test")
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VALID_FRACTION = 0.2  # of what remains after the test period


@dataclass(frozen=True, eq=False)
class Splits:
    """The three parts of a frame and their resolved dates.

    ``dates`` is JSON-able, for run configs:
    ``{"train": {"first": "2004-08-19", "last": "...", "rows": 1374}, "valid": ..., "test": ...}``.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    dates: dict

    def __iter__(self):
        return iter((self.train, self.valid, self.test))


def _index_of(obj) -> pd.DatetimeIndex:
    index = obj if isinstance(obj, pd.Index) else getattr(obj, "index", None)
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError("need a DatetimeIndex or a frame indexed by dates")
    if index.has_duplicates or not index.is_monotonic_increasing:
        raise DataError("dates must be sorted and unique")
    if len(index) == 0:
        raise DataError("no dates to split")
    return index


def _spec(value, part: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """A part is None, an end date, or a (start, end) tuple (either may be None)."""
    if value is None:
        return None, None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise DataError(f"{part}: give an end date or a (start, end) pair, got {value!r}")
        return to_timestamp(value[0], f"{part} start"), to_timestamp(value[1], f"{part} end")
    return None, to_timestamp(value, f"{part} end")


def _positions_from_counts(counts: tuple[int, int, int]) -> list[tuple[int, int]]:
    out, lo = [], 0
    for c in counts:
        out.append((lo, lo + c))
        lo += c
    return out


def _by_fraction(n: int, fractions) -> list[tuple[int, int]]:
    if fractions is None:
        n_test = int(round(n * DEFAULT_TEST_FRACTION))
        n_valid = int(round((n - n_test) * DEFAULT_VALID_FRACTION))
        return _positions_from_counts((n - n_test - n_valid, n_valid, n_test))
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError) as exc:
        raise DataError(f"fractions must be three numbers, got {fractions!r}") from exc
    if len(fr) != 3 or any(not np.isfinite(f) or f <= 0 for f in fr):
        raise DataError(f"fractions must be three positive numbers, got {fractions!r}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise DataError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr)})")
    n_train = int(round(n * fr[0]))
    n_valid = int(round(n * fr[1]))
    return _positions_from_counts((n_train, n_valid, n - n_train - n_valid))


def _by_dates(index: pd.DatetimeIndex, specs: dict) -> list[tuple[int, int]]:
    """Resolve (start, end) per part into row ranges [lo, hi)."""
    starts = {p: specs[p][0] for p in PARTS}
    ends = {p: specs[p][1] for p in PARTS}
    # a part's missing end: the day before the next part's start (test: the last date)
    for i, part in enumerate(PARTS):
        if ends[part] is None:
            if part == "test":
                continue
            nxt = PARTS[i + 1]
            if starts[nxt] is None:
                raise DataError(
                    f"cannot tell where {part!r} ends: give its end date, or the start of "
                    f"{nxt!r} (test defaults to everything after valid)"
                )
    bounds = []
    prev_hi = 0
    for i, part in enumerate(PARTS):
        start, end = starts[part], ends[part]
        lo = prev_hi if start is None else int(index.searchsorted(start, side="left"))
        if end is None and part != "test":
            hi = int(index.searchsorted(starts[PARTS[i + 1]], side="left"))
        elif end is None:
            hi = len(index)
        else:
            hi = int(index.searchsorted(end, side="right"))
        if i and lo < prev_hi:
            raise DataError(
                f"{part!r} starts on {index[lo].date() if lo < len(index) else start} but "
                f"{PARTS[i - 1]!r} ends on {index[prev_hi - 1].date()}: parts must not overlap"
            )
        bounds.append((lo, max(lo, hi)))
        prev_hi = max(lo, hi)
    return bounds


def split(prices, train=None, valid=None, test=None, *, fractions=None) -> Splits:
    """Split a date-indexed frame (prices or features) into train / valid / test.

    Three ways:

    * nothing named: test = last 20% of dates, valid = last 20% of the rest, train = the
      rest (counts rounded to whole rows).
    * ``fractions=(0.6, 0.2, 0.2)``: consecutive parts of those shares of the rows.
    * dates: each of ``train, valid, test`` is an end date (inclusive; the part starts
      right after the previous part ends, train at the first date) or a
      ``(start, end)`` pair (either may be None; a gap between parts is allowed).
      A part without an end ends just before the next part's start; ``test`` ends at
      the last date. E.g. ``split(p, train="2008-12-31", valid="2010-12-31")``.
      Parse dates fully (``"2008"`` means 2008-01-01).

    Parts are chronological and never overlap; an empty part, overlapping parts, or
    fractions mixed with dates raise :class:`DataError`. Frames keep their ``attrs``.
    """
    index = _index_of(prices)
    named = {"train": train, "valid": valid, "test": test}
    if fractions is not None and any(v is not None for v in named.values()):
        raise DataError("give either fractions or dates, not both")
    if all(v is None for v in named.values()):
        bounds = _by_fraction(len(index), fractions)
    else:
        bounds = _by_dates(index, {p: _spec(v, p) for p, v in named.items()})
    parts, dates = {}, {}
    for part, (lo, hi) in zip(PARTS, bounds, strict=True):
        if hi <= lo:
            raise DataError(
                f"the {part!r} part is empty ({len(index)} dates "
                f"{index[0].date()}..{index[-1].date()}; check the dates or fractions)"
            )
        frame = prices.iloc[lo:hi] if not isinstance(prices, pd.Index) else prices[lo:hi]
        parts[part] = frame
        dates[part] = {
            "first": str(index[lo].date()),
            "last": str(index[hi - 1].date()),
            "rows": int(hi - lo),
        }
    return Splits(parts["train"], parts["valid"], parts["test"], dates)


@dataclass(frozen=True, eq=False)
class Fold:
    """One walk-forward fold: ``train`` and ``test`` dates (every train date < every test date)."""

    number: int
    train: pd.DatetimeIndex
    test: pd.DatetimeIndex

    @property
    def dates(self) -> dict:
        """JSON-able first/last date and row count of both parts."""
        return {
            "fold": self.number,
            **{
                name: {"first": str(ix[0].date()), "last": str(ix[-1].date()), "rows": len(ix)}
                for name, ix in (("train", self.train), ("test", self.test))
            },
        }

    def select(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(frame.loc[train dates], frame.loc[test dates])``."""
        return frame.loc[self.train], frame.loc[self.test]


def walk_forward(
    index_or_frame,
    n_folds: int,
    *,
    test_size: int,
    train_size: int | None = None,
    mode: str = "expanding",
    gap: int = 0,
) -> Iterator[Fold]:
    """Walk-forward folds in time order (sizes in rows, i.e. trading days).

    The test blocks are the last ``n_folds * test_size`` rows, consecutive, one per fold.
    Fold k trains on rows ending ``gap`` rows before its test block starts:
    ``mode="expanding"`` from the first row (``train_size``, if given, is the *minimum*
    first-fold train length that must fit); ``mode="rolling"`` on exactly ``train_size``
    rows (default: the first fold's expanding length). Arguments are checked on the
    call (not lazily); too little data raises :class:`DataError`.
    """
    index = _index_of(index_or_frame)
    if mode not in ("expanding", "rolling"):
        raise DataError(f"mode must be 'expanding' or 'rolling', got {mode!r}")
    for name, value, least in (
        ("n_folds", n_folds, 1),
        ("test_size", test_size, 1),
        ("gap", gap, 0),
    ):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise DataError(f"{name} must be an integer >= {least}, got {value!r}")
    n = len(index)
    first_test = n - n_folds * test_size
    first_train = first_test - gap  # rows available to the first fold's train
    if train_size is not None and (not isinstance(train_size, (int, np.integer)) or train_size < 1):
        raise DataError(f"train_size must be an integer >= 1, got {train_size!r}")
    need = train_size if train_size is not None else 1
    if first_train < need:
        raise DataError(
            f"{n} rows are too few for {n_folds} folds of test_size={test_size}, gap={gap} "
            f"and a train part of >= {need} rows"
        )
    size = train_size if (mode == "rolling" and train_size is not None) else first_train
    folds = []
    for k in range(n_folds):
        t_lo = first_test + k * test_size
        tr_hi = t_lo - gap
        tr_lo = 0 if mode == "expanding" else tr_hi - size
        folds.append(Fold(k, index[tr_lo:tr_hi], index[t_lo : t_lo + test_size]))
    return iter(folds)
