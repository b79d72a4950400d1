"""Property tests: over random configurations, cash never goes negative and the
accounting identities hold at every step, in the single env and in the vector env.

Configurations: 1-3 assets, shorts on/off, borrow rate (up to 200 %/yr), max_gross,
minimum commission, whole or fractional shares, halted bars, discrete or continuous
actions, and actions that push toward leverage (long weights above 1 with a short held,
the case where a borrow charged after the buys drove cash below zero).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgym.data import load_prices
from stockgym.envs.trading import StockTradingEnv
from stockgym.envs.vector import VectorStockTradingEnv

SYMBOLS = ["AAA", "BBB", "CCC"]


@functools.cache
def _prices(n_assets: int, halt: bool) -> pd.DataFrame:
    names = SYMBOLS[:n_assets]
    prices = load_prices(
        names if n_assets > 1 else names[0], source="synthetic", n_days=90, seed=n_assets
    )
    if halt:
        rng = np.random.default_rng(n_assets)
        for s in names:
            h = rng.random(len(prices)) < 0.15
            h[:10] = False
            col = (lambda c, s=s: (s, c)) if n_assets > 1 else (lambda c: c)
            prices.loc[h, col("volume")] = 0.0
            prices.loc[h, col("tradable")] = False
    return prices


configs = st.fixed_dictionaries(
    {
        "n_assets": st.integers(1, 3),
        "halt": st.booleans(),
        "allow_short": st.booleans(),
        "borrow_rate": st.sampled_from([0.0, 0.05, 0.2, 2.0]),
        "max_gross": st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]),
        "min_commission": st.sampled_from([0.0, 5.0]),
        "fractional": st.booleans(),
        "action_type": st.sampled_from(["discrete", "continuous"]),
        "slippage_bps": st.sampled_from([0.0, 20.0]),
        "initial_cash": st.sampled_from([3_000.0, 1e6]),
        "seed": st.integers(0, 2**16),
    }
)


def _env_kw(cfg: dict) -> dict:
    kw = {k: cfg[k] for k in ("allow_short", "fractional", "action_type", "initial_cash")}
    kw.update(
        window_size=5,
        market="us",
        borrow_rate=cfg["borrow_rate"],
        max_gross=cfg["max_gross"],
        min_commission=cfg["min_commission"],
        slippage_bps=cfg["slippage_bps"],
        ruin_floor=0.0,
    )
    return kw


def _actions(rng: np.random.Generator, env: StockTradingEnv, n: int) -> np.ndarray:
    """Random actions for ``n`` envs; half of the time extreme ones (+-1 and 0.5)."""
    a = env.obs_layout.n_assets
    if env.action_type == "discrete":
        return rng.integers(0, len(env.positions), size=(n, a))
    lo = float(env.action_space.low[0])
    if rng.random() < 0.5:
        vals = np.array([lo, 0.5, 1.0] if lo < 0 else [0.0, 0.5, 1.0])
        return rng.choice(vals, size=(n, a)).astype(np.float32)
    return rng.uniform(lo, 1.0, size=(n, a)).astype(np.float32)


def _one(env: StockTradingEnv, row: np.ndarray):
    if env.action_type == "discrete" and env.obs_layout.n_assets == 1:
        return int(row[0])
    return row


def _check_step(v, v_prev, cash, pos, mark, pnl, cost, what) -> None:
    assert cash >= 0.0, f"{what}: cash {cash}"
    assert v == pytest.approx(cash + float(np.dot(pos, mark)), rel=1e-9, abs=1e-9 * v_prev)
    assert abs((v - v_prev) - (pnl - cost)) <= 1e-9 * max(abs(v_prev), 1.0), what
    assert cost >= 0.0, what


@settings(max_examples=120, deadline=None)
@given(cfg=configs)
def test_single_env_cash_never_negative(cfg):
    env = StockTradingEnv(_prices(cfg["n_assets"], cfg["halt"]), **_env_kw(cfg))
    mark = env.market.mark
    pos_of = {d: i for i, d in enumerate(env.market.dates)}
    rng = np.random.default_rng(cfg["seed"])
    _, info = env.reset(seed=cfg["seed"])
    v_prev = info["portfolio_value"]
    for k in range(70):
        _, _, term, trunc, info = env.step(_one(env, _actions(rng, env, 1)[0]))
        t = pos_of[info["date"]]
        v = info["portfolio_value"]
        _check_step(
            v, v_prev, info["cash"], info["position"], mark[t], info["pnl"], info["cost"], k
        )
        for o in info["trades"]:
            assert o["filled"] == 0 or o["status"] in ("filled", "scaled", "borrow_call")
        v_prev = v
        if term or trunc:
            _, info = env.reset()
            v_prev = info["portfolio_value"]


@settings(max_examples=40, deadline=None)
@given(cfg=configs)
def test_vector_env_cash_never_negative(cfg):
    n = 3
    venv = VectorStockTradingEnv(_prices(cfg["n_assets"], cfg["halt"]), n, **_env_kw(cfg))
    tpl = venv.template
    mark = tpl.market.mark
    rng = np.random.default_rng(cfg["seed"])
    _, info = venv.reset(seed=cfg["seed"])
    v_prev = info["portfolio_value"].numpy().copy()
    for k in range(50):
        acts = _actions(rng, tpl, n)
        if tpl.action_type == "discrete" and tpl.obs_layout.n_assets == 1:
            acts = acts[:, 0]
        _, _, term, trunc, info = venv.step(acts)
        done = (term | trunc).numpy()
        src = info.get("final_info", info)
        cur = {k2: info[k2].numpy().copy() for k2 in ("portfolio_value", "cash")}
        for i in range(n):
            row = src if done[i] else info
            v = float(row["portfolio_value"][i])
            t = int(row["t"][i])
            _check_step(
                v,
                v_prev[i],
                float(row["cash"][i]),
                row["position"][i].numpy(),
                mark[t],
                float(row["pnl"][i]),
                float(row["cost"][i]),
                f"step {k} env {i}",
            )
        assert (cur["cash"] >= 0.0).all()
        v_prev = cur["portfolio_value"]
