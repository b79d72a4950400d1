"""VectorStockTradingEnv equals N single StockTradingEnvs (seeds seed+i, same actions,
across same-step autoresets) in every configuration: actions, shorts and borrow calls,
minimum commissions, fills, rewards, halted bars, ruin, the KRX rules; eager, compiled
and (marked, skipped without a GPU) on CUDA."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from vector_equivalence import (
    KRX_RULES,
    N,
    continuous,
    draw_actions,
    krx_synth,
    np_,
    run_equivalence,
    single_action,
    state_copy,
    synth,
)

from stockgym.envs import StockTradingEnv, VectorStockTradingEnv

# (n_assets, halt fraction, env kwargs)
VARIANTS = [
    pytest.param(1, 0.0, {}, id="discrete-1"),
    pytest.param(1, 0.0, dict(allow_short=True), id="discrete-1-short"),
    pytest.param(3, 0.0, {}, id="multidiscrete-3"),
    pytest.param(3, 0.0, continuous(), id="continuous-long-whole"),
    pytest.param(3, 0.0, continuous(fractional=True), id="continuous-long-fractional"),
    pytest.param(
        3,
        0.0,
        continuous(allow_short=True, borrow_rate=0.05, max_gross=2.0),
        id="continuous-short-borrow-whole",
    ),
    pytest.param(
        3,
        0.0,
        continuous(allow_short=True, borrow_rate=0.05, fractional=True),
        id="continuous-short-borrow-fractional",
    ),
    pytest.param(
        3, 0.0, continuous(min_commission=5.0, initial_cash=3_000.0), id="min-commission-whole"
    ),
    pytest.param(
        3,
        0.0,
        continuous(min_commission=5.0, initial_cash=3_000.0, fractional=True),
        id="min-commission-fractional",
    ),
    pytest.param(3, 0.0, dict(fill="close"), id="fill-close-multidiscrete"),
    pytest.param(3, 0.0, continuous(fill="close", allow_short=True), id="fill-close-short"),
    pytest.param(1, 0.0, dict(reward="return", market="krx"), id="reward-return"),
    pytest.param(3, 0.0, continuous(reward="differential_sharpe"), id="reward-dsr"),
    pytest.param(1, 0.1, {}, id="halted-discrete-1"),
    pytest.param(3, 0.1, continuous(market="krx"), id="halted-continuous"),
    pytest.param(
        3,
        0.1,
        continuous(allow_short=True, fill="close", fractional=True, borrow_rate=0.02),
        id="halted-short-fill-close",
    ),
    pytest.param(
        3,
        0.0,
        continuous(allow_short=True, max_gross=3.0, ruin_floor=9.9e6, market="krx"),
        id="ruin-terminates",
    ),
]


KRX_VARIANTS = [
    pytest.param(continuous(**KRX_RULES), id="krx-continuous-whole"),
    pytest.param(continuous(fractional=True, **KRX_RULES), id="krx-continuous-fractional"),
    pytest.param(dict(KRX_RULES), id="krx-multidiscrete"),
    pytest.param(continuous(fill="close", **KRX_RULES), id="krx-fill-close"),
    pytest.param(
        continuous(allow_short=True, max_gross=3.0, borrow_rate=2.0, **KRX_RULES),
        id="krx-short-borrow-calls",
    ),
    pytest.param(
        continuous(min_commission=5.0, **KRX_RULES, impact_coef=0.05),
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
    pytest.param(3, 0.0, {}, continuous(initial_cash=1e8, **KRX_RULES), id="krx-rules"),
    # the benchmark's configuration (one asset, discrete), with halted bars and the
    # shared output buffer
    pytest.param(1, 0.1, dict(copy=False), {}, id="discrete-1-halted-copy-false"),
    # min_commission: the bisection of buy sizes is left to the eager code (flag bit)
    pytest.param(
        3,
        0.0,
        {},
        continuous(allow_short=True, borrow_rate=0.03, min_commission=5.0, initial_cash=3_000.0),
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
                before = state_copy(venv)
                with pytest.raises(ValueError, match=match):
                    venv.step(bad)
                for x, y in zip(before, state_copy(venv), strict=True):
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
    # an agent acting under inference mode (inference tensors in, the state made by
    # them) compiles nothing new either, nor does the normal mode afterwards
    with torch.inference_mode(), torch.compiler.set_stance("fail_on_recompile"):
        venv.reset(seed=1)
        for _ in range(12):
            venv.step(torch.as_tensor(draw_actions(rng, venv.template, N)))
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(12):
            venv.step(draw_actions(rng, venv.template, N))
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
            continuous(allow_short=True, borrow_rate=0.05, fractional=True),
            id="halted-short-fractional",
        ),
        pytest.param(
            3, 0.0, continuous(min_commission=5.0, initial_cash=3_000.0), id="min-commission"
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
