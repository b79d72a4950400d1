"""Statistics of an evaluation (``stockgym evaluate``), each with its formula and source;
``docs/evaluate.md`` explains how they are used.

- :func:`block_bootstrap_ci`: circular block bootstrap of a statistic over days, blocks
  never crossing from one series (symbol x window) into another (Politis & Romano 1992;
  block length ``ceil(n ** (1/3))``, the usual rate for a mean, Hall, Horowitz & Jing 1995).
- :func:`unit_bootstrap_ci`: the plain bootstrap over independent units (windows).
- :func:`psr` (:mod:`stockgym.backtest.risk`): probabilistic Sharpe ratio (Bailey &
  Lopez de Prado 2012, "The Sharpe Ratio Efficient Frontier", eq. 11): ``Phi((SR - SR*)
  sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))`` with SR per period, ``g3`` the
  skewness and ``g4`` the (non-excess) kurtosis of the returns (bias-corrected sample
  moments, as quantstats).
- :func:`deflated_sharpe`: the PSR against the Sharpe ratio expected from the best of
  ``N`` unskilled trials (Bailey & Lopez de Prado 2014, "The Deflated Sharpe Ratio",
  eq. 2): ``SR* = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))``,
  ``gamma`` the Euler-Mascheroni constant, ``V`` the variance of the trials' Sharpe
  ratios.
- :func:`verdict`: ``"edge"`` only when the whole interval is above 0, ``"worse"`` when
  it is below, else ``"no evidence"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from stockgym.backtest.risk import psr

EULER_GAMMA = 0.5772156649015329
PERIODS = 252  # trading days a year (the metrics' convention)


def block_length(n: int) -> int:
    """``ceil(n ** (1/3))``, at least 1."""
    return max(1, math.ceil(n ** (1.0 / 3.0)))


def block_bootstrap_ci(
    series: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over the days of ``series`` (one array per
    symbol x window, pooled), resampled by circular blocks within each series."""
    series = [np.asarray(s, dtype=np.float64) for s in series if len(s)]
    if not series:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        parts = []
        for s in series:
            n, size = len(s), block_length(len(s))
            starts = rng.integers(0, n, size=math.ceil(n / size))
            idx = (starts[:, None] + np.arange(size)[None, :]).reshape(-1)[:n] % n
            parts.append(s[idx])
        reps[b] = statistic(np.concatenate(parts))
    return _percentiles(reps, level)


def unit_bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of independent ``values`` (one per unit)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return _percentiles(values[idx].mean(axis=1), level)


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return (math.nan, math.nan)
    lo, hi = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


def sharpe_per_period(returns: np.ndarray) -> float:
    """Mean over sample standard deviation (ddof 1); NaN without variance."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return math.nan
    sd = r.std(ddof=1)
    return float(r.mean() / sd) if sd > 0 else math.nan


def annual_sharpe(returns: np.ndarray) -> float:
    return sharpe_per_period(returns) * math.sqrt(PERIODS)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """``SR*`` of the deflated Sharpe ratio: the per-period Sharpe ratio the best of
    ``n_trials`` unskilled trials reaches in expectation (0 for one trial)."""
    if n_trials <= 1 or not sr_variance > 0:
        return 0.0
    a = stats.norm.ppf(1.0 - 1.0 / n_trials)
    b = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b))


def deflated_sharpe(returns: np.ndarray, n_trials: int, trial_sharpes: Sequence[float]) -> float:
    """PSR of ``returns`` against :func:`expected_max_sharpe` of ``n_trials`` trials whose
    per-period Sharpe ratios were ``trial_sharpes`` (their variance is ``V``)."""
    srs = np.asarray([s for s in trial_sharpes if math.isfinite(s)], dtype=np.float64)
    var = float(srs.var(ddof=1)) if len(srs) > 1 else 0.0
    return psr(returns, expected_max_sharpe(n_trials, var))


def verdict(ci: tuple[float, float]) -> str:
    lo, hi = ci
    if math.isfinite(lo) and lo > 0:
        return "edge"
    if math.isfinite(hi) and hi < 0:
        return "worse"
    return "no evidence"


def entropy_bits(actions: np.ndarray, bins: int = 10) -> float:
    """Shannon entropy (bits) of the actions taken: by value for discrete actions, in
    ``bins`` equal bins over [-1, 1] for continuous weights (one column per asset,
    flattened)."""
    a = np.asarray(actions, dtype=np.float64).reshape(-1)
    if not len(a):
        return math.nan
    if np.all(a == np.round(a)):
        _, counts = np.unique(a, return_counts=True)
    else:
        counts, _ = np.histogram(np.clip(a, -1, 1), bins=bins, range=(-1, 1))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
