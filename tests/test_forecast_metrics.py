"""The field's forecast metrics, each checked against a hand computation or a second
implementation (scipy, sklearn), and `stockgym forecast compare` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

# the shared autouse fixtures: one torch thread; MPLCONFIGDIR, cache dir and cwd in tmp
from test_forecasters import isolated  # noqa: F401
from test_forecasters_cli import SMALL, SYNTH

from stockgym.cli import main
from stockgym.forecasters import metrics as M


def test_mase_and_rmsse_by_hand():
    # training targets 0.01, -0.02, 0.03 with the zero-return naive: Q = 0.02, Q2 = 14e-4/3
    scale = M.naive_scale([0.01, -0.02, 0.03], [0.0, 0.0, 0.0])
    assert scale["mae"] == pytest.approx(0.02) and scale["samples"] == 3
    assert scale["mse"] == pytest.approx((1e-4 + 4e-4 + 9e-4) / 3)
    y, f = [0.01, -0.01], [0.0, 0.01]  # errors 0.01 and 0.02
    assert M.mase(y, f, scale["mae"]) == pytest.approx(0.015 / 0.02)
    assert M.rmsse(y, f, scale["mse"]) == pytest.approx(math.sqrt(2.5e-4 / (14e-4 / 3)))
    # prices with the last-close naive: in-sample errors |c[t+1] - c[t]| = 2, 1, 3
    close = np.array([10.0, 12.0, 11.0, 14.0])
    price_scale = M.naive_scale(close[1:], close[:-1])
    assert price_scale["mae"] == pytest.approx(2.0)
    assert M.mase([15.0, 13.0], [14.0, 14.0], price_scale["mae"]) == pytest.approx(0.5)
    assert math.isnan(M.mase(y, f, 0.0))  # a constant training series: undefined


def test_ic_and_rank_ic_against_scipy():
    rng = np.random.default_rng(0)
    f = rng.normal(size=40)
    y = 0.3 * f + rng.normal(size=40)
    y[::7] = y[1]  # ties (never a whole date): Spearman's average ranks
    ics = M.information_coefficients(f, y)
    assert ics["ic"] == pytest.approx(stats.pearsonr(f, y)[0], abs=1e-12)
    assert ics["rank_ic"] == pytest.approx(stats.spearmanr(f, y)[0], abs=1e-12)
    assert math.isnan(ics["icir"])  # no windows: no IR
    # one symbol: ICIR over windows = mean / sample std of the per-window ICs
    w = np.repeat([0, 1, 2, 3], 10)
    per = [stats.pearsonr(f[w == k], y[w == k])[0] for k in range(4)]
    ics = M.information_coefficients(f, y, windows=w)
    assert ics["icir"] == pytest.approx(np.mean(per) / np.std(per, ddof=1))
    assert ics["ic"] == pytest.approx(stats.pearsonr(f, y)[0])  # still over all of time
    # several symbols: per date across symbols, then mean over dates
    dates = np.repeat(np.arange(10), 4)  # 10 dates x 4 symbols
    per = [stats.spearmanr(f[dates == d], y[dates == d])[0] for d in range(10)]
    per_ic = [stats.pearsonr(f[dates == d], y[dates == d])[0] for d in range(10)]
    ics = M.information_coefficients(f, y, dates=dates)
    assert ics["rank_ic"] == pytest.approx(np.mean(per))
    assert ics["ic"] == pytest.approx(np.mean(per_ic))
    assert ics["icir"] == pytest.approx(np.mean(per_ic) / np.std(per_ic, ddof=1))
    assert ics["ic_periods"] == 10
    assert math.isnan(M.information_coefficients(np.zeros(5), y[:5])["ic"])  # constant


def _dm_by_hand(e1, e2, h):
    d = [a * a - b * b for a, b in zip(e1, e2, strict=True)]
    n = len(d)
    dbar = sum(d) / n

    def gamma(k):
        return sum((d[t] - dbar) * (d[t - k] - dbar) for t in range(k, n)) / n

    var = (gamma(0) + 2 * sum(gamma(k) for k in range(1, h))) / n
    dm = dbar / math.sqrt(var)
    dm_star = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return dm_star, 2 * stats.t.sf(abs(dm_star), n - 1)


def test_diebold_mariano_by_hand():
    e_model = [0.1, -0.2, 0.05, 0.3, -0.1]
    e_naive = [0.2, -0.1, 0.25, 0.2, -0.3]
    # d = [-0.03, 0.03, -0.06, 0.05, -0.08], mean -0.018; gamma_0 = 0.002536 (divisor 5)
    stat, p = M.diebold_mariano(e_model, e_naive, horizon=1)
    dm = -0.018 / math.sqrt(0.002536 / 5)
    assert stat == pytest.approx(dm * math.sqrt((5 + 1 - 2) / 5), rel=1e-9)
    assert p == pytest.approx(2 * stats.t.sf(abs(stat), 4))
    assert (stat, p) == pytest.approx(_dm_by_hand(e_model, e_naive, 1))
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), 1.2 * rng.normal(size=30)
    assert M.diebold_mariano(a, b, horizon=3) == pytest.approx(_dm_by_hand(a, b, 3))
    assert M.diebold_mariano(b, a)[0] == pytest.approx(-M.diebold_mariano(a, b)[0])
    assert all(math.isnan(x) for x in M.diebold_mariano(a, a))  # identical losses


def test_auc_and_accuracy_against_sklearn():
    rng = np.random.default_rng(2)
    y = (rng.random(50) > 0.45).astype(float)
    p = np.round(0.5 + 0.2 * (y - 0.5) + 0.3 * rng.normal(size=50), 1)  # rounded: ties
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert M.accuracy(y, p) == pytest.approx(np.mean((p > 0.5) == (y == 1)))
    assert math.isnan(M.auc(np.ones(4), [0.1, 0.2, 0.3, 0.4]))  # one class only


def _entry(label, symbol, seed, mase, f, y, dates):
    changes = pd.DataFrame({"forecast": f, "actual": y}, index=pd.DatetimeIndex(dates))
    return M.Entry(label, symbol, seed, {"mase": mase, "ic": 0.0}, changes)


def test_leaderboard_mean_std_and_cross_section():
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2020-01-01", periods=20)
    data = {s: (rng.normal(size=20), rng.normal(size=20)) for s in "ABC"}
    entries = [_entry("m", s, 0, 0.9 + 0.01 * i, *data[s], dates) for i, s in enumerate("ABC")]
    entries.append(_entry("m", "A", 1, 0.95, *data["A"], dates))
    rows = {(r["model"], r["symbol"]): r for r in M.leaderboard(entries)}
    a = rows[("m", "A")]
    assert a["runs"] == 2 and a["seeds"] == [0, 1]
    assert a["mase"]["mean"] == pytest.approx(0.925)
    assert a["mase"]["std"] == pytest.approx(np.std([0.9, 0.95], ddof=1))
    assert rows[("m", "B")]["mase"]["std"] is None  # one run: no spread
    every = rows[("m", "ALL")]  # seed 0 spans A, B, C; seed 1 only A: one replicate
    assert every["runs"] == 1 and every["mase"]["mean"] == pytest.approx(0.91)
    per_date = [
        stats.pearsonr([data[s][0][t] for s in "ABC"], [data[s][1][t] for s in "ABC"])[0]
        for t in range(20)
    ]
    assert every["ic"]["mean"] == pytest.approx(np.mean(per_date))
    assert every["icir"]["mean"] == pytest.approx(np.mean(per_date) / np.std(per_date, ddof=1))


def test_compare_end_to_end(tmp_path, capsys):
    runs = []
    for seed in ("0", "1"):
        run = tmp_path / f"mlp{seed}"
        args = [*SYNTH, *SMALL, "--seed", seed, "--no-plots", "--no-tensorboard"]
        assert main(["forecast", "train", *args, "--run-dir", str(run)]) == 0
        runs.append(run)
    capsys.readouterr()
    out_dir = tmp_path / "cmp"
    assert main(["forecast", "compare", *map(str, runs), "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    board = json.loads((out_dir / "leaderboard.json").read_text())
    row = next(r for r in board["rows"] if r["model"] == "mlp")
    runs_m = [json.loads((r / "metrics.json").read_text())["model"] for r in runs]
    for key in ("mase", "rmsse", "rmse", "ic", "rank_ic", "directional_accuracy"):
        vals = [m[key] for m in runs_m]
        assert row[key]["mean"] == pytest.approx(np.mean(vals)), key
        assert row[key]["std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-15), key
    assert row["runs"] == 2 and row["seeds"] == [0, 1]
    # baselines are the same in both runs: kept once
    assert [r["runs"] for r in board["rows"] if r["model"] == "naive"] == [1]
    assert "mlp" in out and "±" in out and "mase" in out and str(out_dir) in out
    assert (out_dir / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    # metrics.json's MASE is the model's MAE over the naive's in-sample MAE
    m = json.loads((runs[0] / "metrics.json").read_text())
    assert m["model"]["mase"] == pytest.approx(m["model"]["mae"] / m["scale"]["mae"])
    assert len(m["windows"]["per_window"]) == m["windows"]["count"] > 1

    assert main(["forecast", "compare", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
