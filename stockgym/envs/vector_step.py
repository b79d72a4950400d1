"""One step of N trading envs at once: the maths of :class:`StockTradingEnv` on tensors.

Pure functions of a :class:`VecState` (one row per env, float64 money), used as they are
by the eager vector env and compiled by :mod:`stockgym.envs.vector_compiled`. Each
function mirrors its single-env counterpart, with the same names and order:

* :func:`transition` is ``StockTradingEnv.step``: fill at bar ``f = s + 1`` (the open, or
  the close of ``s`` with ``fill="close"``), mark at the close of ``f``, reward, ruin /
  end of episode.
* :func:`rebalance` is :func:`stockgym.envs.execution.rebalance`: target weights ->
  orders at ``V_ref = cash + sum(shares * ref)``, sells first, the borrow on shorts
  reserved (longs sold by a borrow call if cash is short of it), then buys scaled by
  one common factor ``k`` to fit in ``cash - reserve`` (see :func:`fit_buys`), and the
  borrow on the shorts left charged.
* :func:`reward` is ``StockTradingEnv._reward``.

Shapes: per-env quantities ``(N,)``, per-asset ones ``(N, A)``. The rules themselves
are stated in docs/market-rules.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from stockgym.envs.costs import CostModel
from stockgym.envs.execution import _NOISE, _SAFE
from stockgym.envs.krx import TICK_EPS, TICK_TABLES

# Bits of the flag a step returns (one small number read by the host per step).
ANY_DONE, OUT_OF_SPACE, NOT_FINITE, NEEDS_BISECTION = 1, 2, 4, 8


class VecState(NamedTuple):
    """Every env's state after the close of bar ``t``."""

    cash: torch.Tensor  # (N,) float64
    shares: torch.Tensor  # (N, A) float64, signed
    value: torch.Tensor  # (N,) float64: cash + sum(shares * close[t])
    episode_return: torch.Tensor  # (N,) float64: sum of this episode's rewards
    dsr_a: torch.Tensor  # (N,) float64: differential Sharpe moving first moment
    dsr_b: torch.Tensor  # (N,) float64: ... and second moment
    t: torch.Tensor  # (N,) int64: bar of the last observation
    start: torch.Tensor  # (N,) int64: first bar of the episode
    end: torch.Tensor  # (N,) int64: last bar of the episode


class StepOut(NamedTuple):
    """What one step reports besides the new state (``info`` and the flags)."""

    reward: torch.Tensor  # (N,) float64
    terminated: torch.Tensor  # (N,) bool
    truncated: torch.Tensor  # (N,) bool
    cost: torch.Tensor  # (N,) commission + tax + slippage + borrow
    pnl: torch.Tensor  # (N,)
    filled: torch.Tensor  # (N, A) shares filled, signed
    fill_price: torch.Tensor  # (N, A), 0 where nothing filled
    not_tradable: torch.Tensor  # (N, A) bool: orders refused on a halted bar
    limit_locked: torch.Tensor  # (N, A) bool: orders refused on a limit-locked bar
    capped: torch.Tensor  # (N, A) bool: orders cut by the volume cap
    obs_tail: torch.Tensor  # (N, A + 1) float32: weights, then the cash fraction


class MarketTensors(NamedTuple):
    """The market arrays of ``StockTradingEnv.market`` and its exchange rules
    (``StockTradingEnv.rule_arrays``) on the device, ``(bars, A)``."""

    ref_open: torch.Tensor  # float64
    mark: torch.Tensor  # float64
    tradable: torch.Tensor  # bool
    positions: torch.Tensor  # (k,) float64: the discrete actions' target weights (or empty)
    sell_tax: torch.Tensor  # float64 rate on the bar
    locked_up: torch.Tensor  # bool
    locked_down: torch.Tensor  # bool
    cap: torch.Tensor  # float64 max shares per order (inf: none)
    volume: torch.Tensor  # float64
    tick_table: torch.Tensor  # int64 index into the tick tables (-1: none)
    tick_first: torch.Tensor  # (tables,) float64: the tick below the first edge
    tick_edges: torch.Tensor  # (tables, B) float64, padded with inf
    tick_steps: torch.Tensor  # (tables, B) float64: tick increase at each edge


class BarRules(NamedTuple):
    """The fill bar's rules of every env, ``(N, A)`` (rows of :class:`MarketTensors`;
    ``None`` for a rule not in force)."""

    tax: torch.Tensor | None  # None: the constant ``costs.sell_tax``
    locked_up: torch.Tensor | None
    locked_down: torch.Tensor | None
    cap: torch.Tensor | None
    volume: torch.Tensor | None
    tick_table: torch.Tensor | None


@dataclass(frozen=True)
class StepSpec:
    """The settings a step depends on (all from the template ``StockTradingEnv``)."""

    costs: CostModel
    fill: str
    fractional: bool
    reward: str
    dsr_eta: float
    initial_cash: float
    ruin_floor: float
    action_type: str
    positions: tuple[float, ...] | None
    low: float  # lowest target weight: -1 with shorts, else 0
    limit: float  # gross weight limit
    clip_actions: bool
    validate: bool
    tax_by_date: bool = False  # the sell tax varies by date (else costs.sell_tax)
    price_limit: bool = False
    ticks: bool = False
    capped: bool = False  # a volume cap (max_participation)
    impact_coef: float = 0.0  # square-root impact (0: none)


def action_to_weights(
    actions: torch.Tensor, positions: torch.Tensor, spec: StepSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """``StockTradingEnv.action_to_weights`` for ``(N, A)`` actions: target weights
    ``(N, A)`` float64 and the action-check bits (a 0-dim int64 tensor)."""
    bits = torch.zeros((), dtype=torch.int64, device=actions.device)
    if spec.action_type == "discrete":
        k = len(spec.positions)
        if spec.validate:
            bits = ((actions < 0) | (actions >= k)).any() * OUT_OF_SPACE
        w = positions[actions.long().clamp(0, k - 1)]
    else:
        a = actions.to(torch.float64)
        if spec.validate:
            bits = (~torch.isfinite(a)).any() * NOT_FINITE
            if not spec.clip_actions:
                outside = (a < spec.low - 1e-6) | (a > 1.0 + 1e-6)
                bits = bits + outside.any() * OUT_OF_SPACE
        w = a.clamp(spec.low, 1.0)
    gross = w.abs().sum(1, keepdim=True)
    w = torch.where(gross > spec.limit, w * (spec.limit / gross), w)
    return w, bits


def commission(value: torch.Tensor, costs: CostModel) -> torch.Tensor:
    """``max(commission * value, min_commission)`` where ``value > 0`` (an order), else 0."""
    if costs.min_commission > 0.0:
        fee = torch.clamp(costs.commission * value, min=costs.min_commission)
        return torch.where(value > 0.0, fee, 0.0)
    return costs.commission * value


def buy_need(qty: torch.Tensor, price: torch.Tensor, costs: CostModel) -> torch.Tensor:
    """Cash that buying ``qty`` (N, A) at ``price`` costs per env, commissions included."""
    value = qty * price
    return (value + commission(value, costs)).sum(1)


def fit_buys(
    qty: torch.Tensor, price: torch.Tensor, cash: torch.Tensor, spec: StepSpec, bisect: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Buys ``qty`` (N, A) scaled by one factor ``k`` per env so that ``need <= cash``.

    ``k = cash / (sum(qty * price) * (1 + commission))`` (shrunk by ``_SAFE``); whole
    shares are floored after scaling. Where a minimum commission makes that too much
    (``need > cash`` still), ``k`` is bisected when ``bisect``; otherwise those envs are
    returned in the mask, and the caller redoes the step with ``bisect=True``.
    Returns (qty, need, unresolved): ``need`` is the exact amount the caller takes from
    cash, so cash stays >= 0 (one rounded subtraction of a smaller number)."""
    wanted = qty
    need = buy_need(wanted, price, spec.costs)
    over = need > cash
    gross = (wanted * price).sum(1) * (1.0 + spec.costs.commission)
    k = cash.clamp(min=0.0) / torch.where(gross > 0.0, gross, 1.0) * _SAFE

    def sized(k: torch.Tensor) -> torch.Tensor:
        q = wanted * k[:, None]
        return q if spec.fractional else torch.floor(q)

    qty = torch.where(over[:, None], sized(k), wanted)
    need = buy_need(qty, price, spec.costs)
    # (only where over: elsewhere need is unchanged; with cash < 0, possible only short,
    # k = 0 buys nothing, as the bisection would find)
    unresolved = need > cash.clamp(min=0.0)
    if bisect:
        lo, hi = torch.zeros_like(k), k
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            ok = buy_need(sized(mid), price, spec.costs) <= cash
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        qty = torch.where(unresolved[:, None], sized(lo), qty)
        need = torch.where(unresolved, buy_need(qty, price, spec.costs), need)
        unresolved = torch.zeros_like(unresolved)
    return qty, need, unresolved


class Fills(NamedTuple):
    shares: torch.Tensor
    cash: torch.Tensor
    filled: torch.Tensor
    fill_price: torch.Tensor
    cost: torch.Tensor  # commission + tax + slippage + borrow, (N,)
    not_tradable: torch.Tensor
    limit_locked: torch.Tensor
    capped: torch.Tensor
    unresolved: torch.Tensor  # see fit_buys


def tick_tensors() -> tuple[list[float], list[list[float]], list[list[float]]]:
    """:data:`stockgym.envs.krx.TICK_TABLES` as arrays: each table's first tick, its
    edges (padded with inf to one length) and the tick increase at each edge."""
    width = max(len(edges) for edges, _ in TICK_TABLES)
    first, edges, steps = [], [], []
    for e, ticks in TICK_TABLES:
        first.append(float(ticks[0]))
        edges.append([float(x) for x in e] + [math.inf] * (width - len(e)))
        steps.append([float(b - a) for a, b in zip(ticks, ticks[1:], strict=False)])
        steps[-1] += [0.0] * (width - len(e))
    return first, edges, steps


def round_to_tick(
    price: torch.Tensor, buy: torch.Tensor, table: torch.Tensor, market: MarketTensors
) -> torch.Tensor:
    """:func:`stockgym.envs.krx.round_to_tick` for ``(N, A)`` prices: up where ``buy``,
    down elsewhere (a price under one tick is left as it is), with tick table ``table``."""
    tbl = table.clamp(min=0)
    over = price[..., None] >= market.tick_edges[tbl]
    tick = market.tick_first[tbl] + (over * market.tick_steps[tbl]).sum(-1)
    x = price / tick
    rounded = torch.where(buy, torch.ceil(x - TICK_EPS), torch.floor(x + TICK_EPS)) * tick
    return torch.where(x < 1.0 - TICK_EPS, price, rounded)


def fill_price(
    ref: torch.Tensor,
    buy: torch.Tensor,
    bar: BarRules,
    market: MarketTensors,
    spec: StepSpec,
    move: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`stockgym.envs.execution.fill_price`: slippage and impact ``move`` against
    the trader, then the tick."""
    slip = spec.costs.slippage_bps * 1e-4
    if move is None:
        price = torch.where(buy, ref * (1.0 + slip), ref * (1.0 - slip))
    else:
        price = torch.where(
            buy, ref * (1.0 + slip) * (1.0 + move), ref * (1.0 - slip) / (1.0 + move)
        )
    return round_to_tick(price, buy, bar.tick_table, market) if spec.ticks else price


def rebalance(
    shares: torch.Tensor,
    cash: torch.Tensor,
    weights: torch.Tensor,
    ref: torch.Tensor,
    tradable: torch.Tensor,
    bar: BarRules,
    market: MarketTensors,
    spec: StepSpec,
    bisect: bool,
) -> Fills:
    """Execute target ``weights`` at prices ``ref`` under the fill bar's rules ``bar``,
    as :func:`stockgym.envs.execution.rebalance` does for one env."""
    costs = spec.costs
    v_ref = (cash + (shares * ref).sum(1))[:, None]
    desired = weights * v_ref / ref
    buy_side = desired > shares
    price = fill_price(ref, buy_side, bar, market, spec)
    target = weights * v_ref / price
    if not spec.fractional:
        target = torch.trunc(target)
    qty = target - shares
    # An order moves the position toward the desired one (rounding may not), and is not
    # float noise (_NOISE of the portfolio); anything else is no order (qty 0).
    qty = torch.where(qty * (desired - shares) > 0.0, qty, 0.0)
    qty = torch.where((qty * ref).abs() > _NOISE * v_ref.abs(), qty, 0.0)
    not_tradable = torch.where(tradable, 0.0, qty) != 0.0
    qty = torch.where(tradable, qty, 0.0)
    locked = torch.zeros_like(not_tradable)
    if spec.price_limit:
        locked = ((qty > 0.0) & bar.locked_up) | ((qty < 0.0) & bar.locked_down)
        qty = torch.where(locked, 0.0, qty)
    capped = torch.zeros_like(not_tradable)
    if spec.capped:
        capped = qty.abs() > bar.cap
        qty = torch.where(capped, torch.where(qty > 0.0, bar.cap, -bar.cap), qty)
    if spec.impact_coef > 0.0:
        volume = torch.where(bar.volume > 0.0, bar.volume, 1.0)
        move = spec.impact_coef * torch.sqrt(qty.abs() / volume)
        price = torch.where(qty != 0.0, fill_price(ref, buy_side, bar, market, spec, move), price)
    # sells first: cash += value - commission - tax, unless that is negative
    sell_qty = qty.clamp(max=0.0)
    sell_value = -sell_qty * price
    sell_comm = commission(sell_value, costs)
    sell_tax = (costs.sell_tax if bar.tax is None else bar.tax) * sell_value
    if costs.min_commission > 0.0:
        economic = sell_value - sell_comm - sell_tax >= 0.0
        sell_qty, sell_value, sell_comm, sell_tax = (
            torch.where(economic, x, 0.0) for x in (sell_qty, sell_value, sell_comm, sell_tax)
        )
    cash = cash + (sell_value - sell_comm - sell_tax).sum(1)
    cost = (sell_comm + sell_tax).sum(1)
    buy_want = qty.clamp(min=0.0)
    daily = costs.borrow_rate / 252.0
    called = torch.zeros_like(shares)
    reserve = torch.zeros_like(cash)
    if daily > 0.0:
        held = shares + sell_qty
        reserve = borrow_due(held, ref, daily)
        # where cash is short of the reserve no buy fits: cancelled, longs sold instead
        buy_want = torch.where((cash < reserve)[:, None], 0.0, buy_want)
        called, cash, call_cost = borrow_call(
            held, -sell_qty, cash, reserve, ref, tradable, bar, market, spec
        )
        cost = cost + call_cost
    # then buys, scaled by one common factor to fit in what the borrow leaves
    buy_qty, need, unresolved = fit_buys(
        buy_want, price, (cash - reserve).clamp(min=0.0), spec, bisect
    )
    buy_comm = commission(buy_qty * price, costs)
    filled = sell_qty + buy_qty
    new_shares = shares + sell_qty - called + buy_qty  # the single env's order
    if daily > 0.0:
        borrow = torch.minimum(borrow_due(new_shares, ref, daily), cash)
        cash = cash - borrow
        cost = cost + borrow
    cash = cash - need
    traded = filled != 0.0
    slippage = torch.where(traded, (filled * (price - ref)).abs(), 0.0)
    cost = cost + (buy_comm + slippage).sum(1)
    fill_px = torch.where(traded, price, 0.0)
    if daily > 0.0:
        sell_price = fill_price(ref, torch.zeros_like(traded), bar, market, spec)
        fill_px = torch.where(called != 0.0, sell_price, fill_px)
        filled = filled - called
    return Fills(new_shares, cash, filled, fill_px, cost, not_tradable, locked, capped, unresolved)


def borrow_due(shares: torch.Tensor, ref: torch.Tensor, daily: float) -> torch.Tensor:
    """One day's borrow ``daily * sum(max(-q, 0) * ref)`` per env."""
    return torch.where(shares < 0.0, -shares * ref * daily, 0.0).sum(1)


def borrow_call(
    held: torch.Tensor,
    sold: torch.Tensor,
    cash: torch.Tensor,
    reserve: torch.Tensor,
    ref: torch.Tensor,
    tradable: torch.Tensor,
    bar: BarRules,
    market: MarketTensors,
    spec: StepSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tradable longs sold (in asset order) where ``cash < reserve``, as
    :func:`stockgym.envs.execution._borrow_call` (not on a bar locked down, within what
    the volume cap leaves after the step's sells ``sold``): (shares sold (N, A), cash,
    their commission + tax + slippage (N,))."""
    costs = spec.costs
    called = torch.zeros_like(held)
    call_cost = torch.zeros_like(cash)
    prices = fill_price(ref, torch.zeros_like(tradable), bar, market, spec)
    for i in range(held.shape[1]):
        q_held = held[:, i]
        price = prices[:, i]
        tax_rate = costs.sell_tax if bar.tax is None else bar.tax[:, i]
        net = price * (1.0 - costs.commission - tax_rate)
        ok = (cash < reserve) & (q_held > 0.0) & tradable[:, i]
        if spec.price_limit:
            ok = ok & ~bar.locked_down[:, i]
        ok = ok & (net > 0.0)
        q = (reserve - cash + costs.min_commission) / torch.where(net > 0.0, net, 1.0)
        q = q * (1.0 + 1e-9) if spec.fractional else torch.ceil(q)
        q = torch.minimum(q, q_held)
        if spec.capped:
            q = torch.minimum(q, bar.cap[:, i] - sold[:, i])
            ok = ok & (q > 0.0)
        value = q * price
        comm = commission(value, costs)
        tax = tax_rate * value
        ok = ok & (value - comm - tax > 0.0)
        cash = torch.where(ok, cash + (value - comm - tax), cash)
        called[:, i] = torch.where(ok, q, 0.0)
        cost_i = comm + tax + q * (ref[:, i] - price)
        call_cost = call_cost + torch.where(ok, cost_i, 0.0)
    return called, cash, call_cost


def reward(
    v0: torch.Tensor, v1: torch.Tensor, dsr_a: torch.Tensor, dsr_b: torch.Tensor, spec: StepSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reward, new dsr_a, new dsr_b), as ``StockTradingEnv._reward``."""
    if spec.reward == "log_return":
        return torch.log(v1.clamp(min=1e-12 * spec.initial_cash) / v0), dsr_a, dsr_b
    ret = v1 / v0 - 1.0
    if spec.reward == "return":
        return ret, dsr_a, dsr_b
    a, b = dsr_a, dsr_b
    da, db = ret - a, ret * ret - b
    var = b - a * a
    safe = var > 1e-12
    dsr = torch.where(safe, (b * da - 0.5 * a * db) / torch.where(safe, var, 1.0) ** 1.5, 0.0)
    return dsr, a + spec.dsr_eta * da, b + spec.dsr_eta * db


def obs_tail(
    shares: torch.Tensor, cash: torch.Tensor, value: torch.Tensor, mark: torch.Tensor
) -> torch.Tensor:
    """The last A + 1 observation values: each asset's weight, then the cash fraction."""
    weights = shares * mark / value[:, None]
    return torch.cat([weights, (cash / value)[:, None]], 1).to(torch.float32)


def transition(
    state: VecState, actions: torch.Tensor, market: MarketTensors, spec: StepSpec, bisect: bool
) -> tuple[VecState, StepOut, torch.Tensor]:
    """One step of every env; returns the new state, what it reports and the flag
    (bits ``ANY_DONE | OUT_OF_SPACE | NOT_FINITE | NEEDS_BISECTION``)."""
    weights, bits = action_to_weights(actions, market.positions, spec)
    s = state.t
    f = s + 1
    b = f if spec.fill == "open" else s  # the fill bar
    ref = market.ref_open[f] if spec.fill == "open" else market.mark[s]
    tradable = market.tradable[b]
    # only the rules in force are gathered (each gather costs a kernel per step)
    bar = BarRules(
        market.sell_tax[b] if spec.tax_by_date else None,
        market.locked_up[b] if spec.price_limit else None,
        market.locked_down[b] if spec.price_limit else None,
        market.cap[b] if spec.capped else None,
        market.volume[b] if spec.impact_coef > 0.0 else None,
        market.tick_table[b] if spec.ticks else None,
    )
    before = state.shares
    fills = rebalance(before, state.cash, weights, ref, tradable, bar, market, spec, bisect)
    shares, cash = fills.shares, fills.cash
    mark_s, mark_f = market.mark[s], market.mark[f]
    cost = fills.cost
    value = cash + (shares * mark_f).sum(1)
    pnl = (before * (ref - mark_s) + shares * (mark_f - ref)).sum(1)
    r, dsr_a, dsr_b = reward(state.value, value, state.dsr_a, state.dsr_b, spec)
    terminated = value < spec.ruin_floor
    truncated = (f >= state.end) & ~terminated
    new = VecState(
        cash, shares, value, state.episode_return + r, dsr_a, dsr_b, f, state.start, state.end
    )
    out = StepOut(
        r,
        terminated,
        truncated,
        cost,
        pnl,
        fills.filled,
        fills.fill_price,
        fills.not_tradable,
        fills.limit_locked,
        fills.capped,
        obs_tail(shares, cash, value, mark_f),
    )
    flag = (
        bits + (terminated | truncated).any() * ANY_DONE + fills.unresolved.any() * NEEDS_BISECTION
    )
    return new, out, flag


def restart(
    state: VecState,
    done: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    initial_cash: float,
    mark: torch.Tensor,
) -> tuple[VecState, torch.Tensor]:
    """A new episode (cash ``initial_cash``, no position) in the envs where ``done``,
    from bar ``start`` to ``end``; returns the state and its observation tails."""
    keep = ~done
    zero = torch.zeros_like(state.cash)
    cash0 = torch.full_like(state.cash, initial_cash)
    st = VecState(
        torch.where(keep, state.cash, cash0),
        torch.where(keep[:, None], state.shares, 0.0),
        torch.where(keep, state.value, cash0),
        torch.where(keep, state.episode_return, zero),
        torch.where(keep, state.dsr_a, zero),
        torch.where(keep, state.dsr_b, zero),
        torch.where(keep, state.t, start),
        torch.where(keep, state.start, start),
        torch.where(keep, state.end, end),
    )
    return st, obs_tail(st.shares, st.cash, st.value, mark[st.t])
