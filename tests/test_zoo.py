"""rl-zoo3, unmodified, trains and replays agents on our ids (``--gym-packages stockgym``,
hyperparameters from docs/zoo/), as docs/ecosystem.md shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _zoo(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("algo, steps", [("ppo", 1024), ("dqn", 2500)])
def test_zoo_train_and_enjoy(algo, steps, tmp_path):
    common = ["--algo", algo, "--env", "stockgym/StockTrading-v0", "--gym-packages", "stockgym",
              "-f", "logs", "--device", "cpu"]  # fmt: skip
    _zoo(tmp_path, "rl_zoo3.train", *common, "-conf", str(ROOT / "docs" / "zoo" / f"{algo}.yml"),
         "-n", str(steps), "--seed", "0", "--eval-freq", "-1", "--log-interval", "-1",
         "--env-kwargs", "symbol:'MSFT'")  # fmt: skip
    run = tmp_path / "logs" / algo / "stockgym-StockTrading-v0_1"
    assert (run / "stockgym-StockTrading-v0.zip").is_file()
    assert "- symbol: MSFT" in (run / "stockgym-StockTrading-v0" / "args.yml").read_text()
    out = _zoo(tmp_path, "rl_zoo3.enjoy", *common, "--no-render", "-n", "300")
    assert "Episode Length 252" in out
