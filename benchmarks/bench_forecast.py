"""Forecaster benchmark: training speed, walk-forward time, test-period skill.

a. Seconds per epoch for an LSTM (hidden 64, 2 layers, window 30, ~2,000 training
   samples of AAPL, batch 64, Adam, MSE, a validation pass every epoch) trained by
   ``stockgym.forecasters.fit`` and by a plain PyTorch loop like the notebook's
   (``DataLoader(TensorDataset, shuffle=True)``, the same model class, seed and batch
   size), alternating ``--repeats`` times; median (and min) over the timed epochs, after
   one warm-up epoch per run.
b. Walk-forward over the bundled sample (AAPL, GOOG, IBM, MSFT) with the default
   ``WalkForwardConfig`` (MLP, window 20, refit every 126 days, cache off): total time
   and out-of-sample metrics vs the zero-return forecast.
c. Test-period metrics of MLP / CNN / LSTM (``ForecastConfig`` defaults otherwise:
   window 30, hidden 64, 2 layers, early stopping) against the naive and linear
   baselines on each sample symbol and on the synthetic edge market
   (``kind="edge", edge=0.3, n_days=3000``), plus the notebook's price-level procedure
   (``target="close"``, OHLCV inputs, min-max scaler fit on train only) on AAPL.

    python benchmarks/bench_forecast.py [--epochs 5] [--repeats 3] [--threads N] [--quick]
                                        [--skip epochs walk skill] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _train_arrays():
    from stockgym.data import load_prices
    from stockgym.forecasters import ForecastConfig
    from stockgym.forecasters.training import prepare, resolve

    prices = load_prices("AAPL", source="sample")
    cfg, dates = resolve(ForecastConfig(window=30), prices)
    _, tr, va, _ = prepare(cfg, prices, dates)
    scale = float(np.sqrt(np.mean(tr.y**2)))
    return (tr.x, tr.y / scale), (va.x, va.y / scale)


def plain_loop_epoch_seconds(train, valid, epochs: int, seed: int = 0) -> list[float]:
    """The notebook's loop: DataLoader + TensorDataset, Adam, MSE, val loss each epoch."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from stockgym.forecasters import LSTM

    torch.manual_seed(seed)
    model = LSTM(train[0].shape[2], 30, hidden_size=64, num_layers=2, dropout=0.2)
    loader = DataLoader(
        TensorDataset(torch.tensor(train[0]), torch.tensor(train[1], dtype=torch.float32)),
        batch_size=64,
        shuffle=True,
    )
    xv = torch.tensor(valid[0])
    yv = torch.tensor(valid[1], dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.MSELoss()
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = crit(model(xb).squeeze(-1), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            crit(model(xv).squeeze(-1), yv).item()
        times.append(time.perf_counter() - t0)
    return times[1:]


def our_epoch_seconds(train, valid, epochs: int, seed: int = 0) -> list[float]:
    """``stockgym.forecasters.fit``, timed per epoch through its history."""
    from stockgym.forecasters import LSTM, ForecastConfig, fit

    times: list[float] = []
    cfg = ForecastConfig(window=30, epochs=epochs + 1, patience=epochs + 2, seed=seed, device="cpu")

    class Clock:  # a SummaryWriter stand-in that timestamps each epoch's scalars
        last = time.perf_counter()

        def add_scalar(self, tag, value, step):
            if tag.endswith("val_loss") and step > 0:
                now = time.perf_counter()
                times.append(now - Clock.last)
                Clock.last = now
            elif step == 0 and tag.endswith("val_loss"):
                Clock.last = time.perf_counter()

    import torch

    torch.manual_seed(seed)
    model = LSTM(train[0].shape[2], 30, hidden_size=64, num_layers=2, dropout=0.2)
    fit(model, train, valid, cfg, writer=Clock())
    return times[1:]


def bench_epochs(epochs: int, repeats: int) -> dict:
    """Both loops ``repeats`` times, alternating (so background load hits both alike)."""
    train, valid = _train_arrays()
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(repeats):
        ours += our_epoch_seconds(train, valid, epochs)
        plain += plain_loop_epoch_seconds(train, valid, epochs)
    return {
        "samples": {"train": len(train[0]), "valid": len(valid[0])},
        "epochs_timed": len(ours),
        "ours_s_per_epoch": statistics.median(ours),
        "plain_s_per_epoch": statistics.median(plain),
        "ours_min": min(ours),
        "plain_min": min(plain),
        "ratio_plain_over_ours": statistics.median(plain) / statistics.median(ours),
    }


def bench_walk_forward(symbols: list[str]) -> dict:
    from stockgym.data import load_prices
    from stockgym.forecasters import WalkForwardConfig, walk_forward
    from stockgym.forecasters.walkforward import forecast_frame, forecast_metrics

    cfg = WalkForwardConfig()
    out, total = {}, 0.0
    for sym in symbols:
        prices = load_prices(sym, source="sample")
        t0 = time.perf_counter()
        fc = walk_forward(prices, cfg, cache=False)
        dt = time.perf_counter() - t0
        total += dt
        m = forecast_metrics(forecast_frame(fc, prices, "log_return", 1), "log_return", 1)
        out[sym] = {
            "seconds": dt,
            "refits": len(fc.attrs["refits"]),
            "forecasts": len(fc),
            "model": m["model"],
            "naive": m["baselines"]["naive"],
        }
    return {"total_seconds": total, "per_symbol": out}


def bench_skill(symbols: list[str], models: list[str]) -> dict:
    from stockgym.forecasters import ForecastConfig, train

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(f"sample:{s}", {"symbol": s, "source": "sample"}) for s in symbols]
        jobs.append(
            (
                "synthetic:edge0.3",
                {
                    "symbol": "X",
                    "source": "synthetic",
                    "data_options": {"kind": "edge", "edge": 0.3, "n_days": 3000, "seed": 0},
                },
            )
        )
        for name, data in jobs:
            for model in models:
                cfg = ForecastConfig(
                    model=model,
                    plots=False,
                    tensorboard=False,
                    run_dir=str(Path(tmp) / f"{name}-{model}".replace(":", "_")),
                    device="cpu",
                    **data,
                )
                t0 = time.perf_counter()
                r = train(cfg)
                results[f"{name} {model}"] = {
                    "seconds": time.perf_counter() - t0,
                    "best_epoch": r.fit.best_epoch,
                    "epochs": len(r.fit.history) - 1,
                    **_flat(r.metrics),
                }
        if "sample:AAPL" in {j[0] for j in jobs}:
            cfg = ForecastConfig(
                model="lstm",
                target="close",
                symbol="AAPL",
                source="sample",
                plots=False,
                tensorboard=False,
                device="cpu",
                run_dir=str(Path(tmp) / "notebook"),
            )
            r = train(cfg)
            results["sample:AAPL lstm target=close (notebook procedure)"] = {
                "best_epoch": r.fit.best_epoch,
                "epochs": len(r.fit.history) - 1,
                **_flat(r.metrics),
            }
    return results


def _flat(metrics: dict) -> dict:
    out = {"model": metrics["model"]}
    out.update(metrics["baselines"])
    return out


def _print_skill(results: dict) -> None:
    print(
        f"{'run':<52}{'model rmse':>12}{'naive rmse':>12}{'skill':>9}{'dir.acc':>9}"
        f"{'naive acc':>10}{'lin skill':>10}{'best ep':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<52}{r['model']['rmse']:>12.6g}{r['naive']['rmse']:>12.6g}"
            f"{r['model']['skill']:>+9.4f}{r['model']['directional_accuracy']:>9.3f}"
            f"{r['naive']['directional_accuracy']:>10.3f}{r['linear']['skill']:>+10.4f}"
            f"{r['best_epoch']:>5}/{r['epochs']}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per loop (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    ap.add_argument("--quick", action="store_true", help="AAPL only, for a smoke run")
    ap.add_argument("--skip", nargs="*", default=[], choices=["epochs", "walk", "skill"])
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp())
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    symbols = ["AAPL"] if args.quick else ["AAPL", "GOOG", "IBM", "MSFT"]
    results: dict = {
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if "epochs" not in args.skip:
        r = results["epoch_seconds"] = bench_epochs(args.epochs, args.repeats)
        print(
            f"\n[a] LSTM(64x2, window 30), {r['samples']['train']} train samples, batch 64, "
            f"{r['epochs_timed']} epochs each: ours {r['ours_s_per_epoch']:.3f} s/epoch "
            f"(min {r['ours_min']:.3f}), plain loop {r['plain_s_per_epoch']:.3f} s/epoch "
            f"(min {r['plain_min']:.3f}); plain/ours {r['ratio_plain_over_ours']:.2f}"
        )
    if "walk" not in args.skip:
        r = results["walk_forward"] = bench_walk_forward(symbols)
        print(f"\n[b] walk-forward (default config) over {symbols}: {r['total_seconds']:.1f} s")
        for sym, v in r["per_symbol"].items():
            print(
                f"    {sym}: {v['seconds']:.1f} s, {v['refits']} refits, {v['forecasts']} "
                f"forecasts, skill {v['model']['skill']:+.4f}, dir.acc "
                f"{v['model']['directional_accuracy']:.3f} (naive "
                f"{v['naive']['directional_accuracy']:.3f})"
            )
    if "skill" not in args.skip:
        r = results["test_metrics"] = bench_skill(symbols, ["mlp", "cnn", "lstm"])
        print("\n[c] test-period metrics (skill = 1 - rmse/rmse_naive)")
        _print_skill(r)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
