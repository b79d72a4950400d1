"""stockgym evaluate: the statistics against hand-computed values, the whole protocol on
a tiny synthetic config (JSON keys, files, resume), collapse diagnostics on hand-made
runs, and bad input refused before anything trains."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from run_configs import EVAL_TRAIN

from stockgym.cli import main
from stockgym.experiment import stats
from stockgym.experiment.evaluate import evaluate
from stockgym.experiment.evaluate_report import diagnostics

TRAIN = EVAL_TRAIN
EVAL = {"windows": 2, "window_days": 50, "seeds": [0, 1], "n_boot": 200}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))


# ------------------------------------------------------------------ statistics
def test_psr_by_hand():
    r = np.array([0.01, -0.005, 0.02, 0.0, 0.015, -0.01, 0.007])
    n, mu = len(r), r.mean()
    sd = math.sqrt(((r - mu) ** 2).sum() / (n - 1))
    m2, m3, m4 = (((r - mu) ** k).mean() for k in (2, 3, 4))
    g1, b2 = m3 / m2**1.5, m4 / m2**2
    g3 = g1 * math.sqrt(n * (n - 1)) / (n - 2)  # bias-corrected skewness (G1)
    g4 = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (b2 - 3) + 6) + 3  # G2 + 3
    sr = mu / sd
    z = sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    want = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert stats.psr(r) == pytest.approx(want, rel=1e-12)
    assert stats.psr(r, sr_benchmark=sr) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(stats.psr(np.zeros(5)))  # no variance: no Sharpe ratio


def test_expected_max_sharpe_by_hand():
    # N = 10, V = 1: (1 - 0.5772) * 1.28155 + 0.5772 * Phi^-1(1 - 1/(10e)) = 1.5746...
    assert stats.expected_max_sharpe(10, 1.0) == pytest.approx(1.5746, abs=2e-4)
    assert stats.expected_max_sharpe(1, 1.0) == 0.0
    r = np.random.default_rng(0).normal(0.001, 0.01, 300)
    assert stats.deflated_sharpe(r, 1, [0.1]) == pytest.approx(stats.psr(r))
    assert stats.deflated_sharpe(r, 20, [0.05, 0.1, -0.02]) < stats.psr(r)


def test_bootstrap_intervals_by_hand():
    # two days, block length ceil(2 ** (1/3)) = 2, circular: every replicate is [0, 1] or
    # [1, 0], so the mean is always 0.5
    assert stats.block_bootstrap_ci([np.array([0.0, 1.0])], np.mean) == (0.5, 0.5)
    assert stats.unit_bootstrap_ci(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)
    x = np.random.default_rng(1).normal(0, 1, 500)
    lo, hi = stats.block_bootstrap_ci([x[:250], x[250:]], np.mean, n_boot=500)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / math.sqrt(500), rel=0.3)
    assert stats.verdict((0.01, 0.2)) == "edge" and stats.verdict((-0.2, -0.01)) == "worse"
    assert stats.verdict((-0.1, 0.1)) == "no evidence"


def test_collapse_diagnostics_on_hand_made_runs():
    hold = {"share_long": 1.0, "corr_with_buy_and_hold": 0.999, "trades": 1, "turnover": 1.0,
            "action_entropy": 0.0}  # fmt: skip
    idle = {"share_long": 0.0, "corr_with_buy_and_hold": math.nan, "trades": 0,
            "turnover": 0.0, "action_entropy": 0.0}  # fmt: skip
    trader = {"share_long": 0.5, "corr_with_buy_and_hold": 0.4, "trades": 30, "turnover": 30.0,
              "action_entropy": 1.0}  # fmt: skip
    d = diagnostics([hold, idle, trader])
    assert d["collapsed_to_buy_and_hold"] == 1 and d["never_trades"] == 1
    assert d["share_long"] == pytest.approx(0.5) and d["corr_with_buy_and_hold"] == pytest.approx(
        (0.999 + 0.4) / 2
    )


# ------------------------------------------------------------------ the protocol
def test_evaluate_end_to_end(tmp_path):
    out = tmp_path / "ev"
    summary = evaluate({"evaluate": EVAL, "train": TRAIN}, out)
    assert set(summary) >= {"policies", "windows", "n_trials"} and summary["n_trials"] == 2
    assert set(summary["policies"]) == {"agent", "agent_no_forecasts", "buy_and_hold",
                                        "sma_cross", "forecast_sign", "random"}  # fmt: skip
    for s in summary["policies"].values():
        for key in ("excess_log_return", "sharpe"):
            assert set(s[key]) == {"mean", "ci95"} and len(s[key]["ci95"]) == 2
        assert {"psr", "deflated_sharpe", "win_rate_windows", "verdict"} <= set(s)
        assert s["verdict"] in ("edge", "worse", "no evidence")
    assert summary["policies"]["buy_and_hold"]["excess_log_return"]["mean"] == 0.0
    d = summary["policies"]["agent"]["diagnostics"]
    assert {"share_long", "turnover", "action_entropy", "corr_with_buy_and_hold",
            "collapsed_to_buy_and_hold", "never_trades"} <= set(d)  # fmt: skip
    w = summary["windows"]
    assert len(w) == 2 and w[0]["last"] < w[1]["first"]  # consecutive, not overlapping
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * (2 * 3 + 3)  # windows x (seeds x (2 agents + random) + 3)
    report = (out / "report.md").read_text()
    assert "95 % CI, 2 windows x 2 seeds x 1 symbols" in report
    assert (out / "excess_by_window.png").stat().st_size > 1000
    # the agent of window 1 trained only on rows before the window
    rec = json.loads((out / "runs" / "X" / "w1" / "agent-s0" / "run" / "config.json").read_text())
    assert rec["splits"]["valid"]["last"] < w[1]["first"] == rec["splits"]["test"]["first"]

    marker = out / "runs" / "X" / "w0" / "agent-s0" / "result.json"
    stamp = marker.stat().st_mtime_ns
    again = evaluate({"evaluate": EVAL, "train": TRAIN}, out, resume=True)
    assert marker.stat().st_mtime_ns == stamp  # finished runs are not rerun
    assert again["policies"]["agent"] == summary["policies"]["agent"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"env": {"forecasts": {"model": "prophet"}}}}, "forecasts.model must be"),
        ({"train": {"env": {"forecasts": {"horizon": 0}}}}, "forecasts.horizon must be >= 1"),
        ({"train": {"env": {"forecasts": {"min_train": 300}}}}, "forecasts.min_train"),
        ({"evaluate": {"windows": 9}}, "9 windows x 50 days need 450 rows"),
        ({"evaluate": {"baselines": ["momentum"]}}, "unknown baseline"),
    ],
)
def test_bad_input_fails_before_training(change, message, tmp_path, capsys):
    tree = {"evaluate": dict(EVAL), "train": json.loads(json.dumps(TRAIN))}
    for table, values in change.items():
        if table == "evaluate":
            tree["evaluate"].update(values)
        else:
            tree["train"]["env"]["forecasts"].update(values["env"]["forecasts"])
    cfg = tmp_path / "ev.toml"
    import tomli_w

    cfg.write_text(tomli_w.dumps(tree))
    code = main(["evaluate", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


def test_calendars_must_align(tmp_path):
    """Two markets whose trading days differ: one line naming both, before training."""
    from stockgym.data import load_prices

    frame = load_prices("X", source="synthetic", kind="edge", n_days=420)
    raw = frame[["open", "high", "low", "close", "volume"]].rename(columns=str.title)
    raw.to_csv(tmp_path / "us.csv", index_label="Date")
    raw.drop(raw.index[[300, 350, 390]]).to_csv(tmp_path / "kr.csv", index_label="Date")
    train = json.loads(json.dumps(TRAIN))
    train["data"] = {"symbols": [str(tmp_path / "us.csv")], "source": "csv"}
    train["env"].pop("forecasts")
    tree = {"evaluate": {**EVAL, "symbols": [str(tmp_path / "us.csv"), str(tmp_path / "kr.csv")],
                         "baselines": ["buy_and_hold"]}, "train": train}  # fmt: skip
    with pytest.raises(ValueError, match="trade on different calendars"):
        evaluate(tree, tmp_path / "out")
