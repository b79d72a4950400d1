"""A run killed after a checkpoint and resumed shows each step once per tag in
TensorBoard's Python loader (``EventAccumulator``, as ``--load_fast=false`` reads it):
the fresh run writes the ``SessionLog.START`` that makes the resume's START a restart,
which purges what the killed process wrote after its checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from run_configs import small_ppo
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator

from stockgym.agents import integrity
from stockgym.agents.base import Agent
from stockgym.experiment import resume, train
from stockgym.experiment.records import CHECKPOINT


def _steps(tb_dir: Path) -> dict[str, list[int]]:
    """Steps per tag as the legacy loader reads them (it purges on every START)."""
    acc = event_accumulator.EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _plugin_steps(tb_dir: Path) -> dict[str, list[int]]:
    """Steps per tag as TensorBoard's server reads them with ``--load_fast=false`` (the
    plugin loader: its first START marks the run's beginning, later ones purge)."""
    acc = plugin_event_accumulator.EventAccumulator(str(tb_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def test_killed_and_resumed_run_has_no_duplicate_steps(tmp_path, monkeypatch):
    monkeypatch.setenv(integrity.CONFIG_DIR_ENV, str(tmp_path / "config"))
    total, ckpt_at, killed_at = 768, 64, 400
    cfg = small_ppo(tmp_path / "run", total_timesteps=total, eval_freq=128, checkpoint_freq=ckpt_at)
    run = Path(cfg.run_dir)
    saved = tmp_path / "first-checkpoint"
    original = Agent.learn

    def learn(self, total_timesteps, *, callback=None, **kw):
        def cb(a, step):
            callback(a, step)
            if step >= ckpt_at and not saved.exists():  # the checkpoint a kill would leave
                saved.mkdir()
                for f in run.glob(CHECKPOINT + "*"):
                    shutil.copy2(f, saved / f.name)
            if step >= killed_at:
                raise KeyboardInterrupt

        return original(self, total_timesteps, callback=cb, **kw)

    monkeypatch.setattr(Agent, "learn", learn)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(Agent, "learn", original)
    # what SIGKILL leaves: events written up to ~killed_at, the checkpoint of step 64
    for f in saved.iterdir():
        shutil.copy2(f, run / f.name)
    (run / "summary.json").unlink()
    before = _steps(run / "tensorboard")
    assert max(before["charts/SPS"]) > ckpt_at + 64  # orphans past the checkpoint exist

    res = resume(run)
    assert res.summary["timesteps"] == total
    for read in (_plugin_steps, _steps):
        steps = read(run / "tensorboard")
        assert {"charts/SPS", "eval/return", "losses/value_loss"} <= set(steps)
        for tag, seen in steps.items():
            assert len(seen) == len(set(seen)), f"{read.__name__} {tag}: duplicated {seen}"
            assert seen == sorted(seen), tag
        assert max(steps["charts/SPS"]) == total
        assert steps["eval/return"] == list(range(128, total + 1, 128))
