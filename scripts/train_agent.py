"""Train an agent from Python: what ``stockgym train`` does, as a script to copy and edit.

    python scripts/train_agent.py                                  # PPO on the bundled AAPL
    python scripts/train_agent.py --algo dqn --backbone lstm --total-timesteps 100000
    python scripts/train_agent.py --config experiment.toml --seed 3  # a TOML, then overrides

It builds a :class:`stockgym.agents.TrainConfig`, calls :func:`stockgym.agents.train`
(data -> split -> scaler fit on the training period -> vectorised env -> agent, with
validation backtests in TensorBoard) and prints where the run went. Backtest the result
on its test period with ``stockgym backtest --model RUN_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses

from stockgym.experiment import DataSpec, EnvSpec, TrainConfig, load_config, train
from stockgym.experiment.train import format_summary


def default_config() -> TrainConfig:
    """The experiment this script runs without --config: edit to taste."""
    return TrainConfig(
        algo="ppo",
        total_timesteps=200_000,
        seed=0,
        device="auto",
        eval_freq=20_000,
        data=DataSpec(symbols=["AAPL"], source="sample"),
        env=EnvSpec(window_size=30, market="us", episode_length=100),
        agent={"backbone": "mlp", "hidden_size": 64},
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a stockgym agent (see the module docstring).")
    p.add_argument("--config", help="TOML config (default: default_config() in this script)")
    p.add_argument("--algo", choices=["dqn", "ppo", "reinforce", "sb3-ppo", "sb3-dqn", "sb3-a2c"])
    p.add_argument("--symbol", nargs="+", dest="symbols")
    p.add_argument("--source", choices=["auto", "fdr", "csv", "sample", "synthetic"])
    p.add_argument("--backbone", choices=["mlp", "cnn", "lstm"])
    p.add_argument("--total-timesteps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--run-dir")
    args = p.parse_args(argv)

    config = load_config(args.config) if args.config else default_config()
    top = {
        k: getattr(args, k)
        for k in ("algo", "total_timesteps", "seed", "device", "run_dir")
        if getattr(args, k) is not None
    }
    config = config.replace(**top, progress=True)
    if args.symbols or args.source:
        config = config.replace(
            data=dataclasses.replace(
                config.data,
                **({"symbols": args.symbols} if args.symbols else {}),
                **({"source": args.source} if args.source else {}),
            )
        )
    if args.backbone:
        config = config.replace(agent={**config.agent, "backbone": args.backbone})
    print(format_summary(train(config)))


if __name__ == "__main__":
    main()
