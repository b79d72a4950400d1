"""Data-layer speed and memory: load_prices + build_features, against a per-symbol peer.

Measures (median of ``--repeats`` runs, wall time):

a. the bundled sample (AAPL, MSFT, GOOG, IBM; ``source="sample"``): load + default
   features. Target < 1 s.
b. a synthetic panel (``--symbols`` x ``--days``, default 500 x 2,500): load
   (``source="synthetic"``) and default features; plus the memory growth of load +
   features, measured in a fresh child process (peak RSS after minus RSS before; psutil
   when installed, else ``resource.getrusage`` max RSS). Target < 10 s and < 2 GB.
c. a "peer" baseline computing the same five default features the obvious way, as
   FinRL-style preprocessing does: a Python loop over symbols, pandas rolling per
   symbol, then a concat; its time on the same panel and the ratio peer / ours.
   The peer gets the panel without ``attrs`` (see the note in ``main``).

Memory is measured in a child process: RSS before loading (after imports, with the
Linux peak mark reset) and peak RSS (``VmHWM``) after features; elsewhere psutil /
``resource.getrusage`` max RSS are used and import memory may be included.

    python benchmarks/bench_data.py [--repeats 5] [--symbols 500] [--days 2500] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _panel(n_symbols: int, n_days: int) -> pd.DataFrame:
    from stockgym.data import load_prices

    names = [f"S{i:03d}" for i in range(n_symbols)]
    return load_prices(names, source="synthetic", n_days=n_days, seed=0)


def peer_features(prices: pd.DataFrame) -> pd.DataFrame:
    """The default features, one symbol at a time (FinRL-style loop + concat)."""
    out = []
    for sym in prices.columns.get_level_values(0).unique():
        df = prices[sym].copy()
        close = df["close"].where(df["tradable"]).ffill()
        feat = pd.DataFrame(index=df.index)
        feat["log_return"] = np.log(close / close.shift(1))
        feat["volatility_20"] = feat["log_return"].rolling(20).std()
        feat["sma_ratio_20"] = close / close.rolling(20).mean() - 1
        delta = close.diff()
        gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
        loss = (-delta).clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
        feat["rsi_14"] = gain / (gain + loss)
        lv = np.log1p(df["volume"])
        feat["volume_z_20"] = (lv - lv.rolling(20).mean()) / lv.rolling(20).std()
        feat["tic"] = sym
        out.append(feat)
    long = pd.concat(out).reset_index()
    wide = long.pivot(index="date", columns="tic")
    return wide.swaplevel(axis=1).sort_index(axis=1).dropna()


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def _rss_now_mb() -> float | None:
    now = _proc_status_mb("VmRSS")
    if now is not None:
        return now
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def _peak_rss_mb() -> float:
    """Peak RSS: /proc VmHWM (Linux; reset on exec), else getrusage max RSS."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def _reset_peak() -> None:
    """Reset the peak-RSS mark so imports do not count (Linux >= 4.0; else a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def _child(what: str, n_symbols: int, n_days: int) -> None:
    """Run in a fresh process: memory growth of load + features (ours or the peer)."""
    from stockgym.data import build_features, load_prices  # noqa: F401 - import cost excluded

    _reset_peak()
    before = _rss_now_mb()
    before_peak = _peak_rss_mb()
    before = before if before is not None else before_peak
    prices = _panel(n_symbols, n_days)
    if what == "ours":
        feats = build_features(prices)
    else:
        prices.attrs = {}
        feats = peer_features(prices)
    after_peak = _peak_rss_mb()
    print(
        json.dumps(
            {
                "peak_growth_mb": after_peak - before,
                "rss_before_mb": before,
                "peak_rss_mb": after_peak,
                "rows": int(feats.shape[0]),
                "cols": int(feats.shape[1]),
            }
        )
    )


def _memory(what: str, n_symbols: int, n_days: int) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        what,
        "--symbols",
        str(n_symbols),
        "--days",
        str(n_days),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--days", type=int, default=2500)
    ap.add_argument("--out", default=None, help="write results JSON here (default: stdout only)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # sample alignment warning
    if args.child:
        _child(args.child, args.symbols, args.days)
        return {}

    from stockgym.data import build_features, load_prices

    sample = ["AAPL", "MSFT", "GOOG", "IBM"]
    t_sample, f_sample = _median_time(
        lambda: build_features(load_prices(sample, source="sample")), args.repeats
    )
    t_load, prices = _median_time(lambda: _panel(args.symbols, args.days), args.repeats)
    t_feat, feats = _median_time(lambda: build_features(prices), args.repeats)
    mem = _memory("ours", args.symbols, args.days)
    res = {
        "machine": {
            "python": platform.python_version(),
            "pandas": pd.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "repeats": args.repeats,
        "sample": {
            "symbols": sample,
            "rows": len(f_sample),
            "load_features_s": t_sample,
            "target_s": 1.0,
        },
        "panel": {
            "symbols": args.symbols,
            "days": args.days,
            "load_s": t_load,
            "features_s": t_feat,
            "total_s": t_load + t_feat,
            "target_s": 10.0,
            "feature_shape": list(feats.shape),
            "memory": mem,
            "target_mb": 2048,
        },
    }
    if not args.skip_peer:
        # plain frame for the peer: load_prices' attrs (per-symbol dicts) would be
        # deep-copied by every pandas op in its loop, which is not the peer's own cost
        bare = prices.copy()
        bare.attrs = {}
        t_peer, peer = _median_time(lambda: peer_features(bare), args.repeats)
        a = feats.to_numpy()
        b = peer.reindex(index=feats.index, columns=feats.columns).to_numpy()
        res["peer"] = {
            "features_s": t_peer,
            "ratio_peer_over_ours": t_peer / t_feat,
            "memory": _memory("peer", args.symbols, args.days),
            # RSI differs in seeding (peer: ewm from the first change; ours: Wilder's SMA
            # seed), so compare the other four features
            "max_abs_diff_excl_rsi": float(
                np.nanmax(
                    np.abs((a - b)[:, [i for i, c in enumerate(feats.columns) if c[1] != "rsi_14"]])
                )
            ),
        }

    rows = [
        ("sample 4 sym: load+features", t_sample, "< 1 s"),
        (f"panel {args.symbols}x{args.days}: load", t_load, ""),
        (f"panel {args.symbols}x{args.days}: features", t_feat, ""),
        (f"panel {args.symbols}x{args.days}: total", t_load + t_feat, "< 10 s"),
    ]
    if "peer" in res:
        rows.append(("peer per-symbol loop: features", res["peer"]["features_s"], ""))
    print(f"{'measure':<42}{'median s':>10}  target")
    for name, t, target in rows:
        print(f"{name:<42}{t:>10.3f}  {target}")
    print(f"{'panel load+features peak RSS growth (MB)':<42}{mem['peak_growth_mb']:>10.0f}  < 2048")
    if "peer" in res:
        print(
            f"{'peer load+features peak RSS growth (MB)':<42}"
            f"{res['peer']['memory']['peak_growth_mb']:>10.0f}"
        )
        print(f"{'ratio peer / ours (features)':<42}{res['peer']['ratio_peer_over_ours']:>10.2f}x")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
