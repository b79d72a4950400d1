"""metrics.json's tail, distribution and benchmark-relative metrics against independent
implementations on the same returns: empyrical-reloaded and quantstats, 1e-9 relative."""

from __future__ import annotations

import warnings

import empyrical
import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from stockgym.backtest import risk
from stockgym.backtest.runner import run_policy
from stockgym.data import load_prices

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(params=[0, 1, 2])
def series(request):
    rng = np.random.default_rng(request.param)
    n = 300
    bench = rng.standard_t(4, n) * 0.01 + 0.0004
    ret = 0.7 * bench + rng.normal(0.0002, 0.006, n)
    idx = pd.bdate_range("2020-01-01", periods=n)
    return pd.Series(ret, index=idx), pd.Series(bench, index=idx)


def test_against_empyrical(series):
    r, b = series
    ours = risk.risk_metrics(r.to_numpy(), b.to_numpy())
    alpha, beta = empyrical.alpha_beta(r, b)
    want = {
        "var_95": empyrical.value_at_risk(r, cutoff=0.05),
        "cvar_95": empyrical.conditional_value_at_risk(r, cutoff=0.05),
        "tail_ratio": empyrical.tail_ratio(r),
        "omega": empyrical.omega_ratio(r),
        "stability": empyrical.stability_of_timeseries(r),
        "alpha": alpha,
        "beta": beta,
    }
    for key, value in want.items():
        assert ours[key] == pytest.approx(value, rel=1e-9), key


def test_against_quantstats(series):
    r, b = series
    ours = risk.risk_metrics(r.to_numpy(), b.to_numpy())
    assert ours["psr"] == pytest.approx(qs.stats.probabilistic_sharpe_ratio(r), rel=1e-9)
    assert ours["information_ratio"] == pytest.approx(qs.stats.information_ratio(r, b), rel=1e-9)


def test_metrics_json_has_them():
    prices = load_prices("AAPL", source="sample").iloc[:400]
    m = run_policy("sma_cross", {"prices": prices, "window_size": 5}).metrics()
    for key in (*risk.RISK_KEYS, *risk.RELATIVE_KEYS):
        assert key in m and np.isfinite(m[key]), key
    assert set(risk.RISK_KEYS) <= set(m["benchmark"])
    assert m["benchmark"]["psr"] == pytest.approx(
        risk.psr(
            run_policy("buy_and_hold", {"prices": prices, "window_size": 5}).returns.to_numpy()
        )
    )
