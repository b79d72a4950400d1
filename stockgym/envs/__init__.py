"""Trading environments. Importing ``stockgym`` registers two Gymnasium ids that build
themselves (:mod:`stockgym.envs.registry`): ``stockgym/StockTrading-v0`` (one symbol,
``gymnasium.make("stockgym/StockTrading-v0")`` with no arguments trades the bundled AAPL
over its training period) and ``stockgym/Portfolio-v0`` (several symbols, continuous
target weights). Importing this package does not import torch."""

import gymnasium as gym

from stockgym.envs.costs import PRESETS, CostModel
from stockgym.envs.layout import ObsLayout
from stockgym.envs.rules import MarketRules
from stockgym.envs.trading import StockTradingEnv

ENV_ID = "stockgym/StockTrading-v0"
PORTFOLIO_ID = "stockgym/Portfolio-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="stockgym.envs.registry:stock_trading_env",
        vector_entry_point="stockgym.envs.vector_numpy:make_vec",
    )
if PORTFOLIO_ID not in gym.registry:
    gym.register(
        id=PORTFOLIO_ID,
        entry_point="stockgym.envs.registry:portfolio_env",
        vector_entry_point="stockgym.envs.vector_numpy:make_portfolio_vec",
    )

__all__ = [
    "ENV_ID",
    "PORTFOLIO_ID",
    "PRESETS",
    "CostModel",
    "MarketRules",
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
