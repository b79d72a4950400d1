"""Checkpoints and ``stockgym train --resume``: a run killed with SIGKILL mid-training
resumes from its last checkpoint, finishes with the exact step count of an
uninterrupted run, leaves no corrupt file, and TensorBoard has no duplicate steps."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stockgym.agents.base import read_checkpoint
from stockgym.cli import main
from stockgym.envs.vector import STATE_FORMAT
from stockgym.experiment import TrainConfig, load_run, resume, train
from stockgym.experiment.records import CHECKPOINT, RUN_CHECKPOINT

SYNTH = {"kind": "edge", "edge": 0.3, "seed": 5, "n_days": 700}


def _config(tmp_path: Path, algo: str, total: int, **top) -> TrainConfig:
    agent = {"hidden_size": 16}
    if algo == "ppo":
        agent["num_steps"] = 8
    if algo == "dqn":
        agent.update(learning_starts=64, batch_size=32, save_replay_buffer=True)
    return TrainConfig.from_dict(
        {
            "algo": algo,
            "total_timesteps": total,
            "seed": 3,
            "device": "cpu",
            "eval_freq": 0,
            "run_dir": str(tmp_path / f"run-{algo}"),
            **top,
            "data": {"symbols": ["X"], "source": "synthetic", "options": SYNTH},
            "env": {
                "window_size": 5,
                "num_envs": 4,
                "episode_length": 20,
                "features": ["log_return", "rsi_14"],
            },
            "agent": agent,
        }
    )


def _scalars(run_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        assert all(math.isfinite(e.value) for e in events), tag
        out[tag] = [e.step for e in events]
    return out


def _check_files(run_dir: Path) -> None:
    """Every JSON parses, every checkpoint loads safely, no temp file under a final name."""
    for f in run_dir.rglob("*.json"):
        json.loads(f.read_text())
    read_checkpoint(run_dir / "model")
    if (run_dir / CHECKPOINT).exists():
        read_checkpoint(run_dir / CHECKPOINT, fmt=RUN_CHECKPOINT)
    record, agent = load_run(run_dir)
    assert record["format"] == "stockgym.agents.run"


@pytest.mark.parametrize("algo", ["ppo", "dqn", "reinforce"])
def test_interrupt_then_resume_gives_the_exact_step_count(
    tmp_path, monkeypatch, interrupt_training, algo
):
    total = 400
    # the uninterrupted reference
    ref = train(_config(tmp_path / "ref", algo, total, checkpoint_freq=0))
    # the same run, interrupted (Ctrl-C) after its first checkpoint
    cfg = _config(tmp_path, algo, total, checkpoint_freq=64)
    interrupt_training(150)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    run_dir = Path(cfg.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 150 <= summary["timesteps"] < total
    ckpt = read_checkpoint(run_dir / CHECKPOINT, fmt=RUN_CHECKPOINT)
    assert ckpt["agent"]["num_timesteps"] == summary["timesteps"]

    assert ckpt["env"]["format"] == STATE_FORMAT  # the envs' positions are in it
    res = resume(run_dir)
    assert res.summary["timesteps"] == ref.summary["timesteps"]
    # one process, one thread, CPU: the continuation replays the uninterrupted run exactly
    ref_w, res_w = ref.agent.nets.state_dict(), res.agent.nets.state_dict()
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert res.summary["interrupted"] is False and res.summary["resumes"] == 1
    assert res.agent.schedule == ref.agent.schedule
    _check_files(run_dir)
    steps = _scalars(run_dir)
    for tag, seen in steps.items():
        assert len(seen) == len(set(seen)), f"{tag}: duplicate steps {seen}"
    with pytest.raises(ValueError, match="finished training"):
        resume(run_dir)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("algo", ["ppo", "dqn", "reinforce"])
def test_interrupt_then_resume_on_cuda(tmp_path, monkeypatch, interrupt_training, algo):
    """On the GPU (sync-free env: random starts from the device generator, saved in the
    checkpoint): the resumed run reaches the same step count and the same weights as the
    uninterrupted one, up to the GPU's float reassociation."""
    total = 400
    ref = train(_config(tmp_path / "ref", algo, total, checkpoint_freq=0, device="cuda"))
    cfg = _config(tmp_path, algo, total, checkpoint_freq=64, device="cuda")
    interrupt_training(150)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    res = resume(Path(cfg.run_dir))
    assert res.summary["timesteps"] == ref.summary["timesteps"]
    assert res.agent.device.type == "cuda"
    ref_w, res_w = ref.agent.nets.state_dict(), res.agent.nets.state_dict()
    for k in ref_w:
        torch.testing.assert_close(res_w[k], ref_w[k], rtol=1e-4, atol=1e-5)
    _check_files(Path(cfg.run_dir))


def test_resume_refuses_changed_data(tmp_path):
    cfg = _config(tmp_path, "ppo", 64, checkpoint_freq=32)
    res = train(cfg)
    (res.run_dir / "summary.json").unlink()  # pretend it was killed
    record = json.loads((res.run_dir / "config.json").read_text())
    record["data"]["sha256"] = "0" * 64
    (res.run_dir / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="data of .* changed"):
        resume(res.run_dir)


def test_resume_cli_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--seed", "2"]) == 2
    assert "drop --seed" in capsys.readouterr().err


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"training exited early ({proc.returncode}): {err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def test_sigkill_mid_run_then_resume(tmp_path):
    """A CLI run killed with SIGKILL after a checkpoint, then ``--resume``d, ends where the
    same command run without interruption ends: bit-identical weights and the same
    validation history (one thread, CPU)."""
    run_dir = tmp_path / "killed"
    total, batch = 8000, 4 * 8  # PPO: 4 envs x 8 steps per rollout
    config = tmp_path / "ppo.toml"
    config.write_text(
        'algo = "ppo"\n[data]\nsymbols = ["X"]\nsource = "synthetic"\n'
        '[data.options]\nkind = "edge"\nedge = 0.3\nseed = 5\nn_days = 700\n'
        "[agent]\nnum_steps = 8\nhidden_size = 16\nupdate_epochs = 2\nnum_minibatches = 1\n"
    )
    args = [
        "train",
        "--config",
        str(config),
        "--total-timesteps",
        str(total),
        "--num-envs",
        "4",
        "--window-size",
        "5",
        "--episode-length",
        "20",
        "--eval-freq",
        "1000",
        "--checkpoint-freq",
        "256",
        "--seed",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    entry = "import sys; from stockgym.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", entry, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(run_dir / CHECKPOINT, proc, timeout=120)
        time.sleep(0.3)  # let it run past the checkpoint, maybe into the next one
        assert proc.poll() is None, "training finished before the kill; raise total"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    killed_at = read_checkpoint(run_dir / CHECKPOINT, fmt=RUN_CHECKPOINT)["agent"]["num_timesteps"]
    assert 0 < killed_at < total

    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["timesteps"] == math.ceil(total / batch) * batch
    assert summary["resumes"] == 1 and summary["interrupted"] is False
    _check_files(run_dir)
    steps = _scalars(run_dir)
    assert "charts/SPS" in steps and "eval/return" in steps
    for tag, seen in steps.items():
        assert len(seen) == len(set(seen)), f"{tag}: duplicate steps after the resume"
        assert seen == sorted(seen), tag
    evals = [h["step"] for h in summary["eval_history"]]
    assert evals == sorted(set(evals)) and evals[0] <= 1024
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["agent"]["num_timesteps"] <= total

    # the same command, never interrupted, in this process (one torch thread: conftest)
    ref_dir = tmp_path / "uninterrupted"
    assert args[-3:] == ["--run-dir", str(run_dir), "--no-progress"]
    assert main([*args[:-3], "--run-dir", str(ref_dir), "--no-progress"]) == 0
    ref_summary = json.loads((ref_dir / "summary.json").read_text())
    assert ref_summary["timesteps"] == summary["timesteps"]
    assert ref_summary["eval_history"] == summary["eval_history"]
    ref_w = load_run(ref_dir)[1].nets.state_dict()
    res_w = load_run(run_dir)[1].nets.state_dict()
    assert list(ref_w) == list(res_w)
    for k in ref_w:
        assert torch.equal(ref_w[k], res_w[k]), f"{k} differs from the uninterrupted run"
