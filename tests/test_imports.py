"""Import costs the design promises: the data layer and the single env never pull in torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["stockgym", "stockgym.data", "stockgym.envs", "stockgym.envs.trading"]
)
def test_module_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gymnasium_make_after_import_stockgym():
    code = (
        "import gymnasium as gym, stockgym;"
        "from stockgym.data import load_prices;"
        "env = gym.make('stockgym/StockTrading-v0', prices=load_prices('IBM', source='sample'));"
        "obs, info = env.reset(seed=0); print(obs.shape[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == 30 * 5 + 2
