"""Helpers of the vector-env tests: synthetic markets (plain and KRX-like) and
:func:`run_equivalence`, which steps N single envs and one vector env with the same seeds
and actions and checks every number at every step."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stockgym.data import load_prices
from stockgym.envs import StockTradingEnv, VectorStockTradingEnv

SYMBOLS = ["AAA", "BBB", "CCC"]
N = 4


def synth(n_assets: int = 1, n_days: int = 260, seed: int = 0, halt: float = 0.0) -> pd.DataFrame:
    """Synthetic prices; with ``halt`` > 0, that fraction of bars (after a clean warm-up)
    of each asset is halted: volume 0 and ``tradable`` False (kept consistent)."""
    names = SYMBOLS[:n_assets]
    prices = load_prices(
        names if n_assets > 1 else names[0], source="synthetic", n_days=n_days, seed=seed
    )
    if halt:
        rng = np.random.default_rng(seed + 1000)
        for s in names:
            h = rng.random(len(prices)) < halt
            h[:40] = False
            col = (lambda c, s=s: (s, c)) if n_assets > 1 else (lambda c: c)
            prices.loc[h, col("volume")] = 0.0
            prices.loc[h, col("tradable")] = False
    return prices


def krx_synth(n_assets: int = 3, seed: int = 3, n_days: int = 420) -> pd.DataFrame:
    """KRX-like prices across rule changes (2022-07 to 2024-02: the tax years 2022-2024
    and the 2023-01-25 tick tables), each asset at another price level (tick bands from
    5 to 1,000 KRW), thin volumes (volume caps bind), and about 4 % of bars locked flat at
    +-30 % of the previous close (limit-up and limit-down days)."""
    names = SYMBOLS[:n_assets]
    prices = load_prices(
        names, source="synthetic", n_days=n_days, seed=seed, synthetic_start="2022-07-01"
    )
    rng = np.random.default_rng(seed + 2000)
    for i, s in enumerate(names):
        block = prices[s].copy()
        block[["open", "high", "low", "close"]] *= (30.0, 700.0, 5200.0)[i % 3]
        block["volume"] = rng.uniform(500.0, 20_000.0, len(block)).round()
        for t in np.flatnonzero(rng.random(len(block)) < 0.04):
            if t < 40:
                continue
            move = 1.3 if rng.random() < 0.5 else 0.7
            block.iloc[t, :4] = float(block["close"].iloc[t - 1]) * move
        for c in block.columns:
            prices[(s, c)] = block[c].to_numpy()
    return prices


KRX_RULES = dict(
    market="krx",
    max_participation=0.01,
    impact="sqrt",
    board={"AAA": "kospi", "BBB": "kosdaq", "CCC": "kospi"},
)


def draw_actions(rng: np.random.Generator, tpl: StockTradingEnv, n: int, prev=None) -> np.ndarray:
    """One batch of random actions for ``n`` envs in the template's action space. About
    a fifth of the rows repeat the previous action (so 'no order' paths run too)."""
    a = tpl.obs_layout.n_assets
    if tpl.action_type == "discrete":
        acts = rng.integers(0, len(tpl.positions), size=(n, a))
        if a == 1:
            acts = acts[:, 0]
    else:
        sp = tpl.action_space
        acts = rng.uniform(sp.low, sp.high, size=(n, a)).astype(np.float32)
        acts[rng.random((n, a)) < 0.1] = 0.0
    if prev is not None:
        keep = rng.random(n) < 0.2
        acts[keep] = prev[keep]
    return acts


def single_action(acts: np.ndarray, i: int):
    return int(acts[i]) if acts.ndim == 1 else acts[i]


def np_(x) -> np.ndarray:
    return x.detach().cpu().numpy()


def assert_obs_equal(vec_row: np.ndarray, single: np.ndarray, layout, what: str) -> None:
    f = layout.features
    # The window features are gathered from the same float32 array: bit-equal.
    np.testing.assert_array_equal(vec_row[f], single[f], err_msg=f"{what}: features")
    # The weight / cash-fraction tail is float64 maths rounded to float32. V (the
    # divisor) is a sum over assets that torch and the single env's Python loop
    # associate differently, so it may differ in its last float64 ulp, which can flip
    # a float32 rounding: equal to float32 precision, not bit-equal.
    np.testing.assert_allclose(
        vec_row[f.stop :], single[f.stop :], rtol=1e-6, atol=1e-7, err_msg=f"{what}: weights/cash"
    )


def run_equivalence(
    prices, *, n_steps: int, seed: int = 7, device="cpu", compile=False, venv_kw=None, **kw
):
    """Step N single envs and one vector env with the same seeds and actions, checking
    every step; returns counters of what the run exercised (and the vector env, "env").
    ``venv_kw``: extra arguments of the vector env only (e.g. ``copy=False``)."""
    singles = [StockTradingEnv(prices, **kw) for _ in range(N)]
    venv = VectorStockTradingEnv(prices, N, device=device, compile=compile, **(venv_kw or {}), **kw)
    tpl, layout = venv.template, venv.obs_layout
    cash0 = tpl.initial_cash
    money = dict(rtol=1e-9, atol=1e-9 * cash0)  # value, cash, cost, pnl (cash can be ~0)
    shares = dict(rtol=1e-9, atol=1e-9 * cash0 / float(np.min(tpl.market.mark)))
    rewards = dict(rtol=1e-9, atol=1e-12)

    obs, info = venv.reset(seed=seed)
    for i, env in enumerate(singles):
        o, inf = env.reset(seed=seed + i)
        assert venv.dates[int(info["t"][i])] == inf["date"]
        assert_obs_equal(np_(obs[i]), o, layout, f"reset env {i}")
    rng = np.random.default_rng(seed)
    acts = None
    seen = dict(ends=0, terminated=0, truncated=0, not_tradable=0, steps=0)
    seen.update(limit_locked=0, capped=0)
    for k in range(n_steps):
        acts = draw_actions(rng, tpl, N, acts)
        obs, rew, term, trunc, info = venv.step(acts)
        assert obs.device.type == venv.device.type
        obs_np, rew_np, term_np, trunc_np = np_(obs), np_(rew), np_(term), np_(trunc)
        # copies: the rows of ended envs are overwritten below with their final_info
        v, c, pos = (np_(info[k]).copy() for k in ("portfolio_value", "cash", "position"))
        cost, pnl, t = (np_(info[k]).copy() for k in ("cost", "pnl", "t"))
        seen["not_tradable"] += int(np_(info["not_tradable"]).sum())
        locked, capped = (np_(info[k]).copy() for k in ("limit_locked", "capped"))
        fin = info.get("final_info")
        if fin is not None:  # ended envs: their last step's info (top level = new episode)
            fv, fc, fpos = np_(fin["portfolio_value"]), np_(fin["cash"]), np_(fin["position"])
            fcost, fpnl, ft = np_(fin["cost"]), np_(fin["pnl"]), np_(fin["t"])
            flocked, fcapped = np_(fin["limit_locked"]), np_(fin["capped"])
        for i, env in enumerate(singles):
            o, r, te, tr, inf = env.step(single_action(acts, i))
            what = f"step {k} env {i}"
            assert (bool(term_np[i]), bool(trunc_np[i])) == (te, tr), what
            if te or tr:
                v[i], c[i], pos[i] = fv[i], fc[i], fpos[i]
                cost[i], pnl[i], t[i] = fcost[i], fpnl[i], ft[i]
                locked[i], capped[i] = flocked[i], fcapped[i]
            # the orders refused on a limit-locked bar, and cut by the volume cap
            sym = {s: j for j, s in enumerate(env.symbols)}
            want_locked = np.zeros(layout.n_assets, bool)
            want_capped = np.zeros(layout.n_assets, bool)
            for order in inf["trades"]:
                want_locked[sym[order["symbol"]]] |= order["status"] == "limit_locked"
                want_capped[sym[order["symbol"]]] |= order["reason"].startswith("volume cap")
            np.testing.assert_array_equal(locked[i], want_locked, err_msg=f"{what}: locked")
            np.testing.assert_array_equal(capped[i], want_capped, err_msg=f"{what}: capped")
            seen["limit_locked"] += int(want_locked.sum())
            seen["capped"] += int(want_capped.sum())
            np.testing.assert_allclose(rew_np[i], r, **rewards, err_msg=f"{what}: reward")
            np.testing.assert_allclose(v[i], inf["portfolio_value"], **money, err_msg=f"{what}: V")
            np.testing.assert_allclose(c[i], inf["cash"], **money, err_msg=f"{what}: cash")
            np.testing.assert_allclose(cost[i], inf["cost"], **money, err_msg=f"{what}: cost")
            np.testing.assert_allclose(pnl[i], inf["pnl"], **money, err_msg=f"{what}: pnl")
            np.testing.assert_allclose(pos[i], inf["position"], **shares, err_msg=f"{what}: shares")
            assert venv.dates[int(t[i])] == inf["date"], what
            if te or tr:
                assert bool(np_(info["_final_obs"])[i]), what
                assert_obs_equal(np_(info["final_obs"][i]), o, layout, f"{what}: final_obs")
                o, inf0 = env.reset()  # no seed: the same-step autoreset's next start
                assert_obs_equal(obs_np[i], o, layout, f"{what}: autoreset obs")
                # the top-level info row already describes the new episode
                assert venv.dates[int(np_(info["t"])[i])] == inf0["date"], what
                assert float(np_(info["portfolio_value"])[i]) == inf0["portfolio_value"], what
                assert float(np_(info["cost"])[i]) == 0.0, what
                seen["ends"] += 1
                seen["terminated"] += te
                seen["truncated"] += tr
            else:
                assert "_final_obs" not in info or not bool(np_(info["_final_obs"])[i]), what
                assert_obs_equal(obs_np[i], o, layout, what)
        seen["steps"] += 1
    seen["env"] = venv
    return seen


def continuous(**kw):
    return dict(action_type="continuous", **kw)


def state_copy(venv) -> list:
    """A copy of every env's state tensors (to check a refused step changed nothing)."""
    return [x.clone() for x in venv.state.values()]
