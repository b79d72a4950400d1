"""stable-baselines3 with stockgym: our MLP / CNN / LSTM backbones as SB3 feature
extractors (PPO and DQN learn through them on the single env and through the vector
adapter), and ``stockgym train --algo sb3-ppo | sb3-dqn | sb3-a2c`` writing the same run
dir as our agents, so ``backtest --model``, ``signal`` and ``compare`` take it; bad SB3
hyperparameters fail with a clear message before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from run_configs import synthetic_args
from stable_baselines3 import DQN, PPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stockgym.agents import load_agent
from stockgym.agents.networks import Encoder
from stockgym.agents.sb3 import (
    LSTMFeatures,
    SB3Agent,
    StockFeatures,
    find_layout,
    load_sb3,
    stock_policy_kwargs,
)
from stockgym.cli import main
from stockgym.data import load_prices
from stockgym.envs import StockTradingEnv, VectorStockTradingEnv
from stockgym.envs.sb3 import SB3VecEnv
from stockgym.experiment import load_run
from stockgym.forecasters.models import MODELS

BACKBONES = ["mlp", "cnn", "lstm"]
HIDDEN = 16


@pytest.fixture(scope="module")
def prices():
    return load_prices("X", source="synthetic", kind="edge", n_days=300)


def single(prices) -> StockTradingEnv:
    return StockTradingEnv(prices, window_size=5, market="us")


def vector(prices, n=4) -> SB3VecEnv:
    return SB3VecEnv(
        VectorStockTradingEnv(prices, num_envs=n, window_size=5, market="us", episode_length=30)
    )


def some_obs(env: StockTradingEnv, n: int = 8) -> np.ndarray:
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    rows = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(env.action_space.sample())
        rows.append(obs)
    return np.stack(rows)


# ------------------------------------------------------------------ extractors
@pytest.mark.parametrize("backbone", BACKBONES)
def test_features_read_the_window_and_pass_the_portfolio(prices, backbone):
    env = single(prices)
    layout = env.obs_layout
    ext = StockFeatures(env.observation_space, backbone=backbone, hidden_size=HIDDEN, layout=layout)
    # our encoder, our forecasters module (not a copy of either)
    assert isinstance(ext.encoder, Encoder) and type(ext.encoder.body) is MODELS[backbone]
    assert ext.features_dim == HIDDEN + layout.n_assets + 1
    x = torch.as_tensor(some_obs(env))
    z = ext(x)
    assert z.shape == (8, ext.features_dim) and torch.isfinite(z).all()
    torch.testing.assert_close(z[:, HIDDEN:], x[:, -(layout.n_assets + 1) :])  # weights, cash
    # the oldest row of the window matters (it is encoded, not dropped)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(ext(x2)[:, :HIDDEN], z[:, :HIDDEN])


def test_features_shapes_several_assets_and_no_layout():
    two = load_prices(["A", "B"], source="synthetic", n_days=200)
    env = StockTradingEnv(two, window_size=5)
    ext = StockFeatures(
        env.observation_space, backbone="cnn", hidden_size=8, layout=find_layout(env)
    )
    assert ext.features_dim == 8 + 2 + 1
    assert ext(torch.as_tensor(some_obs(env, 3))).shape == (3, 11)
    flat = StockFeatures(env.observation_space, hidden_size=8)  # mlp over the whole vector
    assert flat.features_dim == 8
    with pytest.raises(ValueError, match="backbone 'lstm' needs a stockgym env"):
        StockFeatures(env.observation_space, backbone="lstm")
    with pytest.raises(ValueError, match="LSTMFeatures is the lstm backbone"):
        LSTMFeatures(env.observation_space, backbone="cnn", layout=env.obs_layout)
    assert LSTMFeatures(env.observation_space, layout=env.obs_layout).spec["backbone"] == "lstm"


def _body_params(model) -> list[torch.Tensor]:
    return [
        p.detach().clone()
        for m in model.policy.modules()
        if isinstance(m, StockFeatures)
        for p in m.encoder.body.parameters()
    ]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("where", ["single", "vector"])
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_sb3_learns_through_our_backbones(prices, backbone, where, algo):
    env = single(prices) if where == "single" else vector(prices)
    if where == "single":  # the brief's spelling: class + kwargs with the env's layout
        pk = {
            "features_extractor_class": StockFeatures,
            "features_extractor_kwargs": {
                "backbone": backbone,
                "hidden_size": HIDDEN,
                "layout": env.obs_layout,
            },
        }
    else:
        pk = stock_policy_kwargs(env, backbone=backbone, hidden_size=HIDDEN, net_arch=[16])
    if algo == "ppo":
        model = PPO(
            "MlpPolicy",
            env,
            n_steps=64,
            batch_size=32,
            n_epochs=2,
            seed=0,
            device="cpu",
            policy_kwargs=pk,
        )
    else:
        model = DQN(
            "MlpPolicy",
            env,
            learning_starts=60,
            batch_size=16,
            buffer_size=500,
            train_freq=4 if where == "single" else 1,
            seed=0,
            device="cpu",
            policy_kwargs=pk,
        )
    assert isinstance(
        model.policy.features_extractor if algo == "ppo" else model.policy.q_net.features_extractor,
        StockFeatures,
    )
    before = _body_params(model)
    model.learn(256)
    assert model.num_timesteps >= 256
    after = _body_params(model)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), (
        "training did not update the backbone"
    )
    obs = some_obs(single(prices), 4)
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (4,) and set(actions.tolist()) <= {0, 1}


def test_saved_sb3_model_rebuilds_the_extractor(prices, tmp_path):
    env = vector(prices)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=stock_policy_kwargs(env, backbone="lstm", hidden_size=HIDDEN),
    )
    model.learn(128)
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.features_extractor.spec == model.policy.features_extractor.spec
    obs = some_obs(single(prices), 6)
    with torch.no_grad():
        a = model.policy.features_extractor(torch.as_tensor(obs))
        b = loaded.policy.features_extractor(torch.as_tensor(obs))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------ stockgym train
SYNTH = [
    *synthetic_args(400),
    "--market",
    "us",
]
TINY = [
    "--window-size",
    "5",
    "--num-envs",
    "4",
    "--episode-length",
    "20",
    "--set",
    "agent.hidden_size=16",
    "--no-progress",
    "--device",
    "cpu",
]


@pytest.fixture(autouse=True)
def signing_key_dir(tmp_path, monkeypatch):
    """SB3 zips are signed with the user's key: keep it in a tmp dir here."""
    monkeypatch.setenv("STOCKGYM_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def scalars(run_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_sb3_ppo_run_backtest_signal_compare(isolated, capsys):
    tmp = isolated
    code, out, err = run(
        [
            "train",
            "--algo",
            "sb3-ppo",
            *SYNTH,
            *TINY,
            "--backbone",
            "lstm",
            "--total-timesteps",
            "600",
            "--eval-freq",
            "300",
            "--set",
            "agent.n_steps=32",
            "--set",
            "agent.batch_size=64",
            "--set",
            "agent.n_epochs=2",
            "--run-dir",
            "sb3",
        ],
        capsys,
    )
    assert code == 0, err
    assert "trained    SB3-PPO (lstm)" in out and "stockgym backtest --model sb3" in out
    run_dir = tmp / "sb3"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json",
        "config.toml",
        "model",
        "scaler.json",
        "summary.json",
        "tensorboard",
    ]
    # the zip is signed with this user's key (it is unpickled on load) and has its SHA-256
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == [
        "agent.json",
        "sb3.zip",
        "sb3.zip.sha256",
        "sb3.zip.sig",
    ]
    record = json.loads((run_dir / "config.json").read_text())
    assert record["format"] == "stockgym.agents.run" and record["config"]["algo"] == "sb3-ppo"
    agent_cfg = record["agent"]
    assert agent_cfg["backbone"] == "lstm" and agent_cfg["n_steps"] == 32
    assert agent_cfg["gamma"] == 0.9 and agent_cfg["reward_scale"] == 100.0  # SB3_DEFAULTS
    assert agent_cfg["gae_lambda"] == 0.95  # SB3's own default, recorded
    assert agent_cfg["seed"] == 0 and agent_cfg["num_envs"] == 4
    assert record["versions"]["stable-baselines3"]
    assert record["splits"]["train"]["rows"] > 0 and record["env"]["costs"]["commission"] == 0.0005

    # the same summary keys as our agents' runs
    code, _, err = run(
        [
            "train",
            "--algo",
            "ppo",
            *SYNTH,
            *TINY,
            "--total-timesteps",
            "200",
            "--eval-freq",
            "0",
            "--set",
            "agent.num_steps=16",
            "--no-tensorboard",
            "--run-dir",
            "ours",
        ],
        capsys,
    )
    assert code == 0, err
    ours = json.loads((tmp / "ours" / "summary.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == set(ours)
    assert set(summary["valid"]) == set(ours["valid"])
    assert set(summary["valid"]["agent"]) == set(ours["valid"]["agent"])
    assert summary["timesteps"] >= 600 and not summary["interrupted"]
    assert [h["step"] for h in summary["eval_history"]] == [300, 600]
    assert summary["valid"]["period"] == record["splits"]["valid"]

    # SB3's TensorBoard scalars and ours, in the run's one folder
    found = scalars(run_dir)
    want = {
        "train/value_loss",
        "train/policy_gradient_loss",
        "rollout/ep_rew_mean",
        "charts/episodic_return",
        "eval/return",
        "eval/sharpe",
        "eval/excess_return",
    }
    assert want <= set(found), sorted(found)
    assert len(found["eval/return"]) == 3  # 300, 600 and the end
    assert found["eval/return"][-1] == pytest.approx(summary["valid"]["agent"]["return"])

    # loading: the run's record decides the loader (load_run); our loader never opens a zip
    rec, agent = load_run(run_dir)
    assert isinstance(agent, SB3Agent) and agent.num_timesteps == summary["timesteps"]
    with pytest.raises(FileNotFoundError, match="agent.pt"):
        load_agent(run_dir / "model", device="cpu")
    again = load_sb3(run_dir / "model", device="cpu")
    obs = some_obs(
        StockTradingEnv(
            load_prices("X", source="synthetic", kind="edge", n_days=400), window_size=5
        ),
        5,
    )
    np.testing.assert_array_equal(agent.predict(obs)[0], again.predict(obs)[0])
    one, _ = agent.predict(obs[0])
    assert isinstance(one, np.integer) and one in (0, 1)

    # backtest --model: the run's test period with its costs
    code, out, err = run(["backtest", "--model", "sb3", "--out", "bt", "--no-plots"], capsys)
    assert code == 0, err
    bt = json.loads((tmp / "bt" / "config.json").read_text())
    test = record["splits"]["test"]
    assert (bt["backtest"]["first"], bt["backtest"]["last"]) == (test["first"], test["last"])
    assert (
        bt["strategy"]["name"] == "sb3-ppo_agent" and bt["env"]["costs"] == record["env"]["costs"]
    )
    assert bt["model"]["trained_steps"] == summary["timesteps"]
    assert "SB3-PPO agent" in out

    # signal, table and JSON
    code, out, err = run(["signal", "--model", "sb3"], capsys)
    assert code == 0, err
    assert "as of      close of" in out and "SB3-PPO agent sb3" in out
    code, out, err = run(["signal", "--model", "sb3", "--json", "--cash", "1000"], capsys)
    assert code == 0, err
    sig = json.loads(out)
    assert sig["action"] in (0, 1) and sig["orders"][0]["target_weight"] == float(sig["action"])

    # compare: the SB3 backtest next to a baseline's
    code, _, err = run(
        [
            "backtest",
            "--strategy",
            "buy_and_hold",
            "--symbol",
            "X",
            "--source",
            "synthetic",
            "--period",
            "all",
            "--out",
            "bh",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = run(["compare", "bt", "bh"], capsys)
    assert code == 0, err
    assert "total_return" in out.splitlines()[2] and "bt" in out.splitlines()[0]

    # SB3 runs cannot be resumed: said plainly
    code, _, err = run(["train", "--resume", "sb3", "--no-progress"], capsys)
    assert code == 2 and "sb3-* runs cannot be resumed" in err and "Traceback" not in err

    # a run whose model is missing says so
    shutil.copytree(run_dir, tmp / "broken")
    (tmp / "broken" / "model" / "sb3.zip").unlink()
    code, _, err = run(["signal", "--model", "broken"], capsys)
    assert code == 2 and "model/sb3.zip is missing" in err

    # an SB3 zip is unpickled on load: one without this user's signature (another user's
    # run, or signed with another key) is refused unless --trust
    shutil.copytree(run_dir, tmp / "foreign")
    (tmp / "foreign" / "model" / "sb3.zip.sig").unlink()
    for argv in (["signal", "--model", "foreign"], ["backtest", "--model", "foreign"]):
        code, _, err = run(argv, capsys)
        assert code == 2 and "refusing to load foreign/model/sb3.zip" in err and "--trust" in err
    code, out, err = run(["signal", "--model", "foreign", "--trust"], capsys)
    assert code == 0, err
    code, out, err = run(["backtest", "--model", "foreign", "--trust", "--no-plots"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        (
            "sb3-dqn",
            [
                "--set",
                "agent.learning_starts=100",
                "--set",
                "agent.buffer_size=1000",
                "--set",
                "agent.batch_size=16",
                "--set",
                'agent.train_freq=[1, "step"]',
            ],
        ),
        ("sb3-a2c", ["--backbone", "cnn", "--set", "agent.n_steps=8"]),
    ],
)
def test_sb3_dqn_and_a2c_runs(isolated, capsys, algo, extra):
    tmp = isolated
    code, out, err = run(
        [
            "train",
            "--algo",
            algo,
            *SYNTH,
            *TINY,
            "--total-timesteps",
            "400",
            "--eval-freq",
            "0",
            *extra,
            "--run-dir",
            "r",
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((tmp / "r" / "config.json").read_text())
    summary = json.loads((tmp / "r" / "summary.json").read_text())
    assert record["config"]["algo"] == algo and summary["timesteps"] >= 400
    assert summary["eval_history"] == [] and summary["valid"]["agent"]["return"] is not None
    if algo == "sb3-dqn":
        assert record["agent"]["train_freq"] == [1, "step"]
        assert record["agent"]["exploration_fraction"] == 0.3  # SB3_DEFAULTS
    _, agent = load_run(tmp / "r")
    assert agent.model.__class__.__name__ == algo[4:].upper()
    code, out, err = run(["signal", "--model", "r", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["action"] in (0, 1)
    # the run's config.toml re-runs it (same seed: the same resolved agent and splits)
    code, _, err = run(
        [
            "train",
            "--config",
            tmp / "r" / "config.toml",
            "--run-dir",
            "r2",
            "--no-progress",
            "--no-tensorboard",
        ],
        capsys,
    )
    assert code == 0, err
    again = json.loads((tmp / "r2" / "config.json").read_text())
    assert again["agent"] == record["agent"] and again["splits"] == record["splits"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--algo", "sb3-ppo", "--set", "agent.n_step=64"],
            "unknown [agent] key(s) ['n_step'] for sb3-ppo",
        ),
        (
            ["--algo", "sb3-dqn", "--set", 'agent.exploration_fraction="a lot"'],
            "[agent] exploration_fraction of sb3-dqn (SB3 DQN) must be float, got 'a lot'",
        ),
        (
            ["--algo", "sb3-a2c", "--set", "agent.use_rms_prop=1"],
            "[agent] use_rms_prop of sb3-a2c (SB3 A2C) must be bool, got 1",
        ),
        (
            ["--algo", "sb3-ppo", "--set", 'agent.rollout_buffer_class="RolloutBuffer"'],
            "rollout_buffer_class of sb3-ppo takes a Python class or function",
        ),
        (["--algo", "sb3-ppo", "--set", 'agent.device="cpu"'], "set device at the top level"),
        (
            ["--algo", "sb3-ppo", "--set", 'agent.backbone="rnn"'],
            "backbone for sb3-ppo must be one of",
        ),
        (
            ["--algo", "sb3-ppo", "--set", "agent.policy_kwargs.features_extractor_kwargs={}"],
            "the extractor is set by backbone",
        ),
        (
            ["--algo", "sb3-ppo", "--set", "agent.batch_size=1"],
            "sb3-ppo (PPO) cannot be built with this config: `batch_size` must be greater than 1",
        ),
        (
            ["--algo", "sb3-dqn", "--set", 'env.action_type="continuous"'],
            "sb3-dqn (DQN) cannot be built with this config: The algorithm only supports",
        ),
        (["--config", "bad.toml"], "[agent] target_kl of sb3-ppo (SB3 PPO) must be float, got 'x'"),
    ],
)
def test_bad_sb3_config_is_clear_and_writes_nothing(isolated, capsys, argv, message):
    (isolated / "bad.toml").write_text('algo = "sb3-ppo"\n[agent]\ntarget_kl = "x"\n')
    code, _, err = run(
        ["train", *SYNTH, *TINY, "--total-timesteps", "100", *argv, "--run-dir", "bad"], capsys
    )
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (isolated / "bad").exists() and not (isolated / "runs").exists()


def test_pretrained_forecaster_starts_the_sb3_extractor(isolated):
    from stockgym.experiment import DataSpec, EnvSpec, TrainConfig, train
    from stockgym.forecasters import ForecastConfig, Forecaster
    from stockgym.forecasters import train as train_forecaster

    opts = {"kind": "edge", "edge": 0.3, "n_days": 400, "seed": 0}
    fc_dir = isolated / "fc"
    train_forecaster(
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
    res = train(
        TrainConfig(
            algo="sb3-ppo",
            total_timesteps=128,
            eval_freq=0,
            device="cpu",
            tensorboard=False,
            run_dir=str(isolated / "run"),
            data=DataSpec(symbols=["X"], source="synthetic", options=opts),
            env=EnvSpec(num_envs=4, episode_length=20),
            agent={
                "pretrained": str(fc_dir),
                "freeze_pretrained": True,
                "n_steps": 16,
                "batch_size": 32,
                "n_epochs": 1,
            },
        )
    )
    assert res.record["env_kwargs"]["window_size"] == 4  # the forecaster's inputs
    assert res.record["forecaster"]["dir"] == str(fc_dir.resolve())
    body = res.agent.model.policy.features_extractor.encoder.body
    fc = Forecaster.load(fc_dir, device="cpu")
    for k, v in fc.model.state_dict().items():  # loaded, and frozen through training
        torch.testing.assert_close(body.state_dict()[k], v, rtol=0, atol=0)
    assert res.summary["timesteps"] >= 128
    _, loaded = load_run(res.run_dir)  # the zip holds the pretrained architecture and weights
    torch.testing.assert_close(
        loaded.model.policy.features_extractor.encoder.body.state_dict(), body.state_dict()
    )
