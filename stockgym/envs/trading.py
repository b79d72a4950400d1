"""StockTradingEnv: a Gymnasium env that trades one or several stocks exactly.

Importing this module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from stockgym.data.errors import DataError
from stockgym.data.validate import to_timestamp
from stockgym.envs.costs import resolve_costs, resolve_market
from stockgym.envs.execution import rebalance, rebalance_one
from stockgym.envs.layout import ObsLayout
from stockgym.envs.market import build_market
from stockgym.envs.rules import bar_rules, coverage_warnings, resolve_rules, rule_arrays

_INTS = (int, np.integer)
_empty, _log = np.empty, math.log  # (module-level names: one lookup fewer per step)
REWARDS = ("log_return", "return", "differential_sharpe")
ACTION_TYPES = ("discrete", "continuous")
FILLS = ("open", "close")


class StockTradingEnv(gym.Env):
    """Trade one or several stocks on daily bars with next-open fills and real costs.

    | | |
    |---|---|
    | Observation | ``Box(-inf, inf, (W*A*F + A + 1,), float32)``: the last ``W`` rows of ``F`` features for ``A`` assets (oldest first), then each asset's weight, then the cash fraction. Never raw prices. Layout: ``env.unwrapped.obs_layout``. |
    | Action (``"discrete"``, 1 asset) | ``Discrete(k)``: index into ``positions`` (target weights; default ``(0, 1)`` flat/long, ``(-1, 0, 1)`` with ``allow_short``). |
    | Action (``"discrete"``, A assets) | ``MultiDiscrete([k] * A)``: a target weight per asset from ``positions``; if the gross weight exceeds ``max_gross`` all weights are scaled down by one factor (all long = equal weight). |
    | Action (``"continuous"``) | ``Box(0, 1, (A,))`` long-only, or ``Box(-1, 1, (A,))`` with ``allow_short``: target weights, the rest in cash. Over-budget actions (sum > 1, or gross > ``max_gross``) are scaled down by one factor. Values outside the Box raise ``ValueError`` unless ``clip_actions=True``. NaN always raises. |
    | Reward | ``"log_return"``: ``log(V_{s+1} / V_s)``, after every cost (default); ``"return"``: ``V_{s+1}/V_s - 1``; ``"differential_sharpe"``: Moody & Saffell's differential Sharpe ratio of the step return (``dsr_eta`` its adaptation rate). |
    | Start | ``reset()`` returns the observation as of the close of bar ``s``: the first bar with a full window, ``options["start"]``, or, with ``episode_length``, a random start drawn from ``self.np_random``. Cash ``initial_cash``, no position. |
    | Step | The order fills at the OPEN of bar ``s+1`` plus slippage (``fill="close"``: at the close of bar ``s``, optimistic, as some peers do); the portfolio is marked at the close of ``s+1``; ``info["date"]`` is bar ``s+1``. |
    | End | ``truncated=True`` on the step that reaches the last bar (end of data, ``options["end"]`` or ``episode_length``); ``terminated=True`` when V falls below ``ruin_floor`` (default 1 % of ``initial_cash``). |

    Execution (see :mod:`stockgym.envs.execution`): target weights are turned into
    shares at fill time from ``V_open = cash + sum(shares * open)``; whole shares
    (rounded toward zero) unless ``fractional``; sells first, then buys scaled by one
    common factor to fit in cash. Orders on non-tradable (halted) bars are not filled and
    are reported in ``info["trades"]``; halted assets are valued at their last close.
    Costs: ``market`` preset (``"krx"``, ``"us"``, ``"none"``; ``"auto"`` from the first
    symbol) overridden by ``commission`` (rate), ``sell_tax`` (rate), ``slippage_bps``,
    ``min_commission`` (currency per order), ``borrow_rate`` (annual rate on shorts held after the
    trade, charged daily at the fill reference price and reserved before buys are sized,
    so cash never goes negative).
    Accounting is float64: ``V = cash + sum(shares * close)`` and
    ``V_{s+1} - V_s = info["pnl"] - info["cost"]`` at every step.

    ``info``: ``date``, ``portfolio_value``, ``cash``, ``position`` (shares per asset),
    ``weights``, ``cost`` (commission + tax + slippage + borrow this step), ``pnl``,
    ``trades`` (one dict per order: requested and filled shares, fill price, costs,
    status), ``step``.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        prices: pd.DataFrame,
        *,
        features: Sequence[str] | None = None,
        extra_features: pd.DataFrame | None = None,
        scaler: Any = None,
        window_size: int = 30,
        action_type: str = "discrete",
        positions: Sequence[float] | None = None,
        allow_short: bool = False,
        max_gross: float = 1.0,
        market: str = "auto",
        commission: float | None = None,
        sell_tax: float | None = None,
        slippage_bps: float | None = None,
        min_commission: float | None = None,
        borrow_rate: float | None = None,
        board: str | dict[str, str] | None = None,
        price_limit: bool | None = None,
        ticks: bool | None = None,
        max_participation: float | None = None,
        impact: str | None = None,
        impact_coef: float | None = None,
        fill: str = "open",
        fractional: bool = False,
        reward: str = "log_return",
        dsr_eta: float = 0.01,
        initial_cash: float = 10_000_000.0,
        ruin_floor: float | None = None,
        episode_length: int | None = None,
        clip_actions: bool = False,
        render_mode: str | None = None,
        record_history: bool = False,
    ) -> None:
        _check_choice("action_type", action_type, ACTION_TYPES)
        _check_choice("fill", fill, FILLS)
        _check_choice("reward", reward, REWARDS)
        if render_mode is not None:
            _check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        if not (isinstance(window_size, (int, np.integer)) and window_size >= 1):
            raise ValueError(f"window_size must be an integer >= 1, got {window_size!r}")
        if not (initial_cash > 0 and math.isfinite(initial_cash)):
            raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")
        if not max_gross > 0:
            raise ValueError(f"max_gross must be > 0, got {max_gross!r}")
        self.market = build_market(
            prices, features=features, extra_features=extra_features, scaler=scaler
        )
        m = self.market
        n_bars, n_assets, n_feat = m.features.shape
        if n_bars < window_size + 1:
            raise DataError(
                f"[env] window_size={window_size} needs at least {window_size + 1} bars with "
                f"every feature, but only {n_bars} remain ({m.dates[0].date()}.."
                f"{m.dates[-1].date()}) after the features' warm-up"
            )
        if episode_length is not None and not 1 <= episode_length <= n_bars - window_size:
            raise ValueError(
                f"episode_length must be in [1, {n_bars - window_size}] for this data, "
                f"got {episode_length}"
            )
        self.costs = resolve_costs(
            market,
            m.symbols,
            commission=commission,
            sell_tax=sell_tax,
            slippage_bps=slippage_bps,
            min_commission=min_commission,
            borrow_rate=borrow_rate,
        )
        self.market_name = resolve_market(market, m.symbols)
        self.rules = resolve_rules(
            self.market_name,
            m.symbols,
            sell_tax=sell_tax,
            board=board,
            price_limit=price_limit,
            ticks=ticks,
            max_participation=max_participation,
            impact=impact,
            impact_coef=impact_coef,
            listed_boards=prices.attrs.get("boards"),
        )
        coverage_warnings(m, self.rules)
        self.rule_arrays = rule_arrays(m, self.rules, self.costs.sell_tax, bool(fractional))
        self._bars = bar_rules(self.rule_arrays, self.rules)
        self.window_size = int(window_size)
        self.action_type = action_type
        self.allow_short = bool(allow_short)
        self.max_gross = float(max_gross)
        self.fill = fill
        self.fractional = bool(fractional)
        self.reward_type = reward
        self.dsr_eta = float(dsr_eta)
        self.initial_cash = float(initial_cash)
        self.ruin_floor = 0.01 * self.initial_cash if ruin_floor is None else float(ruin_floor)
        self._value_floor = 1e-12 * self.initial_cash  # (see the log_return reward in step)
        self.episode_length = episode_length
        self.clip_actions = bool(clip_actions)
        self.render_mode = render_mode
        self.record_history = bool(record_history) or render_mode == "rgb_array"
        self.symbols = list(m.symbols)
        self.obs_layout = ObsLayout(
            self.window_size, n_assets, n_feat, tuple(m.symbols), tuple(m.feature_names)
        )
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(self.obs_layout.size,), dtype=np.float32
        )
        self._setup_actions(positions, n_assets)
        # Python lists: scalar reads from lists are far cheaper than from numpy arrays.
        self._ref = m.ref_open.tolist()
        self._mark = m.mark.tolist()
        self._trad = m.tradable.tolist()
        self._dates = list(m.dates)
        # Flat features padded with A + 1 slots; bar t's observation starts as one copy of
        # the precomputed view ``_obs_rows[t]`` (its window rows, then slots that are
        # overwritten with weights and cash). Bars before the first full window: None.
        row, size = n_assets * n_feat, self.obs_layout.size
        pad = np.concatenate([m.features.reshape(-1), np.zeros(n_assets + 1, dtype=np.float32)])
        self._obs_rows = [None] * (self.window_size - 1) + [
            pad[lo : lo + size] for lo in range(0, (n_bars - self.window_size + 1) * row, row)
        ]
        self._n_assets = n_assets
        self._one_asset = n_assets == 1
        self._symbol = self.symbols[0]  # (the scalar step's)
        self._n_feat_obs = self.obs_layout.features.stop
        self._fast_discrete = action_type == "discrete" and n_assets == 1
        self._n_positions = len(self.positions) if self.positions else 0
        self._log_reward = reward == "log_return"
        # One asset without borrow, minimum commission or exchange rules (the default
        # single-stock env): the step runs on scalars (execution.rebalance_one), with
        # bit-identical results; everything else runs rebalance on lists.
        r = self.rules
        self._scalar = (
            n_assets == 1
            and self.costs.min_commission == 0.0
            and not (self.allow_short and self.costs.borrow_rate > 0.0)
            and not (r.price_limit or r.ticks or r.impact)
            and r.max_participation is None
        )
        if self._scalar:
            # What the scalar step to bar f reads, as one tuple per f: the fill's reference
            # price, whether the fill bar trades, its sell tax, and the marks of s and f.
            ref1 = [x[0] for x in (self._ref if fill == "open" else self._mark)]
            lag = 0 if fill == "open" else 1  # the fill bar: f, or s = f - 1 at the close
            self._bar1 = [None] + [
                (
                    ref1[f - lag],
                    self._trad[f - lag][0],
                    self._bars[f - lag].tax[0],
                    self._mark[f - 1][0],
                    self._mark[f][0],
                )
                for f in range(1, n_bars)
            ]
        self._started = False
        self._done = True

    # ----------------------------------------------------------------- actions
    def _setup_actions(self, positions: Sequence[float] | None, n_assets: int) -> None:
        lo = -1.0 if self.allow_short else 0.0
        if self.action_type == "discrete":
            if positions is None:
                positions = (-1.0, 0.0, 1.0) if self.allow_short else (0.0, 1.0)
            pos = [float(p) for p in positions]
            if len(pos) < 2 or any(not (lo <= p <= 1.0) for p in pos):
                raise ValueError(
                    f"positions must be >= 2 target weights in [{lo}, 1] "
                    f"(negative ones need allow_short=True), got {positions!r}"
                )
            self.positions = tuple(pos)
            self.action_space = (
                spaces.Discrete(len(pos))
                if n_assets == 1
                else spaces.MultiDiscrete([len(pos)] * n_assets)
            )
        else:
            if positions is not None:
                raise ValueError("positions only apply to action_type='discrete'")
            self.positions = None
            self.action_space = spaces.Box(lo, 1.0, shape=(n_assets,), dtype=np.float32)

    def action_to_weights(self, action: Any) -> list[float]:
        """Validate an action and return target weights (after budget scaling).

        Raises ``ValueError`` naming the problem; never changes the env's state.
        """
        n = self._n_assets
        if self._fast_discrete and isinstance(action, (int, np.integer)):
            # Fast path for the common single-asset case (no numpy round trip).
            if 0 <= action < len(self.positions):
                return [self.positions[action]]
            raise ValueError(f"action {action!r} outside the action space {self.action_space}")
        if self.action_type == "discrete":
            a = np.asarray(action)
            if a.dtype.kind not in "iu" and not (
                a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a))
            ):
                raise ValueError(f"discrete action must be integer(s), got {action!r}")
            a = a.astype(np.int64).reshape(-1)
            k = len(self.positions)
            if a.size != n or np.any(a < 0) or np.any(a >= k):
                raise ValueError(f"action {action!r} outside the action space {self.action_space}")
            w = [self.positions[j] for j in a.tolist()]
        else:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            if a.size != n:
                raise ValueError(f"action has {a.size} values, expected {n} (one per asset)")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"action contains NaN or inf: {action!r}")
            lo = -1.0 if self.allow_short else 0.0
            if not self.clip_actions and (np.any(a < lo - 1e-6) or np.any(a > 1.0 + 1e-6)):
                raise ValueError(
                    f"action {a.tolist()} outside [{lo}, 1]; clip it or pass clip_actions=True"
                )
            w = np.clip(a, lo, 1.0).tolist()
        gross = sum(abs(x) for x in w)
        limit = self.max_gross if self.allow_short else min(self.max_gross, 1.0)
        if gross > limit:
            scale = limit / gross
            w = [x * scale for x in w]
        return w

    # ------------------------------------------------------------------- reset
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"start", "end"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; use 'start', 'end'")
        first = self.window_size - 1
        last = len(self._dates) - 1
        if "start" in options or "end" in options:
            start = self._index_of(options.get("start"), side="left", default=first)
            end = self._index_of(options.get("end"), side="right", default=last)
            if start < first:
                raise DataError(
                    f"[env] start {pd.Timestamp(options['start']).date()} leaves fewer than "
                    f"window_size={self.window_size} feature rows; first allowed start is "
                    f"{self._dates[first].date()}"
                )
            if end <= start:
                raise DataError(
                    f"[env] episode from {self._dates[start].date()} to "
                    f"{self._dates[max(end, 0)].date()} has no step"
                )
            if self.episode_length is not None:
                end = min(end, start + self.episode_length)
        elif self.episode_length is not None:
            start = int(self.np_random.integers(first, last - self.episode_length + 1))
            end = start + self.episode_length
        else:
            start, end = first, last
        self._t = start
        self._start, self._end = start, end
        self._shares = [0.0] * self.obs_layout.n_assets
        self._cash = self.initial_cash
        self._value = self.initial_cash
        self._dsr_a = 0.0
        self._dsr_b = 0.0
        self._started = True
        self._done = False
        self._history = [self._snapshot([])] if self.record_history else None
        obs, info = self._observe(start, self._shares, self._cash, self._value, 0.0, 0.0, [])
        return obs, dict(info)

    def _index_of(self, when: Any, side: str, default: int) -> int:
        if when is None:
            return default
        ts = to_timestamp(when, "[env] reset option")
        idx = self.market.dates.searchsorted(ts, side=side)
        return int(idx) if side == "left" else int(idx) - 1

    # -------------------------------------------------------------------- step
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            if not self._started:
                raise RuntimeError("call reset() before step()")
            raise RuntimeError("the episode has ended (terminated or truncated); call reset()")
        f = self._t + 1
        if self._scalar:  # one asset on scalars (see ``_scalar`` in ``__init__``)
            if (
                self._fast_discrete
                and isinstance(action, _INTS)
                and 0 <= action < self._n_positions
            ):
                weight = self.positions[action]  # (action_to_weights' answer, without a call)
            else:
                weight = self.action_to_weights(action)[0]
            ref, tradable, tax, mark_s, mark_f = self._bar1[f]
            before = self._shares[0]
            fills = rebalance_one(
                before, self._cash, weight, ref, tradable, tax, self.costs, self.fractional,
                self._symbol,
            )  # fmt: skip
            if fills is None:  # only the list path decides
                shares, cash, value, cost, pnl, orders = self._execute(f, [weight])
            else:
                q, cash, orders, cost = fills
                shares = [q]
                value = cash + q * mark_f
                pnl = 0.0 + (before * (ref - mark_s) + q * (mark_f - ref))  # +0.0: as _execute
        else:
            weights = self.action_to_weights(action)
            shares, cash, value, cost, pnl, orders = self._execute(f, weights)
            mark_f = self._mark[f][0]  # (the one-asset observation below reads it)
        v0 = self._value
        if self._log_reward:  # (the default, inline)
            # V can only reach <= 0 with shorts; the log is then taken of a tiny positive
            # value (the episode terminates on ruin in the same step).
            floor = self._value_floor
            reward = _log((value if value >= floor else floor) / v0)
        else:
            reward = self._reward(v0, value)
        self._shares, self._cash, self._value, self._t = shares, cash, value, f
        terminated = value < self.ruin_floor
        truncated = f >= self._end and not terminated
        self._done = terminated or truncated
        if self._one_asset:  # _observe for one asset, inline on scalars (same bits: tested)
            q = shares[0]
            obs = self._obs_rows[f].copy()
            w = q * mark_f / value
            nf = self._n_feat_obs
            obs[nf] = w
            obs[nf + 1] = cash / value
            position = _empty(1)
            position[0] = q
            weights = _empty(1)
            weights[0] = w
            info = self._info(f, value, cash, position, weights, cost, pnl, orders)
        else:
            obs, info = self._observe(f, shares, cash, value, cost, pnl, orders)
        if self._history is not None:
            self._history.append(self._snapshot(orders))
        return obs, reward, terminated, truncated, info

    def _execute(self, f: int, weights: list[float]) -> tuple:
        """Trade to target ``weights`` for the step to bar ``f`` on lists (any number of
        assets, every rule): ``(shares, cash, value, cost, pnl, orders)`` after it."""
        s = f - 1
        b = f if self.fill == "open" else s  # the fill bar
        ref = self._ref[f] if self.fill == "open" else self._mark[s]
        before = self._shares
        shares, cash, orders, borrow = rebalance(
            before,
            self._cash,
            weights,
            ref,
            self._trad[b],
            self.costs,
            self.fractional,
            self.symbols,
            self._bars[b],
        )
        mark_s, mark_f = self._mark[s], self._mark[f]
        value = cash
        pnl = 0.0
        for i, q in enumerate(shares):
            value += q * mark_f[i]
            pnl += before[i] * (ref[i] - mark_s[i]) + q * (mark_f[i] - ref[i])
        cost = borrow
        for o in orders:
            cost += o["commission"] + o["tax"] + o["slippage"]
        return shares, cash, value, cost, pnl, orders

    def _reward(self, v0: float, v1: float) -> float:
        """The ``"return"`` and ``"differential_sharpe"`` rewards (``step`` computes the
        default ``"log_return"``)."""
        ret = v1 / v0 - 1.0
        if self.reward_type == "return":
            return ret
        a, b = self._dsr_a, self._dsr_b
        da, db = ret - a, ret * ret - b
        var = b - a * a
        dsr = (b * da - 0.5 * a * db) / var**1.5 if var > 1e-12 else 0.0
        self._dsr_a = a + self.dsr_eta * da
        self._dsr_b = b + self.dsr_eta * db
        return dsr

    # ------------------------------------------------------------- obs & info
    def _observe(
        self,
        t: int,
        shares: list[float],
        cash: float,
        v: float,
        cost: float,
        pnl: float,
        orders: list,
    ) -> tuple[np.ndarray, dict]:
        """A new observation array and the info dict, as of the close of bar ``t`` with
        ``shares``, ``cash`` and portfolio value ``v`` (the env's state after a reset or
        a step). A one-asset step builds the same inline, on scalars (``step``)."""
        nf = self._n_feat_obs
        obs = self._obs_rows[t].copy()  # window rows, then slots for weights and cash
        wl = [q * p / v for q, p in zip(shares, self._mark[t], strict=False)]
        obs[nf:-1] = wl
        position = np.array(shares)
        weights = np.array(wl)
        obs[-1] = cash / v
        return obs, self._info(t, v, cash, position, weights, cost, pnl, orders)

    def _info(
        self,
        t: int,
        v: float,
        cash: float,
        position: np.ndarray,
        weights: np.ndarray,
        cost: float,
        pnl: float,
        orders: list,
    ) -> dict[str, Any]:
        """The info dict as of the close of bar ``t`` (kept for ``render("ansi")``)."""
        self._last_info = info = {
            "date": self._dates[t],
            "portfolio_value": v,
            "cash": cash,
            "position": position,
            "weights": weights,
            "cost": cost,
            "pnl": pnl,
            "trades": orders,
            "step": t - self._start,
        }
        return info

    @property
    def portfolio_value(self) -> float:
        return self._value

    def cost_kwargs(self) -> dict[str, Any]:
        """The keywords that give another env this env's costs and exchange rules
        (boards by symbol; a symbol not named here trades on KOSPI's)."""
        costs = self.costs.to_dict()
        r = self.rules
        if r.tax_schedule is not None:
            del costs["sell_tax"]
        return {
            "market": self.market_name,
            **costs,
            "board": dict(zip(self.symbols, r.boards, strict=True)) if r.boards else None,
            "price_limit": r.price_limit,
            "ticks": r.ticks,
            "max_participation": r.max_participation,
            "impact": r.impact,
            "impact_coef": r.impact_coef,
        }

    def config(self) -> dict[str, Any]:
        """Everything that defines this env's behaviour, JSON-able (for run configs)."""
        return {
            "symbols": self.symbols,
            "first_date": str(self._dates[0].date()),
            "last_date": str(self._dates[-1].date()),
            "features": list(self.obs_layout.feature_names),
            "window_size": self.window_size,
            "action_type": self.action_type,
            "positions": list(self.positions) if self.positions else None,
            "allow_short": self.allow_short,
            "max_gross": self.max_gross,
            "costs": self.costs.to_dict(),
            "rules": self.rules.to_dict(),
            "fill": self.fill,
            "fractional": self.fractional,
            "reward": self.reward_type,
            "initial_cash": self.initial_cash,
            "ruin_floor": self.ruin_floor,
            "episode_length": self.episode_length,
        }

    # ------------------------------------------------------------------ render
    def _snapshot(self, orders: list) -> tuple:
        idx = {s: i for i, s in enumerate(self.symbols)}
        return (
            self._t,
            self._value,
            [(idx[o["symbol"]], o["filled"]) for o in orders if o["filled"]],
        )

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None or not self._started:
            return None
        if self.render_mode == "ansi":
            i = self._last_info
            pos = " ".join(
                f"{s}:{q:g}" for s, q in zip(self.symbols, i["position"].tolist(), strict=False)
            )
            return (
                f"{i['date'].date()} | V={i['portfolio_value']:,.2f} | "
                f"cash={i['cash']:,.2f} | {pos} | cost={i['cost']:,.2f}"
            )
        from stockgym.envs.plotting import render_rgb

        return render_rgb(self)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
