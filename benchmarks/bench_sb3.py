"""Wall-clock time to a good policy: stockgym's agents against stable-baselines3.

    python benchmarks/bench_sb3.py                       # everything, the 10 held-out seeds
    python benchmarks/bench_sb3.py --task ppo-cartpole --seeds 0 1 2 3 4
    python benchmarks/bench_sb3.py --task dqn-cartpole edge --json results.json

Each task trains one of ours and one SB3 model per seed, alternating (ours, SB3, ours,
SB3, ...) so both share the machine's noise, and reports per seed the seconds and env
steps until the target was first met, the training throughput (env steps per second
of training) and the ratio SB3 time / our time; the summary line gives medians.

Tasks
-----
``ppo-cartpole``: ``CartPole-v1``, target: mean return of 10 deterministic evaluation
episodes >= 475. Ours: ``PPO("CartPole-v1")`` with the library's defaults for that env
(``PPOConfig.for_env("CartPole-v1")``, documented in ``docs/agents.md``). SB3: PPO with
rl-baselines3-zoo's tuned ``CartPole-v1`` hyperparameters (``hyperparams/ppo.yml``:
8 envs, n_steps 32, batch 256, 20 epochs, gamma 0.98, gae_lambda 0.8, ent_coef 0,
learning_rate lin_1e-3, clip_range lin_0.2, 1e5 steps).

``dqn-cartpole``: same env, target 195. Ours: ``DQN("CartPole-v1")`` with the library's
defaults for that env (``DQNConfig.for_env("CartPole-v1")``: 8 envs, 2x128 ReLU MLP,
batch 128, 2 updates per vector step from step 250, target copy every 64 updates,
exploration over 5% of the 50k budget; chosen on seeds 0-9, benchmark on others). SB3: DQN with the zoo's ``CartPole-v1`` settings
(``hyperparams/dqn.yml``: lr 2.3e-3, batch 64, buffer 1e5, learning_starts 1000,
gamma 0.99, target_update_interval 10, train_freq 256, gradient_steps 128,
exploration_fraction 0.16, final eps 0.04, net [256, 256], 5e4 steps).

``edge``: the synthetic edge market of ``tests/test_agents_edge.py`` (AR(1) edge 0.5,
3000 days, window 5, US costs, the run's default split and feature scaler). Target:
after-cost log return over the held-out test period (600 days) >= buy-and-hold's + 1.0
(the learning test asks for 0.3, which both libraries meet at their first evaluation;
PPO beats buy-and-hold by ~1.9 after 40k steps). Ours: PPO on ``VectorStockTradingEnv``
(``DEFAULT_NUM_ENVS["ppo"]`` = 64 envs, episodes of 100 bars) with
``STOCK_DEFAULTS["ppo"]``, i.e. exactly what ``stockgym train`` runs. SB3: PPO on our
single ``StockTradingEnv`` (same features, window, costs, scaler, 100-bar episodes) with
our resolved config mapped where it maps (``sb3_edge``): rewards x100, gamma 0.9, gae
0.95, lr 1e-3 annealed, ``n_steps`` = our batch per update (16 steps x 64 envs = 1,024),
``batch_size`` = batch / 4 minibatches, 4 epochs, clip 0.2, no value clipping
(``clip_range_vf=None``), advantage normalisation, max grad norm 0.5, separate 2x64 tanh
actor and critic (SB3's default MlpPolicy activation and orthogonal init, as our
``activation="tanh"``). Our networks add one 64-unit tanh layer after the encoder that
mixes in the portfolio state. The test period is only measured here (to time the
target), never trained on or used to pick a model within a run; ``STOCK_DEFAULTS["ppo"]``
were chosen with this task on seeds 0-9 and confirmed on seeds 20-24 (other markets).

Timing: the clock runs from building the agent (for CartPole also its envs; for the
edge market the data, scaler and envs are built before the clock for both) to the first
evaluation that meets the target; evaluation time is NOT counted (the clock is paused while
evaluating), for both libraries alike. Evaluations happen at the first update boundary
after every ``--eval-every`` env steps (all envs counted), for both alike.
Throughput (samples/s) = env steps trained / training seconds (evaluations excluded).
Both libraries use the same number of torch threads (``--threads``, default 1).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARTPOLE = "CartPole-v1"


# ------------------------------------------------------------------ clock and records
class Clock:
    """Seconds since ``start()``, minus the time spent inside ``paused()`` blocks."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.excluded = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.excluded

    class _Pause:
        def __init__(self, clock: Clock) -> None:
            self.clock = clock

        def __enter__(self) -> None:
            self.t = time.perf_counter()

        def __exit__(self, *exc: Any) -> None:
            self.clock.excluded += time.perf_counter() - self.t

    def paused(self) -> Clock._Pause:
        return Clock._Pause(self)


@dataclass
class Result:
    """One training run: ``seconds`` / ``steps`` to the target (``None``: missed
    within the budget), ``sps`` (env steps per training second), the scores seen."""

    lib: str
    seed: int
    target: float
    seconds: float | None
    steps: int | None
    sps: float
    total_steps: int
    total_seconds: float
    evals: list[tuple[int, float]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.seconds is not None


class Tracker:
    """Evaluates every ``every`` env steps (clock paused) and remembers when ``target``
    was first met; ``check(step)`` returns True once it has been."""

    def __init__(self, evaluate: Callable[[int], float], target: float, every: int,
                 clock: Clock) -> None:
        self.evaluate, self.target, self.every, self.clock = evaluate, target, every, clock
        self.next = every
        self.hit: tuple[float, int] | None = None
        self.evals: list[tuple[int, float]] = []
        self.k = 0

    def check(self, step: int) -> bool:
        if self.hit is not None:
            return True
        if step < self.next:
            return False
        t = self.clock.elapsed()
        while self.next <= step:
            self.next += self.every
        with self.clock.paused():
            score = float(self.evaluate(self.k))
            self.k += 1
        self.evals.append((int(step), round(score, 4)))
        if score >= self.target:
            self.hit = (t, int(step))
            return True
        return False

    def result(self, lib: str, seed: int, total_steps: int) -> Result:
        total = self.clock.elapsed()
        sec, steps = (self.hit if self.hit is not None else (None, None))
        train_s = sec if sec is not None else total
        train_steps = steps if steps is not None else total_steps
        return Result(lib, seed, round(self.target, 4), None if sec is None else round(sec, 3), steps,
                      round(train_steps / train_s, 1) if train_s > 0 else 0.0,
                      int(total_steps), round(total, 3), self.evals)


# ------------------------------------------------------------------ CartPole
def cartpole_score(act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` CartPole-v1 episodes played at once (one numpy
    vector env, batched deterministic actions); the same for both libraries."""
    env = gym.make_vec(CARTPOLE, num_envs=episodes, vectorization_mode="vector_entry_point")
    obs, _ = env.reset(seed=seed)
    total = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        obs, rew, term, trunc, _ = env.step(np.asarray(act(obs)).astype(np.int64).reshape(episodes))
        total += rew * alive
        alive &= ~(term | trunc)
    env.close()
    return float(total.mean())


def eval_seed(seed: int, k: int) -> int:
    """Evaluation k of training seed ``seed`` resets its episodes with this seed."""
    return 100_000 + 1_000 * seed + k


def ours_cartpole(algo: str, seed: int, target: float, budget: int, every: int,
                  episodes: int) -> Result:
    from stockgym.agents import DQN, PPO

    clock = Clock()
    if algo == "ppo":
        from stockgym.agents.ppo import PPOConfig

        agent: Any = PPO(CARTPOLE, PPOConfig.for_env(CARTPOLE, seed=seed, device="cpu"))
    else:
        from stockgym.agents.dqn import DQNConfig

        agent = DQN(CARTPOLE, DQNConfig.for_env(CARTPOLE, seed=seed, device="cpu"))
    tracker = Tracker(lambda k: cartpole_score(lambda o: agent.predict(o)[0], episodes,
                                               eval_seed(seed, k)), target, every, clock)
    agent.learn(budget, callback=lambda a, step: False if tracker.check(step) else None)
    return tracker.result("stockgym", seed, agent.num_timesteps)


def _sb3_callback(tracker: Tracker, algo: str) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Check(BaseCallback):
        """PPO: checked after each update (at the next rollout's start); DQN: after
        each env step (it trains inside the step loop)."""

        def __init__(self) -> None:
            super().__init__()
            self.done = False

        def _on_rollout_start(self) -> None:
            if algo == "ppo" and self.num_timesteps > 0:
                self.done = tracker.check(self.num_timesteps)

        def _on_step(self) -> bool:
            if algo != "ppo":
                self.done = tracker.check(self.num_timesteps)
            return not self.done

    return Check()


def _lin(start: float) -> Callable[[float], float]:
    """rl-zoo3's ``lin_<x>``: falls linearly from ``start`` to 0 over the run."""
    return lambda progress_remaining: progress_remaining * start


def sb3_cartpole(algo: str, seed: int, target: float, budget: int, every: int,
                 episodes: int) -> Result:
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    clock = Clock()
    if algo == "ppo":  # rl-baselines3-zoo hyperparams/ppo.yml, CartPole-v1
        env = make_vec_env(CARTPOLE, n_envs=8, seed=seed)
        model: Any = SB3PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8,
                            gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=_lin(1e-3),
                            clip_range=_lin(0.2), seed=seed, device="cpu", verbose=0)
    else:  # rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1
        env = make_vec_env(CARTPOLE, n_envs=1, seed=seed)
        model = SB3DQN("MlpPolicy", env, learning_rate=2.3e-3, batch_size=64,
                       buffer_size=100_000, learning_starts=1000, gamma=0.99,
                       target_update_interval=10, train_freq=256, gradient_steps=128,
                       exploration_fraction=0.16, exploration_final_eps=0.04,
                       policy_kwargs={"net_arch": [256, 256]}, seed=seed, device="cpu",
                       verbose=0)
    tracker = Tracker(lambda k: cartpole_score(lambda o: model.predict(o, deterministic=True)[0],
                                               episodes, eval_seed(seed, k)), target, every, clock)
    model.learn(budget, callback=_sb3_callback(tracker, algo))
    tracker.check(model.num_timesteps)  # after the last update, as ours is checked
    return tracker.result("sb3", seed, model.num_timesteps)


# ------------------------------------------------------------------ synthetic edge market
EDGE_MARGIN = 1.0
EDGE_STEPS = 40_000  # tests/test_agents_edge.py's PPO budget


def edge_setup(seed: int) -> dict[str, Any]:
    """The edge run's config, data split, envs and buy-and-hold over the test period."""
    from stockgym.agents.run import DataSpec, EnvSpec, TrainConfig, _until, buy_and_hold, prepare
    from stockgym.envs import StockTradingEnv

    config = TrainConfig(
        algo="ppo", total_timesteps=EDGE_STEPS, seed=seed, device="cpu", eval_freq=0,
        tensorboard=False,
        data=DataSpec(symbols=["X"], source="synthetic",
                      options={"kind": "edge", "edge": 0.5, "n_days": 3000, "seed": seed}),
        env=EnvSpec(window_size=5, market="us"),
    )
    prep = prepare(config)
    dates = prep["dates"]
    test_env = StockTradingEnv(prep["prices"], scaler=prep["scaler"], **prep["env_kwargs"])
    period = (dates["test"]["first"], dates["test"]["last"])
    bench = buy_and_hold(test_env, period)["return"]
    train_prices = _until(prep["prices"], dates["train"]["last"])
    return {"config": config, "prep": prep, "test_env": test_env, "period": period,
            "bench": bench, "train_prices": train_prices}


def edge_score(policy: Any, setup: dict[str, Any]) -> float:
    """After-cost log return of ``policy`` (deterministic) over the test period."""
    from stockgym.agents.run import evaluate_on

    return evaluate_on(policy, setup["test_env"], setup["period"])[0]["return"]


def ours_edge(seed: int, budget: int, every: int) -> Result:
    from stockgym.agents import PPO

    setup = edge_setup(seed)  # data, split, scaler, envs: not timed (for SB3 neither)
    clock = Clock()
    agent = PPO(setup["prep"]["venv"], setup["prep"]["agent_config"])
    target = setup["bench"] + EDGE_MARGIN
    tracker = Tracker(lambda k: edge_score(agent, setup), target, every, clock)
    agent.learn(budget, callback=lambda a, step: False if tracker.check(step) else None)
    return tracker.result("stockgym", seed, agent.num_timesteps)


def sb3_edge(seed: int, budget: int, every: int) -> Result:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.monitor import Monitor

    from stockgym.envs import StockTradingEnv

    setup = edge_setup(seed)
    prep = setup["prep"]
    c = prep["agent_config"]  # ours, resolved: STOCK_DEFAULTS["ppo"] over PPOConfig's
    env = StockTradingEnv(setup["train_prices"], scaler=prep["scaler"],
                          episode_length=setup["config"].env.episode_length, **prep["env_kwargs"])
    env = Monitor(gym.wrappers.TransformReward(env, lambda r: c.reward_scale * r))
    clock = Clock()
    n_steps = c.num_steps * c.num_envs  # the same batch per update as ours
    model = SB3PPO("MlpPolicy", env, n_steps=n_steps, batch_size=n_steps // c.num_minibatches,
                   n_epochs=c.update_epochs, gamma=c.gamma, gae_lambda=c.gae_lambda,
                   learning_rate=_lin(c.learning_rate) if c.anneal_lr else c.learning_rate,
                   clip_range=c.clip_coef, clip_range_vf=c.clip_coef if c.clip_vloss else None,
                   normalize_advantage=c.norm_adv, target_kl=c.target_kl, ent_coef=c.ent_coef,
                   vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm or math.inf,
                   policy_kwargs={"net_arch": {"pi": [c.hidden_size] * c.num_layers,
                                               "vf": [c.hidden_size] * c.num_layers},
                                  "activation_fn": {"tanh": torch.nn.Tanh,
                                                    "relu": torch.nn.ReLU}[c.activation]},
                   seed=seed, device="cpu", verbose=0)
    target = setup["bench"] + EDGE_MARGIN
    tracker = Tracker(lambda k: edge_score(model, setup), target, every, clock)
    model.learn(budget, callback=_sb3_callback(tracker, "ppo"))
    tracker.check(model.num_timesteps)  # after the last update, as ours is checked
    return tracker.result("sb3", seed, model.num_timesteps)


# ------------------------------------------------------------------ driver
def warm_up() -> None:
    """Import everything and run each library once for a moment, untimed, so that no
    timed run pays for first imports or first kernel calls."""
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3 import PPO as SB3PPO

    from stockgym.agents import DQN, PPO
    from stockgym.backtest import run_policy  # noqa: F401

    PPO(CARTPOLE, device="cpu").learn(512)
    DQN(CARTPOLE, device="cpu", learning_starts=0).learn(512)
    SB3PPO("MlpPolicy", CARTPOLE, n_steps=64, device="cpu").learn(128)
    SB3DQN("MlpPolicy", CARTPOLE, learning_starts=0, device="cpu").learn(128)
    cartpole_score(lambda o: np.zeros(len(o), dtype=np.int64), 2, 0)


TASKS = ("ppo-cartpole", "dqn-cartpole", "edge")
#: The seeds the closing-note figures use: never used to choose any default (those were
#: chosen on seeds 0-14). Ten, because a 5-seed median of per-seed time ratios swings
#: widely (one library's lucky early evaluation on one seed moves it): on the final code
#: PPO CartPole gave 7.1x on seeds 20-24 and 4.5x on 30-34.
HELD_OUT_SEEDS = (20, 21, 22, 23, 24, 30, 31, 32, 33, 34)


def run_task(task: str, seed: int, lib: str, args: argparse.Namespace) -> Result:
    if task == "edge":
        fn = ours_edge if lib == "stockgym" else sb3_edge
        return fn(seed, args.edge_budget, args.edge_every)
    algo = task.split("-")[0]
    target = 475.0 if algo == "ppo" else 195.0
    budget = args.ppo_budget if algo == "ppo" else args.dqn_budget
    every = args.ppo_every if algo == "ppo" else args.dqn_every
    fn = ours_cartpole if lib == "stockgym" else sb3_cartpole
    return fn(algo, seed, target, budget, every, args.episodes)


def _fmt(x: float | None, spec: str) -> str:
    width = "".join(ch for ch in spec.split(".")[0].split(",")[0] if ch.isdigit())
    return format("missed", f">{width}") if x is None else format(x, spec)


def summarise(task: str, pairs: list[tuple[Result, Result]]) -> dict[str, Any]:
    """Medians over all seeds, a run that missed the target counting as infinitely slow
    (its time and steps as +inf, its per-seed time ratio as 0 or +inf)."""
    def med(values: list[float | None]) -> float | None:
        vals = [math.inf if v is None else float(v) for v in values]
        m = statistics.median(vals) if vals else math.inf
        return None if math.isinf(m) else m

    def ratio(o: Result, s: Result) -> float:
        if o.reached and s.reached:
            return s.seconds / o.seconds
        return math.inf if o.reached else 0.0  # both missed: counted against us

    ours = [p[0] for p in pairs]
    sb3 = [p[1] for p in pairs]
    ratios = [ratio(o, s) for o, s in pairs]
    return {
        "task": task,
        "seeds": [o.seed for o in ours],
        "ours_reached": sum(r.reached for r in ours), "sb3_reached": sum(r.reached for r in sb3),
        "ours_median_s": med([r.seconds for r in ours]), "sb3_median_s": med([r.seconds for r in sb3]),
        "ours_median_steps": med([r.steps for r in ours]), "sb3_median_steps": med([r.steps for r in sb3]),
        "ours_median_sps": statistics.median(r.sps for r in ours),
        "sb3_median_sps": statistics.median(r.sps for r in sb3),
        "median_ratio": statistics.median(ratios),
        "ratios": [round(x, 3) if math.isfinite(x) else str(x) for x in ratios],
        "runs": [asdict(r) for p in pairs for r in p],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both")
    p.add_argument("--episodes", type=int, default=10, help="CartPole evaluation episodes")
    p.add_argument("--ppo-budget", type=int, default=100_000)
    p.add_argument("--ppo-every", type=int, default=2_048)
    p.add_argument("--dqn-budget", type=int, default=50_000)
    p.add_argument("--dqn-every", type=int, default=1_000)
    p.add_argument("--edge-budget", type=int, default=EDGE_STEPS)
    p.add_argument("--edge-every", type=int, default=2_048)
    p.add_argument("--only", choices=("stockgym", "sb3"), help="run one library only")
    p.add_argument("--json", help="write all results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import stable_baselines3

    print(f"python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), stable-baselines3 {stable_baselines3.__version__}, "
          f"gymnasium {gym.__version__}, {platform.machine()} x {torch.get_num_interop_threads()}",
          flush=True)
    out: dict[str, Any] = {"args": vars(args), "tasks": []}
    libs = ("stockgym", "sb3") if args.only is None else (args.only,)
    warm_up()
    for task in args.task:
        print(f"\n== {task}")
        print(f"{'seed':>4} {'lib':<9}{'seconds':>9}{'steps':>9}{'samples/s':>11}"
              f"{'evals':>7}  last score")
        pairs = []
        for seed in args.seeds:
            got = {}
            for lib in libs:
                r = run_task(task, seed, lib, args)
                got[lib] = r
                last = r.evals[-1][1] if r.evals else float("nan")
                print(f"{seed:>4} {lib:<9}{_fmt(r.seconds, '9.2f')}{_fmt(r.steps, '9,d')}"
                      f"{r.sps:>11,.0f}{len(r.evals):>7}  {last:.3f} (target {r.target:.3f})",
                      flush=True)
            if len(libs) == 2:
                o, s = got["stockgym"], got["sb3"]
                if o.reached and s.reached:
                    print(f"{seed:>4} ratio SB3/ours time {s.seconds / o.seconds:6.2f}x, "
                          f"samples/s {o.sps / s.sps:6.2f}x", flush=True)
                pairs.append((o, s))
        if pairs:
            summary = summarise(task, pairs)
            out["tasks"].append(summary)
            print(f"median: ours {_fmt(summary['ours_median_s'], '.2f')} s "
                  f"({summary['ours_reached']}/{len(pairs)} reached), SB3 "
                  f"{_fmt(summary['sb3_median_s'], '.2f')} s ({summary['sb3_reached']}/{len(pairs)}); "
                  f"time ratio {_fmt(summary['median_ratio'], '.2f')}x; samples/s ours "
                  f"{summary['ours_median_sps']:,.0f} vs SB3 {summary['sb3_median_sps']:,.0f}",
                  flush=True)
    if args.json:
        from stockgym.core import write_json

        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
