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
import pytest
import torch

import stockgym.quickstart as qs
from stockgym.cli import main

#: The names the quickstart prints for its policies (evaluate_report.display_name).
LABELS = {
    "agent": "PPO + LSTM forecasts",
    "agent_no_forecasts": "PPO without forecasts",
    "buy_and_hold": "buy-and-hold",
    "sma_cross": "SMA 20/50 cross",
    "forecast_sign": "forecast > 0",
    "random": "random",
}


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
    """One `stockgym quickstart --fast` run (about 30 s on a 2-core CPU)."""
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
    for rel in (
        "quickstart.json",
        "summary.json",
        "signal.json",
        "data/summary.json",
        "forecaster/checkpoint/model.pt",
        "forecaster/metrics.json",
        "forecaster/config.json",
        "evaluate/summary.json",
        "evaluate/results.csv",
        "evaluate/report.md",
        "evaluate/evaluate.toml",
        "logs/evaluate.txt",
        "evaluate/runs/AAPL/w0/agent-s0/run/model/agent.pt",
        "evaluate/runs/AAPL/w2/agent_no_forecasts-s1/result.json",
        "evaluate/runs/AAPL/w1/sma_cross/result.json",
    ):
        assert (out / rel).is_file(), rel
    for png in ("evaluate/excess_by_window.png", "evaluate/equity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = _read(out / "quickstart.json")
    assert cfg["config"]["budget"] == "small" and cfg["config"]["symbol"] == "AAPL"
    assert cfg["budget"]["ppo_steps"] == qs.BUDGETS["small"].ppo_steps
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob("*.partial"))


def test_the_pipeline_is_wired_leak_free(small_run):
    out, _ = small_run
    data = _read(out / "data" / "summary.json")
    summary = _read(out / "evaluate" / "summary.json")
    b = qs.BUDGETS["small"]
    windows = summary["windows"]
    assert len(windows) == b.windows and windows[-1]["last"] == data["last"]
    assert set(summary["policies"]) == set(LABELS)
    for w in windows:  # every agent trained only on the days before its window
        for policy in ("agent", "agent_no_forecasts"):
            for seed in (0, 1):
                run = out / "evaluate" / "runs" / "AAPL" / f"w{w['k']}" / f"{policy}-s{seed}"
                rec = _read(run / "run" / "config.json")
                assert rec["splits"]["valid"]["last"] == w["start"] < w["first"]
                assert rec["env"]["last_date"] < w["first"]
                assert (rec["forecasts"] is not None) == (policy == "agent")
                res = _read(run / "result.json")
                assert (res["first"], res["last"]) == (w["first"], w["last"])
    sig = _read(out / "signal.json")
    assert sig["date"] == data["last"] and sig["trained_through"] < windows[-1]["first"]


def test_report_matches_the_files(small_run):
    out, stdout = small_run
    summary = _read(out / "summary.json")
    assert summary["budget"] == "small" and summary["seconds"]["total"] > 0
    ev = _read(out / "evaluate" / "summary.json")
    for key, label in LABELS.items():
        s = ev["policies"][key]
        lo, hi = s["excess_log_return"]["ci95"]
        assert f"| {label} | {s['excess_log_return']['mean']:+.2%} [{lo:+.2%}, {hi:+.2%}]" in stdout
        line = summary["verdicts"][key]
        assert line in stdout and f"{lo:+.1%}..{hi:+.1%} a year, 95 % CI" in line
        want = {"edge": "an edge over", "worse": "worse than", "no evidence": "no evidence"}
        assert want[s["verdict"]] in line
    assert "fills at the next open" in stdout and "evaluate.toml" in stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ppo-steps", "0"], "ppo_steps must be an integer >= 1"),
        (["--workers", "0"], "workers must be an integer >= 1"),
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
