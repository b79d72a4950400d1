"""VectorStockTradingEnv beyond the equivalence to single envs
(tests/test_vector_equivalence.py): no look-ahead, episode statistics, buffers, seeding,
bad input, the SB3 VecEnv adapter."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from vector_equivalence import (
    SYMBOLS,
    N,
    continuous,
    draw_actions,
    np_,
    state_copy,
    synth,
)

from stockgym.data import load_prices
from stockgym.envs import StockTradingEnv, VectorStockTradingEnv
from stockgym.envs import vector as vector_mod


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
        continuous(),
        np.where(np.eye(N, 3) > 0, np.nan, 0.3).astype(np.float32),
        ValueError,
        "NaN",
        id="continuous-nan",
    ),
    pytest.param(
        3,
        continuous(),
        np.full((N, 3), 1.5, np.float32),
        ValueError,
        "outside",
        id="continuous-above-box",
    ),
    pytest.param(
        3,
        continuous(),
        np.full((N, 3), -0.5, np.float32),
        ValueError,
        "outside",
        id="continuous-short-not-allowed",
    ),
    pytest.param(
        3,
        continuous(),
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
    before = state_copy(venv)
    with pytest.raises(exc, match=match):
        venv.step(action)
    for x, y in zip(before, state_copy(venv), strict=True):
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
