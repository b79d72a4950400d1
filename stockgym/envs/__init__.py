"""Trading environments. ``StockTradingEnv`` is registered as
``stockgym/StockTrading-v0`` (``gymnasium.make("stockgym/StockTrading-v0", prices=...)``)
when ``stockgym`` is imported. Importing this package does not import torch."""

import gymnasium as gym

from stockgym.envs.costs import PRESETS, CostModel
from stockgym.envs.trading import ObsLayout, StockTradingEnv

ENV_ID = "stockgym/StockTrading-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="stockgym.envs.trading:StockTradingEnv")

__all__ = [
    "ENV_ID",
    "PRESETS",
    "CostModel",
    "ObsLayout",
    "StockTradingEnv",
    "VectorStockTradingEnv",
]


def __getattr__(name: str):
    # The vector env needs torch; import it only when asked for.
    if name == "VectorStockTradingEnv":
        from stockgym.envs.vector import VectorStockTradingEnv

        return VectorStockTradingEnv
    raise AttributeError(f"module 'stockgym.envs' has no attribute {name!r}")
