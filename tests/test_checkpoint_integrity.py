"""Checkpoints and run records verify themselves: flipped bytes fail the SHA-256 beside
the file, NaN weights and impossible counters are refused, missing or mistyped keys give
one clear line each (exit 2 on the command line, never a traceback)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from run_configs import small_ppo

from stockgym.agents import integrity
from stockgym.agents.base import Agent, read_checkpoint
from stockgym.agents.integrity import write_with_digest
from stockgym.cli import main
from stockgym.experiment import read_record, resume, train
from stockgym.experiment.records import CHECKPOINT, RUN_CHECKPOINT


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(integrity.CONFIG_DIR_ENV, str(tmp_path / "config"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A PPO run stopped (Ctrl-C) after its first checkpoint."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = small_ppo(tmp / "run", total_timesteps=512, checkpoint_freq=64, tensorboard=False)
    original = Agent.learn

    def learn(self, total_timesteps, *, callback=None, **kw):
        def cb(a, step):
            callback(a, step)
            if step >= 128:
                raise KeyboardInterrupt

        return original(self, total_timesteps, callback=cb, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Agent, "learn", learn)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    return Path(cfg.run_dir)


@pytest.fixture
def run(interrupted, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(interrupted, dst)
    return dst


def _rewrite(file: Path, change) -> None:
    """Load a checkpoint, apply ``change``, write it back with a matching digest (a
    checkpoint that is internally wrong, not corrupt on disk)."""
    ckpt = torch.load(file, weights_only=True)
    change(ckpt)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    write_with_digest(file, buf.getvalue())


def _resume_err(run: Path, capsys) -> str:
    code = main(["train", "--resume", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_digests_are_written_beside_checkpoint_and_model(run):
    for f in (run / CHECKPOINT, run / "model" / "agent.pt"):
        side = Path(str(f) + ".sha256")
        assert side.read_text().split()[0] == integrity.sha256_hex(f.read_bytes())


def test_flipped_bytes_in_checkpoint_refuse_resume(run, capsys):
    f = run / CHECKPOINT
    data = bytearray(f.read_bytes())
    for i in range(20):
        pos = len(data) // 3 + 97 * i
        data[pos] ^= 0xFF
    f.write_bytes(bytes(data))
    err = _resume_err(run, capsys)
    assert f"{f} is corrupt" in err and "SHA-256" in err


def test_flipped_bytes_in_model_refuse_backtest(run, tmp_path, capsys):
    f = run / "model" / "agent.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    code = main(["backtest", "--model", str(run), "--out", str(tmp_path / "bt"), "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and f"{f} is corrupt" in err and "Traceback" not in err


def test_nan_weights_are_refused_on_resume(run, capsys):
    def poison(ckpt):
        name = next(iter(ckpt["agent"]["model"]))
        ckpt["agent"]["model"][name].view(-1)[0] = float("nan")

    _rewrite(run / CHECKPOINT, poison)
    err = _resume_err(run, capsys)
    assert "non-finite values" in err and "model." in err


def test_nan_model_is_not_backtested(run, tmp_path, capsys):
    def poison(ckpt):
        for t in ckpt["model"].values():
            t.fill_(float("nan"))

    _rewrite(run / "model" / "agent.pt", poison)
    code = main(["backtest", "--model", str(run), "--out", str(tmp_path / "bt"), "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite values" in err and "Traceback" not in err
    assert not (tmp_path / "bt").exists()


def test_inf_in_optimizer_state_is_refused(run):
    def poison(ckpt):
        state = next(iter(ckpt["agent"]["optimizer"]["state"].values()))
        state["exp_avg_sq"].view(-1)[0] = float("inf")

    _rewrite(run / CHECKPOINT, poison)
    with pytest.raises(ValueError, match=r"non-finite values .*optimizer\.state"):
        resume(run)


def test_negative_step_counter_is_refused(run, capsys):
    _rewrite(run / CHECKPOINT, lambda c: c["agent"].__setitem__("num_timesteps", -5000))
    err = _resume_err(run, capsys)
    assert "'num_timesteps' must be >= 0, got -5000" in err


def test_schedule_of_another_length_is_refused(run):
    def other(ckpt):
        ckpt["agent"]["schedule"] = {"start": 0, "total": 10**6}

    _rewrite(run / CHECKPOINT, other)
    with pytest.raises(ValueError, match="does not belong to this run's total_timesteps 512"):
        resume(run)


def test_missing_and_mistyped_checkpoint_keys_one_line_each(run, capsys):
    def damage(ckpt):
        del ckpt["agent"]["optimizer"]
        ckpt["agent"]["config"] = "ppo"
        del ckpt["trainer"]["next_eval"]
        ckpt["trainer"]["seconds"] = "soon"

    _rewrite(run / CHECKPOINT, damage)
    with pytest.raises(ValueError) as info:
        resume(run)
    lines = str(info.value).splitlines()
    # the run checkpoint's trainer state is checked first, the agent's after
    assert lines == [
        f"{run / CHECKPOINT} trainer: 'seconds' must be int or float, got str",
        f"{run / CHECKPOINT} trainer: missing key 'next_eval'",
    ]
    _rewrite(run / CHECKPOINT, lambda c: c["trainer"].update(next_eval=None, seconds=1.0))
    with pytest.raises(ValueError) as info:
        resume(run)
    assert str(info.value).splitlines() == [
        f"{run / CHECKPOINT}: 'config' must be dict, got str",
        f"{run / CHECKPOINT}: missing key 'optimizer'",
    ]
    err = _resume_err(run, capsys)
    assert "missing key 'optimizer'" in err


def test_malformed_encoder_spec_is_a_clear_error(run):
    _rewrite(run / CHECKPOINT, lambda c: c["agent"].__setitem__("encoder", {"kind": "mlp"}))
    with pytest.raises(ValueError, match="spaces or encoder spec are malformed"):
        resume(run)


def test_missing_env_state_is_a_clear_error(run):
    _rewrite(run / CHECKPOINT, lambda c: c.__setitem__("env", {"format": c["env"]["format"]}))
    with pytest.raises(ValueError, match="env"):
        resume(run)


def test_config_json_keys_are_checked(run, capsys):
    record = json.loads((run / "config.json").read_text())
    del record["splits"]["test"]
    del record["env_kwargs"]
    record["data"]["sha256"] = 5
    (run / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError) as info:
        read_record(run)
    f = run / "config.json"
    assert str(info.value).splitlines() == [
        f"{f}: 'splits' needs a 'test' mapping",
        f"{f}: missing key 'env_kwargs'",
    ]
    code = main(["signal", "--model", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "needs a 'test' mapping" in err and "Traceback" not in err


def test_mistyped_split_dates(run):
    record = json.loads((run / "config.json").read_text())
    record["splits"]["valid"]["rows"] = "many"
    (run / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"'splits' valid\.rows must be int, got 'many'"):
        read_record(run)


def test_untouched_run_resumes_and_checkpoint_reads(run):
    read_checkpoint(run / CHECKPOINT, fmt=RUN_CHECKPOINT)
    res = resume(run)
    assert res.summary["timesteps"] == 512 and res.summary["resumes"] == 1
