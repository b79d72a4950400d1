"""Agents: do they learn, and how fast? (Against stable-baselines3: bench_sb3.py.)

    python benchmarks/bench_agents.py                  # everything below (several minutes)
    python benchmarks/bench_agents.py --edge           # synthetic-edge learning, 3 seeds
    python benchmarks/bench_agents.py --cartpole       # CartPole-v1, 3 seeds
    python benchmarks/bench_agents.py --edge --cartpole --algos dqn   # one agent only

``--edge``: each agent is trained with ``stockgym.experiment.train`` (the defaults of
``STOCK_DEFAULTS``) on a synthetic market with a known AR(1) edge (``edge=0.5``) and on
one without (``edge=0``), seeds 0, 1, 2 (the seed of the data and of the agent); the
table gives after-cost log returns over the held-out test period (600 days) of the
agent, buy-and-hold and the mean of 5 random policies.

``--cartpole``: steps and seconds until the agent clears the bar the tests use, and the
final 10-episode deterministic evaluation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stockgym.experiment import holdout_returns, train  # noqa: E402

#: env steps of the agents the edge-market tests do not train (their own test file's)
EXTRA_STEPS = {"a2c": 10_000, "qlearning": 20_000}


def bench_edge(seeds: list[int], algos: list[str]) -> None:
    from test_agents_edge import edge_config

    print("synthetic edge market: test-period (600 days) after-cost log returns")
    print(
        f"{'algo':<10}{'edge':>5}{'seed':>5}{'agent':>9}{'b&h':>8}{'random':>8}"
        f"{'vs b&h':>8}{'vs rnd':>8}{'train s':>9}"
    )
    for algo in algos:
        for edge in (0.5, 0.0):
            for seed in seeds:
                with tempfile.TemporaryDirectory() as d:
                    t = time.perf_counter()
                    steps = EXTRA_STEPS.get(algo)
                    train(edge_config(algo, edge, seed, f"{d}/run", steps=steps))
                    dt = time.perf_counter() - t
                    r = holdout_returns(f"{d}/run", n_random=5)
                print(
                    f"{algo:<10}{edge:>5}{seed:>5}{r['agent']:>+9.3f}{r['buy_and_hold']:>+8.3f}"
                    f"{r['random']:>+8.3f}{r['agent'] - r['buy_and_hold']:>+8.3f}"
                    f"{r['agent'] - r['random']:>+8.3f}{dt:>9.1f}",
                    flush=True,
                )


def bench_cartpole(seeds: list[int], algos: list[str]) -> None:
    from test_agents_cartpole import CONFIGS, final_score, train_until

    print(
        "CartPole-v1: steps / seconds (wall, CPU) to the tests' stop bar, final 10-episode "
        "evaluation"
    )
    for algo in algos:
        cls, kwargs, until, pass_mark = CONFIGS[algo]
        for seed in seeds:
            agent = cls("CartPole-v1", **{**kwargs, "seed": seed})
            t, c = time.perf_counter(), time.process_time()
            steps = train_until(agent, **until)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            score = final_score(agent)
            print(
                f"{algo:<10} seed {seed}: {steps:>7,} steps {dt:6.1f} s wall {dc:6.1f} s CPU  "
                f"eval {score:6.1f} ({'pass' if score >= pass_mark else 'FAIL'} at "
                f"{pass_mark})",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edge", action="store_true")
    p.add_argument("--cartpole", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--algos",
        nargs="+",
        default=["ppo", "dqn", "reinforce"],
        choices=["ppo", "dqn", "reinforce", "a2c", "qlearning"],
        help="agents for --edge / --cartpole (a2c and qlearning: --edge only)",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    everything = not (args.edge or args.cartpole)
    if args.edge or everything:
        bench_edge(args.seeds, args.algos)
    if args.cartpole or everything:
        bench_cartpole(args.seeds, args.algos)


if __name__ == "__main__":
    main()
