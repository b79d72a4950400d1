"""`stockgym quickstart` end to end through the real entry point (`stockgym.cli.main`),
in its reduced budget (`--fast`): every step's outputs in one directory, the test period
used only by the backtests, an honest verdict that matches the numbers, bad input as
one clear error, and a failed run leaving nothing behind."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import FinanceDataReader
import pandas as pd
import pytest
import torch

import stockgym.quickstart as qs
from stockgym.cli import main


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def offline(*args, **kwargs):
        raise AssertionError("quickstart must not download anything")

    monkeypatch.setattr(FinanceDataReader, "DataReader", offline)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One `stockgym quickstart --fast` run (about 20-30 s on a 2-core CPU)."""
    root = tmp_path_factory.mktemp("quickstart")
    out = root / "qs"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLCONFIGDIR", str(root / "mpl"))
        mp.setenv("STOCKGYM_CACHE_DIR", str(root / "cache"))
        mp.chdir(root)
        mp.setattr(FinanceDataReader, "DataReader", lambda *a, **k: 1 / 0)  # offline
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["quickstart", "--fast", "--out", str(out)])
    assert code == 0
    assert torch.get_num_threads() == threads  # restored
    return out, buf.getvalue()


def test_every_step_writes_into_the_out_dir(small_run):
    out, _ = small_run
    for rel in ("quickstart.json", "summary.json", "signal.json", "data/summary.json",
                "forecaster/checkpoint/model.pt", "forecaster/metrics.json",
                "forecaster/config.json", "walk_forward/forecasts.csv",
                "walk_forward/config.json", "agents/ppo/model/agent.pt",
                "agents/ppo/config.json", "agents/dqn/model/agent.pt",
                "backtests/ppo/metrics.json", "backtests/dqn/equity.csv",
                "backtests/forecast_sign/trades.csv", "compare/compare.md",
                "logs/agents.txt"):
        assert (out / rel).is_file(), rel
    for png in ("compare/equity.png", "backtests/ppo/equity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for algo in ("ppo", "dqn"):
        assert list((out / "agents" / algo / "tensorboard").glob("events.out.tfevents.*"))
    cfg = _read(out / "quickstart.json")
    assert cfg["config"]["budget"] == "small" and cfg["config"]["symbol"] == "AAPL"
    assert cfg["budget"]["ppo_steps"] == qs.BUDGETS["small"].ppo_steps
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob("*.partial"))


def test_the_pipeline_is_wired_leak_free(small_run):
    out, _ = small_run
    splits = _read(out / "data" / "summary.json")["splits"]
    test_first = pd.Timestamp(splits["test"]["first"])
    # the forecaster was selected on the agents' validation period, PPO starts from it
    fc = _read(out / "forecaster" / "config.json")
    assert fc["splits"] == splits
    ppo = _read(out / "agents" / "ppo" / "config.json")
    assert ppo["splits"] == splits
    assert ppo["forecaster"]["dir"] == str((out / "forecaster").resolve())
    assert ppo["agent"]["backbone"] == "lstm"
    assert ppo["forecaster"]["trained_through"] == splits["valid"]["last"]
    for algo in ("ppo", "dqn"):  # the agents trained on the training period only
        env = _read(out / "agents" / algo / "config.json")["env"]
        assert env["last_date"] == splits["train"]["last"], algo
        assert pd.Timestamp(env["last_date"]) < test_first
    dqn = _read(out / "agents" / "dqn" / "config.json")
    assert dqn["splits"] == splits and dqn["agent"]["backbone"] == "mlp" and dqn["config"]["total_timesteps"] == qs.BUDGETS["small"].dqn_steps
    # every backtest covers exactly the test period, against buy-and-hold, next-open fills
    for name in ("ppo", "dqn", "forecast_sign"):
        c = _read(out / "backtests" / name / "config.json")
        eq = pd.read_csv(out / "backtests" / name / "equity.csv", parse_dates=["date"])
        assert c["backtest"]["first"] == splits["test"]["first"], name
        assert c["backtest"]["last"] == splits["test"]["last"], name
        assert eq["date"].min() == test_first and eq["benchmark"].notna().all()
        assert c["env"]["fill"] == "open" and c["env"]["costs"]["commission"] > 0
    # walk-forward forecasts: every refit trained on targets dated <= the refit date
    refits = _read(out / "walk_forward" / "refits.json")
    assert refits and all(r["last_target_date"] <= r["date"] for r in refits)
    sig = _read(out / "signal.json")
    assert sig["date"] == _read(out / "data" / "summary.json")["last"]


def test_report_matches_the_files(small_run):
    out, stdout = small_run
    summary = _read(out / "summary.json")
    assert summary["budget"] == "small" and summary["seconds"]["total"] > 0
    for line in (out / "compare" / "compare.md").read_text().splitlines()[2:]:
        metric = line.split("|")[1].strip()
        assert metric in stdout
    for header in ("PPO", "DQN", "walk-forward LSTM > 0", "benchmark AAPL"):
        assert header in stdout
    for name in ("ppo", "dqn", "forecast_sign"):
        m = _read(out / "backtests" / name / "metrics.json")
        r, b = m["total_return"], m["benchmark"]["total_return"]
        line = summary["verdicts"][name]
        assert line in stdout
        assert f"{r * 100:+.2f}%" in line and f"{b * 100:+.2f}%" in line
        beat = r > b and abs(r - b) >= qs.TIE
        assert (" beat buy-and-hold" in line and "did not" not in line) == beat, line
        assert summary["backtests"][name]["beat_buy_and_hold"] == beat
    assert f"tensorboard --logdir {out}" in stdout
    assert str(out / "forecaster" / "checkpoint") in stdout
    assert "filled at the next open" in stdout


def test_verdict_wording():
    period = {"first": "2020-01-02", "last": "2020-12-31"}
    won = qs.verdict("PPO", {"total_return": 0.30, "sharpe": 1.2,
                             "benchmark": {"total_return": 0.10, "sharpe": 0.5}}, period)
    assert won.startswith("PPO beat buy-and-hold") and "by 20.00 percentage points" in won
    lost = qs.verdict("DQN", {"total_return": -0.05, "sharpe": -0.1,
                              "benchmark": {"total_return": 0.10, "sharpe": 0.5}}, period)
    assert lost.startswith("DQN did not beat buy-and-hold") and "-5.00% vs +10.00%" in lost
    tie = qs.verdict("PPO", {"total_return": 0.1, "sharpe": 0.5,
                             "benchmark": {"total_return": 0.1, "sharpe": 0.5}}, period)
    assert "did not beat" in tie and "did the same" in tie


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ppo-steps", "0"], "ppo_steps must be an integer >= 1"),
        (["--dqn-steps", "-1"], "dqn_steps must be an integer >= 0"),
        (["--threads", "0"], "threads must be an integer >= 1"),
        (["--device", "tpu9"], "device 'tpu9'"),
    ],
)
def test_bad_numbers_are_one_clear_line(argv, message, tmp_path, capsys):
    assert main(["quickstart", "--fast", "--out", str(tmp_path / "q"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: quickstart: ") and message in err
    assert not (tmp_path / "q").exists()


def test_non_empty_out_dir_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["quickstart", "--fast", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and str(out) in err and "--out" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_symbol_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quickstart", "--symbol", "TSLA"])
    assert exc.value.code == 2
    assert "TSLA" in capsys.readouterr().err


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("forecaster exploded")

    monkeypatch.setattr(qs, "_step_forecaster", broken)
    out = tmp_path / "runs" / "q"
    with pytest.raises(RuntimeError, match="exploded"):
        qs.run_quickstart(out=str(out), budget="small", echo=lambda line: None)
    assert not out.exists()
