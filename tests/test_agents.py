"""Agents' API: construction on every kind of env, predict, save / load (weights_only),
checks that a model fits an env, backbones, pretrained encoders, seeding, bad input."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from stockgym.agents import A2C, DQN, PPO, REINFORCE, QLearning, load_agent
from stockgym.agents.base import CHECKPOINT
from stockgym.data import load_prices
from stockgym.envs import StockTradingEnv, VectorStockTradingEnv

ALGOS = {"dqn": DQN, "ppo": PPO, "reinforce": REINFORCE, "a2c": A2C}
# with tabular Q-learning (no network: it needs a stockgym env and has no backbone)
AGENTS = {**ALGOS, "qlearning": QLearning}
SMALL = {
    "dqn": dict(learning_starts=32, batch_size=16, buffer_size=500, train_frequency=8),
    "ppo": dict(num_steps=8, num_minibatches=2, update_epochs=1),
    "reinforce": dict(),
    "a2c": dict(num_steps=8),
    "qlearning": dict(),
}


@pytest.fixture(scope="module")
def prices():
    return load_prices("X", source="synthetic", kind="edge", edge=0.3, n_days=300, seed=0)


def venv(prices, n=4, window=5, **kw):
    kw.setdefault("episode_length", 20)
    return VectorStockTradingEnv(prices, n, device="cpu", window_size=window, market="us", **kw)


def make(algo, env, **kw):
    return AGENTS[algo](env, **{**SMALL[algo], "seed": 0, "device": "cpu", "hidden_size": 16, **kw})


# ------------------------------------------------------------------ envs
@pytest.mark.parametrize("algo", sorted(AGENTS))
def test_learns_natively_on_the_vector_env(algo, prices):
    env = venv(prices)
    agent = make(algo, env)
    assert agent.env.native and agent.env.env is env
    agent.learn(200)
    assert agent.num_timesteps >= 200
    obs = env.reset(seed=1)[0]
    action, state = agent.predict(obs)
    assert state is None and isinstance(action, torch.Tensor) and action.shape == (4,)
    assert set(action.tolist()) <= {0, 1}
    assert all(t.device.type == "cpu" for t in agent.nets.state_dict().values())


def test_rollout_never_copies_to_numpy(prices, monkeypatch):
    """On the agent's device the PPO rollout hands the env tensors, never numpy arrays."""
    env = venv(prices)
    seen = []
    step = env.step
    monkeypatch.setattr(env, "step", lambda a: seen.append(type(a)) or step(a))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda *a, **k: pytest.fail("host copy"))
    agent = make("ppo", env)
    agent.learn(64)
    assert seen and all(t is torch.Tensor for t in seen)


@pytest.mark.parametrize("algo", sorted(AGENTS))
def test_agents_act_in_inference_mode_and_leave_the_env_usable(algo, prices, monkeypatch):
    """Acting (the policy and our env's step) runs under ``torch.inference_mode``; the env
    can still be reset, stepped, saved and restored in normal mode afterwards, and
    learning goes on from it."""
    env = venv(prices)
    modes = []
    step = env.step
    monkeypatch.setattr(
        env, "step", lambda a: modes.append(torch.is_inference_mode_enabled()) or step(a)
    )
    agent = make(algo, env)
    agent.learn(100)
    assert modes and all(modes)
    assert not torch.is_inference_mode_enabled()
    saved = env.state_dict()
    obs, _ = env.reset(seed=2)
    obs2, reward, *_ = step(torch.ones(4, dtype=torch.long))
    assert obs2.shape == obs.shape and torch.isfinite(reward).all()
    env.load_state_dict(saved)
    agent.learn(100)
    assert agent.num_timesteps >= 200


class _InPlaceTorchEnv(gym.vector.VectorEnv):
    """A third-party torch vector env that updates its state in place in ``reset``: legal
    on tensors it made in normal mode, an error on ones made under inference mode."""

    returns_torch = True
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, n: int = 3) -> None:
        self.num_envs = n
        self.single_observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n)
        self.t = torch.zeros(n)

    def _obs(self) -> torch.Tensor:
        return torch.stack([self.t, -self.t], 1)

    def reset(self, seed=None, options=None):
        self.t.zero_()
        return self._obs(), {}

    def step(self, actions):
        self.t = self.t + 1.0  # a new tensor each step
        done = self.t >= 4
        final = self._obs()
        self.t = torch.where(done, 0.0, self.t)
        reward = actions.float()
        return self._obs(), reward, done, torch.zeros_like(done), {"final_obs": final}


class _TorchInside(gym.Env):
    """A numpy-API env that keeps torch state and resets it in place."""

    observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.t = torch.zeros(1)

    def _obs(self) -> np.ndarray:
        return np.array([self.t.item(), -self.t.item()], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t.zero_()
        return self._obs(), {}

    def step(self, action):
        self.t = self.t + 1.0
        return self._obs(), float(action), bool(self.t.item() >= 4), False, {}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_a_numpy_env_with_torch_state_steps_in_normal_mode(algo):
    env = _TorchInside()
    agent = ALGOS[algo](env, **{**SMALL[algo], "seed": 0, "device": "cpu", "hidden_size": 8})
    agent.learn(64)
    env.reset()  # in place on its own state: fine
    assert not env.t.is_inference()


@pytest.mark.slow
def test_a_compiled_env_trains_after_steps_in_either_mode(prices):
    """The compiled step sees one input pattern whatever mode the user stepped it in
    before (torch.compile's recompile limit is a hard error with fullgraph)."""
    env = venv(prices, compile=True)
    env.reset(seed=3)
    a = torch.tensor([1, 0, 1, 1])
    with torch.inference_mode():
        for _ in range(25):
            env.step(a)
    for _ in range(25):
        env.step(a)
    agent = make("ppo", env)
    agent.learn(200)
    with torch.compiler.set_stance("fail_on_recompile"):  # training compiles nothing new
        agent.learn(200)
    assert agent.num_timesteps >= 400 and not env._compiled.failed


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_another_torch_env_steps_in_normal_mode(algo):
    env = _InPlaceTorchEnv()
    agent = ALGOS[algo](env, **{**SMALL[algo], "seed": 0, "device": "cpu", "hidden_size": 8})
    agent.learn(64)
    assert not env.t.is_inference()
    env.reset()  # in place on its own state: fine
    agent.learn(64)
    assert agent.num_timesteps >= 128


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_any_gymnasium_env(algo):
    single = gym.make("CartPole-v1")
    vec = gym.make_vec(
        "CartPole-v1",
        3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    for env, n in ((single, 1), (vec, 3), ("CartPole-v1", 2)):
        agent = make(algo, env, num_envs=2)
        assert agent.env.num_envs == n and not agent.env.native
        agent.learn(64)
        action, _ = agent.predict(np.zeros(4, dtype=np.float32))
        assert isinstance(action, np.integer) and single.action_space.contains(action)
        assert agent.predict(np.zeros((5, 4)))[0].shape == (5,)


def test_next_step_autoreset_is_refused_with_a_hint():
    env = gym.make_vec("CartPole-v1", 2)  # Gymnasium's default: next-step autoreset
    with pytest.raises(ValueError, match="SAME_STEP"):
        PPO(env)


def test_observation_must_be_a_box():
    with pytest.raises(ValueError, match="Box observation"):
        PPO("FrozenLake-v1")


def test_dqn_needs_discrete_actions(prices):
    with pytest.raises(ValueError, match="DQN needs a Discrete action space.*PPO"):
        DQN(venv(prices, action_type="continuous"))


@pytest.mark.parametrize("algo", ["ppo", "reinforce", "a2c"])
@pytest.mark.parametrize("squash", ["clip", "tanh"])
def test_box_actions_stay_in_the_box(algo, squash, prices):
    env = venv(prices, action_type="continuous")
    agent = make(algo, env, squash=squash, log_std_init=1.0)
    agent.learn(160)
    obs = env.reset(seed=0)[0]
    for det in (True, False):
        a, _ = agent.predict(obs, deterministic=det)
        assert a.shape == (4, 1) and bool(((a >= 0) & (a <= 1)).all())


@pytest.mark.parametrize("algo", ["ppo", "reinforce", "a2c"])
def test_multidiscrete_actions(algo):
    two = load_prices(["A", "B"], source="synthetic", n_days=200, seed=1)
    env = venv(two)
    assert isinstance(env.single_action_space, gym.spaces.MultiDiscrete)
    agent = make(algo, env)
    agent.learn(100)
    a, _ = agent.predict(env.reset(seed=0)[0][0].numpy())
    assert a.shape == (2,) and a.dtype == np.int64


@pytest.mark.parametrize("backbone", ["mlp", "cnn", "lstm"])
def test_backbones_read_the_observation_layout(backbone, prices):
    env = venv(prices, window=6)
    agent = make("ppo", env, backbone=backbone, num_layers=1)
    enc = agent.nets["actor"].net.encoder
    assert type(enc.body).__name__.lower() == backbone
    assert (enc.window, enc.row) == (6, 5)  # window x (1 asset * 5 features)
    assert enc.out_dim == enc.body.embed_dim + 2  # + weight + cash fraction
    agent.learn(64)


def test_cnn_lstm_need_a_layout():
    with pytest.raises(ValueError, match="backbone 'lstm' needs a stockgym env"):
        PPO("CartPole-v1", backbone="lstm")


def test_single_stock_env_is_wrapped_with_its_layout(prices):
    env = StockTradingEnv(prices, window_size=5)
    agent = make("ppo", env, backbone="cnn", num_layers=1, kernel_size=2)
    assert agent.encoder_spec["layout"]["window"] == 5
    agent.learn(32)
    a, _ = agent.predict(env.reset(seed=0)[0])
    assert isinstance(a, np.integer)


# ------------------------------------------------------------------ seeding
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_same_seed_same_training(algo, prices):
    runs = []
    for _ in range(2):
        agent = make(algo, venv(prices))
        agent.learn(200)
        runs.append(torch.cat([p.detach().flatten() for p in agent.nets.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    other = make(algo, venv(prices), seed=1)
    other.learn(200)
    assert not torch.equal(
        runs[0], torch.cat([p.detach().flatten() for p in other.nets.parameters()])
    )


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_save_load_round_trip(algo, prices, tmp_path):
    env = venv(prices)
    agent = make(algo, env, backbone="cnn", num_layers=1)
    agent.learn(200)
    agent.save(tmp_path / "m")
    ckpt = torch.load(tmp_path / "m" / CHECKPOINT, weights_only=True)  # safe load works
    assert {"model", "optimizer", "config", "rng", "num_timesteps", "encoder"} <= set(ckpt)
    assert ckpt["config"]["backbone"] == "cnn" and ckpt["algo"] == algo
    assert (tmp_path / "m" / "agent.json").is_file()

    obs = env.reset(seed=3)[0]
    for loaded in (ALGOS[algo].load(tmp_path / "m"), load_agent(tmp_path / "m")):
        assert type(loaded) is ALGOS[algo] and loaded.num_timesteps == agent.num_timesteps
        assert torch.equal(loaded.predict(obs)[0], agent.predict(obs)[0])
        np.testing.assert_array_equal(loaded.predict(obs.numpy())[0], agent.predict(obs.numpy())[0])
    with pytest.raises(ValueError, match="no env to learn in"):
        ALGOS[algo].load(tmp_path / "m").learn(10)
    resumed = ALGOS[algo].load(tmp_path / "m", env=venv(prices), device="cpu")
    resumed.learn(100)
    assert resumed.num_timesteps > agent.num_timesteps


def test_load_checks_the_env_and_names_both(prices, tmp_path):
    make("ppo", venv(prices, window=5)).save(tmp_path / "m")
    with pytest.raises(ValueError) as exc:
        PPO.load(tmp_path / "m", env=venv(prices, window=10))
    msg = str(exc.value)
    assert "observation space" in msg and "model: observation Box(27,)" in msg
    assert "env:   observation Box(52,)" in msg and "window=5" in msg and "window=10" in msg
    with pytest.raises(ValueError, match=r"(?s)its action space differs.*Discrete\(2\).*Box"):
        PPO.load(tmp_path / "m", env=venv(prices, action_type="continuous"))
    other = venv(prices, window=5, features=["log_return", "rsi", "volume_z", "macd", "sma_ratio"])
    with pytest.raises(ValueError, match="(?s)observation layout differs.*volatility_20.*macd"):
        PPO.load(tmp_path / "m", env=other)
    with pytest.raises(ValueError, match="holds a PPO model, not DQN"):
        DQN.load(tmp_path / "m")


def test_load_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved agent"):
        PPO.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read agent checkpoint"):
        PPO.load(tmp_path / "bad")
    torch.save({"format": "something else"}, tmp_path / "bad" / CHECKPOINT)
    with pytest.raises(ValueError, match="not a stockgym agent checkpoint"):
        PPO.load(tmp_path / "bad")


# ------------------------------------------------------------------ config
def test_config_validation():
    with pytest.raises(ValueError, match=r"unknown PPOConfig field\(s\) \['learning_rte'\]"):
        PPO("CartPole-v1", learning_rte=1e-3)
    with pytest.raises(ValueError, match="clip_coef must be a (finite )?number"):
        PPO("CartPole-v1", clip_coef=-1)
    with pytest.raises(ValueError, match=r"tau must be a finite number in \(0.0, 1.0\]"):
        DQN("CartPole-v1", tau=0.0)
    with pytest.raises(ValueError, match="buffer_size must be >= 1, got 0"):
        DQN("CartPole-v1", buffer_size=0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        REINFORCE("CartPole-v1", baseline="median")
    with pytest.raises(ValueError, match="total_timesteps must be an integer >= 1"):
        PPO("CartPole-v1").learn(0)
    with (
        pytest.raises(ValueError, match="no CUDA GPU")
        if not torch.cuda.is_available()
        else pytest.raises(ValueError, match="unknown device")
    ):
        PPO("CartPole-v1", device="cuda" if not torch.cuda.is_available() else "gpu9")


@pytest.mark.parametrize("baseline", ["mean", "none"])
def test_reinforce_baselines(baseline, prices):
    agent = make("reinforce", venv(prices), baseline=baseline)
    assert "critic" not in agent.nets
    agent.learn(100)
    assert np.isfinite(agent.logger.last["losses/policy_loss"])


# ------------------------------------------------------------------ pretrained
@pytest.fixture(scope="module")
def forecaster_dir(tmp_path_factory):
    from stockgym.forecasters import ForecastConfig
    from stockgym.forecasters import train as train_forecaster

    out = tmp_path_factory.mktemp("fc") / "run"
    train_forecaster(
        ForecastConfig(
            symbol="X",
            source="synthetic",
            data_options=dict(kind="edge", edge=0.3, n_days=300, seed=0),
            model="lstm",
            window=5,
            hidden_size=8,
            num_layers=1,
            dropout=0.0,
            epochs=2,
            batch_size=64,
            plots=False,
            tensorboard=False,
            device="cpu",
            run_dir=str(out),
        )
    )
    return out


def test_pretrained_encoder_is_loaded_and_can_be_frozen(prices, forecaster_dir):
    from stockgym.forecasters import Forecaster

    fc = Forecaster.load(forecaster_dir)
    env = VectorStockTradingEnv(
        prices, 4, window_size=5, features=fc.features, scaler=fc.scaler, episode_length=20
    )
    agent = make("ppo", env, pretrained=str(forecaster_dir), freeze_pretrained=True)
    body = agent.nets["actor"].net.encoder.body
    for k, v in fc.model.state_dict().items():
        torch.testing.assert_close(body.state_dict()[k], v)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    agent.learn(64)
    for k, v in body.state_dict().items():
        torch.testing.assert_close(v, before[k])  # frozen
    critic = agent.nets["critic"]
    if hasattr(critic, "encoder"):  # a critic with a backbone of its own: frozen as well
        assert not any(p.requires_grad for p in critic.encoder.body.parameters())
    # (else the critic is a head on the actor's backbone, the frozen one above)
    assert not {id(p) for p in body.parameters()} & {id(p) for p in agent.params}


def test_pretrained_must_read_what_the_env_observes(prices, forecaster_dir):
    with pytest.raises(ValueError, match=r"reads window=5 x 5 features.*env observes window=8"):
        make("ppo", venv(prices, window=8), pretrained=str(forecaster_dir))


# ------------------------------------------------------------------ imports
def test_importing_agents_package_is_lazy():
    code = "import sys, stockgym.agents; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("algo", sorted(AGENTS))
def test_cuda_end_to_end(algo, prices, tmp_path):
    env = VectorStockTradingEnv(prices, 8, device="cuda", window_size=5, episode_length=20)
    agent = AGENTS[algo](env, **SMALL[algo], hidden_size=16)  # "auto": the env's device
    assert agent.device.type == "cuda"
    agent.learn(300)
    assert all(t.is_cuda for t in agent.nets.state_dict().values())
    obs = env.reset(seed=0)[0]
    action, _ = agent.predict(obs)
    assert action.is_cuda
    agent.save(tmp_path / "m")
    cpu = AGENTS[algo].load(tmp_path / "m", device="cpu")
    assert torch.equal(cpu.predict(obs.cpu())[0], action.cpu())
