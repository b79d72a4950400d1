"""Seeded synthetic markets: same (symbols, seed, options) -> bit-identical frames.

Two kinds:

``kind="gbm"``
    Correlated geometric Brownian motion with two volatility regimes (a hidden Markov
    chain switches every asset between calm and turbulent days). Daily log returns:
    ``r = mu + sigma_regime * (sqrt(corr) * market + sqrt(1 - corr) * idio)``.
    No edge: nothing in the past predicts the future. Good for sanity checks.

``kind="edge"``
    A market with a known, learnable edge of strength ``edge`` (0 = none): each asset's
    close-to-close log return is AR(1), ``r_t = edge * r_{t-1} + eps_t``. After close t
    the sign of ``r_t`` predicts the open-to-close move of bar t+1 (overnight gaps are
    independent noise), so a long/flat agent filled at the next open can profit from it
    after costs when ``edge`` is large enough (0.2 is easily learnable). Later issues use
    it to prove that forecasters and agents learn. ``lag`` (default 1) moves the memory
    further back, ``r_t = edge * r_{t-lag} + eps_t``: with a lag longer than an agent's
    observation window the edge is visible to a forecaster with a longer window but not
    inside the agent's own window (``stockgym evaluate``'s ablation benchmark uses it).

Prices start at 100; OHLC are consistent (low <= open, close <= high); volume is
lognormal around 1e6 shares; dates are business days from ``start``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("gbm", "edge")


def generate(
    symbols: list[str],
    *,
    seed: int = 0,
    n_days: int = 2520,
    start: str = "2010-01-04",
    kind: str = "gbm",
    edge: float = 0.2,
    mu: float = 0.0003,
    sigma: float = 0.015,
    corr: float = 0.3,
    lag: int = 1,
) -> dict[str, pd.DataFrame]:
    """Return one raw OHLCV frame per symbol (columns open, high, low, close, volume).

    Units: ``mu`` and ``sigma`` are daily log-return mean and volatility; ``corr`` is
    the pairwise correlation of the assets' shocks; ``edge`` the autoregressive
    coefficient at ``lag`` days (kind ``"edge"``).
    """
    if kind not in KINDS:
        raise ValueError(f"synthetic kind must be one of {KINDS}, got {kind!r}")
    if n_days < 2:
        raise ValueError(f"synthetic n_days must be >= 2, got {n_days}")
    if not 0.0 <= corr < 1.0:
        raise ValueError(f"synthetic corr must be in [0, 1), got {corr}")
    if not -1.0 < edge < 1.0:
        raise ValueError(f"synthetic edge must be in (-1, 1), got {edge}")
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or not 1 <= lag < n_days:
        raise ValueError(f"synthetic lag must be an integer in [1, n_days), got {lag!r}")
    n = len(symbols)
    rng = np.random.default_rng(seed)
    market = rng.standard_normal(n_days)
    idio = rng.standard_normal((n_days, n))
    shocks = np.sqrt(corr) * market[:, None] + np.sqrt(1.0 - corr) * idio
    if kind == "gbm":
        regime = _regimes(rng, n_days)
        scale = np.where(regime, 2.0, 1.0)[:, None]  # turbulent days: twice the volatility
        rets = mu + sigma * scale * shocks
    else:
        eps = sigma * shocks
        rets = np.empty_like(eps)
        rets[:lag] = eps[:lag]
        for t in range(lag, n_days):  # AR at lag: a loop is clearest and fast enough
            rets[t] = edge * rets[t - lag] + eps[t]
        rets += mu
    close = 100.0 * np.exp(np.cumsum(rets, axis=0))
    prev_close = np.vstack([np.full((1, n), 100.0), close[:-1]])
    gap = 0.002 * rng.standard_normal((n_days, n))
    open_ = prev_close * np.exp(gap)
    spread = np.abs(0.006 * rng.standard_normal((2, n_days, n)))
    high = np.maximum(open_, close) * np.exp(spread[0])
    low = np.minimum(open_, close) * np.exp(-spread[1])
    volume = np.round(1e6 * np.exp(0.3 * rng.standard_normal((n_days, n))))
    dates = pd.bdate_range(start=start, periods=n_days, name="date")
    return {
        sym: pd.DataFrame(
            {
                "open": open_[:, j],
                "high": high[:, j],
                "low": low[:, j],
                "close": close[:, j],
                "volume": volume[:, j],
            },
            index=dates,
        )
        for j, sym in enumerate(symbols)
    }


def _regimes(rng: np.random.Generator, n_days: int, p_stay: float = 0.98) -> np.ndarray:
    """Two-state Markov chain (False calm, True turbulent), staying put w.p. p_stay."""
    switches = rng.random(n_days) > p_stay
    return (np.cumsum(switches) % 2).astype(bool)
