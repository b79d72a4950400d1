"""Supervised forecasters: MLP / CNN / LSTM / GRU / TCN / Transformer modules, training,
honest evaluation, walk-forward forecasts and autoencoder features that feed the trading
environment.

Public names: :class:`MLP`, :class:`CNN`, :class:`LSTM`, :class:`GRU`, :class:`TCN`,
:class:`Transformer` (``encode(x)``, ``embed_dim``; also agents' backbones),
:func:`autoencoder_features` / :class:`AutoencoderConfig`, :data:`MODELS`, :func:`build_model`, :class:`ForecastConfig`,
:func:`train`, :class:`TrainResult`, :func:`fit`, :class:`Forecaster` (save / load /
predict), :func:`load_run`, :func:`evaluate`, :func:`score`, :func:`format_table`,
:class:`WalkForwardConfig`, :func:`walk_forward`, :func:`env_features`,
:data:`TARGETS`.

Names are imported lazily (PEP 562), so ``import stockgym.forecasters`` (e.g. by the
command line) does not import torch until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "MLP": "models",
    "CNN": "models",
    "LSTM": "models",
    "GRU": "models",
    "TCN": "models",
    "Transformer": "models",
    "AutoencoderConfig": "autoencoder",
    "leaderboard": "metrics",
    "information_coefficients": "metrics",
    "diebold_mariano": "metrics",
    "mase": "metrics",
    "rmsse": "metrics",
    "autoencoder_features": "autoencoder",
    "ForecastNet": "models",
    "MODELS": "models",
    "build_model": "models",
    "TARGETS": "data",
    "Windows": "data",
    "ForecastConfig": "training",
    "TrainResult": "training",
    "FitResult": "training",
    "fit": "training",
    "train": "training",
    "load_run": "training",
    "Forecaster": "forecaster",
    "Evaluation": "evaluation",
    "evaluate": "evaluation",
    "score": "evaluation",
    "format_table": "evaluation",
    "WalkForwardConfig": "walkforward",
    "walk_forward": "walkforward",
    "env_features": "walkforward",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'stockgym.forecasters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stockgym.forecasters.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
