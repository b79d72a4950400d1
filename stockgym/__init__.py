"""stockgym: exact, leak-free stock-trading environments, forecasters and RL agents.

Subpackages (data flows left to right, never back):
``stockgym.data`` -> ``stockgym.forecasters`` -> ``stockgym.envs`` -> ``stockgym.agents``
-> ``stockgym.backtest``.
"""

__version__ = "0.1.0"

from stockgym import envs as _envs  # noqa: E402,F401  (registers stockgym/StockTrading-v0)
