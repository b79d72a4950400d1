"""Forecaster benchmark: training speed, walk-forward time, test-period skill.

a. Seconds per epoch of every model in ``MODELS`` (``ForecastConfig`` defaults: hidden 64,
   2 layers, dropout 0.2, window 30, ~2,000 training samples of AAPL, batch 64, Adam, MSE,
   a validation pass every epoch) trained by ``stockgym.forecasters.fit`` and by a plain
   PyTorch loop like the notebook's (``DataLoader(TensorDataset, shuffle=True)``, the
   same model built by ``build_model``, seed and batch size), alternating ``--repeats``
   times; median (and min) over the timed epochs, after one warm-up epoch per run.
   Target: ours never slower (plain/ours >= 1).
b. Walk-forward over the bundled sample (AAPL, GOOG, IBM, MSFT) with the default
   ``WalkForwardConfig`` (MLP, window 20, refit every 126 days, cache off): total time
   and out-of-sample metrics vs the zero-return forecast.
c. Test-period metrics of MLP / CNN / LSTM (``ForecastConfig`` defaults otherwise:
   window 30, hidden 64, 2 layers, early stopping) against the naive and linear
   baselines on each sample symbol and on the synthetic edge market
   (``kind="edge", edge=0.3, n_days=3000``), plus the notebook's price-level procedure
   (``target="close"``, OHLCV inputs, min-max scaler fit on train only) on AAPL.
d. Leaderboard of every model in ``MODELS`` on AAPL, GOOG, IBM, MSFT (``forecast train``
   runs, test period): MASE, RMSSE, RMSE, directional accuracy, IC / rank IC / ICIR and
   the Diebold-Mariano p-value vs naive, mean +- std over ``--seeds`` seeds; ``--quick``:
   one seed and small models (window 20, hidden 16, 1 layer, 3 epochs).

    python benchmarks/bench_forecast.py [--epochs 5] [--repeats 3] [--threads N] [--quick]
                                        [--models mlp tcn ...] [--clock wall|cpu]
                                        [--skip epochs walk skill]
                                        [--seeds 3] [--leaderboard-plot p.png]
                                        [--out r.json]
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


def _timed_model(name: str, n_features: int, seed: int):
    """The model both loops train: ``build_model`` with ``ForecastConfig``'s defaults."""
    import torch

    from stockgym.forecasters import ForecastConfig, build_model

    cfg = ForecastConfig(model=name, window=30)
    torch.manual_seed(seed)
    return build_model(name, n_features, 30, **cfg.model_kwargs())


def plain_loop_epoch_seconds(
    train, valid, epochs: int, seed: int = 0, model: str = "lstm", clock=time.perf_counter
):
    """The notebook's loop: DataLoader + TensorDataset, Adam, MSE, val loss each epoch."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    net = _timed_model(model, train[0].shape[2], seed)
    loader = DataLoader(
        TensorDataset(torch.tensor(train[0]), torch.tensor(train[1], dtype=torch.float32)),
        batch_size=64,
        shuffle=True,
    )
    xv = torch.tensor(valid[0])
    yv = torch.tensor(valid[1], dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    crit = torch.nn.MSELoss()
    times = []
    for _ in range(epochs + 1):
        t0 = clock()
        net.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = crit(net(xb).squeeze(-1), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        net.eval()
        with torch.no_grad():
            crit(net(xv).squeeze(-1), yv).item()
        times.append(clock() - t0)
    return times[1:]


def our_epoch_seconds(
    train, valid, epochs: int, seed: int = 0, model: str = "lstm", clock=time.perf_counter
):
    """``stockgym.forecasters.fit``, timed per epoch through its history."""
    from stockgym.forecasters import ForecastConfig, fit

    times: list[float] = []
    cfg = ForecastConfig(
        model=model, window=30, epochs=epochs + 1, patience=epochs + 2, seed=seed, device="cpu"
    )

    class Clock:  # a SummaryWriter stand-in that timestamps each epoch's scalars
        last = clock()

        def add_scalar(self, tag, value, step):
            if tag.endswith("val_loss") and step > 0:
                now = clock()
                times.append(now - Clock.last)
                Clock.last = now
            elif step == 0 and tag.endswith("val_loss"):
                Clock.last = clock()

    fit(_timed_model(model, train[0].shape[2], seed), train, valid, cfg, writer=Clock())
    return times[1:]


def bench_epochs(
    epochs: int, repeats: int, models: list[str] | None = None, clock: str = "wall"
) -> dict:
    """Both loops ``repeats`` times per model, alternating (so background load hits both
    alike). ``clock``: ``wall`` (``perf_counter``) or ``cpu`` (``process_time``: this
    process's CPU seconds, less sensitive to neighbours on a shared box; with one torch
    thread it is the work done). Returns ``{"samples", "clock", "models": {name: {ours /
    plain medians, mins, ratio}}}``."""
    tick = time.process_time if clock == "cpu" else time.perf_counter
    from stockgym.forecasters import MODELS

    train, valid = _train_arrays()
    out: dict = {
        "samples": {"train": len(train[0]), "valid": len(valid[0])},
        "clock": clock,
        "models": {},
    }
    for name in models or list(MODELS):
        ours: list[float] = []
        plain: list[float] = []
        for _ in range(repeats):
            ours += our_epoch_seconds(train, valid, epochs, model=name, clock=tick)
            plain += plain_loop_epoch_seconds(train, valid, epochs, model=name, clock=tick)
        out["models"][name] = {
            "epochs_timed": len(ours),
            "ours_s_per_epoch": statistics.median(ours),
            "plain_s_per_epoch": statistics.median(plain),
            "ours_min": min(ours),
            "plain_min": min(plain),
            "ratio_plain_over_ours": statistics.median(plain) / statistics.median(ours),
        }
    return out


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


LEADERBOARD_SYMBOLS = ["AAPL", "GOOG", "IBM", "MSFT"]


def bench_leaderboard(models: list[str], seeds: int, quick: bool, plot: str | None) -> dict:
    """Leaderboard of every model on the bundled sample symbols: ``forecast train`` runs
    (test period, 12 rolling-origin windows) scored with MASE, RMSSE, RMSE, directional
    accuracy, IC / rank IC / ICIR, DM p-value vs naive; mean +- std over ``seeds`` seeds,
    ``ALL`` rows across the four symbols (IC per date across symbols). ``quick``: window
    20, hidden 16, 1 layer, 3 epochs, for a smoke run; otherwise ``ForecastConfig``
    defaults (window 30, hidden 64 x 2, up to 100 epochs with early stopping)."""
    from stockgym.cli.forecast import format_leaderboard
    from stockgym.forecasters import ForecastConfig, train
    from stockgym.forecasters.evaluation import dedupe_baselines, load_entries, plot_leaderboard
    from stockgym.forecasters.metrics import leaderboard

    small = {"window": 20, "hidden_size": 16, "num_layers": 1, "epochs": 3} if quick else {}
    entries, seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            t0 = time.perf_counter()
            for sym in LEADERBOARD_SYMBOLS:
                for seed in range(seeds):
                    run = Path(tmp) / f"{model}-{sym}-{seed}"
                    cfg = ForecastConfig(
                        model=model,
                        symbol=sym,
                        source="sample",
                        seed=seed,
                        plots=False,
                        tensorboard=False,
                        device="cpu",
                        run_dir=str(run),
                        **small,
                    )
                    train(cfg)
                    entries.extend(load_entries(run))
            seconds[model] = time.perf_counter() - t0
    rows = leaderboard(dedupe_baselines(entries))
    print(format_leaderboard(rows))
    if plot:
        print(f"    plot: {plot_leaderboard(rows, plot)}")
    return {"quick": quick, "seeds": seeds, "seconds_per_model": seconds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per loop (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    ap.add_argument("--quick", action="store_true", help="AAPL only, for a smoke run")
    ap.add_argument("--models", nargs="*", help="models timed in [a] (default: all MODELS)")
    ap.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="[a]'s clock (cpu: process time)"
    )
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["epochs", "walk", "skill", "leaderboard"]
    )
    ap.add_argument("--seeds", type=int, default=3, help="seeds per model in the leaderboard")
    ap.add_argument("--leaderboard-plot", help="write the leaderboard PNG here")
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
        r = results["epoch_seconds"] = bench_epochs(
            args.epochs, args.repeats, args.models, args.clock
        )
        print(
            f"\n[a] {args.clock} s/epoch, window 30, hidden 64 x 2 layers, "
            f"{r['samples']['train']} train samples, batch 64 (median, min in brackets); "
            "target plain/ours >= 1"
        )
        for name, m in r["models"].items():
            print(
                f"    {name:<12} ours {m['ours_s_per_epoch']:.3f} ({m['ours_min']:.3f})  "
                f"plain {m['plain_s_per_epoch']:.3f} ({m['plain_min']:.3f})  "
                f"plain/ours {m['ratio_plain_over_ours']:.2f}  [{m['epochs_timed']} epochs]"
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
    if "leaderboard" not in args.skip:
        from stockgym.forecasters import MODELS

        seeds = 1 if args.quick else args.seeds
        print(f"\n[d] leaderboard on {LEADERBOARD_SYMBOLS}, {seeds} seed(s) per model")
        results["leaderboard"] = bench_leaderboard(
            list(MODELS), seeds, args.quick, args.leaderboard_plot
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
