"""VectorStockTradingEnv throughput against a plain-numpy batched env (same run).

Every number is the median of ``--repeats`` (>= 5) timed runs of ``--steps`` steps;
actions are pre-drawn (random 0/1, one row per step), so action sampling is not timed;
env-steps/s = N * steps / seconds.

a. the numpy measuring stick: a plain numpy batched env written here (``NumpyStick``):
   one feature (daily log return of close) over a 30-day window, one asset, discrete
   long/flat action, a proportional cost on position changes, value in float64, reward
   the log return, observation = 30 window values + position + cash fraction as a new
   float32 ``(N, 32)`` array (one gather of precomputed window rows), same-step restart
   at the end of the data. Bundled sample AAPL, N = 1,024 and 4,096. Two variants that
   differ only in the row gather: ``windows[t]`` (fancy indexing, the plain idiom: "numpy
   stick") and ``np.take(windows, t, axis=0)`` (the same rows, ~3x faster for this gather
   on the machine of the closing note: "numpy take"). Targets use the plain one; the
   ratio against the faster one is printed too.
b. ours with the same observation size: ``VectorStockTradingEnv(prices, N,
   features=("log_return",), window_size=30)`` (actions validated, as by default),
   eager and ``compile=True``, N = 1,024 and 4,096, and the ratios ours / numpy stick.
   Ours does far more per env: whole shares, buy scaling to cash, slippage, commission
   and tax, halted bars, ruin, episode statistics, the info fields.
   Targets: >= 10M env-steps/s at N = 4,096 and >= 0.7x the stick.
c. ours with the default feature set, 1 and 30 assets (synthetic 30-symbol panel,
   2,500 days), N = 1,024, ``episode_length=250`` (random starts: the envs read
   different window rows; one same-step autoreset per timed run), eager, compiled and
   compiled with ``copy=False`` (the documented opt-in that writes every step's
   observation into one reused buffer instead of a new tensor):
   env-steps/s and the observation bytes produced per second (N * obs_dim * 4 *
   steps/s) as a fraction of this machine's copy bandwidth measured in the same run
   (median GB/s written by ``np.copyto`` of 256 MB float32 arrays; on ``--device cuda``
   a device-to-device ``Tensor.copy_``). Target >= 0.3.

The numpy stick always runs on the CPU. Ours keeps its per-step overheads (action
conversion, info dict, same-step autoreset check, a new observation tensor per step).

    python benchmarks/bench_vector.py [--quick] [--device cpu|cuda] [--no-compile]
                                      [--repeats 7] [--steps 300] [--threads 1]
                                      [--only same_obs|default_features]
                                      [--n-default 1024] [--assets 1,30]
                                      [--out results.json]

Threads: ``--threads 1`` (the default) gives ours the one core the numpy stick uses;
``--threads 0`` keeps torch's own choice. Run it on an otherwise idle machine: with
torch's intra-op threads sharing a core with another busy process, each parallel torch
op (and each compiled kernel) can stall for milliseconds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

WINDOW = 30


# --------------------------------------------------------------- numpy stick
class NumpyStick:
    """A plain numpy batched long/flat env over one close series (see module doc).

    The decision at bar t (after its close) holds position ``a`` over bar t+1: the
    portfolio pays ``cost * |a - pos| * V`` and then grows by ``close[t+1] / close[t]``
    on the invested part. Episodes run from the first full window to the last bar and
    restart (same step) where they end."""

    def __init__(
        self, close: np.ndarray, num_envs: int, cost: float = 0.001, gather: str = "fancy"
    ) -> None:
        close = np.asarray(close, dtype=np.float64)
        n_bars = len(close)
        log_ret = np.log(close[1:] / close[:-1])  # log_ret[j]: bar j -> j+1
        # windows[t] = the last WINDOW log returns known at the close of bar t, plus two
        # slots for position and cash fraction: one row gather makes an observation.
        self.windows = np.zeros((n_bars, WINDOW + 2), dtype=np.float32)
        self.windows[WINDOW:, :WINDOW] = np.lib.stride_tricks.sliding_window_view(log_ret, WINDOW)
        self.growth = np.ones(n_bars)
        self.growth[:-1] = close[1:] / close[:-1]
        self.num_envs, self.cost = num_envs, cost
        self.first, self.last = WINDOW, n_bars - 1
        if gather not in ("fancy", "take"):
            raise ValueError(f"gather must be 'fancy' or 'take', got {gather!r}")
        self.take = gather == "take"

    def reset(self) -> np.ndarray:
        n = self.num_envs
        self.t = np.full(n, self.first, dtype=np.int64)
        self.pos = np.zeros(n)
        self.value = np.ones(n)
        return self._obs()

    def _obs(self) -> np.ndarray:
        # a new (N, 32) float32 array
        obs = np.take(self.windows, self.t, axis=0) if self.take else self.windows[self.t]
        obs[:, WINDOW] = self.pos
        obs[:, WINDOW + 1] = 1.0 - self.pos
        return obs

    def step(self, actions: np.ndarray):
        new = actions.astype(np.float64)
        v0 = self.value
        g = self.growth[self.t]
        v = v0 * (1.0 - self.cost * np.abs(new - self.pos)) * (new * g + (1.0 - new))
        reward = np.log(v / v0)
        self.t = self.t + 1
        self.pos, self.value = new, v
        truncated = self.t >= self.last
        if truncated.any():
            self.t[truncated] = self.first
            self.pos[truncated] = 0.0
            self.value[truncated] = 1.0
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), reward, terminated, truncated, {}


# ------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(reset: Callable, step: Callable, actions, device: str) -> float:
    reset()
    _sync(device)
    t0 = time.perf_counter()
    for a in actions:
        step(a)
    _sync(device)
    return time.perf_counter() - t0


def _median_rates(
    runs: dict[str, tuple],
    repeats: int,
    n_envs: dict[str, int],
    steps: int,
    between: Callable[[], float] | None = None,
):
    """Median env-steps/s of each named (reset, step, actions, device); the repeats of
    all runs are interleaved so machine noise hits them alike. ``between`` (e.g. one
    copy-bandwidth measurement) runs after each repeat; the median of what it returns
    comes back too (None without it)."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    extra = []
    for _ in range(repeats):
        for k, (reset, step, actions, device) in runs.items():
            times[k].append(_timed(reset, step, actions, device))
        if between is not None:
            extra.append(between())
    rates = {k: n_envs[k] * steps / statistics.median(v) for k, v in times.items()}
    return rates, (statistics.median(extra) if extra else None)


class Copier:
    """Copies one float32 array of ``mbytes`` MB into another (np.copyto; on cuda a
    device-to-device ``Tensor.copy_``); ``once()`` returns the GB/s written."""

    def __init__(self, device: str, mbytes: int) -> None:
        n = mbytes * 2**20 // 4
        self.device, self.nbytes = device, n * 4
        if device == "cuda":
            self.src = torch.ones(n, device="cuda")
        else:
            self.src = np.ones(n, dtype=np.float32)
        self.dst = torch.empty_like(self.src) if device == "cuda" else np.empty_like(self.src)
        self._copy()  # fault the pages in

    def _copy(self) -> None:
        if self.device == "cuda":
            self.dst.copy_(self.src)
        else:
            np.copyto(self.dst, self.src)

    def once(self) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        self._copy()
        _sync(self.device)
        return self.nbytes / (time.perf_counter() - t0) / 1e9


def copy_bandwidth(device: str, mbytes: int, repeats: int) -> float:
    """Median GB/s (bytes written) of copying one float32 array into another."""
    copier = Copier(device, mbytes)
    return statistics.median(copier.once() for _ in range(repeats))


def _ours(prices, n: int, device: str, compile: bool, **kw):
    from stockgym.envs import VectorStockTradingEnv

    return VectorStockTradingEnv(prices, n, device=device, compile=compile, **kw)


def _warm(env, actions, k: int = 3) -> float:
    """Run a few steps (compiles a compiled env); returns the seconds it took."""
    t0 = time.perf_counter()
    env.reset(seed=0)
    for a in actions[:k]:
        env.step(a)
    return time.perf_counter() - t0


def _actions(rng: torch.Generator, steps: int, n: int, n_assets: int, device: str):
    shape = (steps, n) if n_assets == 1 else (steps, n, n_assets)
    return torch.randint(0, 2, shape, generator=rng).to(device)


# -------------------------------------------------------------- benchmarks
def bench_same_obs(args, compile_modes) -> list[dict]:
    """(a) numpy stick and (b) ours with the same (N, 32) observation."""
    from stockgym.data import load_prices

    prices = load_prices("AAPL", source="sample")
    close = prices["close"].to_numpy()
    rng = torch.Generator().manual_seed(0)
    rows = []
    for n in args.n_envs:
        acts = _actions(rng, args.steps, n, 1, args.device)
        np_acts = acts.cpu().numpy()
        stick = NumpyStick(close, n)
        take = NumpyStick(close, n, gather="take")
        runs = {
            "numpy": (stick.reset, stick.step, np_acts, "cpu"),
            "numpy take": (take.reset, take.step, np_acts, "cpu"),
        }
        compile_s = {}
        for mode in compile_modes:
            env = _ours(
                prices,
                n,
                args.device,
                mode == "compiled",
                features=("log_return",),
                window_size=WINDOW,
            )
            assert env.obs_layout.size == WINDOW + 2
            compile_s[mode] = _warm(env, acts)
            runs[mode] = (lambda env=env: env.reset(seed=0), env.step, acts, args.device)
        rates, _ = _median_rates(runs, args.repeats, dict.fromkeys(runs, n), args.steps)
        for mode in runs:
            rows.append(
                {
                    "bench": "same_obs",
                    "impl": {"numpy": "numpy stick"}.get(
                        mode, mode if "numpy" in mode else f"ours {mode}"
                    ),
                    "n_envs": n,
                    "obs_dim": WINDOW + 2,
                    "env_steps_per_s": rates[mode],
                    "ratio_vs_numpy": rates[mode] / rates["numpy"],
                    "ratio_vs_numpy_take": rates[mode] / rates["numpy take"],
                    "warmup_s": compile_s.get(mode),
                    "device": "cpu" if "numpy" in mode else args.device,
                }
            )
    return rows


def bench_default_features(args, compile_modes, copier: Copier) -> list[dict]:
    """(c) the default feature set, 1 and 30 assets, obs bytes/s vs copy bandwidth
    (one copy measured after each repeat: the median of those, so that both numbers see
    the same machine load)."""
    from stockgym.data import load_prices

    symbols = [f"S{i:02d}" for i in range(30)]
    panel = load_prices(symbols, source="synthetic", n_days=2500, seed=0)
    one = load_prices(symbols[:1], source="synthetic", n_days=2500, seed=0)
    rng = torch.Generator().manual_seed(1)
    n = args.n_default
    rows = []
    for n_assets, prices in ((1, one), (30, panel)):
        if n_assets not in args.assets:
            continue
        acts = _actions(rng, args.steps, n, n_assets, args.device)
        runs, envs, warm = {}, {}, {}
        # copy=False (documented opt-in: one reused observation buffer, valid until the
        # next step) saves allocating and page-faulting a fresh observation every step
        modes = [*compile_modes, *(["compiled copy=False"] if "compiled" in compile_modes else [])]
        for mode in modes:
            env = _ours(
                prices,
                n,
                args.device,
                mode.startswith("compiled"),
                window_size=WINDOW,
                episode_length=250,
                copy=not mode.endswith("copy=False"),
            )
            warm[mode] = _warm(env, acts)
            envs[mode] = env
            runs[mode] = (lambda env=env: env.reset(seed=0), env.step, acts, args.device)
        rates, bandwidth = _median_rates(
            runs, args.repeats, dict.fromkeys(runs, n), args.steps, between=copier.once
        )
        for mode, env in envs.items():
            obs_dim = env.obs_layout.size
            gbs = rates[mode] * obs_dim * 4 / 1e9
            rows.append(
                {
                    "bench": "default_features",
                    "impl": f"ours {mode}",
                    "n_assets": n_assets,
                    "n_envs": n,
                    "obs_dim": obs_dim,
                    "env_steps_per_s": rates[mode],
                    "obs_gb_per_s": gbs,
                    "copy_gb_per_s": bandwidth,
                    "fraction_of_copy_bw": gbs / bandwidth,
                    "warmup_s": warm[mode],
                    "device": args.device,
                }
            )
    return rows


def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N, few steps: a smoke run")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile=True runs")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1, the numpy stick's one core; 0: torch's choice)",
    )
    ap.add_argument(
        "--only",
        choices=["same_obs", "default_features"],
        default=None,
        help="run one part only (a and b, or c)",
    )
    ap.add_argument(
        "--n-default",
        type=int,
        default=None,
        help="N of the default-feature runs (c); default 1,024",
    )
    ap.add_argument("--assets", default="1,30", help="asset counts of the runs (c): 1, 30")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 5:
        ap.error("--repeats must be >= 5 (medians of at least 5 runs)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA GPU")
    n_default = args.n_default
    if args.quick:
        args.n_envs, args.n_default = [256], 256
        args.steps = args.steps or 20
        copy_mb = 32
    else:
        args.n_envs, args.n_default = [1024, 4096], 1024
        args.steps = args.steps or 300
        copy_mb = 256
    if n_default is not None:
        args.n_default = n_default
    args.assets = {int(a) for a in args.assets.split(",")}
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]

    info = machine_info(args.device)
    copier = Copier(args.device, copy_mb)
    bandwidth = statistics.median(copier.once() for _ in range(args.repeats))
    rows = []
    if args.only in (None, "same_obs"):
        rows += bench_same_obs(args, modes)
    if args.only in (None, "default_features"):
        rows += bench_default_features(args, modes, copier)

    print(
        f"CPU: {info['cpu']}  torch {info['torch']}  threads {info['torch_threads']}  "
        f"device {args.device}" + (f" ({info['gpu']})" if "gpu" in info else "")
    )
    print(
        f"copy bandwidth ({'Tensor.copy_' if args.device == 'cuda' else 'np.copyto'}, "
        f"{copy_mb} MB): {bandwidth:.2f} GB/s at the start (the 'of copy' column uses the "
        f"median of copies interleaved with that configuration's runs); {args.steps} steps x "
        f"median of "
        f"{args.repeats} repeats\n"
    )
    head = (
        f"{'bench':<17}{'impl':<15}{'A':>3}{'N':>6}{'obs':>6}{'env-steps/s':>14}{'vs numpy':>10}"
        f"{'vs take':>9}"
    )
    print(head + f"{'obs GB/s':>10}{'of copy':>9}{'warm-up s':>11}")
    for r in rows:
        ratio = f"{r['ratio_vs_numpy']:.2f}x" if "ratio_vs_numpy" in r else ""
        ratio_take = f"{r['ratio_vs_numpy_take']:.2f}x" if "ratio_vs_numpy_take" in r else ""
        gbs = f"{r['obs_gb_per_s']:.2f}" if "obs_gb_per_s" in r else ""
        frac = f"{r['fraction_of_copy_bw']:.2f}" if "fraction_of_copy_bw" in r else ""
        warm = f"{r['warmup_s']:.1f}" if r.get("warmup_s") is not None else ""
        print(
            f"{r['bench']:<17}{r['impl']:<15}{r.get('n_assets', 1):>3}{r['n_envs']:>6}"
            f"{r['obs_dim']:>6}{r['env_steps_per_s'] / 1e6:>13.2f}M{ratio:>10}{ratio_take:>9}{gbs:>10}"
            f"{frac:>9}{warm:>11}"
        )

    checks = []
    for r in rows:
        if r["bench"] == "same_obs" and r["impl"].startswith("ours") and r["n_envs"] == 4096:
            checks.append((f"{r['impl']} N=4096 >= 10M env-steps/s", r["env_steps_per_s"] >= 1e7))
            checks.append((f"{r['impl']} N=4096 >= 0.7x numpy", r["ratio_vs_numpy"] >= 0.7))
            checks.append(
                (
                    f"{r['impl']} N=4096 >= 0.7x numpy take (informational, not the issue's)",
                    r["ratio_vs_numpy_take"] >= 0.7,
                )
            )
        if r["bench"] == "default_features":
            checks.append(
                (
                    f"{r['impl']} A={r['n_assets']} obs bytes >= 0.3 of copy bandwidth",
                    r["fraction_of_copy_bw"] >= 0.3,
                )
            )
    if args.quick:  # sizes too small for the targets to mean anything
        checks = []
        print("\n(--quick: a smoke run; targets are judged on a full run only)")
    if checks:
        print("\ntargets:")
        for name, ok in checks:
            print(f"  [{'met' if ok else 'MISSED'}] {name}")
    if args.out:
        from stockgym.core import write_json

        write_json(
            args.out,
            {
                "machine": info,
                "copy_gb_per_s": bandwidth,
                "steps": args.steps,
                "repeats": args.repeats,
                "threads": args.threads,
                "quick": args.quick,
                "rows": rows,
                "targets": dict(checks),
            },
        )


if __name__ == "__main__":
    main()
