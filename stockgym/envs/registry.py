"""Gymnasium ids that build themselves: the entry points of ``stockgym/StockTrading-v0``
and ``stockgym/Portfolio-v0``.

``gym.make("stockgym/StockTrading-v0")`` with no arguments trades :data:`DEFAULT_SYMBOL`
from the bundled sample over its training period (the default 64/16/20 date split),
features scaled with training-period statistics only, episodes of
:data:`DEFAULT_EPISODE_LENGTH` bars from random starts. Data come from plain,
JSON-friendly keywords, so ``env.spec.to_json()`` and rl-zoo3's ``--env-kwargs`` work:

- ``symbol`` (or a list: several assets), ``source`` (``sample``, ``fdr``, ``csv``,
  ``synthetic``...), ``start`` / ``end`` (dates), ``period`` (``train`` / ``valid`` /
  ``test`` / ``all``), ``scaler`` (``standard`` / ``minmax`` / ``robust`` / ``none``,
  always fitted on the training period), ``episode_length`` (``None``: the whole
  period from its first bar), ``data_options`` (the synthetic source's options);
- or ``prices=DataFrame`` for Python users (then ``period`` and the data keywords are
  not used: the frame is the env's data);
- every :class:`~stockgym.envs.StockTradingEnv` keyword (``window_size``, ``market``...).

``stockgym/Portfolio-v0`` is the same over :data:`DEFAULT_PORTFOLIO` with continuous
target weights.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from stockgym.data import FeatureScaler, build_features, load_prices, split
from stockgym.envs.trading import StockTradingEnv

DEFAULT_SYMBOL = "AAPL"
DEFAULT_PORTFOLIO = ("AAPL", "MSFT", "IBM", "GOOG")
#: a trading year: long enough for a position to matter, short enough for many starts
DEFAULT_EPISODE_LENGTH = 252
PERIODS = ("train", "valid", "test", "all")


def period_prices(prices: pd.DataFrame, period: str, lookback: int) -> pd.DataFrame:
    """``prices`` cut to ``period`` of the default split, keeping ``lookback`` rows before
    it (feature warm-up and the observation window), so the first decision of the env is
    the period's first date."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
    if period == "all":
        return prices
    part = split(prices).dates[period]
    first = prices.index.get_loc(pd.Timestamp(part["first"]))
    out = prices.iloc[
        max(0, first - lookback) : prices.index.get_loc(pd.Timestamp(part["last"])) + 1
    ]
    out.attrs = dict(prices.attrs)
    return out


def _warm_up(prices: pd.DataFrame, features: Any) -> int:
    built = build_features(prices, features)
    return int(prices.index.get_loc(built.index[0]))


def env_data(
    symbol: str | list[str] = DEFAULT_SYMBOL,
    *,
    source: str = "sample",
    period: str = "train",
    start: str | None = None,
    end: str | None = None,
    scaler: Any = "standard",
    episode_length: int | None | str = "auto",
    data_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    prices: pd.DataFrame | None = None,
    **env_kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(prices, env keywords)`` of our ids' keywords (module docstring): the data cut to
    ``period``, the fitted scaler, the episode length. ``episode_length="auto"``:
    :data:`DEFAULT_EPISODE_LENGTH` with random starts when the period is longer than that,
    else the whole period."""
    fitted = None if isinstance(scaler, str) else scaler  # Python users may pass a fitted one
    if prices is None:
        opts = dict(data_options or {})
        if source in ("auto", "fdr"):
            opts["cache_dir"] = cache_dir
        target = symbol if isinstance(symbol, str) else list(symbol)
        full = load_prices(target, start, end, source=source, **opts)
        features = env_kwargs.get("features")
        if scaler != "none":
            train = full.loc[: pd.Timestamp(split(full).dates["train"]["last"])]
            fitted = FeatureScaler(scaler).fit(build_features(train, features))
        window = int(env_kwargs.get("window_size", 30))
        prices = period_prices(full, period, _warm_up(full, features) + window - 1)
    if episode_length == "auto":
        window = int(env_kwargs.get("window_size", 30))
        bars = len(prices) - _warm_up(prices, env_kwargs.get("features")) - window
        episode_length = DEFAULT_EPISODE_LENGTH if bars > DEFAULT_EPISODE_LENGTH else None
    return prices, {**env_kwargs, "scaler": fitted, "episode_length": episode_length}


def stock_trading_env(**kwargs: Any) -> StockTradingEnv:
    """The entry point of ``stockgym/StockTrading-v0`` (module docstring; keywords of
    :func:`env_data`)."""
    prices, env_kwargs = env_data(**kwargs)
    return StockTradingEnv(prices, **env_kwargs)


def portfolio_env(
    symbol: str | list[str] = DEFAULT_PORTFOLIO, *, action_type: str = "continuous",
    **kwargs: Any,
) -> StockTradingEnv:  # fmt: skip
    """The entry point of ``stockgym/Portfolio-v0``: several symbols, continuous target
    weights; the rest as :func:`stock_trading_env`."""
    return stock_trading_env(symbol=list(symbol), action_type=action_type, **kwargs)


def portfolio_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """:func:`portfolio_env`'s defaults applied to ``kwargs``."""
    return {"symbol": list(DEFAULT_PORTFOLIO), "action_type": "continuous", **kwargs}
