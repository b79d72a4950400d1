"""``stockgym.agents.train``: the run dir records what reproduces and backtests a run,
TensorBoard events hold every scalar the docs name (read back, finite), TOML configs
round-trip, bad configs fail before anything is written, pretrained forecasters may not
have seen the test period."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stockgym.agents.signals import next_signal, observation_at
from stockgym.experiment import (
    DataSpec,
    EnvSpec,
    TrainConfig,
    load_config,
    load_run,
    run_env,
    train,
)
from stockgym.experiment.config import parse_value, to_toml
from stockgym.experiment.records import load_data

COMMON_TAGS = {
    "charts/episodic_return",
    "charts/portfolio_value",
    "charts/SPS",
    "eval/return",
    "eval/sharpe",
    "eval/excess_return",
}
TAGS = {
    "ppo": COMMON_TAGS
    | {
        "losses/value_loss",
        "losses/policy_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "charts/learning_rate",
    },
    "dqn": COMMON_TAGS | {"losses/td_loss", "losses/q_values", "charts/epsilon"},
    "reinforce": COMMON_TAGS | {"losses/value_loss", "losses/policy_loss", "losses/entropy"},
}
AGENT = {
    "ppo": {"num_steps": 16, "update_epochs": 1},
    "dqn": {"learning_starts": 64, "batch_size": 16, "buffer_size": 1000},
    "reinforce": {},
}


def tiny(tmp_path, algo="ppo", name="run", **kw) -> TrainConfig:
    data = DataSpec(
        symbols=["X"],
        source="synthetic",
        options={"kind": "edge", "edge": 0.3, "n_days": 400, "seed": 0},
    )
    env = EnvSpec(window_size=5, num_envs=8, episode_length=20, market="us")
    base = dict(
        algo=algo,
        total_timesteps=1200,
        seed=0,
        device="cpu",
        eval_freq=500,
        run_dir=str(tmp_path / name),
        data=data,
        env=env,
        agent={"hidden_size": 16, **AGENT.get(algo, {})},
    )
    return TrainConfig(**{**base, **kw})


def scalars(run_dir) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("algo", ["ppo", "dqn", "reinforce"])
def test_run_dir_and_tensorboard_scalars(algo, tmp_path):
    res = train(tiny(tmp_path, algo))
    run = res.run_dir
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "config.toml",
        "model",
        "scaler.json",
        "summary.json",
        "tensorboard",
    ]
    found = scalars(run)
    missing = TAGS[algo] - set(found)
    assert not missing, f"missing scalars {missing}; have {sorted(found)}"
    for tag in TAGS[algo]:
        assert found[tag] and all(math.isfinite(v) for v in found[tag]), tag
    assert len(found["eval/return"]) >= 3  # at 500, 1000 steps and at the end

    record = json.loads((run / "config.json").read_text())
    assert record["config"]["algo"] == algo and record["agent"]["seed"] == 0
    assert set(record["splits"]) == {"train", "valid", "test"}
    assert record["data"]["sha256"] and record["data"]["rows"] == 400
    assert record["env"]["costs"]["commission"] == 0.0005  # the "us" preset, resolved
    assert record["env_kwargs"]["features"] == record["env"]["features"]
    assert record["versions"]["torch"] and "created" in record and "git" in record
    summary = json.loads((run / "summary.json").read_text())
    assert summary["timesteps"] >= 1200 and summary["valid"]["period"] == record["splits"]["valid"]
    assert [h["step"] for h in summary["eval_history"]][:1] and not summary["interrupted"]


def test_run_reproduces_and_backtests(tmp_path):
    res = train(tiny(tmp_path))
    again = train(load_config(res.run_dir / "config.toml").replace(run_dir=str(tmp_path / "b")))
    a = torch.cat([p.flatten() for p in res.agent.nets.parameters()])
    b = torch.cat([p.flatten() for p in again.agent.nets.parameters()])
    assert torch.equal(a, b)  # same config.toml, same seed -> the same network

    record, agent = load_run(res.run_dir)
    prices = load_data(DataSpec(**record["config"]["data"]))
    env = run_env(res.run_dir, record, prices)
    agent.check_env(env)
    # the run's env at a validation date gives the observation training saw there
    obs, _ = env.reset(options={"start": record["splits"]["valid"]["first"]})
    t = env.market.dates.get_loc(record["splits"]["valid"]["first"])
    np.testing.assert_array_equal(obs, observation_at(env, t, [0.0], env.initial_cash))
    obs, *_, info = env.step(1)
    np.testing.assert_array_equal(obs, observation_at(env, t + 1, info["position"], info["cash"]))
    sig = next_signal(agent, env)
    assert sig["date"] == str(prices.index[-1].date()) and len(sig["orders"]) == 1
    o = sig["orders"][0]
    if o["target_weight"] > 0:
        assert o["shares"] == math.trunc(env.initial_cash / o["close"])
    else:
        assert o["shares"] == 0


def test_toml_round_trip(tmp_path):
    cfg = tiny(
        tmp_path,
        agent={"learning_rate": 1e-3, "ent_coef": 0.01},
        env=EnvSpec(features=["log_return", "rsi"], positions=[0.0, 0.5, 1.0]),
    )
    text = to_toml(cfg.to_dict())
    (tmp_path / "c.toml").write_text(text)
    assert load_config(tmp_path / "c.toml") == cfg
    assert parse_value("1e-3") == 1e-3 and parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True and parse_value("hello") == "hello"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algo": "no-such-algo"}, "algo must be one of"),
        ({"agent": {"learning_rte": 1}}, r"unknown PPOConfig field\(s\) \['learning_rte'\]"),
        ({"agent": {"seed": 3}}, "set seed at the top level"),
        ({"total_timesteps": 0}, "total_timesteps must be >= 1"),
        ({"data": DataSpec(symbols=[], source="synthetic")}, "data.symbols must name"),
        (
            {"data": DataSpec(symbols=["X"], source="sample", options={"edge": 1})},
            "only apply to source",
        ),
        ({"env": EnvSpec(scaler="zscore")}, "env.scaler must be one of"),
        ({"env": EnvSpec(window_size=5, episode_length=5000)}, "episode_length must be in"),
    ],
)
def test_bad_config_leaves_nothing(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        train(tiny(tmp_path, **change))
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep")
    with pytest.raises(ValueError, match="already exists and is not an empty directory"):
        train(tiny(tmp_path))
    assert (tmp_path / "run" / "x").read_text() == "keep"


def test_unknown_toml_keys(tmp_path):
    (tmp_path / "c.toml").write_text('algo = "ppo"\n[env]\nwindow = 5\n')
    with pytest.raises(ValueError, match=r"unknown \[env\] key\(s\) \['window'\]"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('algo = "ppo\n')
    with pytest.raises(ValueError, match="cannot read TOML config"):
        load_config(tmp_path / "d.toml")


def test_pretrained_run_uses_the_forecasters_inputs(tmp_path):
    from stockgym.forecasters import ForecastConfig
    from stockgym.forecasters import train as train_forecaster

    opts = {"kind": "edge", "edge": 0.3, "n_days": 400, "seed": 0}
    fc_dir = tmp_path / "fc"
    fc = train_forecaster(
        ForecastConfig(
            symbol="X",
            source="synthetic",
            data_options=opts,
            model="mlp",
            window=4,
            features=["log_return", "rsi_14"],
            hidden_size=8,
            num_layers=1,
            dropout=0.0,
            epochs=2,
            plots=False,
            tensorboard=False,
            device="cpu",
            run_dir=str(fc_dir),
        )
    )
    res = train(tiny(tmp_path, agent={"pretrained": str(fc_dir), "num_steps": 16}))
    record = json.loads((res.run_dir / "config.json").read_text())
    assert record["env_kwargs"]["window_size"] == 4
    assert record["env_kwargs"]["features"] == ["log_return", "rsi_14"]
    assert record["forecaster"]["dir"] == str(fc_dir.resolve())
    assert json.loads((res.run_dir / "scaler.json").read_text()) == json.loads(
        (fc_dir / "checkpoint" / "scaler.json").read_text()
    )
    assert fc.config.valid_end <= record["splits"]["valid"]["last"]

    # a forecaster that has seen this run's test period is refused
    late = tmp_path / "late"
    train_forecaster(
        ForecastConfig(
            symbol="X",
            source="synthetic",
            data_options={**opts, "n_days": 600},
            model="mlp",
            window=4,
            features=["log_return", "rsi_14"],
            hidden_size=8,
            num_layers=1,
            dropout=0.0,
            epochs=1,
            plots=False,
            tensorboard=False,
            device="cpu",
            run_dir=str(late),
        )
    )
    with pytest.raises(ValueError, match="has seen the test period"):
        train(tiny(tmp_path, name="run2", agent={"pretrained": str(late)}))
    assert not (tmp_path / "run2").exists()
