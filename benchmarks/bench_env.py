"""StockTradingEnv speed and memory against gym-anytrading's StocksEnv (same run).

Same real daily series (bundled AAPL sample, ~3,200 bars), window 30, random actions
pre-drawn from a seeded RNG (so action sampling is not timed), full episodes, both
through the plain Gymnasium API (``reset`` / ``step``). Reports the median steps/s of
``--repeats`` full episodes and the ratio ours / peer, then the memory growth (RSS
after minus before) of building the env for 30 assets x 2,500 days.

    pip install gym-anytrading psutil   # the [bench] extra
    python benchmarks/bench_env.py [--repeats 7] [--out results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import numpy as np


def _episode_rate(env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    step = env.step
    n = 0
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = step(a)
        n += 1
        if term or trunc:
            break
    return n / (time.perf_counter() - t0)


def bench_speed(repeats: int) -> dict:
    from gym_anytrading.envs import StocksEnv

    from stockgym.data import load_prices
    from stockgym.envs import StockTradingEnv

    prices = load_prices("AAPL", source="sample")
    ours = StockTradingEnv(prices, window_size=30)
    peer_df = prices.rename(columns=str.capitalize)
    peer = StocksEnv(df=peer_df, window_size=30, frame_bound=(30, len(peer_df)))
    rng = np.random.default_rng(0)
    actions = [int(a) for a in rng.integers(0, 2, size=len(prices) + 10)]
    ours_rates, peer_rates = [], []
    for _ in range(repeats):  # interleaved so machine noise hits both alike
        ours_rates.append(_episode_rate(ours, actions))
        peer_rates.append(_episode_rate(peer, actions))
    o, p = statistics.median(ours_rates), statistics.median(peer_rates)
    return {"ours_steps_per_s": o, "gym_anytrading_steps_per_s": p, "ratio": o / p}


def bench_render() -> dict:
    """Seconds per ``render("rgb_array")`` frame at step 10 and step 1,000 of an episode
    (median of 5 frames each; the first frame of an env also imports matplotlib and lays
    the figure out, reported apart)."""
    import time as _time

    from stockgym.data import load_prices
    from stockgym.envs import StockTradingEnv

    env = StockTradingEnv(load_prices("AAPL", source="sample"), window_size=30,
                          render_mode="rgb_array")  # fmt: skip
    env.reset(seed=0)
    out = {}
    for k in range(1001):
        env.step(k % 2)
        if k == 0:
            t0 = _time.perf_counter()
            env.render()
            out["first_frame_s"] = _time.perf_counter() - t0
        if k in (10, 1000):
            times = []
            for _ in range(5):
                t0 = _time.perf_counter()
                env.render()
                times.append(_time.perf_counter() - t0)
            out[f"step_{k}_s"] = statistics.median(times)
    return out


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def bench_memory(n_assets: int = 30, n_days: int = 2500) -> dict:
    from stockgym.data import load_prices
    from stockgym.envs import StockTradingEnv

    symbols = [f"S{i:02d}" for i in range(n_assets)]
    prices = load_prices(symbols, source="synthetic", n_days=n_days, seed=0)
    gc.collect()
    before = _rss_mb()
    t0 = time.perf_counter()
    env = StockTradingEnv(prices, window_size=30, action_type="continuous")
    build_s = time.perf_counter() - t0
    env.reset(seed=0)
    gc.collect()
    after = _rss_mb()
    return {"assets": n_assets, "days": n_days, "rss_growth_mb": after - before, "build_s": build_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = {"speed": bench_speed(args.repeats), "memory": bench_memory(), "render": bench_render()}
    s, m = res["speed"], res["memory"]
    print(
        f"steps/s  stockgym {s['ours_steps_per_s']:,.0f}  gym-anytrading "
        f"{s['gym_anytrading_steps_per_s']:,.0f}  ratio {s['ratio']:.2f}x (target >= 1x)"
    )
    r = res["render"]
    print(
        f"render   rgb_array frame: step 10 {r['step_10_s']:.3f} s, step 1000 "
        f"{r['step_1000_s']:.3f} s (target <= 0.15 s); first frame {r['first_frame_s']:.2f} s"
    )
    print(
        f"memory   {m['assets']} assets x {m['days']} days: +{m['rss_growth_mb']:.1f} MB RSS "
        f"(target < 100 MB), built in {m['build_s']:.2f} s"
    )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
