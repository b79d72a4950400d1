"""Runs: a training run from a config to a run directory, and everything that reads one
back.

- :mod:`~stockgym.experiment.config`: :class:`TrainConfig` (``[data]`` :class:`DataSpec`,
  ``[env]`` :class:`EnvSpec`, ``[agent]``), TOML in and out.
- :mod:`~stockgym.experiment.train`: :func:`train`, :func:`resume` (one run loop for our
  agents and stable-baselines3's).
- :mod:`~stockgym.experiment.records`: the run directory (``config.json``, checkpoints),
  :func:`load_run`, :func:`run_env`.
- :mod:`~stockgym.experiment.evaluation`: validation and hold-out backtests,
  :func:`backtest_run` (``stockgym backtest --model``).
"""

from stockgym.experiment.config import DataSpec, EnvSpec, TrainConfig, load_config
from stockgym.experiment.evaluation import RunBacktest, backtest_run, holdout_returns
from stockgym.experiment.records import load_run, read_record, run_env
from stockgym.experiment.train import TrainResult, resume, train

__all__ = [
    "DataSpec",
    "EnvSpec",
    "RunBacktest",
    "TrainConfig",
    "TrainResult",
    "backtest_run",
    "holdout_returns",
    "load_config",
    "load_run",
    "read_record",
    "resume",
    "run_env",
    "train",
]
