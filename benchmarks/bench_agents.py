"""Agents: do they learn, how fast, and how do they compare with stable-baselines3?

    python benchmarks/bench_agents.py                  # everything below (several minutes)
    python benchmarks/bench_agents.py --edge           # synthetic-edge learning, 3 seeds
    python benchmarks/bench_agents.py --cartpole       # CartPole-v1, 3 seeds
    python benchmarks/bench_agents.py --edge --cartpole --algos dqn   # one agent only
    python benchmarks/bench_agents.py --throughput     # PPO steps/s: ours vs SB3, same env

``--edge``: each agent is trained with ``stockgym.agents.train`` (the defaults of
``STOCK_DEFAULTS``) on a synthetic market with a known AR(1) edge (``edge=0.5``) and on
one without (``edge=0``), seeds 0, 1, 2 (the seed of the data and of the agent); the
table gives after-cost log returns over the held-out test period (600 days) of the
agent, buy-and-hold and the mean of 5 random policies.

``--cartpole``: steps and seconds until the agent clears the bar the tests use, and the
final 10-episode deterministic evaluation.

``--throughput``: PPO (mlp, 2x64) training steps per second on the same
``VectorStockTradingEnv`` (N envs, 16 steps per rollout, 4 epochs of 4 minibatches),
ours on torch tensors vs stable-baselines3 through ``SB3VecEnv``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stockgym.agents import PPO  # noqa: E402
from stockgym.experiment import holdout_returns, train  # noqa: E402


def bench_edge(seeds: list[int], algos: list[str]) -> None:
    from test_agents_edge import edge_config

    print("synthetic edge market: test-period (600 days) after-cost log returns")
    print(f"{'algo':<10}{'edge':>5}{'seed':>5}{'agent':>9}{'b&h':>8}{'random':>8}"
          f"{'vs b&h':>8}{'vs rnd':>8}{'train s':>9}")
    for algo in algos:
        for edge in (0.5, 0.0):
            for seed in seeds:
                with tempfile.TemporaryDirectory() as d:
                    t = time.perf_counter()
                    train(edge_config(algo, edge, seed, f"{d}/run"))  # the tests' config
                    dt = time.perf_counter() - t
                    r = holdout_returns(f"{d}/run", n_random=5)
                print(f"{algo:<10}{edge:>5}{seed:>5}{r['agent']:>+9.3f}{r['buy_and_hold']:>+8.3f}"
                      f"{r['random']:>+8.3f}{r['agent'] - r['buy_and_hold']:>+8.3f}"
                      f"{r['agent'] - r['random']:>+8.3f}{dt:>9.1f}", flush=True)


def bench_cartpole(seeds: list[int], algos: list[str]) -> None:
    from test_agents_cartpole import CONFIGS, final_score, train_until

    print("CartPole-v1: steps / seconds (wall, CPU) to the tests' stop bar, final 10-episode "
          "evaluation")
    for algo in algos:
        cls, kwargs, until, pass_mark = CONFIGS[algo]
        for seed in seeds:
            agent = cls("CartPole-v1", **{**kwargs, "seed": seed})
            t, c = time.perf_counter(), time.process_time()
            steps = train_until(agent, **until)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            score = final_score(agent)
            print(f"{algo:<10} seed {seed}: {steps:>7,} steps {dt:6.1f} s wall {dc:6.1f} s CPU  "
                  f"eval {score:6.1f} ({'pass' if score >= pass_mark else 'FAIL'} at "
                  f"{pass_mark})", flush=True)


def bench_throughput(num_envs: int, steps: int) -> None:
    from stable_baselines3 import PPO as SB3PPO

    from stockgym.data import load_prices
    from stockgym.envs import VectorStockTradingEnv
    from stockgym.envs.sb3 import SB3VecEnv

    prices = load_prices("X", source="synthetic", kind="edge", n_days=3000, seed=0)

    def venv():
        return VectorStockTradingEnv(prices, num_envs, device="cpu", window_size=5,
                                     episode_length=100)

    ours = PPO(venv(), num_steps=16, num_minibatches=4, update_epochs=4, device="cpu",
               hidden_size=64)
    t = time.perf_counter()
    ours.learn(steps)
    t_ours = time.perf_counter() - t
    sb3 = SB3PPO("MlpPolicy", SB3VecEnv(venv()), n_steps=16, batch_size=16 * num_envs // 4,
                 n_epochs=4, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    t = time.perf_counter()
    sb3.learn(steps)
    t_sb3 = time.perf_counter() - t
    print(f"PPO training on VectorStockTradingEnv, {num_envs} envs, {steps:,} steps, "
          f"{torch.get_num_threads()} torch threads")
    print(f"  stockgym  {steps / t_ours:>9,.0f} steps/s")
    print(f"  SB3       {steps / t_sb3:>9,.0f} steps/s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edge", action="store_true")
    p.add_argument("--cartpole", action="store_true")
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", default=["ppo", "dqn", "reinforce"],
                   choices=["ppo", "dqn", "reinforce"], help="agents for --edge / --cartpole")
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    everything = not (args.edge or args.cartpole or args.throughput)
    if args.edge or everything:
        bench_edge(args.seeds, args.algos)
    if args.cartpole or everything:
        bench_cartpole(args.seeds, args.algos)
    if args.throughput or everything:
        bench_throughput(args.num_envs, args.steps)


if __name__ == "__main__":
    main()
