"""``run_policy``: step a :class:`~stockgym.envs.StockTradingEnv` with a deterministic
policy over a period and keep the daily record.

There is one accounting code path: every backtest, baseline and benchmark included,
is a run of the env, with its next-open fills, whole shares and costs.

Timing: the record's first row is the close of the first decision date (the period's
start): initial cash, no position. Each later row is the close of one bar after one
step, so the first order fills at the open of the bar after the start (docs/market-rules.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stockgym.backtest.metrics import compute_metrics
from stockgym.backtest.risk import risk_metrics
from stockgym.backtest.strategies import BuyAndHold, MarketView, Strategy, make_strategy
from stockgym.data.errors import DataError
from stockgym.data.validate import to_timestamp
from stockgym.envs.trading import StockTradingEnv

TRADE_COLUMNS = [
    "date",
    "symbol",
    "side",
    "requested",
    "filled",
    "price",
    "value",
    "commission",
    "tax",
    "slippage",
    "status",
    "reason",
]


@dataclass
class BacktestResult:
    """What :func:`run_policy` returns.

    ``record``: one row per close, indexed by ``date``: ``value`` (portfolio value),
    ``benchmark`` (the benchmark's value, when one was run), ``cash``, ``cost`` (paid on
    that bar), ``traded_value`` (sum of filled order values), ``trades`` (filled orders),
    ``exposure`` (gross invested fraction), ``position_<SYMBOL>`` (shares) and
    ``weight_<SYMBOL>``. ``trades``: one row per order (:data:`TRADE_COLUMNS`; unfilled
    orders too, with their ``status`` and ``reason``), dated by the bar it filled on (with
    ``fill="close"``: the decision bar, whose close it filled at). ``benchmark``: the benchmark's own result.
    ``closes``: each symbol's valuation close on the record's dates.
    """

    record: pd.DataFrame
    trades: pd.DataFrame
    symbols: list[str]
    policy: str
    env_config: dict[str, Any]
    benchmark: BacktestResult | None = None
    terminated: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    closes: pd.DataFrame | None = None

    @property
    def values(self) -> pd.Series:
        return self.record["value"]

    @property
    def returns(self) -> pd.Series:
        """Daily simple returns (one per step)."""
        return self.record["value"].pct_change().iloc[1:]

    @property
    def period(self) -> dict[str, Any]:
        idx = self.record.index
        return {"first": str(idx[0].date()), "last": str(idx[-1].date()), "days": len(idx) - 1}

    def metrics(self, risk_free: float = 0.0) -> dict[str, Any]:
        """:func:`~stockgym.backtest.metrics.compute_metrics` and
        :func:`~stockgym.backtest.risk.risk_metrics` (``alpha``, ``beta`` and
        ``information_ratio`` against the benchmark), plus ``benchmark``: the benchmark's
        metrics when one was run."""
        out: dict[str, Any] = compute_metrics(self.record, self.trades, risk_free=risk_free)
        r = self.returns.to_numpy(np.float64)
        bench = None if self.benchmark is None else self.benchmark.returns.to_numpy(np.float64)
        out.update(risk_metrics(r, bench if bench is not None and len(bench) == len(r) else None))
        if self.benchmark is not None:
            out["benchmark"] = self.benchmark.metrics(risk_free)
        return out


# ---------------------------------------------------------------- policies
def _policy_name(policy: Any) -> str:
    if isinstance(policy, str):
        return policy
    if isinstance(policy, Strategy):
        return policy.name
    return getattr(policy, "__name__", type(policy).__name__)


def _as_actor(policy: Any, env: StockTradingEnv) -> tuple[Callable, Strategy | None]:
    """A function (obs, info) -> env action, and the Strategy if the policy is one."""
    if isinstance(policy, str):
        policy = make_strategy(policy)
    if isinstance(policy, Strategy):
        if env.action_type != "continuous":
            raise ValueError(
                f"strategy {policy.name!r} gives target weights: build the env with "
                "action_type='continuous'"
            )
        strategy = policy

        def act(obs, info):
            t = env.market.dates.get_loc(info["date"])
            weights = strategy.act(obs, info, MarketView(env, t))
            return to_action(weights, env, info, t)

        return act, strategy
    if hasattr(policy, "predict"):  # an agent: the SB3 shape
        return (lambda obs, info: policy.predict(obs, deterministic=True)[0]), None
    if callable(policy):
        return (lambda obs, info: policy(obs)), None
    raise TypeError(
        "policy must be a Strategy, a strategy name, an object with predict(obs, "
        f"deterministic=True) or a callable obs -> action; got {type(policy).__name__}"
    )


def _fill_reference(env: StockTradingEnv, t: int) -> np.ndarray:
    """The prices the env values the portfolio at when it fills the order decided at t."""
    m = env.market
    return m.ref_open[t + 1] if env.fill == "open" else m.mark[t]


def _hold_weight(q: float, ref: float, v_ref: float) -> float:
    """A weight that makes the env place no order for an asset holding ``q`` shares.

    The env targets ``w * v_ref / ref`` shares and trades only when that differs from
    ``q``, on the side it differs. The weight giving exactly ``q`` is found when float
    rounding allows; otherwise the nearest weight on the side where the env's
    whole-share rounding (toward zero) and adverse slippage cannot produce an order:
    a hair above ``q`` for a long. For a short no side is always safe: with slippage,
    a short of more than ``1 / slippage`` shares may be topped up by a few shares.
    """
    if q == 0.0:
        return 0.0
    up = math.inf if q > 0 else -math.inf  # the safe direction of w (and of the target)
    w = q * ref / v_ref
    for _ in range(16):
        d = w * v_ref / ref
        if d == q:
            return w
        if (d > q) == (q > 0):
            break
        w = math.nextafter(w, up)
    back = math.nextafter(w, -up)
    return back if back * v_ref / ref == q else w


def to_action(weights: Any, env: StockTradingEnv, info: dict, t: int) -> np.ndarray:
    """Target weights with ``None`` = hold -> the env's continuous action.

    Held assets get the exact weight that keeps their shares at the fill price (no
    order); new targets are scaled down by one factor if they do not fit in what the
    held assets leave of the budget (``max_gross``, and 1 without shorts)."""
    n = len(env.symbols)
    if weights is None:
        weights = [None] * n
    if len(weights) != n:
        raise ValueError(f"strategy gave {len(weights)} weights for {n} assets")
    ref = _fill_reference(env, t)
    shares = info["position"]
    v_ref = info["cash"]
    for i in range(n):
        v_ref += shares[i] * ref[i]
    held = [i for i, w in enumerate(weights) if w is None]
    out = np.zeros(n, dtype=np.float64)
    for i in held:
        out[i] = _hold_weight(float(shares[i]), float(ref[i]), v_ref)
    new = [i for i, w in enumerate(weights) if w is not None]
    limit = env.max_gross if env.allow_short else min(env.max_gross, 1.0)
    room = max(limit - float(np.abs(out[held]).sum()), 0.0)
    gross = sum(abs(float(weights[i])) for i in new)
    scale = 1.0 if gross <= room else room / gross * (1.0 - 1e-12)
    for i in new:
        out[i] = float(weights[i]) * scale
    return out


# ---------------------------------------------------------------- envs
def _make_env(env_or_config: Any, policy: Any) -> tuple[Any, StockTradingEnv]:
    """(the object to step, the underlying StockTradingEnv)."""
    if isinstance(env_or_config, Mapping):
        kwargs = dict(env_or_config)
        if "prices" not in kwargs:
            raise ValueError("an env config needs 'prices' (and StockTradingEnv keywords)")
        if isinstance(policy, (Strategy, str)):
            kwargs.setdefault("action_type", "continuous")
        env = StockTradingEnv(**kwargs)
        return env, env
    base = getattr(env_or_config, "unwrapped", None)
    if not isinstance(base, StockTradingEnv):
        raise TypeError(
            f"env_or_config must be a StockTradingEnv (or a wrapper of one) or a dict of "
            f"its keywords, got {type(env_or_config).__name__}"
        )
    return env_or_config, base


def hold_env(env: StockTradingEnv, prices: pd.DataFrame | None = None) -> StockTradingEnv:
    """A continuous, long-only env with ``env``'s costs, fill rule, cash and share
    rounding, for buy-and-hold benchmarks: on ``prices`` (another symbol: the costs and
    the tax, but no price limits, ticks, volume cap or impact, which belong to the
    stock), or by default on ``env``'s own market (same symbols, dates, bars and rules)."""
    rules = env.cost_kwargs()
    if prices is None:
        prices = _market_prices(env)
    else:  # another instrument (an index...): the costs, not the stock's exchange rules
        rules.update(board=None, price_limit=False, ticks=False, max_participation=None)
        rules.update(impact=None)
    index = prices.index
    extra = pd.DataFrame({"one": np.ones(len(index))}, index=index)
    syms = (
        list(prices.columns.get_level_values(0).unique())
        if isinstance(prices.columns, pd.MultiIndex)
        else None
    )
    if syms is not None:
        extra = pd.concat({s: extra for s in syms}, axis=1)
    return StockTradingEnv(
        prices,
        features=[],
        extra_features=extra,
        window_size=1,
        action_type="continuous",
        fill=env.fill,
        fractional=env.fractional,
        initial_cash=env.initial_cash,
        ruin_floor=env.ruin_floor,
        **rules,
    )


def _market_prices(env: StockTradingEnv) -> pd.DataFrame:
    """Rebuild a price frame from the env's market arrays (the bars as given on
    tradable days, the last close on halted ones, tradable flags, the previous close):
    a twin env on it fills and values identically."""
    m = env.market
    frames = {}
    for i, sym in enumerate(m.symbols):
        c = m.mark[:, i]
        trad = m.tradable[:, i]
        o = np.where(np.isfinite(m.ref_open[:, i]), m.ref_open[:, i], c)
        frames[sym] = pd.DataFrame(
            {
                "open": o,
                "high": np.where(trad, m.high[:, i], np.maximum(o, c)),
                "low": np.where(trad, m.low[:, i], np.minimum(o, c)),
                "close": c,
                "volume": np.where(trad, m.volume[:, i], 0.0),
                "tradable": trad,
                "prev_close": m.prev_close[:, i],
            },
            index=m.dates,
        )
    if len(frames) == 1:
        ((sym, frame),) = frames.items()
        frame.attrs["symbols"] = [sym]
        return frame
    return pd.concat(frames, axis=1, names=["symbol", "field"])


# ---------------------------------------------------------------- running
def _period_bounds(env: StockTradingEnv, period: Any) -> tuple[int, int]:
    """Row indices (start, end) of the period in the env's market."""
    dates = env.market.dates
    first, last = env.window_size - 1, len(dates) - 1
    if period is None:
        return first, last
    if isinstance(period, Mapping):
        period = (period.get("first"), period.get("last"))
    if not (isinstance(period, (tuple, list)) and len(period) == 2):
        raise ValueError(
            f"period must be None, (start, end) or {{'first', 'last'}}, got {period!r}"
        )
    start, end = (to_timestamp(p, "period") for p in period)
    s = first if start is None else int(dates.searchsorted(start, side="left"))
    e = last if end is None else int(dates.searchsorted(end, side="right")) - 1
    if s < first:
        raise DataError(
            f"backtest start {start.date()} is before the first date with a full "
            f"observation window ({dates[first].date()}); load more history or start later"
        )
    if e <= s:
        raise DataError(
            f"the period {period!r} has no trading step in the env's dates "
            f"{dates[0].date()}..{dates[-1].date()}"
        )
    return s, e


class _Recorder:
    """The record and the orders of a run; an order is dated by its fill bar (the
    info date, or with ``fill="close"`` the bar before it, whose close it filled at)."""

    def __init__(self, symbols: list[str], fill_close: bool = False) -> None:
        self.symbols = symbols
        self.fill_close = fill_close
        self.rows: list[tuple] = []
        self.trades: list[dict] = []
        self._last_date = None

    def add(self, info: dict) -> None:
        filled = [o for o in info["trades"] if o["filled"]]
        pos = info["position"].tolist()
        w = info["weights"].tolist()
        self.rows.append(
            (
                info["date"],
                info["portfolio_value"],
                info["cash"],
                info["cost"],
                sum(o["value"] for o in filled),
                len(filled),
                sum(abs(x) for x in w),
                *pos,
                *w,
            )
        )
        day = self._last_date if self.fill_close else info["date"]
        for o in info["trades"]:
            self.trades.append({"date": day, **{k: o[k] for k in TRADE_COLUMNS[1:]}})
        self._last_date = info["date"]

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        cols = ["date", "value", "cash", "cost", "traded_value", "trades", "exposure"]
        cols += [f"position_{s}" for s in self.symbols] + [f"weight_{s}" for s in self.symbols]
        record = pd.DataFrame(self.rows, columns=cols).set_index("date")
        trades = pd.DataFrame(self.trades, columns=TRADE_COLUMNS)
        return record, trades


def run_policy(
    policy: Any,
    env_or_config: Any,
    period: Any = None,
    *,
    benchmark: Any = True,
    progress: bool = False,
) -> BacktestResult:
    """Run a deterministic policy over a period and return its daily record.

    Parameters
    ----------
    policy : a :class:`~stockgym.backtest.strategies.Strategy` or a baseline's name
        (``"buy_and_hold"``...; needs a continuous env), an agent with
        ``predict(obs, deterministic=True)``, or any callable ``obs -> action``.
    env_or_config : a :class:`~stockgym.envs.StockTradingEnv` (or a Gymnasium wrapper
        of one), or a dict of its keywords (``prices`` included; a strategy gets
        ``action_type="continuous"`` unless the dict says otherwise).
    period : ``None`` (every date with a full observation window), ``(start, end)``
        (inclusive; either may be None), or ``{"first": ..., "last": ...}`` such as
        ``stockgym.data.split(prices).dates["test"]``. ``start`` is the first decision
        date: its close is the record's first row.
    benchmark : ``True`` (default): buy-and-hold of the same symbols over the same
        dates through an env with the same costs, fill rule and cash; a price frame
        (from ``load_prices``): buy-and-hold of those symbols; a ``StockTradingEnv``:
        buy-and-hold in it; ``None``/``False``: no benchmark.
    progress : show a tqdm progress bar (on a terminal only).
    """
    env, base = _make_env(env_or_config, policy)
    if base.episode_length is not None:
        raise ValueError("a backtest runs the whole period: build the env without episode_length")
    actor, strategy = _as_actor(policy, base)
    s, e = _period_bounds(base, period)
    obs, info = env.reset(options={"start": base.market.dates[s], "end": base.market.dates[e]})
    rec = _Recorder(list(base.symbols), fill_close=base.fill == "close")
    rec.add(info)
    if strategy is not None:
        strategy.reset(MarketView(base, s))
    terminated = _loop(env, actor, obs, info, rec, e - s, progress, _policy_name(policy))
    record, trades = rec.frames()
    result = BacktestResult(
        record=record,
        trades=trades,
        symbols=list(base.symbols),
        policy=_policy_name(policy),
        env_config=base.config(),
        terminated=terminated,
        params=strategy.params() if strategy is not None else {},
        closes=pd.DataFrame(
            base.market.mark[s : s + len(record)], index=record.index, columns=list(base.symbols)
        ),
    )
    bench = _benchmark_env(benchmark, base)
    if bench is not None:
        result.benchmark = _run_benchmark(bench, record.index)
        result.record.insert(1, "benchmark", _align_values(result.benchmark, record.index))
    return result


def _loop(env, actor, obs, info, rec, total, progress, desc) -> bool:
    from tqdm import tqdm

    with tqdm(
        total=total, disable=None if progress else True, desc=desc, leave=False, unit="day"
    ) as bar:
        while True:
            obs, _, terminated, truncated, info = env.step(actor(obs, info))
            rec.add(info)
            bar.update(1)
            if terminated or truncated:
                return bool(terminated)


def _benchmark_env(benchmark: Any, base: StockTradingEnv) -> StockTradingEnv | None:
    if benchmark is None or benchmark is False:
        return None
    if benchmark is True:
        return hold_env(base)
    if isinstance(benchmark, pd.DataFrame):
        return hold_env(base, benchmark)
    if isinstance(getattr(benchmark, "unwrapped", None), StockTradingEnv):
        return benchmark.unwrapped
    raise TypeError(
        f"benchmark must be True, None, a price frame or a StockTradingEnv, got "
        f"{type(benchmark).__name__}"
    )


def _run_benchmark(env: StockTradingEnv, dates: pd.DatetimeIndex) -> BacktestResult:
    have = env.market.dates
    if have[0] > dates[0] or have[-1] < dates[-1]:
        raise DataError(
            f"benchmark {env.symbols} has prices {have[0].date()}..{have[-1].date()}, which "
            f"do not cover the backtest {dates[0].date()}..{dates[-1].date()}"
        )
    start = have[have.searchsorted(dates[0], side="right") - 1]
    res = run_policy(BuyAndHold(), env, (start, dates[-1]), benchmark=None)
    res.policy = "buy_and_hold"
    return res


def _align_values(bench: BacktestResult, dates: pd.DatetimeIndex) -> pd.Series:
    """The benchmark's values on the backtest's dates (last known value on dates the
    benchmark has no bar)."""
    v = bench.record["value"]
    return v.reindex(v.index.union(dates)).ffill().reindex(dates)
