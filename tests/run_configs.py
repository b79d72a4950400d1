"""Small runs on a synthetic edge market shared by tests: a PPO ``TrainConfig`` for tests
that need a real run dir (checkpoints, resumes, signed files), the CLI's data flags, and
the ``[train]`` table of a tiny evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockgym.experiment import DataSpec, EnvSpec, TrainConfig


def small_ppo(run_dir: Path, **kw: Any) -> TrainConfig:
    """The run's config; ``kw`` overrides any ``TrainConfig`` field."""
    base: dict[str, Any] = dict(
        algo="ppo",
        total_timesteps=256,
        seed=0,
        device="cpu",
        eval_freq=0,
        run_dir=str(run_dir),
        data=DataSpec(
            symbols=["X"],
            source="synthetic",
            options={"kind": "edge", "edge": 0.3, "n_days": 400, "seed": 0},
        ),
        env=EnvSpec(window_size=5, num_envs=4, episode_length=20, market="us"),
        agent={"hidden_size": 8, "num_steps": 16},
    )
    return TrainConfig(**{**base, **kw})


def synthetic_args(n_days: int = 400) -> list[str]:
    """``stockgym train`` flags for one synthetic symbol ``X`` with an edge."""
    return ["--symbol", "X", "--source", "synthetic", "--set", 'data.options.kind="edge"',
            "--set", f"data.options.n_days={n_days}"]  # fmt: skip


#: The ``[train]`` table of a tiny evaluation (PPO with walk-forward MLP forecasts).
EVAL_TRAIN: dict[str, Any] = {
    "algo": "ppo", "total_timesteps": 512, "device": "cpu",
    "data": {"symbols": ["X"], "source": "synthetic", "options": {"kind": "edge", "n_days": 420}},
    "env": {"window_size": 5, "num_envs": 8, "episode_length": 20,
            "forecasts": {"model": "mlp", "min_train": 100, "epochs": 2, "window": 10}},
    "agent": {"hidden_size": 16},
}  # fmt: skip
