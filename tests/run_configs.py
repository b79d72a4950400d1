"""A small PPO run on a synthetic edge market (4 envs, window 5, 8 hidden units), for
tests that need a real run dir: checkpoints, resumes, signed files."""

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
