"""GPU benchmark: vector-env steps/s, PPO samples/s (ours and SB3), forecaster epochs.

    # the full run on one GPU (at most ~6 minutes: --budget-s 330 plus start-up and the
    # last measurement; an estimate, the GPU run is yet to be timed):
    OMP_NUM_THREADS=1 python benchmarks/bench_gpu.py --device cuda --json gpu.json
    # a CPU smoke run of every task (~10 s on a shared 2-core Xeon box):
    OMP_NUM_THREADS=1 python benchmarks/bench_gpu.py --device cpu --quick --no-compile
    # a GPU smoke run (small sizes, compile included; estimate 1-2 minutes):
    OMP_NUM_THREADS=1 python benchmarks/bench_gpu.py --device cuda --quick --json quick.json

Tasks (``--tasks env ppo forecast``, all by default, run in that order):

``env``: :class:`~stockgym.envs.VectorStockTradingEnv` env-steps/s = N * steps / seconds
(median of ``--repeats`` timed runs of ``--steps`` steps) for N in {1,024, 16,384,
65,536} and 1 asset (the bundled AAPL sample) and 30 assets (a synthetic 30-symbol
panel, 2,500 days); default features, window 30, ``episode_length=250`` (random starts,
same-step autoreset), ``validate_actions=False``, eager and ``compile=True``; with
``host_checks=False`` where the env takes that keyword (no host read per step; on
CUDA the largest N with 1 asset also runs eager with ``host_checks=True``).
Actions are drawn on the device beforehand (a ring of 16 batches of random 0/1), and
the clock is read after ``torch.cuda.synchronize()``. The first steps of each env
(compilation) are timed apart as ``warmup_s``.
Target: >= 200M env-steps/s at 65,536 envs with 1 asset.

``ppo``: end-to-end training samples/s of our PPO and stable-baselines3's PPO with the
``mlp`` and ``lstm`` backbones, on the same device, in the same process (the libraries
alternate per repeat). The matched setup of ``benchmarks/bench_sb3.py`` (same backbone
module in front of both, 64 units x 2 layers, 4 minibatches x 4 epochs, clip 0.2...),
here with ``--ppo-envs`` envs (default 4,096) x ``--ppo-steps`` (default 64) per update
on the AAPL train split (window 30, episodes of 100 bars), the env on the device for
both (SB3 through :class:`~stockgym.envs.sb3.SB3VecEnv`, i.e. numpy at every step).
One untimed update, then ``--updates`` timed ones.
Targets: ours ``mlp`` >= 1M samples/s; ours >= 10x SB3.

``forecast``: seconds per epoch of ``stockgym.forecasters.fit`` (LSTM and GRU,
``ForecastConfig`` defaults: hidden 64, 2 layers, window 30, ~2,000 AAPL samples) with
batch 64 and 512, on the CPU and on the device (CPU only when the device is the CPU);
median over the timed epochs after one warm-up epoch. CPU numbers (here and in the
other tasks) use ``--threads`` torch threads (default 1, like the other benchmarks).

Every table line names the device (GPU name or CPU model) and torch's version.
``--budget-s`` (default 330): no new measurement starts after that many seconds (the
one running finishes), so the full run stays under ~6 minutes; the env task starts
nothing after 50 % of it, PPO after 85 % (so compilation cannot starve the rest);
skipped measurements and any failed one (e.g. out of memory) are listed, and a failure
does not stop the run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_sb3  # noqa: E402
from bench_forecast import _timed_model, _train_arrays  # noqa: E402

from stockgym.data import load_prices  # noqa: E402
from stockgym.envs import VectorStockTradingEnv  # noqa: E402

ENV_SIZES = (65_536, 1_024, 16_384)  # the target size first
QUICK_ENV_SIZES = (64, 256)
WINDOW = 30
ENV_TARGET = 200e6  # env-steps/s at 65,536 envs, 1 asset
PPO_TARGET = 1e6  # ours mlp samples/s
RATIO_TARGET = 10.0  # ours / SB3
RING = 16  # pre-drawn action batches, cycled


# ------------------------------------------------------------------ helpers
def device_name(device: str) -> str:
    """The GPU's name, or the CPU model, with torch's version."""
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = platform.processor() or platform.machine() or "cpu"
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    return f"{device}: {name}, torch {torch.__version__}"


def pick_device(asked: str) -> str:
    """``asked``, or ``"cpu"`` (with a message) when CUDA is asked for and missing."""
    if asked == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu: --device cuda asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, cuda build {torch.version.cuda}); "
            "falling back to the CPU",
            flush=True,
        )
        return "cpu"
    return asked


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Budget:
    """Seconds since the start; ``allows(label)`` is False (and records the label)
    once the current task's deadline has passed: ``share`` of ``seconds`` for each task
    (cumulative, set by ``task``), so a slow task (compilation) cannot starve the later
    ones, while time a task leaves unused goes on to the next."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0, self.skipped = seconds, time.perf_counter(), []
        self.deadline = seconds
        self.errors: list[str] = []

    def guard(self, label: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or None after recording its error (one failed measurement, e.g. out
        of GPU memory, must not lose the rest of a one-shot GPU run)."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
            msg = f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"  FAILED {msg}", flush=True)
            self.errors.append(msg)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def task(self, share: float) -> None:
        """The next task starts nothing after ``share`` of the budget (from the start)."""
        self.deadline = min(share, 1.0) * self.seconds

    def allows(self, label: str) -> bool:
        if self.elapsed() < self.deadline:
            return True
        self.skipped.append(label)
        print(f"  budget spent ({self.elapsed():.0f} s): skipping {label}", flush=True)
        return False


def met(value: float, target: float) -> str:
    return "met" if value >= target else "NOT met"


# ------------------------------------------------------------------ vector env
def env_prices(n_assets: int):
    if n_assets == 1:
        return load_prices("AAPL", source="sample")
    symbols = [f"S{i:02d}" for i in range(n_assets)]
    return load_prices(symbols, source="synthetic", n_days=2500, seed=0)


def action_ring(env: VectorStockTradingEnv, device: str, seed: int = 0) -> list[torch.Tensor]:
    """``RING`` batches of random 0/1 actions of the env's batch shape, on the device."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = env.action_space.shape
    return [torch.randint(0, 2, shape, generator=gen, device=device) for _ in range(RING)]


def time_env(env: VectorStockTradingEnv, actions: list[torch.Tensor], steps: int, device: str):
    """Seconds for ``steps`` steps from a fresh reset."""
    env.reset(seed=0)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        env.step(actions[i % RING])
    sync(device)
    return time.perf_counter() - t0


def env_row(args, prices, n_assets: int, n: int, mode: str, dev_name: str) -> dict:
    """One (assets, N, mode) measurement; see the module doc."""
    # the env's default: no host read per step on CUDA; one mode measures that read
    extra = {"host_checks": True} if mode.endswith("host-checks") else {}
    env = VectorStockTradingEnv(
        prices,
        n,
        device=args.device,
        validate_actions=False,
        compile=mode.startswith("compiled"),
        window_size=WINDOW,
        episode_length=250,
        **extra,
    )
    actions = action_ring(env, args.device)
    t0 = time.perf_counter()
    time_env(env, actions, 3, args.device)  # compiles a compiled env
    warm = time.perf_counter() - t0
    secs = [time_env(env, actions, args.steps, args.device) for _ in range(args.repeats)]
    return {
        "task": "env",
        "n_assets": n_assets,
        "n_envs": n,
        "mode": mode,
        "obs_dim": env.obs_layout.size,
        "env_steps_per_s": n * args.steps / statistics.median(secs),
        "warmup_s": warm,
        "host_checks": env.host_checks,
        "device": dev_name,
    }


def bench_env(args, budget: Budget, dev_name: str) -> list[dict]:
    """Env-steps/s of every (assets, N, mode)."""
    rows = []
    modes = ["eager"] + ([] if args.no_compile else ["compiled"])
    prices = {k: env_prices(k) for k in args.assets}
    for n in args.env_sizes:  # the target size first: the budget may cut the rest
        for n_assets in args.assets:
            # on CUDA, at the target size: the price of one host read per step
            more = ["eager host-checks"] if args.device == "cuda" else []
            for mode in modes + (more if (n, n_assets) == (max(args.env_sizes), 1) else []):
                label = f"env {n_assets} asset(s) N={n:,} {mode}"
                if not budget.allows(label):
                    continue
                row = budget.guard(
                    label, env_row, args, prices[n_assets], n_assets, n, mode, dev_name
                )
                if row is not None:
                    rows.append(row)
                    print(
                        f"  {label}: {row['env_steps_per_s'] / 1e6:,.2f}M env-steps/s"
                        f" (warm-up {row['warmup_s']:.1f} s)",
                        flush=True,
                    )
    rows.sort(key=lambda r: (r["n_assets"], r["n_envs"], r["mode"]))
    return rows


def print_env(rows: list[dict], dev_name: str) -> None:
    print(f"\nvector env, env-steps/s (median); device {dev_name}")
    print(f"{'assets':>6} {'N':>7} {'mode':<18}{'obs':>6}{'M steps/s':>12}{'warm-up s':>11}")
    for r in rows:
        print(
            f"{r['n_assets']:>6} {r['n_envs']:>7,} {r['mode']:<18}{r['obs_dim']:>6}"
            f"{r['env_steps_per_s'] / 1e6:>12,.2f}{r['warmup_s']:>11.1f}  [{r['device']}]"
        )
    target = [r for r in rows if r["n_assets"] == 1 and r["n_envs"] == 65_536]
    if target:
        best = max(r["env_steps_per_s"] for r in target)
        print(
            f"target >= 200M env-steps/s at 65,536 envs, 1 asset: best {best / 1e6:,.1f}M "
            f"-> {met(best, ENV_TARGET)}  [{dev_name}]"
        )


# ------------------------------------------------------------------ PPO
def ours_model(venv: Any, backbone: str, seed: int, device: str, num_steps: int) -> Any:
    """``bench_sb3.ours_model`` in float32 on ``device``."""
    return bench_sb3.ours_model(
        venv, backbone, "float32", seed, device, num_steps=num_steps, learning_rate=3e-4
    )


def sb3_model(venv: Any, backbone: str, seed: int, device: str, num_steps: int) -> Any:
    """``bench_sb3.sb3_model`` on ``device``."""
    return bench_sb3.sb3_model(venv, backbone, seed, num_steps, 3e-4, device=device)


def time_learn(model: Any, lib: str, batch: int, updates: int, device: str) -> float:
    """Samples/s of ``updates`` updates after one untimed one."""
    model.learn(batch)
    more = {"reset_num_timesteps": False} if lib == "sb3" else {}
    sync(device)
    t0 = time.perf_counter()
    model.learn(updates * batch, **more)
    sync(device)
    return updates * batch / (time.perf_counter() - t0)


def ppo_rate(build: Callable, lib: str, make_env: Callable, backbone: str, rep: int, args):
    """Samples/s of one freshly built model (seed ``rep``)."""
    model = build(make_env(), backbone, rep, args.device, args.ppo_steps)
    return time_learn(model, lib, args.ppo_envs * args.ppo_steps, args.updates, args.device)


def bench_ppo(args, budget: Budget, dev_name: str) -> list[dict]:
    """Samples/s of ours and SB3 per backbone; see the module doc."""
    try:
        import stable_baselines3  # noqa: F401

        libs = ["ours", "sb3"]
    except ImportError:
        print("  stable-baselines3 is not installed: ours only", flush=True)
        libs = ["ours"]
    make_env = bench_sb3.sample_env(device=args.device, num_envs=args.ppo_envs)
    rows = []
    for backbone in args.backbones:
        sps: dict[str, list[float]] = {lib: [] for lib in libs}
        ratios: list[float] = []  # per repeat, where both ran
        for rep in range(args.ppo_repeats):
            if not budget.allows(f"ppo {backbone} repeat {rep}"):
                break
            this: dict[str, float] = {}
            for lib in libs if rep % 2 == 0 else libs[::-1]:
                build = sb3_model if lib == "sb3" else ours_model
                lab = f"ppo {backbone} {lib} repeat {rep}"
                rate = budget.guard(lab, ppo_rate, build, lib, make_env, backbone, rep, args)
                if rate is not None:
                    sps[lib].append(rate)
                    this[lib] = rate
            if len(this) == 2:
                ratios.append(this["ours"] / this["sb3"])
            print(
                f"  ppo {backbone} repeat {rep}: "
                + ", ".join(f"{lib} {v[-1]:,.0f}" for lib, v in sps.items() if v),
                flush=True,
            )
        if not sps["ours"]:
            continue
        row = {
            "task": "ppo",
            "backbone": backbone,
            "num_envs": args.ppo_envs,
            "num_steps": args.ppo_steps,
            "samples_per_s": sps,
            "device": dev_name,
        }
        for lib in libs:
            row[f"{lib}_median"] = statistics.median(sps[lib]) if sps[lib] else None
        if ratios:
            row["ratio"] = statistics.median(ratios)
        rows.append(row)
    return rows


def print_ppo(rows: list[dict], dev_name: str) -> None:
    print(f"\nPPO end to end, samples/s (median); device {dev_name}")
    print(f"{'backbone':<9}{'envs x steps':>14}{'ours':>12}{'SB3':>12}{'ours/SB3':>10}")
    for r in rows:
        sb3 = r.get("sb3_median")
        ratio = r.get("ratio")
        print(
            f"{r['backbone']:<9}{r['num_envs']:>7,} x {r['num_steps']:<4}"
            f"{r['ours_median']:>12,.0f}{'-' if sb3 is None else f'{sb3:,.0f}':>12}"
            f"{'-' if ratio is None else f'{ratio:.1f}x':>10}  [{r['device']}]"
        )
    for r in rows:
        if r["backbone"] == "mlp":
            v = r["ours_median"]
            print(
                f"target ours mlp >= 1M samples/s end to end: {v:,.0f} -> {met(v, PPO_TARGET)}"
                f"  [{dev_name}]"
            )
        if r.get("ratio") is not None:
            print(
                f"target ours >= 10x SB3 on the same device ({r['backbone']}): "
                f"{r['ratio']:.1f}x -> {met(r['ratio'], RATIO_TARGET)}  [{dev_name}]"
            )


# ------------------------------------------------------------------ forecasters
def epoch_seconds(train, valid, model: str, device: str, batch: int, epochs: int) -> list[float]:
    """Per-epoch seconds of ``stockgym.forecasters.fit`` on ``device`` (timestamps of
    each epoch's validation loss, which is read back to the host), warm-up dropped."""
    from stockgym.forecasters import ForecastConfig, fit

    stamps: list[float] = []

    class Clock:  # a SummaryWriter stand-in that timestamps each epoch's scalars
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            if tag.endswith("val_loss"):
                sync(device)
                stamps.append(time.perf_counter())

    cfg = ForecastConfig(
        model=model,
        window=WINDOW,
        epochs=epochs + 1,
        patience=epochs + 2,
        batch_size=batch,
        seed=0,
        device=device,
    )
    fit(_timed_model(model, train[0].shape[2], 0), train, valid, cfg, writer=Clock())
    # stamps[0]: epoch 0 (untrained); stamps[1]: end of the warm-up epoch
    return [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]


def bench_forecast(args, budget: Budget, dev_names: dict[str, str]) -> list[dict]:
    train, valid = _train_arrays()
    devices = ["cpu"] + (["cuda"] if args.device == "cuda" else [])
    rows = []
    for model in args.models:
        for batch in args.batches:
            for device in devices:
                label = f"forecast {model} batch {batch} {device}"
                if not budget.allows(label):
                    continue
                secs = budget.guard(
                    label, epoch_seconds, train, valid, model, device, batch, args.epochs
                )
                if not secs:
                    continue
                rows.append(
                    {
                        "task": "forecast",
                        "model": model,
                        "batch": batch,
                        "samples": len(train[0]),
                        "epoch_s": statistics.median(secs),
                        "epochs_per_s": 1.0 / statistics.median(secs),
                        "device": dev_names[device],
                    }
                )
                print(f"  {label}: {statistics.median(secs):.3f} s/epoch", flush=True)
    return rows


def print_forecast(rows: list[dict]) -> None:
    print("\nforecaster epoch time (median s/epoch)")
    print(f"{'model':<6}{'batch':>6}{'s/epoch':>10}{'vs cpu':>8}  device")
    cpu = {(r["model"], r["batch"]): r["epoch_s"] for r in rows if r["device"].startswith("cpu")}
    for r in rows:
        base = cpu.get((r["model"], r["batch"]))
        speed = "-" if base is None else f"{base / r['epoch_s']:.2f}x"
        print(f"{r['model']:<6}{r['batch']:>6}{r['epoch_s']:>10.3f}{speed:>8}  [{r['device']}]")


# ------------------------------------------------------------------ main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--tasks", nargs="+", choices=("env", "ppo", "forecast"), default=None)
    p.add_argument("--json", help="write all results here")
    p.add_argument("--budget-s", type=float, default=330.0, help="start nothing after this")
    p.add_argument("--no-compile", action="store_true", help="skip the compile=True envs")
    p.add_argument("--env-sizes", type=int, nargs="+", default=None)
    p.add_argument("--assets", type=int, nargs="+", default=[1, 30])
    p.add_argument("--steps", type=int, default=None, help="timed env steps per repeat")
    p.add_argument("--repeats", type=int, default=None, help="env repeats")
    p.add_argument("--backbones", nargs="+", choices=("mlp", "lstm"), default=["mlp", "lstm"])
    p.add_argument("--ppo-envs", type=int, default=None)
    p.add_argument("--ppo-steps", type=int, default=None)
    p.add_argument("--ppo-repeats", type=int, default=None)
    p.add_argument("--updates", type=int, default=None, help="timed PPO updates per repeat")
    p.add_argument("--models", nargs="+", default=["lstm", "gru"])
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None, help="timed forecaster epochs")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {
        "tasks": ["env", "ppo", "forecast"],
        "env_sizes": list(QUICK_ENV_SIZES if q else ENV_SIZES),
        "steps": 20 if q else 200,
        "repeats": 2 if q else 5,
        "ppo_envs": 64 if q else 4_096,
        "ppo_steps": 8 if q else 64,
        "ppo_repeats": 1 if q else 3,
        "updates": 1 if q else 2,
        "batches": [64] if q else [64, 512],
        "epochs": 1 if q else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    args.device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    names = {"cpu": device_name("cpu")}
    if args.device == "cuda":
        names["cuda"] = device_name("cuda")
    dev_name = names[args.device]
    print(f"bench_gpu on {dev_name}; python {platform.python_version()}", flush=True)
    budget = Budget(args.budget_s)
    out: dict[str, Any] = {"args": vars(args), "device": dev_name, "devices": names}
    # cumulative shares of --budget-s: env (compilation) <= 50 %, ppo to 85 %, forecast
    shares = {"env": 0.5, "ppo": 0.85, "forecast": 1.0}
    if "env" in args.tasks:
        budget.task(shares["env"])
        out["env"] = bench_env(args, budget, dev_name)
        print_env(out["env"], dev_name)
    if "ppo" in args.tasks:
        budget.task(shares["ppo"])
        out["ppo"] = bench_ppo(args, budget, dev_name)
        print_ppo(out["ppo"], dev_name)
    if "forecast" in args.tasks:
        budget.task(shares["forecast"])
        out["forecast"] = bench_forecast(args, budget, names)
        print_forecast(out["forecast"])
    out["skipped"] = budget.skipped
    out["errors"] = budget.errors
    for msg in budget.errors:
        print(f"error: {msg}")
    out["total_s"] = budget.elapsed()
    print(f"\ntotal {out['total_s']:.0f} s; skipped (budget): {budget.skipped or 'none'}")
    if args.json:
        from stockgym.core import write_json

        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
