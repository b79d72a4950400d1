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
    res = {"speed": bench_speed(args.repeats), "memory": bench_memory()}
    s, m = res["speed"], res["memory"]
    print(
        f"steps/s  stockgym {s['ours_steps_per_s']:,.0f}  gym-anytrading "
        f"{s['gym_anytrading_steps_per_s']:,.0f}  ratio {s['ratio']:.2f}x (target >= 2x)"
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
