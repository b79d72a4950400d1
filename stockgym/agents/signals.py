"""The action for the next trading day (``stockgym signal``): the observation as of the
latest close for a given portfolio, the agent's deterministic action, the target weights
it means and the orders they imply."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def observation_at(env: Any, t: int, shares: Sequence[float], cash: float) -> np.ndarray:
    """The observation ``env`` (a ``StockTradingEnv``) gives at the close of bar ``t``
    for a portfolio of ``shares`` (per asset) and ``cash``: the last ``window`` feature
    rows, each asset's weight, the cash fraction (the env's layout)."""
    m, layout = env.market, env.obs_layout
    if not layout.window - 1 <= t < len(m.dates):
        raise ValueError(f"bar {t} has no full observation window (window={layout.window})")
    feats = m.features[t - layout.window + 1 : t + 1].reshape(-1)
    close = m.mark[t]
    q = np.asarray(shares, dtype=np.float64)
    value = float(cash + np.sum(q * close))
    if not value > 0:
        raise ValueError(f"the portfolio is worth {value}: nothing to trade with")
    return np.concatenate([feats, q * close / value, [cash / value]]).astype(np.float32)


def next_signal(
    agent: Any, env: Any, cash: float | None = None, shares: Sequence[float] | None = None
) -> dict[str, Any]:
    """The agent's action after the latest bar of ``env``'s data, for a portfolio of
    ``cash`` (default the env's initial cash) and ``shares`` (default none).

    Returns a JSON-able dict: ``date`` (the latest bar), ``action``, ``portfolio_value``,
    ``cash``, and ``orders``: per symbol the ``close``, ``shares_now``, ``weight_now``,
    ``target_weight``, ``target_shares`` (at the latest close; whole shares unless the
    env is fractional) and ``shares`` to trade (+ buy, - sell).
    """
    t = len(env.market.dates) - 1
    n = len(env.symbols)
    q = np.zeros(n) if shares is None else np.asarray(shares, dtype=np.float64)
    cash = env.initial_cash if cash is None else float(cash)
    obs = observation_at(env, t, q, cash)
    action, _ = agent.predict(obs, deterministic=True)
    weights = env.action_to_weights(action)
    close = env.market.mark[t]
    value = float(cash + np.sum(q * close))
    orders = []
    for i, sym in enumerate(env.symbols):
        target = weights[i] * value / close[i]
        if not env.fractional:
            target = float(math.trunc(target))
        orders.append(
            {
                "symbol": sym,
                "close": float(close[i]),
                "shares_now": float(q[i]),
                "weight_now": float(q[i] * close[i] / value),
                "target_weight": float(weights[i]),
                "target_shares": float(target),
                "shares": float(target - q[i]),
            }
        )
    act = np.asarray(action)
    return {
        "date": str(env.market.dates[t].date()),
        "action": act.item() if act.ndim == 0 else act.tolist(),
        "portfolio_value": value,
        "cash": cash,
        "orders": orders,
    }
