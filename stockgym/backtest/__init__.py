"""Backtesting: run a policy or a baseline over a period, metrics, reports and plots.

Public names: :func:`run_policy`, :class:`BacktestResult`, :class:`Strategy`,
:class:`MarketView`, :data:`STRATEGIES`, :func:`make_strategy`, :func:`compute_metrics`,
:data:`METRIC_KEYS`. Importing this package does not import torch or matplotlib.
"""

from stockgym.backtest.metrics import METRIC_KEYS, compute_metrics
from stockgym.backtest.runner import BacktestResult, hold_env, run_policy
from stockgym.backtest.strategies import STRATEGIES, MarketView, Strategy, make_strategy

__all__ = [
    "METRIC_KEYS",
    "STRATEGIES",
    "BacktestResult",
    "MarketView",
    "Strategy",
    "compute_metrics",
    "hold_env",
    "make_strategy",
    "run_policy",
]
