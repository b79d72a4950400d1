"""`stockgym backtest` and `stockgym compare` end to end through stockgym.cli.main:
every output file and key, re-runs from config.json, seeds grouped with mean ± std,
bad input (exit 2, no traceback, nothing left behind)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stockgym.backtest import METRIC_KEYS
from stockgym.backtest.risk import RELATIVE_KEYS, RISK_KEYS
from stockgym.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
SAMPLE = ["--symbol", "AAPL", "--source", "sample", "--start", "2010-01-04", "--end", "2010-12-31"]
REQUIRED = {
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "turnover",
    "trades",
    "win_rate",
    "exposure",
    "costs",
}


@pytest.fixture(autouse=True)
def _tmp_mpl(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("mpl")))


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------ backtest
def test_backtest_writes_every_output(tmp_path, capsys):
    out = tmp_path / "sma"
    code, stdout, err = run(
        [
            "backtest",
            "--strategy",
            "sma_cross",
            "--fast",
            10,
            "--slow",
            30,
            *SAMPLE,
            "--market",
            "us",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "metrics.json",
            "equity.csv",
            "trades.csv",
            "config.json",
            "equity.png",
            "drawdown.png",
            "trades.png",
            "report.html",
        ]
    )
    for png in ("equity.png", "drawdown.png", "trades.png"):
        data = (out / png).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000

    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED <= set(metrics)
    assert set(metrics) == set(METRIC_KEYS) | set(RISK_KEYS) | set(RELATIVE_KEYS) | {
        "benchmark",
        "stopped_by_ruin",
        "unfilled_orders",
        "tax_by_year",
    }
    assert metrics["stopped_by_ruin"] is False
    assert set(metrics["benchmark"]) == set(METRIC_KEYS) | set(RISK_KEYS)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and 'src="http' not in html
    assert "Monthly returns" in html and "Rolling Sharpe" in html and "peak" in html
    assert metrics["benchmark"]["trades"] == 1  # buy-and-hold buys once

    equity = pd.read_csv(out / "equity.csv", parse_dates=["date"])
    assert list(equity.columns) == [
        "date",
        "value",
        "benchmark",
        "position",
        "cash",
        "exposure",
        "cost",
        "drawdown",
    ]
    assert equity["date"].iloc[0] == pd.Timestamp("2010-01-04")
    assert equity["date"].iloc[-1] == pd.Timestamp("2010-12-31")
    assert equity["value"].iloc[-1] == pytest.approx(metrics["final_value"], rel=1e-12)
    assert equity["value"].iloc[-1] / equity["value"].iloc[0] - 1 == pytest.approx(
        metrics["total_return"], rel=1e-9
    )
    assert equity["benchmark"].iloc[-1] == pytest.approx(metrics["benchmark"]["final_value"])

    trades = pd.read_csv(out / "trades.csv")
    assert list(trades.columns) == [
        "date",
        "symbol",
        "side",
        "requested",
        "filled",
        "price",
        "value",
        "commission",
        "tax",
        "slippage",
        "status",
        "reason",
        "realized_pnl",
    ]
    assert (trades["filled"] != 0).sum() == metrics["trades"]
    assert trades["realized_pnl"].notna().sum() == metrics["closed_trades"]
    assert (trades["realized_pnl"] > 0).sum() / metrics["closed_trades"] == pytest.approx(
        metrics["win_rate"]
    )

    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == {
        "name": "sma_cross",
        "params": {"fast": 10, "slow": 30},
        "description": "sma_cross (fast=10, slow=30)",
    }
    assert config["env"]["costs"] == {
        "commission": 0.0005,
        "sell_tax": 0.0,
        "slippage_bps": 5.0,
        "min_commission": 0.0,
        "borrow_rate": 0.0,
    }
    assert config["backtest"]["first"] == "2010-01-04"
    assert config["backtest"]["last"] == "2010-12-31"
    assert config["market"] == "us" and config["data"]["source"] == "sample"
    assert config["benchmark"]["symbols"] == ["AAPL"]
    # the terminal report names the costs and the output dir
    assert "commission 0.0500%" in stdout and "slippage 5 bps" in stdout
    assert "sharpe" in stdout and str(out) in stdout


def test_backtest_is_deterministic_and_config_reruns_it(tmp_path, capsys):
    first = tmp_path / "a"
    args = [
        "backtest",
        "--strategy",
        "random",
        "--seed",
        5,
        "--symbol",
        "XX",
        "YY",
        "--source",
        "synthetic",
        "--market",
        "krx",
        "--sell-tax",
        0.001,
        "--no-plots",
    ]
    assert run([*args, "--out", first], capsys)[0] == 0
    config = json.loads((first / "config.json").read_text())
    argv = shlex.split(config["command"])
    assert argv[:2] == ["stockgym", "backtest"]
    again = tmp_path / "b"
    argv[argv.index("--out") + 1] = str(again)
    assert run(argv[1:], capsys)[0] == 0
    assert (first / "metrics.json").read_text() == (again / "metrics.json").read_text()
    assert (first / "equity.csv").read_text() == (again / "equity.csv").read_text()
    assert (first / "trades.csv").read_text() == (again / "trades.csv").read_text()
    assert config["env"]["costs"]["sell_tax"] == 0.001  # the override beat the krx preset
    assert config["env"]["costs"]["commission"] == 0.00015
    assert config["strategy"]["params"] == {"seed": 5, "p_long": 0.5}
    assert not (first / "equity.png").exists()


def test_backtest_period_test_and_benchmark_symbol(tmp_path, capsys):
    out = tmp_path / "bh"
    code, stdout, err = run(
        [
            "backtest",
            "--strategy",
            "buy_and_hold",
            "--symbol",
            "AAPL",
            "--source",
            "sample",
            "--start",
            "2008-01-01",
            "--end",
            "2011-12-31",
            "--period",
            "test",
            "--benchmark",
            "MSFT",
            "--market",
            "none",
            "--no-plots",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["backtest"]["first"] == config["splits"]["test"]["first"]
    assert config["backtest"]["last"] == config["splits"]["test"]["last"] == "2011-12-30"
    assert config["benchmark"]["symbols"] == ["MSFT"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["costs"] == 0.0  # market none
    assert metrics["total_return"] != metrics["benchmark"]["total_return"]
    assert "buy-and-hold MSFT" in stdout


def test_backtest_forecast_sign_from_a_walk_forward_run_dir(tmp_path, capsys):
    dates = pd.bdate_range("2009-01-01", "2010-12-31", name="date")
    fc = pd.DataFrame(
        {"forecast": np.where(dates.month % 2 == 0, 0.01, -0.01), "actual": 1.0}, index=dates
    )  # outcomes in the file are never read
    (tmp_path / "wf").mkdir()
    fc.to_csv(tmp_path / "wf" / "forecasts.csv", date_format="%Y-%m-%d")
    out = tmp_path / "fc"
    code, _, err = run(
        [
            "backtest",
            "--strategy",
            "forecast_sign",
            *SAMPLE,
            "--forecast",
            tmp_path / "wf",
            "--no-plots",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    equity = pd.read_csv(out / "equity.csv", parse_dates=["date"], index_col="date")
    long = (equity["position"] > 0).to_numpy()[1:]
    decided = equity.index[:-1]  # the position after a step follows the forecast at its decision
    np.testing.assert_array_equal(long, (decided.month % 2 == 0))
    config = json.loads((out / "config.json").read_text())
    assert "forecast" in config["env"]["features"]
    assert config["forecast"]["file"].endswith("forecasts.csv")


def test_backtest_note_when_start_is_before_the_data(tmp_path, capsys):
    out = tmp_path / "early"
    code, stdout, _ = run(
        [
            "backtest",
            "--strategy",
            "buy_and_hold",
            "--symbol",
            "AAPL",
            "--source",
            "sample",
            "--start",
            "1990-01-01",
            "--end",
            "2000-12-31",
            "--no-plots",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert "note: the backtest starts on" in stdout
    assert config["backtest"]["note"].startswith("note:")
    assert config["backtest"]["first"] > "2000-01-03"


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--strategy", "sma_crss", *SAMPLE],
            "--strategy: unknown strategy 'sma_crss' (did you mean 'sma_cross'?)",
        ),
        (
            [
                "--strategy",
                "buy_and_hold",
                "--symbol",
                "AAPL",
                "--source",
                "sample",
                "--start",
                "2010-13-45",
            ],
            "--start: '2010-13-45' is not a date",
        ),
        (
            ["--strategy", "buy_and_hold", *SAMPLE, "--fast", "5"],
            "--fast only applies to --strategy sma_cross",
        ),
        (["--strategy", "sma_cross", *SAMPLE, "--fast", "50", "--slow", "20"], "1 <= fast < slow"),
        (
            ["--strategy", "buy_and_hold", *SAMPLE, "--commission", "-1"],
            "--commission must be a number >= 0",
        ),
        (["--strategy", "forecast_sign", *SAMPLE], "needs --forecast FILE"),
        (
            ["--strategy", "forecast_sign", *SAMPLE, "--forecast", "nope.csv"],
            "--forecast: file not found: nope.csv",
        ),
        (
            ["--strategy", "buy_and_hold", "--symbol", "NOPE", "--source", "sample"],
            "unknown sample symbol 'NOPE'",
        ),
    ],
    ids=[
        "strategy",
        "date",
        "flag-mismatch",
        "sma-windows",
        "commission",
        "no-forecast",
        "forecast-file",
        "symbol",
    ],
)
def test_backtest_bad_input_exits_2_and_leaves_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code, stdout, err = run(["backtest", *argv, "--out", out], capsys)
    assert code == 2
    assert message in err and err.startswith("error: ")
    assert "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_backtest_refuses_existing_out_dir_unless_force(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["backtest", "--strategy", "buy_and_hold", *SAMPLE, "--no-plots", "--out", out]
    code, _, err = run(args, capsys)
    assert code == 2
    assert f"--out {out} already exists and is not empty" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert run([*args, "--force"], capsys)[0] == 0
    assert not (out / "keep.txt").exists() and (out / "metrics.json").is_file()
    assert leftovers(tmp_path) == []


def test_no_partial_dir_when_writing_fails(tmp_path, capsys, monkeypatch):
    from stockgym.backtest import report

    def broken(*args, **kwargs):
        raise ValueError("disk full (simulated)")

    monkeypatch.setattr(report, "plot_trades", broken)
    out = tmp_path / "deep" / "er" / "run"
    code, _, err = run(["backtest", "--strategy", "buy_and_hold", *SAMPLE, "--out", out], capsys)
    assert code == 2 and "disk full" in err
    assert not (tmp_path / "deep").exists()
    # with --force an old dir survives a failed replacement untouched
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    code, _, _ = run(
        ["backtest", "--strategy", "buy_and_hold", *SAMPLE, "--force", "--out", old], capsys
    )
    assert code == 2
    assert [p.name for p in old.iterdir()] == ["metrics.json"]
    assert leftovers(tmp_path) == []


def test_help_has_examples(capsys):
    for cmd in ("backtest", "compare"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"stockgym {cmd} " in text


# ------------------------------------------------------------ compare
def _random_runs(tmp_path, capsys, seeds):
    dirs = []
    for s in seeds:
        d = tmp_path / f"rnd{s}"
        argv = [
            "backtest",
            "--strategy",
            "random",
            "--seed",
            s,
            "--symbol",
            "AAPL",
            "--source",
            "sample",
            "--start",
            "2010-01-04",
            "--end",
            "2010-06-30",
            "--no-plots",
            "--out",
            d,
        ]
        assert run(argv, capsys)[0] == 0
        dirs.append(d)
    return dirs


def test_compare_groups_seeds_with_mean_and_std(tmp_path, capsys):
    dirs = _random_runs(tmp_path, capsys, [1, 2, 3])
    bh = tmp_path / "bh"
    assert (
        run(
            [
                "backtest",
                "--strategy",
                "buy_and_hold",
                "--symbol",
                "AAPL",
                "--source",
                "sample",
                "--start",
                "2010-01-04",
                "--end",
                "2010-06-30",
                "--no-plots",
                "--out",
                bh,
            ],
            capsys,
        )[0]
        == 0
    )
    out = tmp_path / "cmp"
    code, stdout, err = run(["compare", *dirs, bh, "--out", out], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "compare.csv",
        "compare.md",
        "equity.png",
        "report.html",
    ]
    assert (out / "equity.png").read_bytes()[:8] == PNG

    table = pd.read_csv(out / "compare.csv")
    assert list(table.columns[:7]) == ["label", "kind", "strategy", "symbols", "seed", "n", "dir"]
    assert set(METRIC_KEYS) <= set(table.columns)
    assert table["kind"].tolist() == ["run"] * 4 + ["benchmark", "mean", "std"]
    runs = table[table["kind"] == "run"].iloc[:3]
    mean = table[table["kind"] == "mean"].iloc[0]
    std = table[table["kind"] == "std"].iloc[0]
    assert mean["n"] == 3 and mean["label"] == "random (p_long=0.5) [3 seeds]"
    for key in ("total_return", "sharpe", "trades"):
        assert mean[key] == pytest.approx(runs[key].mean())
        assert std[key] == pytest.approx(runs[key].std(ddof=1))
    # buy-and-hold of the same data is the benchmark of every run: listed once
    bench = table[table["kind"] == "benchmark"].iloc[0]
    assert bench["total_return"] == pytest.approx(table.iloc[3]["total_return"])

    md = (out / "compare.md").read_text()
    assert md.startswith("| metric | rnd1 | rnd2 | rnd3 | bh | benchmark AAPL |")
    assert "±" in md and md.count("\n") == len(METRIC_KEYS) + 2
    assert "random (p_long=0.5) [3 seeds] mean ± std" in stdout
    for key in METRIC_KEYS:
        assert f"| {key} |" in md and key in stdout


def test_compare_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(["compare", tmp_path / "empty"], capsys)
    assert code == 2 and "metrics.json is missing" in err and "Traceback" not in err
    code, _, err = run(["compare", tmp_path / "missing"], capsys)
    assert code == 2 and "is not a directory" in err
    dirs = _random_runs(tmp_path, capsys, [1])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    code, _, err = run(["compare", *dirs, "--out", taken], capsys)
    assert code == 2 and "already exists and is not empty" in err
    code, stdout, err = run(["compare", *dirs], capsys)
    assert code == 0 and "total_return" in stdout and "--out DIR" in err
