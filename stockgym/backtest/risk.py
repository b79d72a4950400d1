"""Tail, distribution and benchmark-relative metrics of daily returns, with the
conventions of empyrical-reloaded and quantstats (tested against them to 1e-9):

- ``psr``: probabilistic Sharpe ratio against 0 (Bailey & Lopez de Prado 2012, eq. 11),
  ``Phi(SR sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))`` with SR the per-day
  Sharpe ratio (sample std), ``g3`` / ``g4`` the bias-corrected sample skewness and raw
  kurtosis (quantstats' ``probabilistic_sharpe_ratio``).
- ``var_95``: the 5th percentile of daily returns (empyrical ``value_at_risk``);
  ``cvar_95``: the mean of the worst 5 % (empyrical ``conditional_value_at_risk``).
- ``tail_ratio``: ``|95th percentile| / |5th percentile|`` (empyrical).
- ``omega``: gains over losses around 0 (empyrical ``omega_ratio``).
- ``stability``: R^2 of a straight line fitted to the cumulative log returns (empyrical
  ``stability_of_timeseries``).
- ``alpha`` / ``beta`` against the benchmark's daily returns (empyrical ``alpha_beta``:
  beta = cov / var with population moments, alpha annualised by compounding), and
  ``information_ratio``: mean over sample std of the daily active return (quantstats'
  ``information_ratio``; per day, not annualised).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: the keys :func:`risk_metrics` adds to ``metrics.json`` (relative ones need a benchmark)
RISK_KEYS = ("psr", "var_95", "cvar_95", "tail_ratio", "omega", "stability")
RELATIVE_KEYS = ("alpha", "beta", "information_ratio")


def psr(returns: np.ndarray, sr_benchmark: float = 0.0) -> float:
    """P(true per-day Sharpe ratio > ``sr_benchmark``); NaN for fewer than 3 returns or
    no variance."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 4:
        return math.nan
    sd = r.std(ddof=1)
    if not sd > 0:
        return math.nan
    sr = r.mean() / sd
    g3 = float(stats.skew(r, bias=False))
    g4 = float(stats.kurtosis(r, fisher=False, bias=False))
    var = (1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr**2) / (len(r) - 1)
    if not var > 0:
        return math.nan
    return float(stats.norm.cdf((sr - sr_benchmark) / math.sqrt(var)))


def var_95(returns: np.ndarray) -> float:
    r = np.asarray(returns, dtype=np.float64)
    return float(np.percentile(r, 5)) if len(r) else math.nan


def cvar_95(returns: np.ndarray) -> float:
    r = np.asarray(returns, dtype=np.float64)
    if not len(r):
        return math.nan
    k = int((len(r) - 1) * 0.05)
    return float(np.mean(np.partition(r, k)[: k + 1]))


def tail_ratio(returns: np.ndarray) -> float:
    r = np.asarray(returns, dtype=np.float64)
    if not len(r):
        return math.nan
    low = abs(np.percentile(r, 5))
    return float(abs(np.percentile(r, 95)) / low) if low > 0 else math.nan


def omega(returns: np.ndarray) -> float:
    r = np.asarray(returns, dtype=np.float64)
    gains, losses = r[r > 0].sum(), -r[r < 0].sum()
    return float(gains / losses) if losses > 0 else math.nan


def stability(returns: np.ndarray) -> float:
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return math.nan
    cum = np.cumsum(np.log1p(r))
    if np.ptp(cum) == 0:
        return math.nan
    return float(stats.linregress(np.arange(len(cum)), cum).rvalue ** 2)


def alpha_beta(returns: np.ndarray, bench: np.ndarray, periods: int = 252) -> tuple[float, float]:
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(bench, dtype=np.float64)
    if len(r) < 2 or len(r) != len(b):
        return (math.nan, math.nan)
    resid = b - b.mean()
    var = np.mean(resid**2)
    if not var > 0:
        return (math.nan, math.nan)
    beta = float(np.mean(resid * r) / var)
    return (float((1.0 + np.mean(r - beta * b)) ** periods - 1.0), beta)


def information_ratio(returns: np.ndarray, bench: np.ndarray) -> float:
    active = np.asarray(returns, dtype=np.float64) - np.asarray(bench, dtype=np.float64)
    if len(active) < 2:
        return math.nan
    sd = active.std(ddof=1)
    return float(active.mean() / sd) if sd > 0 else math.nan


def risk_metrics(returns: np.ndarray, bench: np.ndarray | None = None,
                 periods: int = 252) -> dict[str, float]:  # fmt: skip
    """:data:`RISK_KEYS`, and :data:`RELATIVE_KEYS` when ``bench`` (the benchmark's daily
    returns over the same days) is given."""
    out = {
        "psr": psr(returns),
        "var_95": var_95(returns),
        "cvar_95": cvar_95(returns),
        "tail_ratio": tail_ratio(returns),
        "omega": omega(returns),
        "stability": stability(returns),
    }
    if bench is not None:
        a, b = alpha_beta(returns, bench, periods)
        out.update(alpha=a, beta=b, information_ratio=information_ratio(returns, bench))
    return out
