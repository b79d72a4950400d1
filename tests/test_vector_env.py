"""VectorStockTradingEnv: equal to N single StockTradingEnvs (seeds seed+i, same actions,
across same-step autoresets), no look-ahead, episode statistics, buffers, seeding, bad
input, the SB3 VecEnv adapter, torch.compile and (marked, skipped without a GPU) CUDA."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgym.data import load_prices
from stockgym.envs import StockTradingEnv, VectorStockTradingEnv
from stockgym.envs import vector as vector_mod

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


def _continuous(**kw):
    return dict(action_type="continuous", **kw)


# (n_assets, halt fraction, env kwargs)
VARIANTS = [
    pytest.param(1, 0.0, {}, id="discrete-1"),
    pytest.param(1, 0.0, dict(allow_short=True), id="discrete-1-short"),
    pytest.param(3, 0.0, {}, id="multidiscrete-3"),
    pytest.param(3, 0.0, _continuous(), id="continuous-long-whole"),
    pytest.param(3, 0.0, _continuous(fractional=True), id="continuous-long-fractional"),
    pytest.param(
        3,
        0.0,
        _continuous(allow_short=True, borrow_rate=0.05, max_gross=2.0),
        id="continuous-short-borrow-whole",
    ),
    pytest.param(
        3,
        0.0,
        _continuous(allow_short=True, borrow_rate=0.05, fractional=True),
        id="continuous-short-borrow-fractional",
    ),
    pytest.param(
        3, 0.0, _continuous(min_commission=5.0, initial_cash=3_000.0), id="min-commission-whole"
    ),
    pytest.param(
        3,
        0.0,
        _continuous(min_commission=5.0, initial_cash=3_000.0, fractional=True),
        id="min-commission-fractional",
    ),
    pytest.param(3, 0.0, dict(fill="close"), id="fill-close-multidiscrete"),
    pytest.param(3, 0.0, _continuous(fill="close", allow_short=True), id="fill-close-short"),
    pytest.param(1, 0.0, dict(reward="return", market="krx"), id="reward-return"),
    pytest.param(3, 0.0, _continuous(reward="differential_sharpe"), id="reward-dsr"),
    pytest.param(1, 0.1, {}, id="halted-discrete-1"),
    pytest.param(3, 0.1, _continuous(market="krx"), id="halted-continuous"),
    pytest.param(
        3,
        0.1,
        _continuous(allow_short=True, fill="close", fractional=True, borrow_rate=0.02),
        id="halted-short-fill-close",
    ),
    pytest.param(
        3,
        0.0,
        _continuous(allow_short=True, max_gross=3.0, ruin_floor=9.9e6, market="krx"),
        id="ruin-terminates",
    ),
]


KRX_VARIANTS = [
    pytest.param(_continuous(**KRX_RULES), id="krx-continuous-whole"),
    pytest.param(_continuous(fractional=True, **KRX_RULES), id="krx-continuous-fractional"),
    pytest.param(dict(KRX_RULES), id="krx-multidiscrete"),
    pytest.param(_continuous(fill="close", **KRX_RULES), id="krx-fill-close"),
    pytest.param(
        _continuous(allow_short=True, max_gross=3.0, borrow_rate=2.0, **KRX_RULES),
        id="krx-short-borrow-calls",
    ),
    pytest.param(
        _continuous(min_commission=5.0, **KRX_RULES, impact_coef=0.05),
        id="krx-min-commission-strong-impact",
    ),
]


@pytest.mark.parametrize("kw", KRX_VARIANTS)
def test_equals_single_envs_under_krx_rules(kw):
    """Sell tax by date, price-limit locks, ticks (three tables, two boards), the volume
    cap and square-root impact: the vector env equals N single envs."""
    seen = run_equivalence(
        krx_synth(), n_steps=200, window_size=5, episode_length=60, initial_cash=1e8, **kw
    )
    assert seen["ends"] >= 8
    assert seen["limit_locked"] > 0 and seen["capped"] > 0


@pytest.mark.parametrize("n_assets,halt,kw", VARIANTS)
def test_equals_single_envs_across_autoresets(n_assets, halt, kw):
    prices = synth(n_assets, halt=halt)
    seen = run_equivalence(prices, n_steps=250, window_size=5, episode_length=40, **kw)
    assert seen["ends"] >= 20  # many same-step autoresets were checked
    if "ruin_floor" in kw:
        assert seen["terminated"] > 0
    if halt:
        assert seen["not_tradable"] > 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(fractional=False),
        dict(fractional=True),
        dict(min_commission=5.0, initial_cash=30_000.0),
        dict(halt=0.1),
    ],
    ids=["whole", "fractional", "min-commission", "halted"],
)
def test_equals_single_envs_with_borrow_calls(kw):
    """Long weights above 1 with a short held (max_gross 3, borrow 200 %/yr): cash runs
    short of the day's borrow, buys are cancelled and longs sold (borrow calls)."""
    kw = dict(kw)
    prices = synth(3, halt=kw.pop("halt", 0.0))
    kw.update(allow_short=True, max_gross=3.0, borrow_rate=2.0, window_size=5)
    seen = run_equivalence(prices, n_steps=150, episode_length=40, **kw)
    assert seen["ends"] >= 10
    # the same actions in a single env do make borrow calls, and cash never goes below 0
    env = StockTradingEnv(prices, episode_length=40, **kw)
    rng = np.random.default_rng(7)
    env.reset(seed=7)
    calls = 0
    for _ in range(150):
        _, _, te, tr, info = env.step(single_action(draw_actions(rng, env, 1), 0))
        calls += sum(o["status"] == "borrow_call" for o in info["trades"])
        assert info["cash"] >= 0.0
        if te or tr:
            env.reset()
    assert calls > 0


def test_equals_single_envs_default_features_window_30():
    prices = synth(3, n_days=300, seed=5)
    seen = run_equivalence(
        prices,
        n_steps=120,
        window_size=30,
        episode_length=60,
        action_type="continuous",
        allow_short=True,
    )
    assert seen["ends"] >= 4


def test_equals_single_envs_whole_data_episodes():
    # no episode_length: every episode runs from the first full window to the last bar
    prices = synth(1, n_days=60, seed=2)
    seen = run_equivalence(prices, n_steps=150, window_size=5, fill="close", allow_short=True)
    assert seen["truncated"] >= 3


def test_equals_single_envs_many_unsynchronised_resets():
    # Episodes of 2 steps, some cut short by ruin: envs restart at different steps, and
    # each goes through its pre-drawn random starts (64 at a time) several times.
    prices = synth(3, seed=4)
    seen = run_equivalence(
        prices,
        n_steps=300,
        window_size=5,
        episode_length=2,
        action_type="continuous",
        allow_short=True,
        max_gross=3.0,
        ruin_floor=9.9e6,
        market="krx",
    )
    assert seen["ends"] > 3 * 64 * N // 2 and 0 < seen["terminated"] < seen["ends"]


COMPILED_VARIANTS = [
    # every KRX rule (tax by date, limit locks, ticks, volume cap, impact) compiled
    pytest.param(3, 0.0, {}, _continuous(initial_cash=1e8, **KRX_RULES), id="krx-rules"),
    # the benchmark's configuration (one asset, discrete), with halted bars and the
    # shared output buffer
    pytest.param(1, 0.1, dict(copy=False), {}, id="discrete-1-halted-copy-false"),
    # min_commission: the bisection of buy sizes is left to the eager code (flag bit)
    pytest.param(
        3,
        0.0,
        {},
        _continuous(allow_short=True, borrow_rate=0.03, min_commission=5.0, initial_cash=3_000.0),
        id="continuous-short-borrow-min-commission",
    ),
    pytest.param(
        3,
        0.1,
        {},
        dict(
            fill="close",
            allow_short=True,
            max_gross=3.0,
            reward="differential_sharpe",
            ruin_floor=9.9e6,
            market="krx",
        ),
        id="multidiscrete-fill-close-dsr-ruin-halted",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("n_assets,halt,venv_kw,kw", COMPILED_VARIANTS)
def test_equals_single_envs_compiled(monkeypatch, n_assets, halt, venv_kw, kw):
    prices = krx_synth(n_assets) if "max_participation" in kw else synth(n_assets, halt=halt)
    eager_steps = []  # steps redone eagerly (the bisection of buy sizes)
    orig = VectorStockTradingEnv._transition

    def counting(self, *a, **k):
        eager_steps.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(VectorStockTradingEnv, "_transition", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the eager step
        seen = run_equivalence(
            prices,
            n_steps=120,
            compile=True,
            venv_kw=venv_kw,
            window_size=5,
            episode_length=40,
            **kw,
        )
    assert seen["ends"] >= 8
    assert not seen["env"]._compiled.failed
    if halt:
        assert seen["not_tradable"] > 0
    if "ruin_floor" in kw:
        assert seen["terminated"] > 0
    if "min_commission" in kw:
        # some steps needed the bisection (redone eagerly), most did not
        assert 0 < len(eager_steps) < seen["steps"]
    else:
        assert not eager_steps


@pytest.mark.slow
def test_compiled_step_validates_actions_and_is_not_recompiled():
    prices = synth(3)
    kw = dict(window_size=5, episode_length=10, action_type="continuous")
    venv = VectorStockTradingEnv(prices, N, compile=True, **kw)
    twin = VectorStockTradingEnv(prices, N, **kw)
    rng = np.random.default_rng(3)
    venv.reset(seed=0)
    for _ in range(12):  # compiles the step and the restart (an autoreset)
        venv.step(draw_actions(rng, venv.template, N))
    venv.reset(seed=3)
    twin.reset(seed=3)
    for k in range(35):  # several autoresets
        acts = draw_actions(rng, venv.template, N)
        if k in (5, 20):
            for bad, match in (
                (np.full((N, 3), 1.5, np.float32), "outside"),
                (np.where(np.eye(N, 3) > 0, np.nan, 0.1).astype(np.float32), "NaN"),
            ):
                before = _state(venv)
                with pytest.raises(ValueError, match=match):
                    venv.step(bad)
                for x, y in zip(before, _state(venv), strict=True):
                    assert torch.equal(x, y)
        with torch.compiler.set_stance("fail_on_recompile"):  # compiled once, reused
            oa, ra, ta, ua, ia = venv.step(acts)
        ob, rb, tb, ub, ib = twin.step(acts)
        np.testing.assert_allclose(np_(ra), np_(rb), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(np_(ta | ua), np_(tb | ub))
        assert torch.equal(oa[:, venv.obs_layout.features], ob[:, venv.obs_layout.features])
    as64 = torch.as_tensor(draw_actions(rng, venv.template, N), dtype=torch.float64)
    with pytest.raises(RuntimeError), torch.compiler.set_stance("fail_on_recompile"):
        venv.step(as64)  # a new action dtype needs one more compilation
    venv.step(as64)
    with torch.compiler.set_stance("fail_on_recompile"):  # both dtypes now compiled
        venv.step(as64)
        venv.step(as64.float())
    assert not venv._compiled.failed


def test_compile_failure_falls_back_to_the_eager_step(monkeypatch):
    from stockgym.envs import vector_compiled

    def broken(fn, **kw):
        def fail(*a):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(vector_compiled.torch, "compile", broken)
    prices = synth(1)
    kw = dict(window_size=5, episode_length=10)
    venv = VectorStockTradingEnv(prices, N, compile=True, **kw)
    twin = VectorStockTradingEnv(prices, N, **kw)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        oa, _ = venv.reset(seed=1)
    ob, _ = twin.reset(seed=1)
    assert venv._compiled.failed and torch.equal(oa, ob)
    acts = np.ones(N, dtype=np.int64)
    assert torch.equal(venv.step(acts)[1], twin.step(acts)[1])


# ----------------------------------------------------------------------- CUDA
needs_cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(
    "n_assets,halt,kw",
    [
        pytest.param(1, 0.0, {}, id="discrete-1"),
        pytest.param(
            3,
            0.1,
            _continuous(allow_short=True, borrow_rate=0.05, fractional=True),
            id="halted-short-fractional",
        ),
        pytest.param(
            3, 0.0, _continuous(min_commission=5.0, initial_cash=3_000.0), id="min-commission"
        ),
    ],
)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_single_envs(n_assets, halt, kw):
    prices = synth(n_assets, halt=halt)
    seen = run_equivalence(
        prices, n_steps=200, device="cuda", window_size=5, episode_length=40, **kw
    )
    assert seen["ends"] >= 16


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_vector_equals_cpu_vector():
    prices = synth(3, halt=0.05)
    kw = dict(window_size=5, episode_length=30, action_type="continuous", allow_short=True)
    cpu = VectorStockTradingEnv(prices, 64, device="cpu", **kw)
    gpu = VectorStockTradingEnv(prices, 64, device="cuda", **kw)
    oc, _ = cpu.reset(seed=3)
    og, _ = gpu.reset(seed=3)
    assert og.device.type == "cuda" and og.dtype == torch.float32
    rng = np.random.default_rng(0)
    f = cpu.obs_layout.features
    for _ in range(100):
        acts = draw_actions(rng, cpu.template, 64)
        oc, rc, tc, uc, ic = cpu.step(acts)
        og, rg, tg, ug, ig = gpu.step(torch.as_tensor(acts, device="cuda"))
        assert rg.device.type == "cuda" and rg.dtype == torch.float64
        np.testing.assert_array_equal(np_(og)[:, f], np_(oc)[:, f])
        np.testing.assert_allclose(np_(og)[:, f.stop :], np_(oc)[:, f.stop :], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np_(rg), np_(rc), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            np_(ig["portfolio_value"]), np_(ic["portfolio_value"]), rtol=1e-9
        )
        np.testing.assert_array_equal(np_(tg), np_(tc))
        np.testing.assert_array_equal(np_(ug), np_(uc))


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_compiled_equals_single_envs():
    seen = run_equivalence(
        synth(3),
        n_steps=80,
        device="cuda",
        compile=True,
        window_size=5,
        episode_length=40,
        action_type="continuous",
        allow_short=True,
    )
    assert seen["ends"] >= 4


# --------------------------------------------------------------- no look-ahead
def _perturb_after(prices: pd.DataFrame, t_date, rng) -> pd.DataFrame:
    """Scale every bar strictly after t_date: OHLC by one factor, volume by another."""
    out = prices.copy()
    after = out.index > t_date
    n = int(after.sum())
    for s in SYMBOLS[: out.columns.get_level_values(0).nunique()]:
        f = rng.uniform(0.5, 2.0, n)
        for c in ("open", "high", "low", "close"):
            out.loc[after, (s, c)] = out.loc[after, (s, c)].to_numpy() * f
        out.loc[after, (s, "volume")] = out.loc[after, (s, "volume")].to_numpy() * rng.uniform(
            0.2, 5.0, n
        )
    return out


@settings(max_examples=10, deadline=None)
@given(
    n_assets=st.sampled_from([1, 3]),
    data_seed=st.integers(0, 1_000),
    s_frac=st.floats(0.0, 1.0),
    t_offset=st.integers(0, 25),
    seed=st.integers(0, 2**31 - 1),
)
def test_vector_env_has_no_lookahead(n_assets, data_seed, s_frac, t_offset, seed):
    prices = load_prices(SYMBOLS[:n_assets], source="synthetic", n_days=120, seed=data_seed)
    kw = dict(window_size=5, action_type="continuous")
    base = VectorStockTradingEnv(prices, N, **kw)
    dates = base.dates
    first, last = base.template.window_size - 1, len(dates) - 1
    s_idx = first + int(s_frac * (last - 2 - first))
    t_idx = min(s_idx + t_offset, last - 1)  # at least one bar after t
    rng = np.random.default_rng(seed)
    moved = VectorStockTradingEnv(_perturb_after(prices, dates[t_idx], rng), N, **kw)
    assert moved.dates.equals(dates)
    opts = {"start": dates[s_idx]}  # every env starts at s <= t and runs to the end
    oa, ia = base.reset(seed=0, options=opts)
    ob, ib = moved.reset(seed=0, options=opts)
    assert torch.equal(oa, ob)
    checked, differed = 1, False  # the reset observation (dated s <= t) was one check
    acts = None
    while int(ia["t"][0]) < last:
        acts = draw_actions(rng, base.template, N, acts)
        oa, ra, ta, ua, ia = base.step(acts)
        ob, rb, tb, ub, ib = moved.step(acts)
        if bool((ta | ua).any()):
            break  # end of data: the episode restarted
        if int(ia["t"][0]) <= t_idx:  # observations dated <= t: bit-identical
            assert torch.equal(oa, ob), "an observation dated <= t saw the future"
            assert torch.equal(ia["portfolio_value"], ib["portfolio_value"])
            checked += 1
        else:
            differed |= not torch.equal(oa, ob)
    # every observation dated s..t was compared, and nothing dated <= t was skipped
    assert checked == t_idx - s_idx + 1
    if t_idx < last - 1:
        assert differed  # the perturbation was real


# ------------------------------------------------------- episode statistics, API
def test_episode_statistics_and_gymnasium_conventions():
    prices = synth(3)
    venv = VectorStockTradingEnv(
        prices, N, window_size=5, episode_length=25, action_type="continuous", allow_short=True
    )
    obs, info = venv.reset(seed=1)
    assert obs.dtype == torch.float32 and obs.shape == (N, venv.obs_layout.size)
    assert venv.single_observation_space.contains(np_(obs[0]))
    rng = np.random.default_rng(1)
    ret, length = np.zeros(N), np.zeros(N, dtype=np.int64)
    n_episodes = 0
    for _ in range(120):
        obs, rew, term, trunc, info = venv.step(draw_actions(rng, venv.template, N))
        assert obs.dtype == torch.float32 and obs.shape == (N, venv.obs_layout.size)
        assert rew.dtype == torch.float64 and rew.shape == (N,)
        assert term.dtype == torch.bool and trunc.dtype == torch.bool
        assert term.shape == trunc.shape == (N,) and term is not trunc
        for x in (obs, rew, term, trunc, info["portfolio_value"]):
            assert x.device == venv.device
        assert not bool((term & trunc).any())
        r = np_(rew)
        for i in range(N):
            ret[i] += r[i]
        length += 1
        done = np_(term | trunc)
        if done.any():
            mask = np_(info["_episode"])
            np.testing.assert_array_equal(mask, done)
            np.testing.assert_array_equal(np_(info["_final_obs"]), done)
            ep_r, ep_l = np_(info["episode"]["r"]), np_(info["episode"]["l"])
            np.testing.assert_allclose(ep_r[mask], ret[mask], rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(ep_l[mask], length[mask])
            assert (ep_l[mask] == 25).all()  # no ruin here: every episode runs its length
            ret[mask], length[mask] = 0.0, 0
            n_episodes += int(mask.sum())
        else:
            assert "_episode" not in info or not np_(info["_episode"]).any()
    assert n_episodes >= 12


def test_info_values_stay_those_of_their_step():
    prices = synth(3)
    kw = dict(window_size=5, episode_length=6, action_type="continuous", allow_short=True)
    kept_env, twin = VectorStockTradingEnv(prices, N, **kw), VectorStockTradingEnv(prices, N, **kw)
    _, info0 = kept_env.reset(seed=5)
    assert isinstance(info0, dict) and set(info0) == set(vector_mod.RESET_INFO_KEYS)
    twin.reset(seed=5)
    step_keys = set(vector_mod.STEP_INFO_KEYS)
    rng = np.random.default_rng(5)

    def snapshot(info):  # every value built now, tensors cloned
        out = {}
        for k, v in dict(info).items():
            if isinstance(v, torch.Tensor):
                out[k] = v.clone()
            elif isinstance(v, dict):
                out[k] = snapshot(v)
        return out

    kept, snaps = [], []
    for _ in range(20):
        acts = draw_actions(rng, kept_env.template, N)
        kept.append(kept_env.step(acts)[4])  # read only after 20 more steps
        snaps.append(snapshot(twin.step(acts)[4]))
    ends = 0
    for info, snap in zip(kept, snaps, strict=True):  # read only now, steps later
        assert isinstance(info, dict) and step_keys <= set(info)
        assert set(snap) == set(info)
        for k in step_keys:
            assert torch.equal(info[k], snap[k]), k
        if "final_info" in info:
            ends += 1
            assert set(info["final_info"]) == step_keys
            for k in step_keys:
                assert torch.equal(info["final_info"][k], snap["final_info"][k]), k
            assert torch.equal(info["episode"]["r"], snap["episode"]["r"])
    assert ends >= 3
    assert kept[0]["position"].shape == (N, 3) and kept[0]["not_tradable"].dtype == torch.bool
    assert kept[0]["position"].is_contiguous()


def test_info_is_a_plain_dict():
    venv = VectorStockTradingEnv(synth(1), N, window_size=5)
    venv.reset(seed=0)
    info = venv.step(np.zeros(N, dtype=np.int64))[4]
    assert type(info) is dict and set(info) == set(vector_mod.STEP_INFO_KEYS)
    plain = pickle.loads(pickle.dumps(info))
    assert set(plain) == set(info) and torch.equal(plain["cash"], info["cash"])
    assert info["filled"].shape == (N, 1) and info["not_tradable"].dtype == torch.bool


def test_copy_false_reuses_one_buffer_with_the_same_values():
    prices = synth(1)
    kw = dict(window_size=5, episode_length=15)
    shared = VectorStockTradingEnv(prices, N, copy=False, **kw)
    fresh = VectorStockTradingEnv(prices, N, **kw)
    o_sh, _ = shared.reset(seed=2)
    o_fr, _ = fresh.reset(seed=2)
    buf, ptr = o_sh, o_sh.data_ptr()
    assert torch.equal(o_sh, o_fr)
    rng = np.random.default_rng(2)
    ends = 0
    for _ in range(40):
        acts = draw_actions(rng, shared.template, N)
        o_sh, *_, i_sh = shared.step(acts)
        o_fr, *_, i_fr = fresh.step(acts)
        assert o_sh is buf and o_sh.data_ptr() == ptr
        assert torch.equal(o_sh, o_fr)
        if "final_obs" in i_fr:
            ends += 1
            m = i_fr["_final_obs"]
            assert torch.equal(i_sh["final_obs"][m], i_fr["final_obs"][m])
    assert ends > 0


def test_copy_true_returns_new_tensors_the_env_never_changes():
    prices = synth(3)
    venv = VectorStockTradingEnv(
        prices, N, window_size=5, episode_length=10, action_type="continuous"
    )
    obs, _ = venv.reset(seed=4)
    kept = [(obs, obs.clone())]
    rng = np.random.default_rng(4)
    for _ in range(35):
        obs, rew, term, trunc, info = venv.step(draw_actions(rng, venv.template, N))
        kept.append((obs, obs.clone()))
        kept.append((rew, rew.clone()))
        kept.append((info["portfolio_value"], info["portfolio_value"].clone()))
        if "final_obs" in info:
            kept.append((info["final_obs"], info["final_obs"].clone()))
    ptrs = [x.data_ptr() for x, _ in kept[::3]]  # the observations
    assert len(set(ptrs)) == len(ptrs)
    for k, (x, snapshot) in enumerate(kept):
        assert torch.equal(x, snapshot), f"returned tensor {k} changed later"


# ------------------------------------------------------------------- seeding
def _trajectory(venv, seed, steps=60):
    obs, info = venv.reset(seed=seed)
    out = [np_(obs).copy(), np_(info["t"]).copy()]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs, rew, *_ = venv.step(draw_actions(rng, venv.template, venv.num_envs))
        out += [np_(obs).copy(), np_(rew).copy()]
    return out


def test_seeding():
    prices = synth(1)
    kw = dict(window_size=5, episode_length=20)
    a, b = VectorStockTradingEnv(prices, 8, **kw), VectorStockTradingEnv(prices, 8, **kw)
    ta, tb = _trajectory(a, 11), _trajectory(b, 11)
    assert all(np.array_equal(x, y) for x, y in zip(ta, tb, strict=True))
    tc = _trajectory(b, 5_000)
    assert not np.array_equal(ta[1], tc[1])  # different random starts
    # env i starts where a single env seeded seed+i starts, reset after reset too
    _, info = a.reset(seed=11)
    _, info2 = a.reset()
    _, info_list = b.reset(seed=[11 + i for i in range(8)])
    for i in range(8):
        single = StockTradingEnv(prices, **kw)
        assert a.dates[int(info["t"][i])] == single.reset(seed=11 + i)[1]["date"]
        assert a.dates[int(info2["t"][i])] == single.reset()[1]["date"]
        assert int(info_list["t"][i]) == int(info["t"][i])
    assert len(set(np_(info["t"]).tolist())) > 1


@pytest.mark.parametrize("n_assets", [1, 2])
def test_state_dict_continues_the_envs_exactly(tmp_path, n_assets):
    """A checkpoint's env state (through torch.save / weights_only load) put into a fresh
    env continues every env exactly: same observations, rewards and random restarts."""
    prices = synth(n_assets)
    kw = dict(window_size=5, episode_length=15)
    a = VectorStockTradingEnv(prices, 6, **kw)
    a.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(40):  # past several autoresets
        a.step(draw_actions(rng, a.template, 6))
    torch.save(a.state_dict(), tmp_path / "env.pt")
    b = VectorStockTradingEnv(prices, 6, **kw)
    b.load_state_dict(torch.load(tmp_path / "env.pt", weights_only=True))
    for _ in range(40):
        acts = draw_actions(rng, a.template, 6)
        oa, ra, ta, ua, ia = a.step(acts)
        ob, rb, tb, ub, ib = b.step(acts)
        assert torch.equal(oa, ob) and torch.equal(ra, rb)
        assert torch.equal(ta, tb) and torch.equal(ua, ub)
        assert torch.equal(ia["t"], ib["t"])
    with pytest.raises(ValueError, match="num_envs"):
        VectorStockTradingEnv(prices, 5, **kw).load_state_dict(a.state_dict())


# ----------------------------------------------------------------- bad input
def _state(venv):
    return [x.clone() for x in venv.state.values()]


BAD = [
    pytest.param(1, {}, np.array([0, 1, 2, 0]), ValueError, "action space", id="discrete-too-big"),
    pytest.param(
        1, {}, np.array([0, -1, 0, 0]), ValueError, "action space", id="discrete-negative"
    ),
    pytest.param(1, {}, np.array([0.0, 1.0, 0.5, 1.0]), ValueError, "integer", id="discrete-float"),
    pytest.param(1, {}, np.array([0, 1, 1]), ValueError, "expected 4", id="discrete-too-few"),
    pytest.param(3, {}, np.full((N, 3), 2), ValueError, "action space", id="multidiscrete-too-big"),
    pytest.param(
        3,
        {},
        np.zeros((N, 2), dtype=np.int64),
        ValueError,
        "expected 12",
        id="multidiscrete-wrong-shape",
    ),
    pytest.param(
        3,
        _continuous(),
        np.where(np.eye(N, 3) > 0, np.nan, 0.3).astype(np.float32),
        ValueError,
        "NaN",
        id="continuous-nan",
    ),
    pytest.param(
        3,
        _continuous(),
        np.full((N, 3), 1.5, np.float32),
        ValueError,
        "outside",
        id="continuous-above-box",
    ),
    pytest.param(
        3,
        _continuous(),
        np.full((N, 3), -0.5, np.float32),
        ValueError,
        "outside",
        id="continuous-short-not-allowed",
    ),
    pytest.param(
        3,
        _continuous(),
        np.zeros((N + 1, 3), np.float32),
        ValueError,
        "expected 12",
        id="continuous-too-many",
    ),
]


@pytest.mark.parametrize("n_assets,kw,action,exc,match", BAD)
def test_bad_actions_raise_and_leave_state_unchanged(n_assets, kw, action, exc, match):
    prices = synth(n_assets)
    kw = dict(window_size=5, episode_length=20, **kw)
    venv, twin = VectorStockTradingEnv(prices, N, **kw), VectorStockTradingEnv(prices, N, **kw)
    venv.reset(seed=0)
    twin.reset(seed=0)
    rng = np.random.default_rng(0)
    good = [draw_actions(rng, venv.template, N) for _ in range(30)]
    venv.step(good[0])
    twin.step(good[0])
    before = _state(venv)
    with pytest.raises(exc, match=match):
        venv.step(action)
    for x, y in zip(before, _state(venv), strict=True):
        assert torch.equal(x, y)
    for a in good[1:]:  # nothing else moved either (the random starts included)
        oa, ra, *_ = venv.step(a)
        ob, rb, *_ = twin.step(a)
        assert torch.equal(oa, ob) and torch.equal(ra, rb)


def test_step_before_reset_and_bad_construction(monkeypatch):
    prices = synth(1)
    venv = VectorStockTradingEnv(prices, N, window_size=5)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(N, dtype=np.int64))
    with pytest.raises(ValueError, match="num_envs"):
        VectorStockTradingEnv(prices, 0, window_size=5)
    with pytest.raises(ValueError, match="seeds"):
        venv.reset(seed=[1, 2])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        VectorStockTradingEnv(prices, N, device="cuda", window_size=5)
    assert VectorStockTradingEnv(prices, N, device="auto", window_size=5).device.type == "cpu"


# ----------------------------------------------------------------------- SB3
def test_sb3_ppo_learns_on_the_adapter():
    from stable_baselines3 import PPO

    from stockgym.envs.sb3 import SB3VecEnv

    venv = SB3VecEnv(VectorStockTradingEnv(synth(1, n_days=300), 4, episode_length=50))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, seed=0, device="cpu")
    model.learn(2_000)
    assert model.num_timesteps >= 2_000


def test_sb3_adapter_infos_match_the_vector_env():
    from stockgym.envs.sb3 import SB3VecEnv

    prices = synth(3)
    kw = dict(
        window_size=5,
        episode_length=12,
        action_type="continuous",
        allow_short=True,
        max_gross=3.0,
        ruin_floor=9.95e6,
    )  # some episodes end by ruin, not the clock
    adapter = SB3VecEnv(VectorStockTradingEnv(prices, N, **kw))
    twin = VectorStockTradingEnv(prices, N, **kw)
    adapter.seed(9)
    obs = adapter.reset()
    t_obs, _ = twin.reset(seed=9)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, np_(t_obs))
    rng = np.random.default_rng(9)
    ends = {True: 0, False: 0}
    for _ in range(40):
        acts = draw_actions(rng, twin.template, N)
        obs, rew, dones, infos = adapter.step(acts)
        t_obs, t_rew, t_term, t_trunc, t_info = twin.step(acts)
        assert (
            isinstance(obs, np.ndarray)
            and obs.dtype == np.float32
            and obs.shape == (N, twin.obs_layout.size)
        )
        assert isinstance(rew, np.ndarray) and rew.shape == (N,)
        assert dones.dtype == bool and len(infos) == N
        np.testing.assert_array_equal(obs, np_(t_obs))
        np.testing.assert_allclose(rew, np_(t_rew).astype(np.float32))
        np.testing.assert_array_equal(dones, np_(t_term | t_trunc))
        for i in range(N):
            if dones[i]:
                term_obs = infos[i]["terminal_observation"]
                assert isinstance(term_obs, np.ndarray) and term_obs.dtype == np.float32
                np.testing.assert_array_equal(term_obs, np_(t_info["final_obs"][i]))
                assert infos[i]["TimeLimit.truncated"] == bool(t_trunc[i])
                ends[bool(t_trunc[i])] += 1
                ep = infos[i]["episode"]
                assert ep["r"] == pytest.approx(float(t_info["episode"]["r"][i]))
                assert ep["l"] == int(t_info["episode"]["l"][i])
            else:
                assert "terminal_observation" not in infos[i]
    assert ends[True] > 0 and ends[False] > 0
