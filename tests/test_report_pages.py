"""report.html of `stockgym compare` and `stockgym evaluate`: every section per policy,
titles naming the policy by its display name, the risk metrics in the metrics table,
images embedded (no external links), and "not recovered" for an open drawdown."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from run_configs import EVAL_TRAIN

from stockgym.backtest import html_report
from stockgym.backtest.risk import RELATIVE_KEYS, RISK_KEYS
from stockgym.cli import main
from stockgym.experiment.evaluate import EvaluateConfig, windows_of
from stockgym.experiment.evaluate_report import write_report
from stockgym.experiment.records import load_data

SECTIONS = ("Equity", "Drawdowns", "Monthly returns", "Rolling Sharpe ratio", "Trades")
RISK = (*RISK_KEYS, *RELATIVE_KEYS)
SAMPLE = ["--symbol", "AAPL", "--source", "sample", "--start", "2010-01-04", "--end", "2010-09-30"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))


@pytest.fixture
def titles(monkeypatch):
    """Every figure title the pages draw (the real figures are still embedded)."""
    seen: list[str] = []
    real_tag, real_fills = html_report.figure_tag, html_report.plot_fills

    def tag(fig):
        seen.append(fig.axes[0].get_title())
        return real_tag(fig)

    def fills(prices, trades, symbols, path, title, max_symbols=8):
        seen.append(title)
        return real_fills(prices, trades, symbols, path, title, max_symbols)

    monkeypatch.setattr(html_report, "figure_tag", tag)
    monkeypatch.setattr(html_report, "plot_fills", fills)
    return seen


def check_page(page: str, names: list[str], titles: list[str]) -> None:
    headings = [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", page)]
    for name in names:
        for section in SECTIONS:
            assert f"{name}: {section}" in headings, (name, section, headings)
        mine = [t for t in titles if t.startswith(name)]
        # equity, drawdown, heatmap, rolling Sharpe and trades figures each name the policy
        assert len(mine) >= 4, (name, titles)
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert 'src="http' not in page and 'href="http' not in page and "<script" not in page
    table = page[page.index("<h2>Metrics") :]
    for key in RISK:
        assert f"<th>{key}</th>" in table, key


def test_compare_page_has_every_section_per_run(tmp_path, capsys, titles):
    dirs = []
    for i, strategy in enumerate(("sma_cross", "buy_and_hold")):
        d = tmp_path / f"run{i}"
        argv = ["backtest", "--strategy", strategy, *SAMPLE, "--no-plots", "--out", d]
        assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
        dirs.append(d)
    names = [json.loads((d / "config.json").read_text())["strategy"]["description"] for d in dirs]
    titles.clear()
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, dirs), "--out", str(out)]) == 0, capsys.readouterr().err
    page = (out / "report.html").read_text()
    check_page(page, names, titles)
    # the trades of each run are drawn: the run that traded shows its fills
    assert any(t == f"{names[0]}: fills on the price" for t in titles)
    text = re.sub(r'src="[^"]*"', "", page)
    assert "run0" not in text and "run1" not in text  # named by strategy, not by dir


def test_open_drawdown_says_not_recovered():
    idx = pd.bdate_range("2020-01-01", periods=6)
    values = pd.Series([100.0, 110.0, 99.0, 111.0, 105.0, 104.0], index=idx)
    table = html_report.drawdown_table(values)
    assert table["recovery"].tolist() == [idx[3].date(), "not recovered"]  # deepest first
    assert table["days"].tolist() == [2, 2]
    body = html_report.drawdown_section(values, None, "p")
    assert "not recovered" in body and "None" not in body


TRAIN = EVAL_TRAIN


def test_evaluate_page_names_policies_and_has_every_section(tmp_path, titles):
    """The report of hand-made results (no training): the pages' inputs as evaluate
    leaves them, with a trades.csv in the last window's agent run."""
    config = EvaluateConfig(windows=2, window_days=50, seeds=[0], n_boot=100,
                            baselines=["buy_and_hold", "random"], train=TRAIN)  # fmt: skip
    tc = config.validate()
    prices = load_data(tc.data)
    windows = windows_of(prices, "X", config, 60)
    rng = np.random.default_rng(0)
    results = []
    for w in windows:
        bench = rng.normal(0.0005, 0.01, 50)
        for policy, seed in (("agent", 0), ("agent_no_forecasts", 0), ("buy_and_hold", None),
                             ("random", 0)):  # fmt: skip
            r = bench if policy == "buy_and_hold" else rng.normal(0.0, 0.01, 50)
            results.append({
                "symbol": "X", "window": w.k, "seed": seed, "policy": policy,
                "first": w.first, "last": w.last, "days": 50, "returns": r.tolist(),
                "bench_returns": bench.tolist(), "trades": 3, "turnover": 1.0,
                "share_long": 0.5, "action_entropy": 0.9, "corr_with_buy_and_hold": 0.1,
                "total_log_return": 0.0, "bench_log_return": 0.0, "terminated": False,
            })  # fmt: skip
    last = windows[-1]
    run = tmp_path / "runs" / "X" / f"w{last.k}" / "agent-s0"
    run.mkdir(parents=True)
    day = prices.loc[last.first :].index[3]
    close = float(prices.loc[day, "close"])
    pd.DataFrame({"date": [str(day.date())], "symbol": ["X"], "side": ["buy"], "filled": [5.0],
                  "price": [close]}).to_csv(run / "trades.csv", index=False)  # fmt: skip
    titles.clear()
    write_report(config, windows, results, tmp_path)
    page = (tmp_path / "report.html").read_text()
    names = ["PPO + MLP forecasts", "PPO without forecasts", "buy-and-hold", "random"]
    check_page(page, names, titles)
    assert ">agent<" not in page and "agent_no_forecasts" not in page
    assert "PPO + MLP forecasts (seed 0, X): fills on the price" in titles
    assert "trades of window 1 were not recorded" in page  # the runs without trades.csv
    assert "chains its test windows" in page
