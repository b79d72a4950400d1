"""Baseline strategies, and the small interface any rule-based strategy implements.

A :class:`Strategy` decides after the close of bar t, seeing only what a
:class:`MarketView` shows (bars up to and including t: closes, features, dates) plus
the env's observation and ``info`` (position, cash, weights). It returns **target
weights**, one per asset (fraction of portfolio value), where ``None`` means *hold this
asset's shares exactly* (no order); returning ``None`` holds everything. The runner
turns that into the env's continuous action, so the env's execution and costs apply.

Baselines (:data:`STRATEGIES`):

``buy_and_hold``
    Equal weight (1/A of the portfolio per asset) at the first step, then hold. An asset
    whose first order did not fill (halted day) is bought at the next step.
``equal_weight``
    Rebalance to 1/A per asset at the first step and at the first decision date of each
    new month (``rebalance="M"``; ``"W"`` weekly, ``"Q"`` quarterly), hold in between.
``random``
    Each day each asset is drawn long (weight 1/A) or flat with probability
    ``p_long`` (default 0.5) from ``numpy.random.default_rng(seed)``; an asset whose
    draw matches its current state is held (orders only on changes).
``sma_cross``
    Long (1/A) when the ``fast``-day simple moving average of the close is above the
    ``slow``-day one (defaults 20 / 50), flat otherwise; flat while fewer than ``slow``
    closes are known. Orders only when the signal flips.
``forecast_sign``
    Long (1/A) when the feature ``column`` (default ``"forecast"``, passed to the env
    via ``extra_features``, e.g. walk-forward forecasts of the next return) is above
    ``threshold`` (default 0) at the decision date, flat otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

Weights = Sequence[float | None] | None


class MarketView:
    """What a strategy may see when deciding after the close of bar ``t``: bars
    ``0..t`` of the env's market (never later ones)."""

    def __init__(self, env: Any, t: int) -> None:
        self._m = env.market
        self.t = int(t)
        self.symbols: list[str] = list(self._m.symbols)
        self.feature_names: list[str] = list(self._m.feature_names)

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    @property
    def date(self) -> pd.Timestamp:
        """The decision date (bar t)."""
        return self._m.dates[self.t]

    @property
    def dates(self) -> pd.DatetimeIndex:
        return self._m.dates[: self.t + 1]

    def closes(self) -> np.ndarray:
        """Valuation closes (last tradable close on halted days), shape ``(t+1, A)``."""
        out = self._m.mark[: self.t + 1]
        out = out.view()
        out.flags.writeable = False
        return out

    def feature(self, name: str) -> np.ndarray:
        """One feature column for every asset, shape ``(t+1, A)``."""
        if name not in self.feature_names:
            raise ValueError(f"no feature column {name!r}; the env has {self.feature_names}")
        k = self.feature_names.index(name)
        out = self._m.features[: self.t + 1, :, k].view()
        out.flags.writeable = False
        return out


class Strategy:
    """Base class: override :meth:`act` (and :meth:`reset` if it keeps state).

    ``lookback``: closes of history the strategy needs before its first decision (the
    CLI loads that much extra data before ``--start``).
    """

    name: ClassVar[str] = "strategy"
    lookback: int = 0

    def reset(self, view: MarketView) -> None:
        """Called once at the start of a run, before the first :meth:`act`."""

    def act(self, obs: np.ndarray, info: dict, view: MarketView) -> Weights:
        """Target weights per asset (``None`` entries: hold), or ``None`` to hold all."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The strategy's parameters, JSON-able (written to ``config.json``)."""
        return {}

    def describe(self) -> str:
        p = self.params()
        return self.name + (f" ({', '.join(f'{k}={v}' for k, v in p.items())})" if p else "")


def long_flat(long: Sequence[bool], position: Sequence[float]) -> Weights:
    """Targets for a long/flat signal with orders only on changes: a new long gets
    1/A, a position whose signal turned off goes to 0, everything else is held."""
    n = len(long)
    out: list[float | None] = []
    for want, q in zip(long, position, strict=True):
        if want and q == 0:
            out.append(1.0 / n)
        elif not want and q != 0:
            out.append(0.0)
        else:
            out.append(None)
    return None if all(w is None for w in out) else out


class BuyAndHold(Strategy):
    name = "buy_and_hold"

    def act(self, obs, info, view):
        return long_flat([True] * view.n_assets, info["position"])


class EqualWeight(Strategy):
    name = "equal_weight"

    def __init__(self, rebalance: str = "M") -> None:
        if rebalance not in ("W", "M", "Q"):
            raise ValueError(f"equal_weight rebalance must be 'W', 'M' or 'Q', got {rebalance!r}")
        self.rebalance = rebalance
        self._last = None

    def reset(self, view):
        self._last = None

    def act(self, obs, info, view):
        period = view.date.to_period(self.rebalance)
        if period == self._last:
            return None
        self._last = period
        return [1.0 / view.n_assets] * view.n_assets

    def params(self):
        return {"rebalance": self.rebalance}


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, seed: int = 0, p_long: float = 0.5) -> None:
        if not 0.0 <= p_long <= 1.0:
            raise ValueError(f"random p_long must be in [0, 1], got {p_long!r}")
        self.seed = int(seed)
        self.p_long = float(p_long)
        self._rng = np.random.default_rng(self.seed)

    def reset(self, view):
        self._rng = np.random.default_rng(self.seed)

    def act(self, obs, info, view):
        long = self._rng.random(view.n_assets) < self.p_long
        return long_flat(long.tolist(), info["position"])

    def params(self):
        return {"seed": self.seed, "p_long": self.p_long}


class SmaCross(Strategy):
    name = "sma_cross"

    def __init__(self, fast: int = 20, slow: int = 50) -> None:
        if not (int(fast) == fast and int(slow) == slow and 1 <= fast < slow):
            raise ValueError(f"sma_cross needs whole numbers 1 <= fast < slow, got {fast}, {slow}")
        self.fast, self.slow = int(fast), int(slow)
        self.lookback = self.slow

    def act(self, obs, info, view):
        c = view.closes()
        if len(c) < self.slow:
            long = [False] * view.n_assets
        else:
            long = (c[-self.fast :].mean(axis=0) > c[-self.slow :].mean(axis=0)).tolist()
        return long_flat(long, info["position"])

    def params(self):
        return {"fast": self.fast, "slow": self.slow}


class ForecastSign(Strategy):
    name = "forecast_sign"

    def __init__(self, column: str = "forecast", threshold: float = 0.0) -> None:
        self.column = str(column)
        self.threshold = float(threshold)

    def reset(self, view):
        if self.column not in view.feature_names:
            raise ValueError(
                f"forecast_sign: the env has no feature column {self.column!r} (it has "
                f"{view.feature_names}); pass forecasts as extra_features with that column"
            )

    def act(self, obs, info, view):
        x = view.feature(self.column)[-1]
        return long_flat((x > self.threshold).tolist(), info["position"])

    def params(self):
        return {"column": self.column, "threshold": self.threshold}


#: Baseline strategies by name.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (BuyAndHold, EqualWeight, RandomStrategy, SmaCross, ForecastSign)
}


def make_strategy(name: str, **params: Any) -> Strategy:
    """A baseline by name with its parameters, e.g. ``make_strategy("sma_cross", fast=10)``.

    Unknown names or parameters raise ``ValueError`` naming the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    try:
        return cls(**params)
    except TypeError as exc:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(
            f"strategy {name!r} takes parameters {valid or 'none'}, got {sorted(params)}"
        ) from exc
