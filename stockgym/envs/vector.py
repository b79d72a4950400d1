"""VectorStockTradingEnv: N trading envs stepped in one call with torch tensors.

Same market-time rules and accounting as :class:`StockTradingEnv` (the reference it is
tested against: with env i seeded ``seed + i`` and the same actions, rewards, values,
cash and positions agree to 1e-9 relative and observations are equal), over ONE shared
copy of the market data on ``device`` ("cpu", "cuda", "auto"). float64 accounting,
float32 observations; nothing is copied to the host during a step on CPU (on CUDA,
action validation and autoreset bookkeeping read one flag each per step).

API (Gymnasium 1.x ``VectorEnv``): ``num_envs``, ``single_observation_space``,
``single_action_space``, ``reset(seed=...)`` -> ``(obs, info)``, ``step(actions)`` ->
``(obs, rewards, terminated, truncated, info)``; all tensors on ``device``
(obs ``(N, D)`` float32, rewards ``(N,)`` float64, flags ``(N,)`` bool). Actions may be
tensors or numpy arrays: ``(N,)`` ints (``Discrete``), ``(N, A)`` ints
(``MultiDiscrete``) or ``(N, A)`` floats (``Box``).

Autoreset: ``SAME_STEP`` (the only mode). When env i terminates or truncates, the step
returns the first observation of its next episode, and ``info["final_obs"]`` (an
``(N, D)`` tensor, rows valid where ``info["_final_obs"]``) holds the observation
that ended the episode, so agents can bootstrap truncated episodes; SB3's
``terminal_observation`` comes from it (see :mod:`stockgym.envs.sb3`).
``info["final_info"]`` holds the per-step info of that last step (the top-level
``info`` rows of ended envs already describe their new episode, as in Gymnasium's
same-step mode). Autoresets start episodes as a single env's ``reset()`` without
options does (a random start with ``episode_length``), also after an explicit
``reset(options={"start": ...})``. ``info["episode"] = {"r", "l"}`` (return and length,
tensors) with the ``info["_episode"]`` mask, as Gymnasium's ``RecordEpisodeStatistics``
reports them.

Observations are new tensors each step; with ``copy=False`` every call returns the
same output buffer, overwritten by the next ``step``/``reset`` (for callers that copy
the observation into their own rollout storage anyway).

Per-step ``info`` (tensors): ``portfolio_value``, ``cash``, ``position`` (shares,
``(N, A)``), ``cost``, ``pnl``, ``filled`` (shares filled, signed, ``(N, A)``),
``fill_price`` (``(N, A)``, 0 where nothing filled), ``not_tradable`` (orders not
filled because the bar was halted, ``(N, A)`` bool), ``t`` (bar index of
``info`` date: ``env.dates[t]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from stockgym.envs.execution import _SAFE
from stockgym.envs.trading import StockTradingEnv

# Precomputed contiguous observation windows (one row per bar) are used when they fit
# in this many bytes; otherwise windows are gathered per step.
_WINDOW_CACHE_BYTES = 256 * 2**20


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return dev


class VectorStockTradingEnv(VectorEnv):
    """``num_envs`` copies of :class:`StockTradingEnv` in torch (see module docstring).

    ``prices`` and every keyword in ``env_kwargs`` mean exactly what they mean for
    :class:`StockTradingEnv` (one is built as the template and available as
    ``self.template``). ``render_mode`` and ``record_history`` are not supported.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        prices,
        num_envs: int,
        device: str | torch.device = "cpu",
        *,
        copy: bool = True,
        validate_actions: bool = True,
        compile: bool = False,
        **env_kwargs: Any,
    ) -> None:
        if not (isinstance(num_envs, (int, np.integer)) and num_envs >= 1):
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        for bad in ("render_mode", "record_history"):
            if env_kwargs.get(bad):
                raise ValueError(f"{bad} is not supported by the vector env")
        tpl = StockTradingEnv(prices, **env_kwargs)
        self.template = tpl
        self.device = resolve_device(device)
        self.num_envs = int(num_envs)
        self.copy = bool(copy)
        self.validate_actions = bool(validate_actions)
        self.single_observation_space = tpl.observation_space
        self.single_action_space = tpl.action_space
        self.observation_space = batch_space(tpl.observation_space, self.num_envs)
        self.action_space = batch_space(tpl.action_space, self.num_envs)
        self.obs_layout = tpl.obs_layout
        self.dates = tpl.market.dates
        self.symbols = tpl.symbols
        self.costs = tpl.costs
        self._setup_data(tpl)
        # torch.compile fuses the step's elementwise maths into a few kernels (several
        # times faster for large N); it costs a one-off compile of ~10-60 s.
        self._transition_fn = self._transition
        self._obs_fn = self._obs_of
        if compile:
            self._transition_fn = torch.compile(self._transition, dynamic=False)
            self._obs_fn = torch.compile(self._obs_of, dynamic=False)
        self._seeded = False
        self._started = False
        self._starts_buf = None
        self._out: torch.Tensor | None = None

    # ------------------------------------------------------------------ setup
    def _setup_data(self, tpl: StockTradingEnv) -> None:
        dev, f64 = self.device, torch.float64
        m = tpl.market
        self._ref = torch.as_tensor(m.ref_open, dtype=f64, device=dev)
        self._mark = torch.as_tensor(m.mark, dtype=f64, device=dev)
        self._trad = torch.as_tensor(m.tradable, dtype=torch.bool, device=dev)
        n_bars, n_assets, n_feat = m.features.shape
        flat = torch.as_tensor(m.features.reshape(n_bars, -1), device=dev)
        w = tpl.window_size
        self._n_assets = n_assets
        self._nf = w * n_assets * n_feat
        self._obs_dim = self._nf + n_assets + 1
        if n_bars * self._obs_dim * 4 <= _WINDOW_CACHE_BYTES:
            # windows[t] = features of bars t-W+1..t, flattened, plus A+1 slots for the
            # weights and cash fraction: one row gather makes a whole observation.
            win = torch.zeros(n_bars, self._obs_dim, dtype=torch.float32, device=dev)
            win[w - 1 :, : self._nf] = (
                flat.unfold(0, w, 1).permute(0, 2, 1).reshape(n_bars - w + 1, -1)
            )
            self._windows, self._flat = win, None
        else:
            self._windows, self._flat = None, flat
            self._win_offsets = torch.arange(-w + 1, 1, device=dev)
        if tpl.action_type == "discrete":
            self._positions = torch.tensor(tpl.positions, dtype=f64, device=dev)
        self._slip = self.costs.slippage_bps * 1e-4
        self._first = w - 1
        self._last = n_bars - 1

    def _zeros(self, *shape, dtype=torch.float64) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env. ``seed``: env i gets ``seed + i`` (or ``seed[i]`` from a list),
        exactly like ``StockTradingEnv.reset(seed=...)``. ``options``: ``start``/``end``
        dates for every env, as the single env takes them."""
        n = self.num_envs
        if seed is not None or not self._seeded:
            seeds = seed if isinstance(seed, (list, tuple)) else [
                None if seed is None else seed + i for i in range(n)
            ]
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} envs")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            self._seeded = True
            self._starts_buf = None  # draws from the old generators are void
        tpl = self.template
        options = options or {}
        fixed = None
        if options:
            tpl.reset(options=options)  # validates the dates exactly as the single env does
            fixed = (tpl._start, tpl._end)
        self._state_reset(torch.ones(n, dtype=torch.bool, device=self.device), fixed)
        self._ep_return = self._zeros(n)
        self._ep_length = torch.zeros(n, dtype=torch.int64, device=self.device)
        self._started = True
        obs = self._observe()
        return obs, self._info(self._zeros(n), self._zeros(n), None, None, None)

    def _next_start(self, rows: torch.Tensor) -> torch.Tensor:
        k = self._starts_buf.shape[1]
        nxt = self._starts_buf[rows, self._starts_ptr.clamp(max=k - 1)]
        return torch.where(self._starts_ptr < k, nxt, -1)

    def _refill_starts(self, k: int = 64) -> None:
        """Pre-draw the next ``k`` random starts of each exhausted env from its own
        generator: the same numbers, in the same order, as a single env's successive
        resets. Rows keep their unused draws; -1 pads the rest."""
        hi = self._last - self.template.episode_length + 1
        if self._starts_buf is None:
            old = np.full((self.num_envs, 0), -1)
            ptr = np.zeros(self.num_envs, dtype=np.int64)
        else:
            old, ptr = self._starts_buf.cpu().numpy(), self._starts_ptr.cpu().numpy()
        buf = np.full((self.num_envs, k), -1, dtype=np.int64)
        for i, rng in enumerate(self._rngs):
            rest = old[i, ptr[i]:]
            rest = rest[rest >= 0]
            if len(rest) == 0:
                rest = rng.integers(self._first, hi, size=k)
            buf[i, : len(rest)] = rest
        self._starts_buf = torch.as_tensor(buf, device=self.device)
        self._starts_ptr = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def _state_reset(self, mask: torch.Tensor, fixed: tuple[int, int] | None = None) -> None:
        """Start a new episode in the envs where ``mask`` is True: from ``fixed``
        (start, end) bar indices when given (an explicit ``reset(options=...)``), else
        like a single env's ``reset()`` without options (autoresets)."""
        n, a = self.num_envs, self._n_assets
        length = self.template.episode_length
        if fixed is not None:
            start = torch.full((n,), fixed[0], dtype=torch.int64, device=self.device)
            end = torch.full((n,), fixed[1], dtype=torch.int64, device=self.device)
        elif length is not None:
            rows = torch.arange(n, device=self.device)
            if self._starts_buf is None or bool((self._next_start(rows) < 0).any()):
                self._refill_starts()
            start = self._next_start(rows)
            self._starts_ptr = self._starts_ptr + mask.long()
            end = start + length
        else:
            start = torch.full((n,), self._first, dtype=torch.int64, device=self.device)
            end = torch.full((n,), self._last, dtype=torch.int64, device=self.device)
        init = self.template.initial_cash
        if not hasattr(self, "_t"):
            self._t, self._start, self._end = start.clone(), start.clone(), end.clone()
            self._shares = self._zeros(n, a)
            self._cash = torch.full((n,), init, dtype=torch.float64, device=self.device)
            self._value = self._cash.clone()
            self._dsr_a, self._dsr_b = self._zeros(n), self._zeros(n)
            return
        m1 = mask[:, None]
        self._t = torch.where(mask, start, self._t)
        self._start = torch.where(mask, start, self._start)
        self._end = torch.where(mask, end, self._end)
        self._shares = torch.where(m1, 0.0, self._shares)
        self._cash = torch.where(mask, init, self._cash)
        self._value = torch.where(mask, init, self._value)
        self._dsr_a = torch.where(mask, 0.0, self._dsr_a)
        self._dsr_b = torch.where(mask, 0.0, self._dsr_b)

    # ---------------------------------------------------------------- actions
    def _check_actions(self, actions: Any) -> torch.Tensor:
        """Actions as an ``(N, A)`` tensor on the device; raises ``ValueError`` on actions
        outside the space (when ``validate_actions``), never touching the state."""
        tpl = self.template
        n, a = self.num_envs, self._n_assets
        act = torch.as_tensor(actions, device=self.device)
        if act.numel() != n * a:
            raise ValueError(f"expected {n * a} action values ({n} envs x {a} assets), got {act.numel()}")
        act = act.reshape(n, a)
        if tpl.action_type == "discrete":
            if act.dtype.is_floating_point or act.dtype == torch.bool:
                raise ValueError(f"discrete actions must be integers, got dtype {act.dtype}")
            k = len(tpl.positions)
            if self.validate_actions and bool(((act < 0) | (act >= k)).any()):
                raise ValueError(f"actions outside the action space {self.single_action_space}")
            return act
        act = act.to(torch.float64)
        if self.validate_actions:
            lo = -1.0 if tpl.allow_short else 0.0
            if not bool(torch.isfinite(act).all()):
                raise ValueError("actions contain NaN or inf")
            if not tpl.clip_actions and bool(((act < lo - 1e-6) | (act > 1.0 + 1e-6)).any()):
                raise ValueError(f"actions outside [{lo}, 1]; clip them or pass clip_actions=True")
        return act

    def _to_weights(self, act: torch.Tensor) -> torch.Tensor:
        """Target weights, as ``StockTradingEnv.action_to_weights`` makes them."""
        tpl = self.template
        if tpl.action_type == "discrete":
            w = self._positions[act]
        else:
            w = act.clamp(-1.0 if tpl.allow_short else 0.0, 1.0)
        limit = tpl.max_gross if tpl.allow_short else min(tpl.max_gross, 1.0)
        gross = w.abs().sum(1, keepdim=True)
        return torch.where(gross > limit, w * (limit / gross), w)

    # ------------------------------------------------------------------- step
    def step(self, actions: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        act = self._check_actions(actions)
        (
            obs, shares, cash, value, f, reward, terminated, truncated,
            cost, pnl, filled, price, blocked, self._dsr_a, self._dsr_b,
            self._ep_return, self._ep_length,
        ) = self._transition_fn(
            act, self._t, self._shares, self._cash, self._value, self._end,
            self._dsr_a, self._dsr_b, self._ep_return, self._ep_length,
        )
        self._shares, self._cash, self._value, self._t = shares, cash, value, f
        done = terminated | truncated
        info = self._info(cost, pnl, filled, price, blocked)
        if bool(done.any()):
            info["final_obs"] = obs
            info["_final_obs"] = done
            info["final_info"] = {k: v for k, v in info.items() if not k.startswith(("final", "_final"))}
            info["episode"] = {
                "r": torch.where(done, self._ep_return, 0.0),
                "l": torch.where(done, self._ep_length, 0),
            }
            info["_episode"] = done
            self._ep_return = torch.where(done, 0.0, self._ep_return)
            self._ep_length = torch.where(done, 0, self._ep_length)
            self._state_reset(done)
            obs = self._observe()
            # Same-step convention: rows of ended envs describe their new episode; the
            # step that ended them is in info["final_info"].
            info = self._info(
                torch.where(done, 0.0, cost), torch.where(done, 0.0, pnl),
                torch.where(done[:, None], 0.0, filled), torch.where(done[:, None], 0.0, price),
                blocked & ~done[:, None], info,
            )
        elif not self.copy:
            if self._out is None:
                self._out = torch.empty_like(obs)
            obs = self._out.copy_(obs)
        return obs, reward, terminated, truncated, info

    def _transition(self, act, s, before, cash, v0, end, dsr_a, dsr_b, ep_ret, ep_len):
        """One step of every env as a pure function of tensors (``torch.compile``-able):
        fills at bar s+1 (or the close of s), marks at the close of s+1, rewards."""
        tpl = self.template
        w = self._to_weights(act)
        f = s + 1
        if tpl.fill == "open":
            ref, trad = self._ref[f], self._trad[f]
        else:
            ref, trad = self._mark[s], self._trad[s]
        mark_s, mark_f = self._mark[s], self._mark[f]
        shares, cash, filled, price, comm, tax, slip_cost, blocked = self._rebalance(
            before, cash, w, ref, trad
        )
        borrow = torch.zeros_like(cash)
        if self.costs.borrow_rate > 0.0:
            borrow = (torch.where(shares < 0.0, -shares * mark_f, 0.0) * (self.costs.borrow_rate / 252.0)).sum(1)
            cash = cash - borrow
        value = cash + (shares * mark_f).sum(1)
        pnl = (before * (ref - mark_s) + shares * (mark_f - ref)).sum(1)
        cost = borrow + (comm + tax + slip_cost).sum(1)
        reward, dsr_a, dsr_b = self._reward(v0, value, dsr_a, dsr_b)
        terminated = value < tpl.ruin_floor
        truncated = (f >= end) & ~terminated
        obs = self._obs_of(f, shares, cash, value)
        return (
            obs, shares, cash, value, f, reward, terminated, truncated,
            cost, pnl, filled, price, blocked, dsr_a, dsr_b, ep_ret + reward, ep_len + 1,
        )

    def _rebalance(self, shares, cash, w, ref, trad):
        """Vectorised :func:`stockgym.envs.execution.rebalance` (same rules, same order)."""
        costs = self.costs
        v_ref = cash + (shares * ref).sum(1)
        vr = v_ref[:, None]
        desired = w * vr / ref
        buy_side = desired > shares
        price = torch.where(buy_side, ref * (1.0 + self._slip), ref * (1.0 - self._slip))
        target = w * vr / price
        if not self.template.fractional:
            target = torch.trunc(target)
        qty = target - shares
        order = (desired != shares) & (qty != 0.0) & (buy_side == (qty > 0.0))
        order &= (qty * ref).abs() > 1e-12 * vr.abs()
        blocked = order & ~trad
        order &= trad
        # sells first
        sell = order & (qty < 0.0)
        s_val = torch.where(sell, -qty * price, 0.0)
        s_comm = torch.where(sell, torch.clamp(costs.commission * s_val, min=costs.min_commission), 0.0)
        s_tax = costs.sell_tax * s_val
        if costs.min_commission > 0.0:
            ok = s_val - s_comm - s_tax >= 0.0
            sell &= ok
            s_val, s_comm, s_tax = s_val * ok, s_comm * ok, s_tax * ok
        cash = cash + (s_val - s_comm - s_tax).sum(1)
        # then buys, scaled by one common factor to fit in cash
        buy = order & (qty > 0.0)
        b_qty = torch.where(buy, qty, 0.0)
        b_qty, k = self._fit_buys(b_qty, price, cash, buy)
        b_val = b_qty * price
        b_comm = torch.where(b_qty > 0.0, torch.clamp(costs.commission * b_val, min=costs.min_commission), 0.0)
        cash = cash - (b_val + b_comm).sum(1)
        filled = torch.where(sell, qty, 0.0) + b_qty
        new_shares = shares + filled
        fill_price = torch.where(filled != 0.0, price, 0.0)
        slip_cost = (filled * (price - ref)).abs() * (filled != 0.0)
        return (new_shares, cash, filled, fill_price, s_comm + b_comm, s_tax, slip_cost, blocked)

    def _buy_need(self, qty, price):
        costs = self.costs
        val = qty * price
        comm = torch.where(qty > 0.0, torch.clamp(costs.commission * val, min=costs.min_commission), 0.0)
        return (val + comm).sum(1)

    def _fit_buys(self, qty, price, cash, buy):
        costs = self.costs
        frac = self.template.fractional
        need = self._buy_need(qty, price)
        over = need > cash
        gross = (qty * price).sum(1) * (1.0 + costs.commission)
        k = torch.where(over, cash.clamp(min=0.0) / torch.where(gross > 0, gross, 1.0) * _SAFE, 1.0)

        def sized(kk):
            q = qty * kk[:, None]
            return q if frac else torch.floor(q)

        scaled = torch.where(over[:, None], sized(k), qty)
        if costs.min_commission > 0.0:
            still = over & (self._buy_need(scaled, price) > cash)
            if bool(still.any()):
                lo, hi = torch.zeros_like(k), k.clone()
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    ok = self._buy_need(sized(mid), price) <= cash
                    lo = torch.where(ok, mid, lo)
                    hi = torch.where(ok, hi, mid)
                k = torch.where(still, lo, k)
                scaled = torch.where(still[:, None], sized(k), scaled)
        return scaled, k

    def _reward(self, v0, v1, dsr_a, dsr_b):
        tpl = self.template
        if tpl.reward_type == "log_return":
            return torch.log(v1.clamp(min=1e-12 * tpl.initial_cash) / v0), dsr_a, dsr_b
        ret = v1 / v0 - 1.0
        if tpl.reward_type == "return":
            return ret, dsr_a, dsr_b
        da, db = ret - dsr_a, ret * ret - dsr_b
        var = dsr_b - dsr_a * dsr_a
        safe = var > 1e-12
        num = dsr_b * da - 0.5 * dsr_a * db
        dsr = torch.where(safe, num / torch.where(safe, var, 1.0) ** 1.5, 0.0)
        return dsr, dsr_a + tpl.dsr_eta * da, dsr_b + tpl.dsr_eta * db

    # ------------------------------------------------------------ obs & info
    def _observe(self) -> torch.Tensor:
        if self.copy:
            return self._obs_fn(self._t, self._shares, self._cash, self._value)
        if self._out is None:
            self._out = torch.empty(self.num_envs, self._obs_dim, device=self.device)
        return self._obs_of(self._t, self._shares, self._cash, self._value, out=self._out)

    def _obs_of(self, t, shares, cash, value, out=None):
        """Observations as of the close of bar ``t`` (a new tensor unless ``out``)."""
        nf, a = self._nf, self._n_assets
        v = value[:, None]
        if self._windows is not None:
            obs = torch.index_select(self._windows, 0, t, out=out)
        else:
            idx = t[:, None] + self._win_offsets
            feats = self._flat[idx].reshape(self.num_envs, -1)
            obs = torch.empty(self.num_envs, self._obs_dim, device=self.device) if out is None else out
            obs[:, :nf] = feats
        obs[:, nf : nf + a] = (shares * self._mark[t]) / v
        obs[:, nf + a] = cash / value
        return obs

    def _info(self, cost, pnl, filled, price, blocked, info=None) -> dict[str, Any]:
        info = {} if info is None else info
        info |= {
            "portfolio_value": self._value,
            "cash": self._cash,
            "position": self._shares,
            "cost": cost,
            "pnl": pnl,
            "t": self._t,
        }
        if filled is not None:
            info.update(filled=filled, fill_price=price, not_tradable=blocked)
        return info

    def close_extras(self, **kwargs: Any) -> None:
        self._out = None

