"""Order execution: target weights -> share orders -> fills, costs and cash.

Pure Python on lists of floats (one entry per asset): for the handful of assets a
single env trades this is several times faster than small numpy arrays, and it is
the reference the vectorized env is tested against. The rules (DESIGN.md):

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
5. Buys are then scaled by one common factor ``k`` so that buys plus their commissions
   fit in cash (status ``"scaled"`` when ``k < 1``); whole shares are floored again
   after scaling. Cash never goes negative.

Commission on each filled order is ``max(commission * value, min_commission)``; the sell
tax is ``sell_tax * value`` on sells; the slippage cost is ``qty * |fill - ref|`` (it is
inside the fill price, reported as a cost so that ``dV = PnL - costs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stockgym.envs.costs import CostModel

# Conservative factor on the cash-fitting scale so that float rounding can never make
# cash negative (changes buy sizes by one part in 1e12).
_SAFE = 1.0 - 1e-12


@dataclass
class Order:
    """One asset's order in one step (``requested`` and ``filled`` in shares, signed:
    positive buys, negative sells; ``price`` the fill price incl. slippage)."""

    asset: int
    requested: float
    filled: float
    price: float
    value: float
    commission: float
    tax: float
    slippage: float
    status: str

    def to_dict(self, symbols: list[str]) -> dict:
        return {
            "symbol": symbols[self.asset],
            "side": "buy" if self.requested > 0 else "sell",
            "requested": self.requested,
            "filled": self.filled,
            "price": self.price,
            "value": self.value,
            "commission": self.commission,
            "tax": self.tax,
            "slippage": self.slippage,
            "status": self.status,
        }


def _commission(value: float, costs: CostModel) -> float:
    return max(costs.commission * value, costs.min_commission) if value > 0 else 0.0


def rebalance(
    shares: list[float],
    cash: float,
    weights: list[float],
    ref: list[float],
    tradable: list[bool],
    costs: CostModel,
    fractional: bool,
) -> tuple[list[float], float, list[Order]]:
    """Execute target ``weights`` (fractions of portfolio value, signed) at prices
    ``ref``. Returns new shares, new cash and the orders (filled or not)."""
    n = len(shares)
    v_ref = cash
    for i in range(n):
        v_ref += shares[i] * ref[i]
    slip = costs.slippage_bps * 1e-4
    orders: list[Order] = []
    buys: list[tuple[int, float, float]] = []  # (asset, qty, price)
    new_shares = list(shares)
    for i in range(n):
        desired = weights[i] * v_ref / ref[i]
        if desired == shares[i]:
            continue
        price = ref[i] * (1.0 + slip) if desired > shares[i] else ref[i] * (1.0 - slip)
        target = weights[i] * v_ref / price
        if not fractional:
            target = float(math.trunc(target))
        qty = target - shares[i]
        # Orders smaller than one part in 1e12 of the portfolio are float noise.
        if qty == 0.0 or (desired > shares[i]) != (qty > 0) or abs(qty * ref[i]) <= 1e-12 * abs(v_ref):
            continue
        if not tradable[i]:
            orders.append(Order(i, qty, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "not_tradable"))
        elif qty < 0:
            value = -qty * price
            comm = _commission(value, costs)
            tax = costs.sell_tax * value
            if value - comm - tax < 0.0:
                orders.append(Order(i, qty, 0.0, price, 0.0, 0.0, 0.0, 0.0, "uneconomic"))
                continue
            cash += value - comm - tax
            new_shares[i] = shares[i] + qty
            orders.append(Order(i, qty, qty, price, value, comm, tax, -qty * (ref[i] - price), "filled"))
        else:
            buys.append((i, qty, price))
    if buys:
        cash = _execute_buys(buys, cash, new_shares, ref, costs, fractional, orders)
    return new_shares, cash, orders


def _execute_buys(buys, cash, new_shares, ref, costs, fractional, orders) -> float:
    def sized(k: float) -> list[float]:
        if k >= 1.0:
            return [q for _, q, _ in buys]
        return [q * k if fractional else float(math.floor(q * k)) for _, q, _ in buys]

    def need(qtys: list[float]) -> float:
        total = 0.0
        for (_, _, price), q in zip(buys, qtys):
            value = q * price
            total += value + _commission(value, costs)
        return total

    k = 1.0
    qtys = sized(k)
    if need(qtys) > cash:
        gross = sum(q * p for _, q, p in buys) * (1.0 + costs.commission)
        k = max(cash, 0.0) / gross * _SAFE
        qtys = sized(k)
        if need(qtys) > cash:  # only min_commission can get here: bisect on k
            lo, hi = 0.0, k
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if need(sized(mid)) <= cash:
                    lo = mid
                else:
                    hi = mid
            k = lo
            qtys = sized(k)
    for (i, requested, price), q in zip(buys, qtys):
        if q <= 0.0:
            orders.append(Order(i, requested, 0.0, price, 0.0, 0.0, 0.0, 0.0, "scaled"))
            continue
        value = q * price
        comm = _commission(value, costs)
        cash -= value + comm
        new_shares[i] += q
        status = "filled" if k >= 1.0 else "scaled"
        orders.append(Order(i, requested, q, price, value, comm, 0.0, q * (price - ref[i]), status))
    return cash
