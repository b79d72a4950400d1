"""A2C and tabular Q-learning: their maths by hand (n-step returns; the Bellman update
and the discretisation), both beating buy-and-hold on the synthetic edge market's
held-out period, `stockgym train --algo a2c | qlearning` end to end with
`backtest --model` and `signal`, and an interrupted run resumed bit-identically.

Edge-market margins. Excess after-cost log return over buy-and-hold on the test period,
measured as this file's test does it (``train(edge_config(algo, edge, seed, dir,
steps))`` of tests/test_agents_edge.py - window 5, US costs, the run defaults - then
``holdout_returns``; one thread), seeds 0..7::

    edge 0.5  A2C  10k steps   +1.32 +1.27 +1.14 +1.64 +1.05 +1.48 +1.35 +1.76
              QL   20k steps   +1.69 +1.48 +1.12 +1.69 +0.90 +1.51 +1.13 +2.06
    edge 0    A2C  10k steps   +0.20 -0.57 -0.61 +0.21 -0.05 -0.30 -0.34 -0.03
              QL   20k steps   -0.14 -0.66 -0.95 -0.04 -0.71 -0.37 -0.33 -0.12

CI trains seed 0 only (one seed is no evidence): the margin is half the worst of the 8
seeds, rounded down to 0.1, and above every no-edge value.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stockgym.agents import A2C, QLearning, load_agent
from stockgym.agents.a2c import nstep_returns
from stockgym.agents.base import read_checkpoint
from stockgym.agents.networks import Net
from stockgym.agents.qlearning import Discretiser, QLearningConfig, q_learning_update
from stockgym.cli import main
from stockgym.data import load_prices
from stockgym.envs import VectorStockTradingEnv
from stockgym.experiment import TrainConfig, holdout_returns, resume, train
from stockgym.experiment.records import CHECKPOINT, RUN_CHECKPOINT

sys.path.insert(0, str(Path(__file__).parent))
from test_agents_edge import EDGE, edge_config  # noqa: E402

STEPS = {"a2c": 10_000, "qlearning": 20_000}
MARGIN_HOLD = {"a2c": 0.5, "qlearning": 0.4}
TAGS = {
    "a2c": {f"losses/{k}" for k in ("policy_loss", "value_loss", "entropy", "explained_variance")},
    "qlearning": {"losses/td_error", "charts/epsilon", "charts/cells_visited"},
}


@pytest.fixture(scope="module")
def prices():
    return load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=300, seed=0)


def venv(prices, n=4, **kw):
    kw.setdefault("episode_length", 20)
    return VectorStockTradingEnv(prices, n, device="cpu", window_size=5, market="us", **kw)


# ------------------------------------------------------------------ the maths by hand
def test_q_learning_update_changes_one_cell_by_the_formula():
    table = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 3.0]])
    before = table.clone()
    alpha, gamma = 0.1, 0.9
    td = q_learning_update(
        table,
        torch.tensor([1]),
        torch.tensor([0]),
        torch.tensor([0.5]),
        torch.tensor([2]),
        torch.tensor([False]),
        alpha,
        gamma,
    )
    # Q[1,0] += 0.1 * (0.5 + 0.9 * max(0.5, 3.0) - 2.0) = 2.0 + 0.1 * 1.2
    assert td.tolist() == pytest.approx([1.2])
    assert table[1, 0].item() == pytest.approx(2.12)
    changed = (table != before).nonzero().tolist()
    assert changed == [[1, 0]]

    # a termination drops the bootstrap: Q[2,1] += 0.1 * (-1 - 3) = 3 - 0.4
    q_learning_update(
        table,
        torch.tensor([2]),
        torch.tensor([1]),
        torch.tensor([-1.0]),
        torch.tensor([2]),
        torch.tensor([True]),
        alpha,
        gamma,
    )
    assert table[2, 1].item() == pytest.approx(2.6)

    # two transitions into the same cell apply one after the other
    t = torch.zeros(1, 2)
    q_learning_update(
        t,
        torch.tensor([0, 0]),
        torch.tensor([0, 0]),
        torch.tensor([1.0, 1.0]),
        torch.tensor([0, 0]),
        torch.tensor([True, True]),
        0.5,
        gamma,
    )
    assert t[0, 0].item() == pytest.approx(0.75)  # 0 -> 0.5 -> 0.5 + 0.5 * (1 - 0.5)


def test_discretiser_by_hand():
    layout = {
        "window": 3,
        "n_assets": 1,
        "n_features": 2,
        "symbols": ["X"],
        "feature_names": ["rsi_14", "log_return"],
    }
    cfg = QLearningConfig(lags=2, return_edges=[-0.5, 0.0, 0.5], position_edges=[-0.5, 0.5])
    d = Discretiser(layout, cfg, torch.device("cpu"))
    assert d.n_states == 4**2 * 3
    #            bar t-2      bar t-1      bar t        weight cash
    obs = [
        [9.0, 9.0, 9.0, -0.7, 9.0, 0.2, 1.0, 0.0],
        [9.0, 9.0, 9.0, 0.0, 9.0, -0.6, 0.0, 1.0],
    ]
    # row 0: long (2), last return 0.2 -> bin 2, the one before -0.7 -> bin 0
    # row 1: flat (1), last -0.6 -> bin 0, before 0.0 -> bin 2 (an edge counts as <=)
    want = [(2 * 4 + 2) * 4 + 0, (1 * 4 + 0) * 4 + 2]
    assert d(torch.tensor(obs)).tolist() == want


def test_nstep_returns_by_hand():
    g = 0.5
    rewards = torch.tensor([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    # env 0 runs through the rollout; env 1's episode ends after step 0
    dones = torch.tensor([[False, True], [False, False], [False, False]])
    next_values = torch.tensor([[10.0, 6.0], [20.0, 20.0], [8.0, 8.0]])
    got = nstep_returns(rewards, next_values, dones, g)
    r2 = 4 + g * 8
    r1 = 2 + g * r2
    want = torch.tensor([[1 + g * r1, 1 + g * 6], [r1, r1], [r2, r2]])
    torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ agent checks
def test_qlearning_refuses_what_it_cannot_do(prices):
    with pytest.raises(ValueError, match="tabular Q-learning needs a Discrete action space"):
        QLearning(venv(prices, action_type="continuous"))
    with pytest.raises(ValueError, match="no stockgym observation layout"):
        QLearning("CartPole-v1")
    with pytest.raises(ValueError, match="feature 'close_z'"):
        QLearning(venv(prices), return_feature="close_z")
    with pytest.raises(ValueError, match="has no network"):
        QLearning(venv(prices), backbone="cnn")
    with pytest.raises(ValueError, match="strictly increasing"):
        QLearning(venv(prices), return_edges=[0.0, 0.0])
    with pytest.raises(ValueError, match="too many for a table"):
        QLearningConfig(lags=20)


def test_qlearning_learns_saves_and_loads(prices, tmp_path):
    runs = []
    for _ in range(2):
        agent = QLearning(venv(prices), seed=0, device="cpu")
        agent.learn(400)
        runs.append(agent.table.clone())
    assert torch.equal(runs[0], runs[1]) and bool((runs[0] != 0).any())
    visits = agent.nets["q"].visits
    assert int(visits.sum()) == 400 and agent.table.shape == (12, 2)
    agent.save(tmp_path / "m")
    ckpt = torch.load(tmp_path / "m" / "agent.pt", weights_only=True)
    assert torch.equal(ckpt["model"]["q.table"], agent.table)
    obs = venv(prices).reset(seed=3)[0]
    for loaded in (QLearning.load(tmp_path / "m"), load_agent(tmp_path / "m")):
        assert type(loaded) is QLearning and torch.equal(loaded.table, agent.table)
        assert torch.equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    a, _ = loaded.predict(obs[0].numpy())
    assert isinstance(a, np.integer)
    resumed = QLearning.load(tmp_path / "m", env=venv(prices), device="cpu")
    resumed.learn(80)
    assert resumed.num_timesteps == 480


def test_a2c_shares_its_encoder_and_learns(prices):
    agent = A2C(venv(prices), seed=0, device="cpu", hidden_size=16, num_steps=4)
    assert not isinstance(agent.nets["critic"], Net)  # a head on the actor's encoder
    agent.learn(160)
    assert agent.num_timesteps == 160
    last = agent.logger.last
    assert all(math.isfinite(last[f"losses/{k}"]) for k in ("policy_loss", "value_loss"))
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        A2C("CartPole-v1", num_steps=0)
    with pytest.raises(ValueError, match="ent_coef"):
        A2C("CartPole-v1", ent_coef=-0.1)


# ------------------------------------------------------------------ the edge market
@pytest.mark.parametrize("algo", ["a2c", "qlearning"])
def test_beats_buy_and_hold_on_the_edge_market(algo, tmp_path):
    run_dir = tmp_path / "run"
    train(edge_config(algo, EDGE, 0, str(run_dir), steps=STEPS[algo]))
    r = holdout_returns(run_dir, n_random=0)
    assert r["agent"] - r["buy_and_hold"] >= MARGIN_HOLD[algo], r


# ------------------------------------------------------------------ CLI end to end
@pytest.mark.parametrize("algo", ["a2c", "qlearning"])
def test_cli_train_backtest_signal(algo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / algo
    argv = ["train", "--algo", algo, "--symbol", "X", "--source", "synthetic"]
    argv += ["--set", 'data.options.kind="edge"', "--set", "data.options.n_days=400"]
    argv += ["--window-size", "5", "--num-envs", "4", "--episode-length", "20"]
    argv += ["--total-timesteps", "400", "--eval-freq", "200", "--no-progress"]
    argv += ["--device", "cpu", "--market", "us", "--run-dir", str(run)]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["algo"] == algo
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert TAGS[algo] | {"charts/SPS", "eval/return"} <= set(events.Tags()["scalars"])
    assert main(["backtest", "--model", str(run), "--out", str(tmp_path / "bt"), "--no-plots"]) == 0
    config = json.loads((tmp_path / "bt" / "config.json").read_text())
    assert config["data"]["period"] == "test"
    assert json.loads((tmp_path / "bt" / "metrics.json").read_text())["benchmark"]
    capsys.readouterr()
    assert main(["signal", "--model", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] in (0, 1)


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("algo", ["a2c", "qlearning"])
def test_interrupt_then_resume_is_bit_identical(algo, tmp_path, monkeypatch, interrupt_training):
    def config(root: Path, checkpoint_freq: int) -> TrainConfig:
        return TrainConfig.from_dict(
            {
                "algo": algo,
                "total_timesteps": 400,
                "seed": 3,
                "device": "cpu",
                "eval_freq": 0,
                "checkpoint_freq": checkpoint_freq,
                "tensorboard": False,
                "run_dir": str(root / "run"),
                "data": {
                    "symbols": ["X"],
                    "source": "synthetic",
                    "options": {"kind": "edge", "edge": 0.3, "seed": 5, "n_days": 700},
                },
                "env": {"window_size": 5, "num_envs": 4, "episode_length": 20},
                "agent": {"hidden_size": 16, "num_steps": 8} if algo == "a2c" else {},
            }
        )

    ref = train(config(tmp_path / "ref", 0))
    cfg = config(tmp_path, 64)
    interrupt_training(150)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    run_dir = Path(cfg.run_dir)
    assert read_checkpoint(run_dir / CHECKPOINT, fmt=RUN_CHECKPOINT)["agent"]["algo"] == algo
    res = resume(run_dir)
    assert res.summary["timesteps"] == ref.summary["timesteps"]
    ref_w, res_w = ref.agent.nets.state_dict(), res.agent.nets.state_dict()
    assert list(ref_w) == list(res_w)
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert res.summary["resumes"] == 1 and res.agent.schedule == ref.agent.schedule
