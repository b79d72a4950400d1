"""Order execution: target weights -> share orders -> fills, costs and cash.

Pure Python on lists of floats (one entry per asset): for the handful of assets a
single env trades this is several times faster than small numpy arrays, and it is
the reference the vectorized env is tested against. :func:`rebalance_one` is the same
for one asset on scalars where no borrow, minimum commission or exchange rule applies
(the default single-stock env; bit-identical, tests/test_env_scalar_path.py). The rules
(docs/market-rules.md):

1. ``V_ref = cash + sum(shares * ref)`` where ``ref`` is the reference price of each
   asset at fill time (the next open by default; the last close for a halted asset).
2. Order side from ``w * V_ref / ref - shares``. The fill price moves against the
   trader: ``ref * (1 + slippage)`` for buys, ``ref * (1 - slippage)`` for sells.
   Target shares ``w * V_ref / fill_price``, rounded toward zero to whole shares unless
   ``fractional`` (so a position never exceeds its target exposure).
3. Orders on non-tradable assets are not filled (status ``"not_tradable"``).
4. Sells (including short sales) execute first: cash += value - commission - tax. A
   sell whose proceeds would not cover its own costs (possible only with
   ``min_commission``) is skipped (status ``"uneconomic"``).
5. Borrow on shorts is reserved before buys are sized: ``reserve = b * sum(max(-q, 0)
   * ref)`` over the shares ``q`` held after the sells, ``b = borrow_rate / 252``. If
   cash is below the reserve (cash spent on longs while a short is held), no buy can be
   paid: the buys are cancelled (status ``"scaled"``, nothing filled) and tradable long
   positions are sold, in asset order, until the reserve is covered (status
   ``"borrow_call"``; ``q = (gap + min_commission) / (price * (1 - commission -
   sell_tax))`` shares, rounded up to whole shares, at most the position).
6. Buys are then scaled by one common factor ``k`` so that buys plus their commissions
   fit in ``cash - reserve`` (status ``"scaled"`` when ``k < 1``); whole shares are
   floored again after scaling.
7. The borrow charged is ``b * sum(max(-q, 0) * ref)`` over the shares after the buys
   (buys only cover shorts, so it is <= the reserve). Cash never goes negative, by
   construction: ``need = sum(q * price + commission) <= cash - reserve``, and cash
   becomes ``(cash - borrow) - need``, two correctly rounded subtractions of numbers
   that fit (subtracting each order's cost in turn could go below zero by a few ulps).
   Only when no long can be sold (all halted) and cash is below the borrow is the
   borrow capped at the cash (the rest is not charged).

Commission on each filled order is ``max(commission * value, min_commission)``; the sell
tax is ``sell_tax * value`` on sells; the slippage cost is ``qty * |fill - ref|`` (it is
inside the fill price, reported as a cost so that ``dV = PnL - costs``).
"""

from __future__ import annotations

import math

from stockgym.envs.costs import CostModel
from stockgym.envs.krx import round_to_tick
from stockgym.envs.rules import BarRules

# Conservative factor on the cash-fitting scale, so that the scaled buys fit in cash
# despite float rounding without a bisection (changes buy sizes by one part in 1e12).
_SAFE = 1.0 - 1e-12
# Orders smaller than this fraction of the portfolio value are float noise, not orders.
_NOISE = 1e-12


def _order(symbol, requested, filled, price, value, commission, tax, slippage, status, why=""):
    """One asset's order in one step: ``requested``/``filled`` in shares, signed
    (positive buys); ``price`` the fill price incl. slippage; costs in currency;
    ``reason`` says why it did not fill in full ("" when it did)."""
    return {
        "symbol": symbol,
        "side": "buy" if requested > 0 else "sell",
        "requested": requested,
        "filled": filled,
        "price": price,
        "value": value,
        "commission": commission,
        "tax": tax,
        "slippage": slippage,
        "status": status,
        "reason": why,
    }


def _commission(value: float, costs: CostModel) -> float:
    return max(costs.commission * value, costs.min_commission) if value > 0 else 0.0


def fill_price(ref: float, slip: float, buy: bool, tick: int | None, move: float = 0.0) -> float:
    """The fill price of an order at reference price ``ref``: slippage ``slip`` and the
    impact ``move`` against the trader (buys ``ref (1 + slip)(1 + move)``, sells
    ``ref (1 - slip) / (1 + move)``, always > 0), rounded to the tick of table ``tick``
    against the trader (``None``: no ticks)."""
    if buy:
        price = ref * (1.0 + slip) * (1.0 + move) if move else ref * (1.0 + slip)
    else:
        price = ref * (1.0 - slip) / (1.0 + move) if move else ref * (1.0 - slip)
    return price if tick is None else round_to_tick(price, tick, buy)


def rebalance(
    shares: list[float],
    cash: float,
    weights: list[float],
    ref: list[float],
    tradable: list[bool],
    costs: CostModel,
    fractional: bool,
    symbols: list[str],
    bar: BarRules,
) -> tuple[list[float], float, list[dict], float]:
    """Execute target ``weights`` (fractions of portfolio value, signed) at prices
    ``ref`` under the fill bar's exchange rules ``bar`` (sell tax, price-limit locks,
    volume cap, impact, ticks). Returns new shares, new cash (borrow paid), the orders
    (filled or not, as dicts) and the borrow charged on the shorts held after the trade."""
    n = len(shares)
    v_ref = cash
    for i in range(n):
        v_ref += shares[i] * ref[i]
    slip = costs.slippage_bps * 1e-4
    orders: list[dict] = []
    buys: list[tuple] = []  # (asset, requested, qty, price, status, why)
    new_shares = list(shares)
    sold = [0.0] * n
    ticks, cap = bar.ticks, bar.cap
    for i in range(n):
        desired = weights[i] * v_ref / ref[i]
        if desired == shares[i]:
            continue
        buy = desired > shares[i]
        tick = None if ticks is None else ticks[i]
        price = fill_price(ref[i], slip, buy, tick)
        target = weights[i] * v_ref / price
        if not fractional:
            target = float(math.trunc(target))
        qty = target - shares[i]
        if qty == 0.0 or buy != (qty > 0) or abs(qty * ref[i]) <= _NOISE * abs(v_ref):
            continue
        requested = qty
        if not tradable[i]:
            why = "not tradable (halted) on the fill bar"
            orders.append(
                _order(symbols[i], qty, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "not_tradable", why)
            )
            continue
        if bar.locked_up[i] if buy else bar.locked_down[i]:
            why = "locked at the upper price limit" if buy else "locked at the lower price limit"
            orders.append(
                _order(symbols[i], qty, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "limit_locked", why)
            )
            continue
        status, why = "filled", ""
        if cap is not None and abs(qty) > cap[i]:
            qty = cap[i] if buy else -cap[i]
            status, why = "capped", f"volume cap: {cap[i]:g} shares of {bar.volume[i]:g} traded"
            if qty == 0.0:
                orders.append(
                    _order(symbols[i], requested, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, status, why)
                )
                continue
        if bar.impact:
            price = fill_price(
                ref[i], slip, buy, tick, bar.impact * math.sqrt(abs(qty) / bar.volume[i])
            )
        if buy:
            buys.append((i, requested, qty, price, status, why))
            continue
        value = -qty * price
        comm = _commission(value, costs)
        tax = bar.tax[i] * value
        if value - comm - tax < 0.0:
            why = (why + "; " if why else "") + "proceeds below the order's costs"
            orders.append(
                _order(symbols[i], requested, 0.0, price, 0.0, 0.0, 0.0, 0.0, "uneconomic", why)
            )
            continue
        cash += value - comm - tax
        new_shares[i] = shares[i] + qty
        sold[i] = -qty
        slippage = -qty * (ref[i] - price)
        orders.append(
            _order(symbols[i], requested, qty, price, value, comm, tax, slippage, status, why)
        )
    daily = costs.borrow_rate / 252.0
    reserve = borrow_due(new_shares, ref, daily) if daily > 0.0 else 0.0
    if cash < reserve:
        # No buy fits (cash - reserve < 0): the buys are cancelled, and longs are sold
        cash = _borrow_call(
            new_shares, cash, reserve, ref, tradable, costs, fractional, orders, symbols, bar, sold
        )
        for i, requested, _, price, _, capped in buys:
            why = (capped + "; " if capped else "") + "cancelled: cash below the borrow reserve"
            orders.append(
                _order(symbols[i], requested, 0.0, price, 0.0, 0.0, 0.0, 0.0, "scaled", why)
            )
        buys = []
    avail = cash - reserve
    need = 0.0
    if buys:
        need = _execute_buys(
            buys, max(avail, 0.0), new_shares, ref, costs, fractional, orders, symbols
        )
    borrow = min(borrow_due(new_shares, ref, daily), cash) if daily > 0.0 else 0.0
    # borrow <= reserve and need <= avail = cash - reserve, so neither step goes below 0
    return new_shares, (cash - borrow) - need, orders, borrow


def rebalance_one(
    shares: float,
    cash: float,
    weight: float,
    ref: float,
    tradable: bool,
    tax: float,
    costs: CostModel,
    fractional: bool,
    symbol: str,
) -> tuple[float, float, list[dict], float] | None:
    """:func:`rebalance` for one asset on scalars, for the common case of a single-asset
    env without borrow, minimum commission, price limits, ticks, volume cap or impact
    (the env decides when it applies). The same arithmetic in the same order, so the
    results are bit-identical (tested against :func:`rebalance`); returns ``(shares,
    cash, orders, cost)``, or ``None`` where only :func:`rebalance` decides (cash
    below zero, or scaled buys that still do not fit and need its bisection)."""
    if cash < 0.0:
        return None
    v_ref = cash + shares * ref
    desired = weight * v_ref / ref
    if desired == shares:
        return shares, cash, [], 0.0
    buy = desired > shares
    price = (
        ref * (1.0 + costs.slippage_bps * 1e-4) if buy else ref * (1.0 - costs.slippage_bps * 1e-4)
    )
    target = weight * v_ref / price
    if not fractional:
        target = float(math.trunc(target))
    qty = target - shares
    if qty == 0.0 or buy != (qty > 0) or abs(qty * ref) <= _NOISE * abs(v_ref):
        return shares, cash, [], 0.0
    if not tradable:
        why = "not tradable (halted) on the fill bar"
        return (
            shares,
            cash,
            [_order(symbol, qty, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "not_tradable", why)],
            0.0,
        )
    if not buy:
        value = -qty * price
        comm = costs.commission * value if value > 0 else 0.0
        tax_paid = tax * value
        if value - comm - tax_paid < 0.0:
            why = "proceeds below the order's costs"
            order = _order(symbol, qty, 0.0, price, 0.0, 0.0, 0.0, 0.0, "uneconomic", why)
            return shares, cash, [order], 0.0
        slippage = -qty * (ref - price)
        order = _order(symbol, qty, qty, price, value, comm, tax_paid, slippage, "filled")
        return shares + qty, cash + (value - comm - tax_paid), [order], comm + tax_paid + slippage
    # one buy, as _execute_buys sizes it (commission: max(c * value, 0) without a minimum)
    q = qty
    value = q * price
    need = value + (costs.commission * value if value > 0 else 0.0)
    status, why = "filled", ""
    if need > cash:
        k = cash / (qty * price * (1.0 + costs.commission)) * _SAFE
        q = qty * k if fractional else float(math.floor(qty * k))
        value = q * price
        need = value + (costs.commission * value if value > 0 else 0.0)
        if need > cash:
            return None
        if k < 1.0:
            status, why = "scaled", "buys scaled to fit in cash"
    if q <= 0.0:
        return shares, cash, [_order(symbol, qty, 0.0, price, 0.0, 0.0, 0.0, 0.0, status, why)], 0.0
    comm = costs.commission * value if value > 0 else 0.0
    slippage = q * (price - ref)
    order = _order(symbol, qty, q, price, value, comm, 0.0, slippage, status, why)
    return shares + q, (cash - 0.0) - need, [order], comm + 0.0 + slippage


def borrow_due(shares: list[float], ref: list[float], daily: float) -> float:
    """One day's borrow ``daily * sum(max(-q, 0) * ref)`` on the short positions."""
    total = 0.0
    for q, p in zip(shares, ref, strict=False):
        if q < 0.0:
            total += -q * p * daily
    return total


def _borrow_call(
    new_shares, cash, reserve, ref, tradable, costs, fractional, orders, symbols, bar, sold
) -> float:
    """Sell tradable longs, in asset order, until ``cash >= reserve`` (not on a bar
    locked down, within what the volume cap leaves after this step's sells; no impact)."""
    slip = costs.slippage_bps * 1e-4
    for i in range(len(new_shares)):
        if cash >= reserve:
            break
        if new_shares[i] <= 0.0 or not tradable[i] or bar.locked_down[i]:
            continue
        price = fill_price(ref[i], slip, False, None if bar.ticks is None else bar.ticks[i])
        net = price * (1.0 - costs.commission - bar.tax[i])
        if net <= 0.0:
            continue
        q = (reserve - cash + costs.min_commission) / net
        q = min(float(math.ceil(q)) if not fractional else q * (1.0 + 1e-9), new_shares[i])
        if bar.cap is not None:
            q = min(q, bar.cap[i] - sold[i])
        if q <= 0.0:
            continue
        value = q * price
        comm = _commission(value, costs)
        tax = bar.tax[i] * value
        if value - comm - tax <= 0.0:
            continue
        cash += value - comm - tax
        new_shares[i] -= q
        slippage = q * (ref[i] - price)
        orders.append(_order(symbols[i], -q, -q, price, value, comm, tax, slippage, "borrow_call"))
    return cash


def _buy_need(buys, qtys, costs: CostModel) -> float:
    """Cash that buying ``qtys`` costs, commissions included."""
    total = 0.0
    for (_, _, _, price, _, _), q in zip(buys, qtys, strict=False):
        value = q * price
        total += value + _commission(value, costs)
    return total


def _scaled(buys, k: float, fractional: bool) -> list[float]:
    return [q * k if fractional else float(math.floor(q * k)) for _, _, q, _, _, _ in buys]


def _execute_buys(buys, cash, new_shares, ref, costs, fractional, orders, symbols) -> float:
    k = 1.0
    qtys = [q for _, _, q, _, _, _ in buys]
    need = _buy_need(buys, qtys, costs)
    if need > cash:
        gross = sum(q * p for _, _, q, p, _, _ in buys) * (1.0 + costs.commission)
        k = max(cash, 0.0) / gross * _SAFE
        qtys = _scaled(buys, k, fractional)
        need = _buy_need(buys, qtys, costs)
        if need > cash:  # only min_commission gets here: bisect k
            lo, hi = 0.0, k
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if _buy_need(buys, _scaled(buys, mid, fractional), costs) <= cash:
                    lo = mid
                else:
                    hi = mid
            k = lo
            qtys = _scaled(buys, k, fractional)
            need = _buy_need(buys, qtys, costs)
    scaled = k < 1.0
    for (i, requested, _, price, status, why), q in zip(buys, qtys, strict=False):
        if scaled:
            status, why = "scaled", (why + "; " if why else "") + "buys scaled to fit in cash"
        if q <= 0.0:
            orders.append(
                _order(symbols[i], requested, 0.0, price, 0.0, 0.0, 0.0, 0.0, status, why)
            )
            continue
        value = q * price
        comm = _commission(value, costs)
        new_shares[i] += q
        slippage = q * (price - ref[i])
        orders.append(
            _order(symbols[i], requested, q, price, value, comm, 0.0, slippage, status, why)
        )
    # need <= cash here (or need == 0); the caller subtracts it in one rounded step
    return need
