"""VectorStockTradingEnv: N trading envs stepped in one call with torch tensors.

Same market-time rules and accounting as :class:`StockTradingEnv` (the reference it is
tested against: with env i seeded ``seed + i`` and the same actions, rewards, values,
cash and positions agree to 1e-9 relative and observations are equal), over ONE shared
copy of the market data on ``device`` ("cpu", "cuda", "auto"). float64 accounting,
float32 observations; nothing is copied to the host during a step except one small
number (did an episode end, was an action outside the space), which on CUDA is one
device-to-host read per step.

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
the observation into their own rollout storage anyway). On the CPU, the memory of an
observation that nothing references any more (no tensor, view, numpy array or DLPack
capsule of it) is reused for a later one (a pool of at most ``_POOL_SIZE`` buffers),
as CUDA's caching allocator does: large fresh blocks cost page faults every step.
Rewards, flags and info tensors are never changed by the env after they are returned
(some are views into per-step tensors that the env does not write again).

Per-step ``info`` (tensors): ``portfolio_value``, ``cash``, ``position`` (shares,
``(N, A)``), ``cost``, ``pnl``, ``filled`` (shares filled, signed, ``(N, A)``),
``fill_price`` (``(N, A)``, 0 where nothing filled), ``not_tradable`` (orders not
filled because the bar was halted, ``(N, A)`` bool), ``t`` (bar index of
``info`` date: ``env.dates[t]``). ``info`` is a :class:`StepInfo`: a ``dict`` with all
these keys that builds each tensor (a view into the step's packed results) on first
access, because building them all every step costs more than a whole step for small N.

How it is fast: the state of all envs lives in a few field-major tensors (a float64
one with one row of N values per field, the bar index ``t``, the episode bounds), and
a step is one pure function of them. ``compile=True`` traces that function once into
an aten FX graph and compiles it with inductor (``compile_fx_inner``) into one fused
C++ (or Triton) kernel called directly, without ``torch.compile``'s guards (~25 us
less per call); action validation and the "did any episode end" test run inside it,
and the restart of ended episodes is a second compiled function. Short observations
(<= 64 values) are written by the kernel; longer ones are gathered by aten (one row
copy per env from the feature table, see ``_setup_data``) and the kernel writes only
their last A + 1 values. With several assets, the prices and flags of the fill bar
are gathered before the kernel too (one aten row copy, transposed), because inductor
would redo that gather in each of its loops. A compiled step that needs the
bisection of buy sizes under a minimum commission is redone eagerly (a flag bit).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from stockgym.envs.execution import _SAFE
from stockgym.envs.trading import StockTradingEnv

# Short observations written by the compiled step come from a table of precomputed
# windows (one row per bar), built when it fits in this many bytes; otherwise, and for
# longer observations, windows are gathered from the feature table (see _setup_data).
_WINDOW_CACHE_BYTES = 256 * 2**20
# A compiled step writes whole observations of at most this many values itself; longer
# ones are gathered by aten (whole-row copies; inductor's loop over the columns costs
# more than the extra call from there on: measured crossover between 32 and 152).
_OBS_IN_KERNEL_MAX = 64

# copy=True on the CPU: at most this many observation buffers are kept for reuse (a
# caller that holds the previous observation while stepping needs two; an autoreset's
# final_obs one more)
_POOL_SIZE = 4


def _storage_use_count(t: torch.Tensor) -> int:
    """How many tensors (and other holders, such as DLPack capsules) reference the
    storage of ``t``, ``t`` included."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata) - 1  # (- the temporary)


# None where this torch lacks the (internal) count: then no buffers are reused
_use_count: Callable[[torch.Tensor], int] | None = (
    _storage_use_count if hasattr(torch._C, "_storage_Use_Count") else None
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
    "t",
)
RESET_INFO_KEYS = ("portfolio_value", "cash", "position", "cost", "pnl", "t")

# bits of the flag a step returns (_EAGER: a compiled step met a case it leaves to the
# eager code, the bisection of buy sizes under a minimum commission)
_ANY_DONE, _OUT_OF_SPACE, _NOT_FINITE, _EAGER = 1, 2, 4, 8


class _Layout:
    """Rows of the packed per-step tensors (field-major: row r holds one field of all N
    envs, so every field is a contiguous ``(N,)`` view).

    ``X`` (float64): shares (A rows), cash, value, episode return, [dsr_a, dsr_b], then
    this step's cost, pnl, filled (A rows), fill_price (A rows).
    ``F`` (uint8 0/1, returned as bool views): terminated, truncated, not_tradable (A).
    Besides: ``t`` (N,) int64, the bar of the observation; ``SE`` (2, N) int64, the
    first and last bar of each env's episode (the episode length is ``t - start``).
    """

    def __init__(self, n_assets: int, dsr: bool) -> None:
        a = n_assets
        self.n_assets = a
        self.shares = slice(0, a)
        self.cash, self.value, self.ep_return = a, a + 1, a + 2
        r = a + 3
        self.dsr_a = self.dsr_b = None
        if dsr:
            self.dsr_a, self.dsr_b = r, r + 1
            r += 2
        self.cost, self.pnl = r, r + 1
        self.filled = slice(r + 2, r + 2 + a)
        self.fill_price = slice(r + 2 + a, r + 2 + 2 * a)
        self.n_rows = r + 2 + 2 * a
        self.terminated, self.truncated = 0, 1
        self.not_tradable = slice(2, 2 + a)
        self.n_flags = 2 + a

        def per_asset(x: torch.Tensor) -> torch.Tensor:  # (A, N) rows -> (N, A)
            return x.T if a == 1 else x.T.contiguous()

        self.makers: dict[str, Callable[..., torch.Tensor]] = {
            "portfolio_value": lambda X, t, F: X[self.value],
            "cash": lambda X, t, F: X[self.cash],
            "position": lambda X, t, F: per_asset(X[self.shares]),
            "cost": lambda X, t, F: X[self.cost],
            "pnl": lambda X, t, F: X[self.pnl],
            "filled": lambda X, t, F: per_asset(X[self.filled]),
            "fill_price": lambda X, t, F: per_asset(X[self.fill_price]),
            "not_tradable": lambda X, t, F: per_asset(F[self.not_tradable]).view(torch.bool),
            "t": lambda X, t, F: t,
        }


class StepInfo(dict):
    """The ``info`` dict of a vector step: a real ``dict`` (Gymnasium wrappers check
    ``isinstance(info, dict)``) whose per-step tensor fields are built on first access
    from the step's packed tensors, then stored like any other entry.

    Every key is present from the start (``in``, ``len``, iteration, ``keys()``,
    ``get``, ``items()``, ``{**info}``, ``dict(info)`` and pickling see them all);
    setting or deleting a key works as on a dict. Built values are views into tensors
    that the env never writes again, so they stay valid after later steps.
    """

    __slots__ = ("_layout", "_src", "_pending")

    def __init__(self, layout: _Layout, X: torch.Tensor, t: torch.Tensor, F: torch.Tensor,
                 keys: tuple[str, ...] = STEP_INFO_KEYS) -> None:
        super().__init__()
        self._layout = layout
        self._src = (X, t, F)
        self._pending = keys

    # -- building
    def _build(self, key: str) -> Any:
        value = self._layout.makers[key](*self._src)
        dict.__setitem__(self, key, value)
        self._pending = tuple(k for k in self._pending if k != key)
        return value

    def _build_all(self) -> None:
        if self._pending:
            for key in self._pending:
                dict.__setitem__(self, key, self._layout.makers[key](*self._src))
            self._pending = ()

    # -- reads
    def __getitem__(self, key: Any) -> Any:
        if key in self._pending:
            return self._build(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self._pending:
            return self._build(key)
        return dict.get(self, key, default)

    def __contains__(self, key: Any) -> bool:
        return key in self._pending or dict.__contains__(self, key)

    def __len__(self) -> int:
        return dict.__len__(self) + len(self._pending)

    def __iter__(self) -> Iterator[Any]:
        self._build_all()
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[Any]:
        self._build_all()
        return dict.__reversed__(self)

    def keys(self):  # type: ignore[override]
        self._build_all()
        return dict.keys(self)

    def values(self):  # type: ignore[override]
        self._build_all()
        return dict.values(self)

    def items(self):  # type: ignore[override]
        self._build_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        self._build_all()
        return dict(dict.items(self))

    def __repr__(self) -> str:
        self._build_all()
        return dict.__repr__(self)

    def __eq__(self, other: object) -> bool:
        self._build_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict[str, Any]:
        out = self.copy()
        out.update(other)
        return out

    def __ror__(self, other: Any) -> dict[str, Any]:
        out = dict(other)
        out.update(self.copy())
        return out

    def __reduce__(self) -> tuple:
        return (dict, (self.copy(),))

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return self.__reduce__()

    # -- writes
    def _forget(self, key: Any) -> None:
        if key in self._pending:
            self._pending = tuple(k for k in self._pending if k != key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._forget(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        if key in self._pending:
            self._forget(key)
            return
        dict.__delitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> StepInfo:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    _MISSING = object()

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        if key in self._pending:
            value = self._build(key)
            dict.__delitem__(self, key)
            return value
        if default is StepInfo._MISSING:
            return dict.pop(self, key)
        return dict.pop(self, key, default)

    def popitem(self) -> tuple[Any, Any]:
        self._build_all()
        return dict.popitem(self)

    def clear(self) -> None:
        self._pending = ()
        dict.clear(self)


class VectorStockTradingEnv(VectorEnv):
    """``num_envs`` copies of :class:`StockTradingEnv` in torch (see module docstring).

    ``prices`` and every keyword in ``env_kwargs`` mean exactly what they mean for
    :class:`StockTradingEnv` (one is built as the template and available as
    ``self.template``). ``render_mode`` and ``record_history`` are not supported.
    ``validate_actions=False`` skips the action checks (actions outside the space then
    give undefined results). ``compile=True`` compiles the step into one fused kernel
    on the first ``reset``/``step`` (a one-off ~10-60 s, again for each new action
    dtype); the numbers are the same as without it (tested to 1e-9).
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
        from stockgym.core import resolve_device  # the one device check

        self.device = resolve_device(device, kinds=None)
        self.num_envs = int(num_envs)
        self.copy = bool(copy)
        self.validate_actions = bool(validate_actions)
        self.compiled = bool(compile)
        self.single_observation_space = tpl.observation_space
        self.single_action_space = tpl.action_space
        self.observation_space = batch_space(tpl.observation_space, self.num_envs)
        self.action_space = batch_space(tpl.action_space, self.num_envs)
        self.obs_layout = tpl.obs_layout
        self.dates = tpl.market.dates
        self.symbols = tpl.symbols
        self.costs = tpl.costs
        self._L = _Layout(tpl.obs_layout.n_assets, tpl.reward_type == "differential_sharpe")
        self._setup_data(tpl)
        self._tracing = False  # True while the step is traced for compilation
        self._fns: dict[tuple, Callable] = {}  # compiled functions by name and dtype
        self._seeded = False
        self._started = False
        self._starts_buf: torch.Tensor | None = None
        self._out = None if self.copy else self._new_obs_buffer()
        # observation buffers reused once nothing references them (see _fresh_obs)
        self._pool: list[torch.Tensor] | None = (
            [] if self.copy and self.device.type == "cpu" and _use_count is not None else None
        )
        # the compiled step writes whole observations exactly where _setup_data built
        # their precomputed rows
        self._obs_in_kernel = self._windows is not None

    # ------------------------------------------------------------------ setup
    def _setup_data(self, tpl: StockTradingEnv) -> None:
        dev, f64, n = self.device, torch.float64, self.num_envs
        m = tpl.market
        n_bars, n_assets, n_feat = m.features.shape
        one = n_assets == 1  # one asset: per-asset quantities are (N,) vectors, no sums
        a = n_assets
        # Per-asset quantities are (A, N) tensors in the step (rows of assets, like the
        # packed state; (N,) with one asset), so the step reads, at the fill bar
        # f = s + 1, a (fields x A, N) table: the open (reference price, fill="open"),
        # the close (mark), the previous close (mark at s) and the tradable flags (0/1)
        # of f (fill="open") or of s (fill="close"), the fields the step uses.
        mark = m.mark.astype(np.float64)
        trad = m.tradable.astype(np.float64)
        prev = lambda x: np.concatenate([x[:1], x[:-1]])  # noqa: E731 - row t holds t-1
        fields = {"ref": m.ref_open, "mark": mark, "mark_prev": prev(mark), "trad": trad,
                  "trad_prev": prev(trad)}
        used = ["mark", "mark_prev"] + (["ref", "trad"] if tpl.fill == "open" else ["trad_prev"])
        bars = np.concatenate([fields[k] for k in used], axis=1)  # (n_bars, fields x A)
        # One asset: a (field, bar) table whose columns the compiled step gathers itself.
        # Many assets: a (bar, field x A) table whose rows step() gathers with one aten
        # row copy before the compiled step (``_pre_gather``): inlined into the step,
        # the gather is redone in each of its loops over (asset, env) (~half its time
        # at 30 assets).
        self._pre_gather = not one
        self._bars = torch.as_tensor(
            np.ascontiguousarray(bars if self._pre_gather else bars.T), dtype=f64, device=dev
        )
        rows = {k: slice(i * a, (i + 1) * a) for i, k in enumerate(used)}
        if one:  # plain row indices: per-asset quantities are (N,) vectors
            rows = {k: r.start for k, r in rows.items()}
        self._r_ref, self._r_mark, self._r_mark_prev, self._r_trad, self._r_trad_prev = (
            rows.get(k) for k in ("ref", "mark", "mark_prev", "trad", "trad_prev")
        )
        self._mark = torch.as_tensor(np.ascontiguousarray(mark[:, 0] if one else mark.T), device=dev)
        w = tpl.window_size
        af = n_assets * n_feat
        self._n_assets = n_assets
        self._nf = w * af
        self._obs_dim = self._nf + n_assets + 1
        # The observation windows straight from the (bar, asset x feature) table: with
        # W - 1 rows of zeros in front, the window of bar t (bars t-W+1..t, flattened) is
        # one contiguous run of it, so ``_win_view[t]`` (rows that overlap in memory;
        # nothing copied) is that window. One aten row gather from it writes the first
        # nf values of every observation, reading a table W times smaller than the
        # precomputed windows (it stays in the caches: at 30 assets 1.5 MB, not 45 MB).
        padded = torch.zeros((w - 1 + n_bars) * af, dtype=torch.float32, device=dev)
        padded[(w - 1) * af :] = torch.as_tensor(m.features.reshape(-1), device=dev)
        self._win_view = padded.as_strided((n_bars, self._nf), (af, 1))
        self._windows = None
        if (
            self.compiled
            and self._obs_dim <= _OBS_IN_KERNEL_MAX
            and n_bars * self._obs_dim * 4 <= _WINDOW_CACHE_BYTES
        ):
            # short observations are written whole by the compiled step, from these
            # precomputed rows: windows[t] = window of bar t, plus A+1 slots for the
            # weights and cash fraction
            win = torch.zeros(n_bars, self._obs_dim, dtype=torch.float32, device=dev)
            win[w - 1 :, : self._nf] = self._win_view[w - 1 :]
            self._windows = win
        limit = tpl.max_gross if tpl.allow_short else min(tpl.max_gross, 1.0)
        self._limit = limit
        if tpl.action_type == "discrete":
            self._positions = torch.tensor(tpl.positions, dtype=f64, device=dev)
            self._position_list = tuple(float(p) for p in tpl.positions)
            # one asset: |w| <= max |position|, so the budget scaling may be a no-op
            self._scale_weights = not one or max(abs(p) for p in tpl.positions) > limit
        else:
            self._scale_weights = not one or limit < 1.0
        self._slip = self.costs.slippage_bps * 1e-4
        self._first = w - 1
        self._last = n_bars - 1
        L = self._L
        col = torch.zeros(L.n_rows, 1, dtype=f64, device=dev)
        col[L.cash] = col[L.value] = tpl.initial_cash
        self._reset_col = col  # the X column of an env that starts an episode
        self._first_t = torch.full((n,), self._first, dtype=torch.int64, device=dev)
        self._last_t = torch.full((n,), self._last, dtype=torch.int64, device=dev)
        self._rows = torch.arange(n, device=dev)

    def _bar_at(self, f: torch.Tensor) -> torch.Tensor:
        """The bar table at bars ``f``: a ``(fields x A, N)`` tensor (see _setup_data)."""
        if self._pre_gather:
            return torch.index_select(self._bars, 0, f).T.contiguous()
        return torch.index_select(self._bars, 1, f)

    def _new_obs_buffer(self) -> torch.Tensor:
        return torch.empty(self.num_envs, self._obs_dim, dtype=torch.float32, device=self.device)

    def _fresh_obs(self) -> torch.Tensor:
        """A new ``(N, D)`` observation tensor (``copy=True``), in the memory of an
        earlier one that nothing references any more where there is one.

        The CPU allocator returns large blocks to the OS and page-faults them in again
        on the next step (measured at 30 assets and N = 1,024: 18.5 MB, ~2,400 faults
        and about as long as the gather itself, every step); CUDA's caching allocator
        already reuses blocks.
        So on the CPU the env keeps up to ``_POOL_SIZE`` buffers and hands out aliases
        (``detach()``) of them; a buffer is reused only when its storage is referenced
        by the pool alone: no returned observation, view, numpy array or DLPack
        capsule of it is alive. What a caller holds is never written again."""
        pool = self._pool
        if pool is None:
            return self._new_obs_buffer()
        for buf in pool:
            if _use_count(buf) == 1:
                return buf.detach()
        buf = self._new_obs_buffer()
        if len(pool) < _POOL_SIZE:
            pool.append(buf)
            return buf.detach()
        return buf

    # shape helpers: per-asset quantities are (A, N) (rows of assets); with one asset
    # they are (N,) and sums over assets are no-ops
    def _col(self, v: torch.Tensor) -> torch.Tensor:
        """A per-env (N,) quantity broadcast against per-asset ones."""
        return v if self._n_assets == 1 else v[None, :]

    def _rs(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over assets."""
        return x if self._n_assets == 1 else x.sum(0)

    def _shares_of(self, X: torch.Tensor) -> torch.Tensor:
        return X[0] if self._n_assets == 1 else X[self._L.shares]

    def _pack(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Rows (N,) and row blocks (A, N) into one field-major tensor."""
        if self._n_assets == 1:
            return torch.stack(parts)
        return torch.cat([p[None] if p.dim() == 1 else p for p in parts])

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The current state of every env (views; do not modify): ``t``, ``start``,
        ``end``, ``shares`` ``(N, A)``, ``cash``, ``value``, ``episode_return``,
        ``episode_length``."""
        L, X = self._L, self._X
        return {
            "t": self._t,
            "start": self._SE[0],
            "end": self._SE[1],
            "shares": X[L.shares].T,
            "cash": X[L.cash],
            "value": X[L.value],
            "episode_return": X[L.ep_return],
            "episode_length": self._t - self._SE[0],
        }

    def state_dict(self) -> dict[str, Any]:
        """What a training checkpoint needs to continue these envs exactly: every env's
        state table, bar, episode bounds, its random-start generator and the pre-drawn
        starts. CPU tensors and plain values only (``torch.load(weights_only=True)``
        reads it back); :meth:`load_state_dict` restores it on an env built the same way."""
        out: dict[str, Any] = {"format": "stockgym.vector_env", "num_envs": self.num_envs,
                               "obs_dim": self._obs_dim, "started": self._started,
                               "seeded": self._seeded}
        if self._seeded:
            out["rngs"] = [rng.bit_generator.state for rng in self._rngs]
            if self._starts_buf is not None:
                out["starts_buf"] = self._starts_buf.cpu()
                out["starts_ptr"] = self._starts_ptr.cpu()
        if self._started:
            out.update(X=self._X.cpu(), t=self._t.cpu(), SE=self._SE.cpu())
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (``ValueError`` when it is another env's)."""
        if not isinstance(state, dict) or state.get("format") != "stockgym.vector_env":
            raise ValueError("not a VectorStockTradingEnv state (state_dict())")
        for key, mine in (("num_envs", self.num_envs), ("obs_dim", self._obs_dim)):
            if state.get(key) != mine:
                raise ValueError(f"the saved env state has {key} = {state.get(key)}, this env "
                                 f"has {mine}: build the env the run was trained with")
        if state["started"] and tuple(state["X"].shape) != (self._L.n_rows, self.num_envs):
            raise ValueError(f"the saved env state table has shape {tuple(state['X'].shape)}, "
                             f"this env's is {(self._L.n_rows, self.num_envs)}")
        dev = self.device
        self._seeded = bool(state["seeded"])
        if self._seeded:
            self._rngs = []
            for st in state["rngs"]:
                rng = np.random.Generator(getattr(np.random, st["bit_generator"])())
                rng.bit_generator.state = st
                self._rngs.append(rng)
            buf = state.get("starts_buf")
            self._starts_buf = None if buf is None else buf.to(dev)
            if buf is not None:
                self._starts_ptr = state["starts_ptr"].to(dev)
        self._started = bool(state["started"])
        if self._started:
            self._X, self._t, self._SE = state["X"].to(dev), state["t"].to(dev), state["SE"].to(dev)

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
        L, dev = self._L, self.device
        if options:
            tpl.reset(options=options)  # validates the dates exactly as the single env does
            start = torch.full((n,), tpl._start, dtype=torch.int64, device=dev)
            end = torch.full((n,), tpl._end, dtype=torch.int64, device=dev)
        else:
            start, end = self._next_episode(torch.ones(n, dtype=torch.bool, device=dev))
        X = torch.zeros(L.n_rows, n, dtype=torch.float64, device=dev)
        t = torch.zeros(n, dtype=torch.int64, device=dev)
        SE = torch.zeros(2, n, dtype=torch.int64, device=dev)
        F = torch.zeros(L.n_flags, n, dtype=torch.uint8, device=dev)
        F[L.terminated] = 1  # marks every env as ended: _restart starts them all
        part, X, t, F, SE = self._run("restart", self._restart, X, t, F, SE, start, end)
        self._X, self._t, self._SE = X, t, SE
        self._started = True
        return self._finish_obs(t, part), StepInfo(L, X, t, F, RESET_INFO_KEYS)

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
            rest = old[i, ptr[i]:]
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
            return self._first_t, self._last_t
        if self._starts_buf is None or bool((self._next_start() < 0).any()):
            self._refill_starts()
        start = self._next_start()
        self._starts_ptr = self._starts_ptr + mask.long()
        return start, start + length

    def _restart(self, X, t, F, SE, start, end):
        """Start a new episode in the envs that ended (terminated or truncated in F; all
        of them at ``reset``): their columns of X become the initial state (and a step
        with no cost, pnl or fills), t and SE get (start, end); F is cleared.
        Returns (obs part, X, t, F, SE); see ``_obs_part``."""
        L = self._L
        done = (F[L.terminated] + F[L.truncated]) != 0
        X = torch.where(done, self._reset_col, X)
        t = torch.where(done, start, t)
        SE = torch.where(done, torch.stack([start, end]), SE)
        F = torch.where(done, 0, F)
        part = self._obs_part(t, self._shares_of(X), X[L.cash], X[L.value])
        return part, X, t, F, SE

    # ---------------------------------------------------------------- actions
    def _as_actions(self, actions: Any) -> torch.Tensor:
        """Actions as a contiguous ``(N,)`` tensor (one asset; no copy when they already
        are one) or an ``(A, N)`` one (rows of assets, as the step computes) on the
        device; checks what needs no device read."""
        n, a = self.num_envs, self._n_assets
        act = actions if isinstance(actions, torch.Tensor) else torch.as_tensor(actions)
        if act.device != self.device:
            act = act.to(self.device)
        if act.numel() != n * a:
            raise ValueError(f"expected {n * a} action values ({n} envs x {a} assets), got {act.numel()}")
        if self.template.action_type == "discrete" and (
            act.dtype.is_floating_point or act.dtype.is_complex or act.dtype == torch.bool
        ):
            raise ValueError(f"discrete actions must be integers, got dtype {act.dtype}")
        if a == 1:
            return act.reshape(n).contiguous()
        return act.reshape(n, a).T.contiguous()

    def _raise_bad_actions(self, code: int) -> None:
        tpl = self.template
        if tpl.action_type == "discrete":
            raise ValueError(f"actions outside the action space {self.single_action_space}")
        if code & _NOT_FINITE:
            raise ValueError("actions contain NaN or inf")
        lo = -1.0 if tpl.allow_short else 0.0
        raise ValueError(f"actions outside [{lo}, 1]; clip them or pass clip_actions=True")

    # Masks: bool tensors in eager mode; float64 0/1 tensors while fusing, because
    # inductor's CPU code converts bool masks between vector widths element by element
    # (a third of the kernel's time). Both give the same selections.
    def _m(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.to(torch.float64) if self._fusing() else cond

    def _and(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * y if self._fusing() else x & y

    def _or(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, y) if self._fusing() else x | y

    def _not(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x if self._fusing() else ~x

    def _where(self, mask: torch.Tensor, x: Any, y: Any) -> torch.Tensor:
        return torch.where(mask != 0.0 if self._fusing() else mask, x, y)

    def _any_bit(self, mask: torch.Tensor, bit: int) -> torch.Tensor:
        """``bit`` if any of ``mask`` is set, else 0 (a 0-dim tensor)."""
        if self._fusing():
            return (mask * float(bit)).amax()
        return mask.any() * bit

    def _weights(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target weights, as ``StockTradingEnv.action_to_weights`` makes them, and the
        action-check bits (a 0-dim tensor, or None without validation)."""
        tpl = self.template
        code = None
        if tpl.action_type == "discrete":
            idx = act.long()
            k = len(tpl.positions)
            if self.validate_actions:
                code = self._any_bit(self._or(self._m(idx < 0), self._m(idx >= k)), _OUT_OF_SPACE)
                idx = idx.clamp(0, k - 1)
            if self._fusing():  # a few selects instead of a gather
                pos = self._position_list
                w = torch.full(idx.shape, pos[0], dtype=torch.float64, device=idx.device)
                for j in range(1, k):
                    w = torch.where(idx == j, pos[j], w)
            else:
                w = self._positions.take(idx)
        else:
            a = act.to(torch.float64)
            lo = -1.0 if tpl.allow_short else 0.0
            if self.validate_actions:
                code = self._any_bit(self._not(self._m(torch.isfinite(a))), _NOT_FINITE)
                if not tpl.clip_actions:
                    out = self._or(self._m(a < lo - 1e-6), self._m(a > 1.0 + 1e-6))
                    code = code + self._any_bit(out, _OUT_OF_SPACE)
            w = a.clamp(lo, 1.0)
        if self._scale_weights:
            gross = self._col(self._rs(w.abs()))
            w = torch.where(gross > self._limit, w * (self._limit / gross), w)
        return w, code

    # ------------------------------------------------------------ compilation
    def _fusing(self) -> bool:
        """True while the step is being traced or compiled into one kernel."""
        return self._tracing or torch.compiler.is_compiling()

    def _compile(self, fn: Callable, args: tuple) -> Callable:
        """``fn`` (a pure function of tensors) compiled for arguments like ``args``.

        Traced to an aten FX graph (``make_fx`` with inductor's decompositions, after
        ``functionalize``) and compiled by ``compile_fx_inner``: calling the result
        costs ~10 us less than ``torch._inductor.standalone_compile``'s wrappers and
        ~30 us less than ``torch.compile``'s guards, a good part of a step. Falls back
        to ``torch.compile`` where these (internal) entry points are missing or fail."""
        try:
            from torch._inductor.compile_fx import compile_fx_inner
            from torch._inductor.decomposition import select_decomp_table
            from torch.fx.experimental.proxy_tensor import make_fx

            self._tracing = True
            try:
                graph = make_fx(
                    torch.func.functionalize(fn, remove="mutations"),
                    decomposition_table=select_decomp_table(),
                )(*args)
            finally:
                self._tracing = False
            # The bar indices are in range by construction (first <= t < last on a
            # step), so the generated code need not bounds-check every gather.
            from torch._inductor import config as inductor_config

            with inductor_config.patch(assert_indirect_indexing=False):
                inner = compile_fx_inner(graph, list(args))

            inner(list(args))  # fail here, not in the middle of a step
            # After its first call, the compiled graph's wrapper only adds profiler and
            # autotune-cache bookkeeping around the generated ``call`` (~5-10 us a step)
            run = getattr(inner, "current_callable", None) or inner

            def compiled(*a):
                return tuple(run(list(a)))

            return compiled
        except Exception as exc:  # noqa: BLE001 - any failure: the slower, safe path
            warnings.warn(
                f"compiling the vector env step with inductor failed "
                f"({type(exc).__name__}: {exc}); using torch.compile",
                RuntimeWarning,
                stacklevel=3,
            )
            return torch.compile(fn, dynamic=False)

    def _run(self, name: str, fn: Callable, *args: torch.Tensor) -> tuple:
        """``fn(*args)`` eagerly, or its compiled version."""
        if not self.compiled:
            return fn(*args)
        key = (name, args[0].dtype)  # (only the action dtype can vary)
        compiled = self._fns.get(key)
        if compiled is None:
            compiled = self._fns[key] = self._compile(lambda *a: fn(*a), args)
        return compiled(*args)

    # ------------------------------------------------------------------- step
    def step(self, actions: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        act = self._as_actions(actions)
        # many assets: the bar table's rows of the fill bars, gathered here by one aten
        # row copy (see _setup_data)
        extra = (self._bar_at(self._t + 1),) if self._pre_gather else ()
        part, X, reward, F, t, flag = self._run(
            "step", self._transition, act, self._X, self._t, self._SE, *extra
        )
        code = int(flag)
        if code & (_OUT_OF_SPACE | _NOT_FINITE):  # nothing was committed: state unchanged
            self._raise_bad_actions(code)
        if code & _EAGER:  # (rare) the compiled step left a case to the eager code
            fused, self._obs_in_kernel = self._obs_in_kernel, False
            try:
                part, X, reward, F, t, flag = self._transition(
                    act, self._X, self._t, self._SE, *extra
                )
            finally:
                self._obs_in_kernel = fused
            code = int(flag)
            obs = self._obs(t, part)
        else:
            obs = self._finish_obs(t, part)
        flags = F.view(torch.bool)
        terminated, truncated = flags[0], flags[1]
        if code:
            obs, info = self._autoreset(obs, X, t, F, terminated | truncated)
        else:
            self._X, self._t = X, t
            info = StepInfo(self._L, X, t, F)
        return obs, reward, terminated, truncated, info

    def _autoreset(self, obs, X, t, F, done):
        """Same-step autoreset of the envs whose episode just ended (``done``)."""
        L, SE = self._L, self._SE
        final_obs = obs.clone() if self._out is not None else obs
        final_info = StepInfo(L, X, t, F)
        episode = {
            "r": torch.where(done, X[L.ep_return], 0.0),
            "l": torch.where(done, t - SE[0], 0),
        }
        start, end = self._next_episode(done)
        part, X, t, F, SE = self._run("restart", self._restart, X, t, F, SE, start, end)
        obs = self._finish_obs(t, part)
        self._X, self._t, self._SE = X, t, SE
        # Same-step convention: rows of ended envs describe their new episode; the step
        # that ended them is in info["final_info"].
        info = StepInfo(L, X, t, F)
        dict.update(
            info,
            final_obs=final_obs,
            _final_obs=done,
            final_info=final_info,
            episode=episode,
            _episode=done,
        )
        return obs, info

    def _transition(self, act, X, t, SE, bar=None):
        """One step of every env as a pure function of the state (compilable): fills
        at bar s+1 (or the close of s), marks at the close of s+1, rewards. ``bar``:
        ``_bar_at(t + 1)`` where the caller gathers it (``_pre_gather``). Returns
        (obs part, X, reward, F, t, flag); see ``_Layout`` and ``_obs_part``."""
        tpl, L = self.template, self._L
        M, AND, OR, NOT = self._m, self._and, self._or, self._not
        w, code = self._weights(act)
        f = t + 1
        before, cash, v0 = self._shares_of(X), X[L.cash], X[L.value]
        if bar is None:
            bar = self._bar_at(f)
        mark_s, mark_f = bar[self._r_mark_prev], bar[self._r_mark]
        if tpl.fill == "open":
            ref, trad = bar[self._r_ref], bar[self._r_trad]
        else:
            ref, trad = mark_s, bar[self._r_trad_prev]
        trad = M(trad != 0.0) if not self._fusing() else trad  # (0/1 floats already)
        shares, cash, filled, price, comm, tax, slip_cost, blocked, unresolved = self._rebalance(
            before, cash, w, ref, trad
        )
        borrow = None
        if self.costs.borrow_rate > 0.0:
            short_value = torch.where(shares < 0.0, -shares * mark_f, 0.0)
            borrow = self._rs(short_value * (self.costs.borrow_rate / 252.0))
            cash = cash - borrow
        value = cash + self._rs(shares * mark_f)
        pnl = self._rs(before * (ref - mark_s) + shares * (mark_f - ref))
        cost = self._rs(comm + tax + slip_cost)
        if borrow is not None:
            cost = borrow + cost
        reward, dsr = self._reward(v0, value, X)
        terminated = M(value < tpl.ruin_floor)
        truncated = AND(M(f >= SE[1]), NOT(terminated))
        part = self._obs_part(f, shares, cash, value, mark_f)
        X = self._pack([shares, cash, value, X[L.ep_return] + reward, *dsr, cost, pnl,
                        filled, price])
        F = self._flags([terminated, truncated, blocked])
        flag = self._any_bit(OR(terminated, truncated), _ANY_DONE)
        if code is not None:
            flag = flag + code
        if unresolved is not None:
            flag = flag + self._any_bit(unresolved, _EAGER)
        return part, X, reward, F, f, flag

    def _flags(self, masks: list[torch.Tensor]) -> torch.Tensor:
        """The packed uint8 F tensor of (terminated, truncated, not_tradable) from masks
        as ``_m`` makes them (inductor's CPU code stores bools slowly, uint8 fast)."""
        if self._fusing():
            return self._pack(masks).to(torch.uint8)
        return self._pack(masks).view(torch.uint8)

    def _rebalance(self, shares, cash, w, ref, trad):
        """Vectorised :func:`stockgym.envs.execution.rebalance` (same rules, same order).
        ``trad`` is a mask (see ``_m``)."""
        costs = self.costs
        col, rs = self._col, self._rs
        M, AND, NOT, W = self._m, self._and, self._not, self._where
        v_ref = cash + rs(shares * ref)
        vr = col(v_ref)
        desired = w * vr / ref
        buy_side = desired > shares
        price = torch.where(buy_side, ref * (1.0 + self._slip), ref * (1.0 - self._slip))
        target = w * vr / price
        if not self.template.fractional:
            target = torch.trunc(target)
        qty = target - shares
        # an order: desired != held, qty != 0 on the side of the desire, and not noise
        side_ok = torch.where(buy_side, M(qty > 0.0), M(qty < 0.0))
        order = AND(AND(M(desired != shares), M(qty != 0.0)), side_ok)
        order = AND(order, M((qty * ref).abs() > 1e-12 * vr.abs()))
        blocked = AND(order, NOT(trad))
        order = AND(order, trad)
        # sells first
        sell = AND(order, M(qty < 0.0))
        s_val = W(sell, -qty * price, 0.0)
        s_comm = self._commission(s_val, lambda: sell)
        s_tax = costs.sell_tax * s_val
        if costs.min_commission > 0.0:
            ok = M(s_val - s_comm - s_tax >= 0.0)
            sell = AND(sell, ok)
            s_val, s_comm, s_tax = s_val * ok, s_comm * ok, s_tax * ok
        cash = cash + rs(s_val - s_comm - s_tax)
        # then buys, scaled by one common factor to fit in cash
        buy = AND(order, M(qty > 0.0))
        b_qty = W(buy, qty, 0.0)
        b_qty, unresolved = self._fit_buys(b_qty, price, cash)
        b_val = b_qty * price
        b_comm = self._commission(b_val, lambda: M(b_qty > 0.0))
        cash = cash - rs(b_val + b_comm)
        filled = W(sell, qty, 0.0) + b_qty
        new_shares = shares + filled
        traded = M(filled != 0.0)
        fill_price = W(traded, price, 0.0)
        slip_cost = (filled * (price - ref)).abs() * traded
        return (new_shares, cash, filled, fill_price, s_comm + b_comm, s_tax, slip_cost, blocked,
                unresolved)

    def _commission(self, val: torch.Tensor, traded: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``max(commission * val, min_commission)`` where ``traded()`` (a mask), else 0;
        ``val`` is >= 0 and 0 where nothing trades, so without a minimum it is just the
        product (and the mask is not built)."""
        costs = self.costs
        if costs.min_commission > 0.0:
            comm = torch.clamp(costs.commission * val, min=costs.min_commission)
            return self._where(traded(), comm, 0.0)
        return costs.commission * val

    def _buy_need(self, qty, price):
        val = qty * price
        return self._rs(val + self._commission(val, lambda: self._m(qty > 0.0)))

    def _fit_buys(self, qty, price, cash):
        """Buy sizes scaled to fit in cash; and None, or (compiled, min_commission) the
        mask of envs whose sizes need the bisection, left to the eager code."""
        costs = self.costs
        frac = self.template.fractional
        col = self._col
        need = self._buy_need(qty, price)
        over = need > cash
        gross = self._rs(qty * price) * (1.0 + costs.commission)
        k = torch.where(over, cash.clamp(min=0.0) / torch.where(gross > 0, gross, 1.0) * _SAFE, 1.0)

        def sized(kk):
            q = qty * col(kk)
            return q if frac else torch.floor(q)

        scaled = torch.where(col(over), sized(k), qty)
        if costs.min_commission > 0.0:
            still = self._and(self._m(over), self._m(self._buy_need(scaled, price) > cash))
            if self._fusing():  # no data-dependent branch in a graph: the step is
                return scaled, still  # redone eagerly where this is set anywhere
            if bool(still.any()):
                lo, hi = torch.zeros_like(k), k.clone()
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    ok = self._buy_need(sized(mid), price) <= cash
                    lo = torch.where(ok, mid, lo)
                    hi = torch.where(ok, hi, mid)
                k = self._where(still, lo, k)
                scaled = self._where(col(still), sized(k), scaled)
        return scaled, None

    def _reward(self, v0, v1, X):
        """(reward, [dsr_a, dsr_b] new values, empty unless the reward is the DSR)."""
        tpl, L = self.template, self._L
        if tpl.reward_type == "log_return":
            return torch.log(v1.clamp(min=1e-12 * tpl.initial_cash) / v0), []
        ret = v1 / v0 - 1.0
        if tpl.reward_type == "return":
            return ret, []
        dsr_a, dsr_b = X[L.dsr_a], X[L.dsr_b]
        da, db = ret - dsr_a, ret * ret - dsr_b
        var = dsr_b - dsr_a * dsr_a
        safe = var > 1e-12
        num = dsr_b * da - 0.5 * dsr_a * db
        dsr = torch.where(safe, num / torch.where(safe, var, 1.0) ** 1.5, 0.0)
        return dsr, [dsr_a + tpl.dsr_eta * da, dsr_b + tpl.dsr_eta * db]

    # ------------------------------------------------------------ observations
    def _obs_part(self, t, shares, cash, value, mark=None):
        """What the step function makes of the observations as of the close of bar
        ``t``: whole new observations when ``_obs_in_kernel``, else their ``(N, A + 1)``
        float32 end, each asset's weight and the cash fraction (the window rows are then
        gathered outside, see ``_obs``). ``mark``: the closes of bar ``t`` if known."""
        nf, a = self._nf, self._n_assets
        if mark is None:
            mark = torch.index_select(self._mark, self._mark.dim() - 1, t)
        weights = shares * mark / self._col(value)
        cash_frac = cash / value
        if self._obs_in_kernel:
            obs = self._gather(t, out=False)
            if a == 1:
                obs[:, nf] = weights
            else:
                obs[:, nf : nf + a] = weights.T
            obs[:, nf + a] = cash_frac
            return obs
        weights = weights[:, None] if a == 1 else weights.T
        return torch.cat([weights, cash_frac[:, None]], 1).to(torch.float32)

    def _finish_obs(self, t: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """The observations to return from what the step function made of them."""
        if not self._obs_in_kernel:
            return self._obs(t, part)
        return part if self._out is None else self._out.copy_(part)

    def _gather(self, t: torch.Tensor, out: bool = True) -> torch.Tensor:
        """The windows of bars ``t`` in a new observation tensor (from ``_fresh_obs``),
        or ``self._out`` where observations go to the shared buffer; the last A + 1
        columns are not set. ``out=False``: inside the compiled step, whole rows of the
        precomputed ``_windows`` in a tensor of the step's own."""
        if not out:
            return torch.index_select(self._windows, 0, t)
        obs = self._out if self._out is not None else self._fresh_obs()
        torch.index_select(self._win_view, 0, t, out=obs.narrow(1, 0, self._nf))
        return obs

    def _obs(self, t: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """Observations as of bar ``t`` from the window rows (one aten gather) and the
        ``tail`` (see ``_obs_part``); a new tensor, or ``self._out``."""
        obs = self._gather(t)
        obs.narrow(1, self._nf, tail.shape[1]).copy_(tail)  # (faster than obs[:, nf:] = )
        return obs

    def close_extras(self, **kwargs: Any) -> None:
        self._out = None
        if self._pool is not None:
            self._pool = []
