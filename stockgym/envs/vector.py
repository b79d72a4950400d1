"""VectorStockTradingEnv: N trading envs stepped in one call with torch tensors.

Same market-time rules and accounting as :class:`StockTradingEnv` (docs/market-rules.md;
the single env is the reference it is tested against: with env i seeded ``seed + i`` and
the same actions, rewards, values, cash and positions agree to 1e-9 relative and the
observations' window features are equal), over ONE shared copy of the market data on
``device`` ("cpu", "cuda", "auto"). float64 accounting, float32 observations. The maths
of a step is in :mod:`stockgym.envs.vector_step`; ``compile=True`` runs it through
``torch.compile`` (:mod:`stockgym.envs.vector_compiled`).

API (Gymnasium 1.x ``VectorEnv``): ``num_envs``, ``single_observation_space``,
``single_action_space``, ``reset(seed=...)`` -> ``(obs, info)``, ``step(actions)`` ->
``(obs, rewards, terminated, truncated, info)``; all tensors on ``device``
(obs ``(N, D)`` float32, rewards ``(N,)`` float64, flags ``(N,)`` bool). Actions may be
tensors or numpy arrays: ``(N,)`` ints (``Discrete``), ``(N, A)`` ints
(``MultiDiscrete``) or ``(N, A)`` floats (``Box``). A step reads one small number back
to the host (did an episode end, was an action outside the space).

Autoreset: ``SAME_STEP`` (the only mode). When env i terminates or truncates, the step
returns the first observation of its next episode, and ``info["final_obs"]`` (an
``(N, D)`` tensor, rows valid where ``info["_final_obs"]``) holds the observation that
ended the episode, so agents can bootstrap truncated episodes; SB3's
``terminal_observation`` comes from it (see :mod:`stockgym.envs.sb3`).
``info["final_info"]`` holds the per-step info of that last step (the top-level ``info``
rows of ended envs already describe their new episode, as in Gymnasium's same-step
mode). Autoresets start episodes as a single env's ``reset()`` without options does (a
random start with ``episode_length``), also after an explicit
``reset(options={"start": ...})``. ``info["episode"] = {"r", "l"}`` (return and length,
tensors) with the ``info["_episode"]`` mask, as Gymnasium's ``RecordEpisodeStatistics``
reports them.

Per-step ``info`` (tensors): ``portfolio_value``, ``cash``, ``position`` (shares,
``(N, A)``), ``cost``, ``pnl``, ``filled`` (shares filled, signed, ``(N, A)``),
``fill_price`` (``(N, A)``, 0 where nothing filled), ``not_tradable`` (orders not filled
because the bar was halted, ``(N, A)`` bool), ``limit_locked`` (orders not filled on a
limit-locked bar) and ``capped`` (orders cut by the volume cap), ``t`` (bar index of the info date:
``env.dates[t]``). Observations are new tensors each step (with ``copy=False`` every
call returns the same buffer, overwritten by the next ``step``/``reset``); rewards,
flags and info tensors are never written by the env after they are returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from stockgym.core import resolve_device
from stockgym.envs.trading import StockTradingEnv
from stockgym.envs.vector_compiled import CompiledStep
from stockgym.envs.vector_step import (
    ANY_DONE,
    NEEDS_BISECTION,
    NOT_FINITE,
    OUT_OF_SPACE,
    MarketTensors,
    StepOut,
    StepSpec,
    VecState,
    obs_tail,
    restart,
    tick_tensors,
    transition,
)

STEP_INFO_KEYS = (
    "portfolio_value",
    "cash",
    "position",
    "cost",
    "pnl",
    "filled",
    "fill_price",
    "not_tradable",
    "limit_locked",
    "capped",
    "t",
)
RESET_INFO_KEYS = ("portfolio_value", "cash", "position", "cost", "pnl", "t")
STATE_FORMAT = "stockgym.vector_env.v2"


def _step_info(state: VecState, out: StepOut) -> dict[str, torch.Tensor]:
    return {
        "portfolio_value": state.value,
        "cash": state.cash,
        "position": state.shares,
        "cost": out.cost,
        "pnl": out.pnl,
        "filled": out.filled,
        "fill_price": out.fill_price,
        "not_tradable": out.not_tradable,
        "limit_locked": out.limit_locked,
        "capped": out.capped,
        "t": state.t,
    }


def _reset_info(state: VecState) -> dict[str, torch.Tensor]:
    zero = torch.zeros_like(state.cash)
    return {
        "portfolio_value": state.value,
        "cash": state.cash,
        "position": state.shares,
        "cost": zero,
        "pnl": zero,
        "t": state.t,
    }


class VectorStockTradingEnv(VectorEnv):
    """``num_envs`` copies of :class:`StockTradingEnv` in torch (see module docstring).

    ``prices`` and every keyword in ``env_kwargs`` mean exactly what they mean for
    :class:`StockTradingEnv` (one is built as the template and available as
    ``self.template``). ``render_mode`` and ``record_history`` are not supported.
    ``validate_actions=False`` skips the action checks (actions outside the space then
    give undefined results). ``compile=True`` compiles the step with ``torch.compile``
    on the first ``reset``/``step`` (a one-off 10-60 s, again for each new action
    dtype); the numbers are the same as without it (tested to 1e-9).
    ``host_checks`` (default: ``True`` on the CPU, ``False`` on CUDA): read the step's
    flag back to the host every step (to raise on a bad action at once, and to skip the
    autoreset when no episode ended). Without it a step never waits for the device:
    action checks are read by :meth:`check`, the autoreset runs every step, and random
    starts are drawn from a device generator seeded from ``seed`` (reproducible, but not
    the draws of N single envs: the equivalence to single envs then holds for given
    starts, e.g. ``episode_length=None`` or ``reset(options={"start": ...})``).
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
        host_checks: bool | None = None,
        **env_kwargs: Any,
    ) -> None:
        if not (isinstance(num_envs, (int, np.integer)) and num_envs >= 1):
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        for bad in ("render_mode", "record_history"):
            if env_kwargs.get(bad):
                raise ValueError(f"{bad} is not supported by the vector env")
        tpl = StockTradingEnv(prices, **env_kwargs)
        self.template = tpl
        self.device = resolve_device(device, kinds=None)
        self.num_envs = n = int(num_envs)
        self.copy = bool(copy)
        self.validate_actions = bool(validate_actions)
        self.compiled = bool(compile)
        self.host_checks = self.device.type != "cuda" if host_checks is None else bool(host_checks)
        self._bad: torch.Tensor | None = None  # action-check bits not read yet
        self._device_rng = torch.Generator(device=self.device)
        self.single_observation_space = tpl.observation_space
        self.single_action_space = tpl.action_space
        self.observation_space = batch_space(tpl.observation_space, n)
        self.action_space = batch_space(tpl.action_space, n)
        self.obs_layout = tpl.obs_layout
        self.dates = tpl.market.dates
        self.symbols = tpl.symbols
        self.costs = tpl.costs
        self.spec = StepSpec(
            costs=tpl.costs,
            fill=tpl.fill,
            fractional=tpl.fractional,
            reward=tpl.reward_type,
            dsr_eta=tpl.dsr_eta,
            initial_cash=tpl.initial_cash,
            ruin_floor=tpl.ruin_floor,
            action_type=tpl.action_type,
            positions=tpl.positions,
            low=-1.0 if tpl.allow_short else 0.0,
            limit=tpl.max_gross if tpl.allow_short else min(tpl.max_gross, 1.0),
            clip_actions=tpl.clip_actions,
            validate=self.validate_actions,
            tax_by_date=tpl.rules.tax_schedule is not None,
            price_limit=tpl.rules.price_limit,
            ticks=tpl.rules.ticks,
            capped=tpl.rules.max_participation is not None,
            impact_coef=tpl.rules.impact_coef if tpl.rules.impact == "sqrt" else 0.0,
        )
        self._setup_data(tpl)
        self._compiled = CompiledStep(self.spec, self.market) if self.compiled else None
        self._seeded = False
        self._started = False
        self._starts_buf: torch.Tensor | None = None
        self._out = None if self.copy else self._new_obs()

    def _setup_data(self, tpl: StockTradingEnv) -> None:
        dev, m = self.device, tpl.market
        n_bars, n_assets, n_feat = m.features.shape
        r = tpl.rule_arrays

        def f64(x) -> torch.Tensor:
            return torch.as_tensor(x, dtype=torch.float64, device=dev)

        first, edges, steps = tick_tensors()
        self.market = MarketTensors(
            ref_open=f64(m.ref_open),
            mark=f64(m.mark),
            tradable=torch.as_tensor(m.tradable, dtype=torch.bool, device=dev),
            positions=torch.tensor(tpl.positions or (), dtype=torch.float64, device=dev),
            sell_tax=f64(r.sell_tax),
            locked_up=torch.as_tensor(r.locked_up, device=dev),
            locked_down=torch.as_tensor(r.locked_down, device=dev),
            cap=f64(r.cap),
            volume=f64(r.volume),
            tick_table=torch.as_tensor(r.tick_table, dtype=torch.int64, device=dev),
            tick_first=f64(first),
            tick_edges=f64(edges),
            tick_steps=f64(steps),
        )
        w, row = tpl.window_size, n_assets * n_feat
        self._n_assets = n_assets
        self._nf = w * row  # window values at the front of each observation
        self._obs_dim = tpl.obs_layout.size
        # The features with W - 1 rows of zeros in front: the window of bar t (bars
        # t-W+1..t, flattened) is then one contiguous run, so ``_windows[t]`` (rows that
        # overlap in memory; nothing copied) is it, and one row gather from this table
        # writes the window part of every observation.
        padded = torch.zeros((w - 1 + n_bars) * row, dtype=torch.float32, device=dev)
        padded[(w - 1) * row :] = torch.as_tensor(m.features.reshape(-1), device=dev)
        self._windows = padded.as_strided((n_bars, self._nf), (row, 1))
        self._first = w - 1
        self._last = n_bars - 1
        self._rows = torch.arange(self.num_envs, device=dev)

    # ------------------------------------------------------------ observations
    def _new_obs(self) -> torch.Tensor:
        return torch.empty(self.num_envs, self._obs_dim, dtype=torch.float32, device=self.device)

    def _observe(self, t: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """Observations as of the close of bars ``t``: the windows (one row gather),
        then ``tail`` (weights and cash fraction); a new tensor, or the shared buffer."""
        obs = self._out if self._out is not None else self._new_obs()
        torch.index_select(self._windows, 0, t, out=obs.narrow(1, 0, self._nf))
        obs.narrow(1, self._nf, tail.shape[1]).copy_(tail)
        return obs

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The current state of every env (do not modify): ``t``, ``start``, ``end``,
        ``shares`` ``(N, A)``, ``cash``, ``value``, ``episode_return``,
        ``episode_length``."""
        s = self._state
        return {
            "t": s.t,
            "start": s.start,
            "end": s.end,
            "shares": s.shares,
            "cash": s.cash,
            "value": s.value,
            "episode_return": s.episode_return,
            "episode_length": s.t - s.start,
        }

    def state_dict(self) -> dict[str, Any]:
        """What a training checkpoint needs to continue these envs exactly: every env's
        state, its random-start generator and the pre-drawn starts. CPU tensors and plain
        values only (``torch.load(weights_only=True)`` reads it back);
        :meth:`load_state_dict` restores it on an env built the same way."""
        out: dict[str, Any] = {
            "format": STATE_FORMAT,
            "num_envs": self.num_envs,
            "obs_dim": self._obs_dim,
            "started": self._started,
            "seeded": self._seeded,
        }
        if self._seeded:
            out["rngs"] = [rng.bit_generator.state for rng in self._rngs]
            out["device_rng"] = self._device_rng.get_state()
            if self._starts_buf is not None:
                out["starts_buf"] = self._starts_buf.cpu()
                out["starts_ptr"] = self._starts_ptr.cpu()
        if self._started:
            out["state"] = {k: v.cpu() for k, v in self._state._asdict().items()}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (``ValueError`` when it is another env's)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a VectorStockTradingEnv state (state_dict())")
        for key, mine in (("num_envs", self.num_envs), ("obs_dim", self._obs_dim)):
            if state.get(key) != mine:
                raise ValueError(
                    f"the saved env state has {key} = {state.get(key)}, this env has "
                    f"{mine}: build the env the run was trained with"
                )
        if state["started"]:
            saved = state["state"]
            if set(saved) != set(VecState._fields) or tuple(saved["shares"].shape) != (
                self.num_envs,
                self._n_assets,
            ):
                raise ValueError("the saved env state does not fit this env (assets, fields)")
        dev = self.device
        self._seeded = bool(state["seeded"])
        if self._seeded:
            self._rngs = []
            for st in state["rngs"]:
                rng = np.random.Generator(getattr(np.random, st["bit_generator"])())
                rng.bit_generator.state = st
                self._rngs.append(rng)
            if "device_rng" in state:
                self._device_rng.set_state(state["device_rng"])
            buf = state.get("starts_buf")
            self._starts_buf = None if buf is None else buf.to(dev)
            if buf is not None:
                self._starts_ptr = state["starts_ptr"].to(dev)
        self._started = bool(state["started"])
        if self._started:
            self._state = VecState(**{k: v.to(dev) for k, v in state["state"].items()})

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env. ``seed``: env i gets ``seed + i`` (or ``seed[i]`` from a list),
        exactly like ``StockTradingEnv.reset(seed=...)``. ``options``: ``start``/``end``
        dates for every env, as the single env takes them."""
        n, dev = self.num_envs, self.device
        if seed is not None or not self._seeded:
            seeds = (
                seed
                if isinstance(seed, (list, tuple))
                else [None if seed is None else seed + i for i in range(n)]
            )
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} envs")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            self._seeded = True
            self._starts_buf = None  # draws from the old generators are void
            # without host checks, random starts come from one device generator
            first = seeds[0] if seeds[0] is not None else np.random.SeedSequence().entropy
            self._device_rng.manual_seed(int(first) % 2**63)
        self.check()
        tpl = self.template
        everyone = torch.ones(n, dtype=torch.bool, device=dev)
        if options:
            tpl.reset(options=options)  # validates the dates exactly as the single env does
            start = torch.full((n,), tpl._start, dtype=torch.int64, device=dev)
            end = torch.full((n,), tpl._end, dtype=torch.int64, device=dev)
        else:
            start, end = self._next_episode(everyone)
        # every env ended: restart gives each its first state (fields are distinct
        # tensors, as a step makes them, so a compiled restart sees one input pattern)
        blank = VecState(
            torch.zeros(n, dtype=torch.float64, device=dev),
            torch.zeros(n, self._n_assets, dtype=torch.float64, device=dev),
            *(torch.zeros(n, dtype=torch.float64, device=dev) for _ in range(4)),
            *(torch.zeros(n, dtype=torch.int64, device=dev) for _ in range(3)),
        )
        state, tail = self._restart(blank, everyone, start, end)
        self._state = state
        self._started = True
        return self._observe(state.t, tail), _reset_info(state)

    def _next_start(self) -> torch.Tensor:
        k = self._starts_buf.shape[1]
        nxt = self._starts_buf[self._rows, self._starts_ptr.clamp(max=k - 1)]
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
            rest = old[i, ptr[i] :]
            rest = rest[rest >= 0]
            if len(rest) == 0:
                rest = rng.integers(self._first, hi, size=k)
            buf[i, : len(rest)] = rest
        self._starts_buf = torch.as_tensor(buf, device=self.device)
        self._starts_ptr = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def _next_episode(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, end) bars of the next episode of every env, consuming a random start
        where ``mask`` is True, like a single env's ``reset()`` without options."""
        length = self.template.episode_length
        if length is None:
            first = torch.full((self.num_envs,), self._first, device=self.device)
            return first, torch.full_like(first, self._last)
        if not self.host_checks:  # drawn on the device: no host read of the buffer
            hi = self._last - length + 1
            n, dev = self.num_envs, self.device
            start = torch.randint(self._first, hi, (n,), generator=self._device_rng, device=dev)
            return start, start + length
        if self._starts_buf is None or bool((self._next_start() < 0).any()):
            self._refill_starts()
        start = self._next_start()
        self._starts_ptr = self._starts_ptr + mask.long()
        return start, start + length

    # ------------------------------------------------------------------- step
    def _transition(self, state: VecState, act: torch.Tensor, bisect: bool):
        """One eager step (see :func:`stockgym.envs.vector_step.transition`)."""
        return transition(state, act, self.market, self.spec, bisect)

    def _restart(self, state: VecState, done, start, end) -> tuple[VecState, torch.Tensor]:
        if self._compiled is not None:
            return self._compiled.restart(state, done, start, end)
        return restart(state, done, start, end, self.spec.initial_cash, self.market.mark)

    def step(self, actions: Any, hold: torch.Tensor | None = None):
        """One step of every env. ``hold`` (``(N,)`` bool, optional): envs that do not
        move this step (state, observation and episode unchanged, reward 0, not done;
        their actions are ignored) - how a next-step autoreset keeps an env on the first
        observation of its new episode for one step (:mod:`stockgym.envs.vector_numpy`)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        act = self._as_actions(actions)
        # without host checks, buy sizes under a minimum commission are always bisected
        # (there is no flag read to ask for it), which the compiled step leaves out
        bisect = not self.host_checks and self.spec.costs.min_commission > 0.0
        if self._compiled is not None and not bisect:
            state, out, flag = self._compiled.step(self._state, act)
        else:
            state, out, flag = self._transition(self._state, act, bisect=bisect)
        if self.host_checks:
            code = int(flag)
            if code & (OUT_OF_SPACE | NOT_FINITE):  # nothing was committed: state unchanged
                self._raise_bad_actions(code)
            if code & NEEDS_BISECTION:  # (rare) buy sizes under a minimum commission
                state, out, flag = self._transition(self._state, act, bisect=True)
                code = int(flag)
            ended = bool(code & ANY_DONE)
        else:  # nothing read back: the checks wait for check(), the autoreset always runs
            bad = flag & (OUT_OF_SPACE | NOT_FINITE)
            self._bad = bad if self._bad is None else self._bad | bad
            ended = True
        if hold is not None:
            state, out = self._held(hold.to(self.device, torch.bool), state, out)
        obs = self._observe(state.t, out.obs_tail)
        info = _step_info(state, out)
        if ended:  # a no-op for the envs that did not end
            obs, info, state = self._autoreset(obs, info, state, out)
        self._state = state
        return obs, out.reward, out.terminated, out.truncated, info

    def check(self) -> None:
        """Raise ``ValueError`` if an action since the last check was outside the action
        space (one host read). Without host checks (``host_checks=False``, the default
        on CUDA) this is where a bad action is reported: the envs have already stepped
        with it (clipped, or NaN), so rerun with ``host_checks=True`` to stop at the
        step. ``reset`` and the agents (once per update) call it."""
        if self._bad is not None:
            code, self._bad = int(self._bad), None
            if code:
                self._raise_bad_actions(code)

    def _held(self, keep: torch.Tensor, state: VecState, out: StepOut) -> tuple[VecState, StepOut]:
        """``state`` and ``out`` with the envs in ``keep`` as they were before the step."""

        def pick(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
            return torch.where(keep.view(-1, *([1] * (after.dim() - 1))), before, after)

        state = VecState(*(pick(b, a) for b, a in zip(self._state, state, strict=True)))
        tail = obs_tail(state.shares, state.cash, state.value, self.market.mark[state.t])
        out = out._replace(
            reward=torch.where(keep, 0.0, out.reward),
            terminated=out.terminated & ~keep,
            truncated=out.truncated & ~keep,
            cost=torch.where(keep, 0.0, out.cost),
            pnl=torch.where(keep, 0.0, out.pnl),
            filled=pick(torch.zeros_like(out.filled), out.filled),
            fill_price=pick(torch.zeros_like(out.fill_price), out.fill_price),
            not_tradable=out.not_tradable & ~keep[:, None],
            limit_locked=out.limit_locked & ~keep[:, None],
            capped=out.capped & ~keep[:, None],
            obs_tail=pick(tail, out.obs_tail),
        )
        return state, out

    def _autoreset(self, obs, final_info, state: VecState, out: StepOut):
        """Same-step autoreset of the envs whose episode just ended."""
        done = out.terminated | out.truncated
        final_obs = obs.clone() if self._out is not None else obs
        episode = {
            "r": torch.where(done, state.episode_return, 0.0),
            "l": torch.where(done, state.t - state.start, 0),
        }
        start, end = self._next_episode(done)
        state, tail = self._restart(state, done, start, end)
        obs = self._observe(state.t, tail)
        # Same-step convention: rows of ended envs describe their new episode (no cost,
        # pnl or fills yet); the step that ended them is in info["final_info"].
        kept = ~done[:, None]
        info = _step_info(
            state,
            out._replace(
                cost=torch.where(done, 0.0, out.cost),
                pnl=torch.where(done, 0.0, out.pnl),
                filled=torch.where(kept, out.filled, 0.0),
                fill_price=torch.where(kept, out.fill_price, 0.0),
                not_tradable=out.not_tradable & kept,
                limit_locked=out.limit_locked & kept,
                capped=out.capped & kept,
            ),
        )
        info.update(
            final_obs=final_obs,
            _final_obs=done,
            final_info=final_info,
            episode=episode,
            _episode=done,
        )
        return obs, info, state

    # ---------------------------------------------------------------- actions
    def _as_actions(self, actions: Any) -> torch.Tensor:
        """Actions as an ``(N, A)`` tensor on the device; checks what needs no device
        read (count, integer dtype for discrete spaces)."""
        n, a = self.num_envs, self._n_assets
        act = actions if isinstance(actions, torch.Tensor) else torch.as_tensor(actions)
        if act.device != self.device:
            act = act.to(self.device)
        if act.numel() != n * a:
            raise ValueError(
                f"expected {n * a} action values ({n} envs x {a} assets), got {act.numel()}"
            )
        if self.spec.action_type == "discrete" and (
            act.dtype.is_floating_point or act.dtype.is_complex or act.dtype == torch.bool
        ):
            raise ValueError(f"discrete actions must be integers, got dtype {act.dtype}")
        return act.reshape(n, a)

    def _raise_bad_actions(self, code: int) -> None:
        if self.spec.action_type == "discrete":
            raise ValueError(f"actions outside the action space {self.single_action_space}")
        if code & NOT_FINITE:
            raise ValueError("actions contain NaN or inf")
        raise ValueError(
            f"actions outside [{self.spec.low}, 1]; clip them or pass clip_actions=True"
        )

    def close_extras(self, **kwargs: Any) -> None:
        self._out = None
