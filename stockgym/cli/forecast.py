"""``stockgym forecast train | eval | walk-forward``: parse, call the library, print.

Registered through ``stockgym.cli.SUBCOMMAND_MODULES``. Nothing heavy is imported until
a handler runs (torch is imported only by the handlers).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from stockgym.cli.common import DEFAULT_THREADS
from stockgym.core import UsageError

FORECAST_EXAMPLES = """examples:
  stockgym forecast train --model lstm --symbol AAPL --source sample
  stockgym forecast train --model mlp --symbol X --source synthetic --kind edge --edge 0.3 --n-days 3000 --window 20
  stockgym forecast train --model lstm --symbol 005930 --source fdr --start 2015-01-01
  stockgym forecast train --model lstm --symbol AAPL --source sample --target close   (the notebook's price target)
  stockgym forecast eval runs/forecast/20240101-120000-lstm-AAPL
  stockgym forecast walk-forward --model mlp --symbol AAPL --source sample --refit-every 126
  stockgym forecast compare runs/forecast/*   (leaderboard across models, symbols and seeds)
"""

SOURCES = ["auto", "fdr", "csv", "sample", "synthetic"]
# stockgym.forecasters.MODELS without importing torch (a test keeps the two equal)
MODEL_NAMES = ["mlp", "cnn", "lstm", "gru", "tcn", "transformer"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``forecast`` group to the ``stockgym`` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    group = subparsers.add_parser(
        "forecast",
        help="train, evaluate, walk forward and compare forecasters",
        epilog=FORECAST_EXAMPLES,
        formatter_class=fmt,
    )
    sub = group.add_subparsers(dest="forecast_command", required=True, metavar="ACTION")

    tr = sub.add_parser(
        "train",
        help="train a forecaster, evaluate it on the test period against naive baselines",
        epilog=FORECAST_EXAMPLES,
        formatter_class=fmt,
    )
    _add_data(tr)
    _add_model(tr)
    split = tr.add_argument_group(
        "splits (default: test = last 20%% of dates, valid = last 20%% of the rest)"
    )
    split.add_argument("--train-end", default=argparse.SUPPRESS, help="last date of training")
    split.add_argument("--valid-end", default=argparse.SUPPRESS, help="last date of validation")
    _add_output(tr)
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "eval",
        help="re-evaluate a trained run on its test period and print the metrics",
        epilog="examples:\n  stockgym forecast eval runs/forecast/20240101-120000-lstm-AAPL\n",
        formatter_class=fmt,
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `forecast train`")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    ev.add_argument("--cache-dir", help="download cache for --source fdr/auto runs")
    ev.add_argument(
        "--windows",
        type=int,
        default=12,
        help="rolling-origin windows over the test period (default 12, each >= 5 samples)",
    )
    ev.set_defaults(func=_cmd_eval)

    cp = sub.add_parser(
        "compare",
        help="leaderboard of runs: MASE, RMSSE, IC, DM test... per model and symbol, "
        "mean +- std over seeds, and a plot",
        epilog="examples:\n  stockgym forecast compare runs/forecast/*\n"
        "  stockgym forecast compare RUN_A RUN_B --out-dir cmp\n",
        formatter_class=fmt,
    )
    cp.add_argument(
        "runs", nargs="+", metavar="RUN", help="run dirs of `forecast train` or `walk-forward`"
    )
    cp.add_argument(
        "--out-dir",
        help="where leaderboard.json and leaderboard.png go "
        "(default a new folder under runs/forecast_compare/)",
    )
    cp.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    cp.set_defaults(func=_cmd_compare)

    wf = sub.add_parser(
        "walk-forward",
        help="out-of-sample forecasts for every date (refit every k days), for env features",
        epilog="examples:\n  stockgym forecast walk-forward --symbol AAPL --source sample\n"
        "  stockgym forecast walk-forward --symbol AAPL --source sample --model lstm "
        "--refit-every 63 --mode rolling --train-size 1000\n",
        formatter_class=fmt,
    )
    _add_data(wf)
    _add_model(wf, walk_forward=True)
    g = wf.add_argument_group("walk-forward")
    g.add_argument(
        "--refit-every",
        type=int,
        default=argparse.SUPPRESS,
        help="rows between refits (default 126)",
    )
    g.add_argument(
        "--min-train",
        type=int,
        default=argparse.SUPPRESS,
        help="training samples before the first forecast (default 500)",
    )
    g.add_argument(
        "--mode",
        choices=["expanding", "rolling"],
        default=argparse.SUPPRESS,
        help="expanding (default) or rolling training window",
    )
    g.add_argument(
        "--train-size",
        type=int,
        default=argparse.SUPPRESS,
        help="samples per refit with --mode rolling",
    )
    g.add_argument(
        "--valid-fraction",
        type=float,
        default=argparse.SUPPRESS,
        help="share of each refit's samples for early stopping (default 0.2)",
    )
    g.add_argument(
        "--warm-start",
        action="store_true",
        default=argparse.SUPPRESS,
        help="start each refit from the previous weights",
    )
    g.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the forecast cache"
    )
    _add_output(wf, tensorboard=False)
    wf.set_defaults(func=_cmd_walk_forward)


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--symbol", required=True, help="symbol (AAPL, 005930), or a CSV path with --source csv"
    )
    g.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="auto (cache, then finance-datareader), fdr, csv, sample, synthetic",
    )
    g.add_argument("--start", help="first date (inclusive)")
    g.add_argument("--end", help="last date (inclusive)")
    g.add_argument("--cache-dir", help="download cache (default $STOCKGYM_CACHE_DIR or user cache)")
    g.add_argument("--kind", choices=["gbm", "edge"], help="synthetic market kind")
    g.add_argument("--edge", type=float, help="synthetic AR(1) edge strength (kind edge)")
    g.add_argument("--n-days", type=int, help="synthetic number of days")
    g.add_argument("--data-seed", type=int, help="synthetic data seed")


def _add_model(p: argparse.ArgumentParser, walk_forward: bool = False) -> None:
    from_defaults = (
        "walk-forward defaults: mlp, window 20, hidden 32"
        if walk_forward
        else "defaults: lstm, window 30, hidden 64, 2 layers"
    )
    g = p.add_argument_group(f"model and training ({from_defaults})")
    S = argparse.SUPPRESS
    g.add_argument(
        "--config",
        help="JSON file with ForecastConfig fields (or a run's config.json); flags override it",
    )
    g.add_argument("--model", choices=MODEL_NAMES, default=S)
    g.add_argument(
        "--target",
        choices=["log_return", "direction", "close"],
        default=S,
        help="next-day log return (default), direction (up/not up), close (price)",
    )
    g.add_argument("--horizon", type=int, default=S, help="days ahead (default 1)")
    g.add_argument("--window", type=int, default=S, help="input window in days")
    g.add_argument(
        "--features",
        default=S,
        help="comma-separated input features (build_features names and/or "
        "open,high,low,close,volume); default by target",
    )
    g.add_argument(
        "--scaler",
        choices=["standard", "minmax", "robust"],
        default=S,
        help="input scaler fit on the training period (default by target)",
    )
    g.add_argument("--hidden-size", type=int, default=S)
    g.add_argument("--num-layers", type=int, default=S)
    g.add_argument("--dropout", type=float, default=S)
    g.add_argument("--kernel-size", type=int, default=S, help="CNN / TCN kernel size (default 3)")
    g.add_argument("--n-heads", type=int, default=S, help="Transformer attention heads")
    g.add_argument("--patch-len", type=int, default=S, help="Transformer rows per token")
    g.add_argument("--epochs", type=int, default=S, help="maximum epochs")
    g.add_argument("--batch-size", type=int, default=S)
    g.add_argument("--lr", type=float, default=S)
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument("--optimizer", choices=["adam", "adamw"], default=S)
    g.add_argument("--grad-clip", type=float, default=S, help="max gradient norm (0: off)")
    g.add_argument("--patience", type=int, default=S, help="early-stopping patience (epochs)")
    g.add_argument("--tol", type=float, default=S, help="minimum validation-loss improvement")
    g.add_argument("--seed", type=int, default=S)
    g.add_argument("--device", default=S, help="auto (cuda when available), cpu or cuda")
    g.add_argument(
        "--threads",
        type=int,
        default=S,
        help=f"torch CPU threads (default {DEFAULT_THREADS}; see `stockgym train --help`)",
    )


def _add_output(p: argparse.ArgumentParser, tensorboard: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--run-dir", help="where the run writes (default a new folder under runs/)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    if tensorboard:
        g.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (a bar on a terminal, otherwise a line per epoch or per 10%% of epochs)",
    )


_MODEL_FIELDS = (
    "model",
    "target",
    "horizon",
    "window",
    "features",
    "scaler",
    "hidden_size",
    "num_layers",
    "dropout",
    "kernel_size",
    "n_heads",
    "patch_len",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "grad_clip",
    "patience",
    "tol",
    "seed",
    "device",
    "threads",
)


def _config_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --config {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config {path} is not JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # a run's config.json
    if isinstance(data, dict) and isinstance(data.get("forecast"), dict):
        data = data["forecast"]  # a walk-forward config
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} must hold a JSON object of config fields")
    return data


def _forecast_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields from --config, then the flags given (data flags always)."""
    fields = _config_file(args.config)
    for name in _MODEL_FIELDS:
        if name in vars(args):
            fields[name] = getattr(args, name)
    if isinstance(fields.get("features"), str):
        fields["features"] = [f.strip() for f in fields["features"].split(",") if f.strip()]
    fields.setdefault("threads", DEFAULT_THREADS)
    if fields.get("grad_clip") == 0:
        fields["grad_clip"] = None
    options = {
        k: v
        for k, v in (
            ("kind", args.kind),
            ("edge", args.edge),
            ("n_days", args.n_days),
            ("seed", args.data_seed),
        )
        if v is not None
    }
    if options and args.source != "synthetic":
        raise UsageError("--kind, --edge, --n-days and --data-seed apply to --source synthetic")
    fields.update(
        symbol=args.symbol,
        source=args.source,
        start=args.start,
        end=args.end,
        cache_dir=args.cache_dir,
        data_options=options,
    )
    fields.update(
        progress=not args.no_progress,
        plots=not args.no_plots,
        tensorboard=not getattr(args, "no_tensorboard", False),
    )
    for stale in ("run_dir", "train_end", "valid_end"):
        fields.pop(stale, None)  # from a reused run config: never reuse its dir or dates
    return fields


def _cmd_train(args: argparse.Namespace) -> None:
    from stockgym.forecasters.evaluation import format_table
    from stockgym.forecasters.training import ForecastConfig, train

    fields = _forecast_fields(args)
    for name in ("train_end", "valid_end"):
        if name in vars(args):
            fields[name] = getattr(args, name)
    fields["run_dir"] = args.run_dir
    try:
        config = ForecastConfig.from_dict(fields)
    except TypeError as exc:
        raise UsageError(f"bad config: {exc}") from exc
    result = train(config)
    fit = result.fit
    s = result.splits
    print(
        f"trained {config.model} on {result.config.symbol} [source={config.source}]: "
        f"best epoch {fit.best_epoch} of {len(fit.history)}"
        f"{' (early stop)' if fit.stopped_early else ''}, {fit.seconds:.1f} s"
    )
    print(
        "splits: "
        + "  ".join(f"{k} {v['first']}..{v['last']} ({v['rows']} rows)" for k, v in s.items())
    )
    print(format_table(result.metrics))
    _print_paths(result.run_dir, result.config.plots, result.config.tensorboard)


def _print_paths(run_dir: Path, plots: bool, tensorboard: bool) -> None:
    print(f"run dir:     {run_dir}")
    print(f"checkpoint:  {run_dir / 'checkpoint'}")
    print(f"metrics:     {run_dir / 'metrics.json'}")
    if plots and (run_dir / "plots").is_dir():
        print(
            "plots:       " + ", ".join(str(p) for p in sorted((run_dir / "plots").glob("*.png")))
        )
    if tensorboard and (run_dir / "tensorboard").is_dir():
        print(f"tensorboard: {run_dir / 'tensorboard'}   (tensorboard --logdir {run_dir.parent})")


def _cmd_eval(args: argparse.Namespace) -> None:
    from stockgym.forecasters import storage
    from stockgym.forecasters.evaluation import evaluate, format_table
    from stockgym.forecasters.training import ForecastConfig, load_config_prices, load_run

    record, forecaster = load_run(args.run_dir, device=args.device)
    config = ForecastConfig.from_dict(record["config"])
    if args.cache_dir:
        config = config.replace(cache_dir=args.cache_dir)
    if not config.symbol or record.get("data", {}).get("source") == "given":
        raise UsageError(
            f"run {args.run_dir} was trained on prices passed from Python; "
            "evaluate it with stockgym.forecasters.evaluate()"
        )
    prices = load_config_prices(config)
    if storage.data_hash(prices) != record.get("data", {}).get("sha256"):
        warnings.warn(
            f"the prices of {config.symbol} differ from those the run was trained "
            "on (source data changed); metrics may differ from metrics.json",
            stacklevel=1,
        )
    if args.windows < 1:
        raise UsageError(f"--windows must be >= 1, got {args.windows}")
    ev = evaluate(forecaster, prices, record["splits"], windows=args.windows)
    print(f"{forecaster!r}")
    print(format_table(ev.metrics))
    _print_paths(Path(args.run_dir), True, True)


def _cmd_walk_forward(args: argparse.Namespace) -> None:
    from stockgym.forecasters import storage
    from stockgym.forecasters.training import ForecastConfig
    from stockgym.forecasters.walkforward import WalkForwardConfig, run_walk_forward

    fields = _forecast_fields(args)
    base = WalkForwardConfig().forecast.to_dict()
    base.update(fields)
    try:
        fc = ForecastConfig.from_dict(base)
        wf = WalkForwardConfig(
            forecast=fc,
            **{
                k: getattr(args, k)
                for k in (
                    "refit_every",
                    "min_train",
                    "mode",
                    "train_size",
                    "valid_fraction",
                    "warm_start",
                )
                if k in vars(args)
            },
        )
    except TypeError as exc:
        raise UsageError(f"bad config: {exc}") from exc
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else storage.default_run_dir("walk_forward", fc.model, fc.symbol)
    )
    result = run_walk_forward(wf, run_dir, cache=not args.no_cache, cache_dir=args.cache_dir)
    from stockgym.forecasters.evaluation import format_table

    refits = result.forecasts.attrs["refits"]
    print(
        f"walk-forward {fc.model} on {fc.symbol}: {len(refits)} refits "
        f"({wf.mode}, every {wf.refit_every} rows), forecasts "
        f"{result.forecasts.index[0].date()}..{result.forecasts.index[-1].date()}"
        f"{' (from cache)' if result.from_cache else ''}, {result.seconds:.1f} s"
    )
    print(format_table(result.metrics, period="forecast period"))
    print(f"run dir:     {run_dir}")
    print(f"forecasts:   {run_dir / 'forecasts.csv'}")
    print(f"metrics:     {run_dir / 'metrics.json'}")
    if fc.plots:
        print(f"plots:       {run_dir / 'plots' / 'forecasts.png'}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from stockgym.forecasters import storage
    from stockgym.forecasters.evaluation import dedupe_baselines, load_entries, plot_leaderboard
    from stockgym.forecasters.metrics import leaderboard

    entries = []
    for run in args.runs:
        try:
            entries.extend(load_entries(run))
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    rows = leaderboard(dedupe_baselines(entries))
    out_dir = Path(args.out_dir) if args.out_dir else storage.default_run_dir("forecast_compare")
    print(format_leaderboard(rows))
    storage.write_json(out_dir / "leaderboard.json", {"runs": list(args.runs), "rows": rows})
    print(f"leaderboard: {out_dir / 'leaderboard.json'}")
    if not args.no_plots:
        print(f"plot:        {plot_leaderboard(rows, out_dir / 'leaderboard.png')}")


_COLUMNS = (
    ("rmse", "rmse", ".4g"),
    ("mase", "mase", ".4f"),
    ("rmsse", "rmsse", ".4f"),
    ("directional_accuracy", "dir.acc", ".3f"),
    ("ic", "ic", "+.4f"),
    ("rank_ic", "rank_ic", "+.4f"),
    ("icir", "icir", "+.2f"),
    ("dm_stat", "dm", "+.2f"),
    ("dm_pvalue", "dm p", ".3f"),
)


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    """The leaderboard rows as a text table: ``mean±std`` over seeds (``mean`` for one)."""
    cols = list(_COLUMNS)
    if any(r["auc"]["mean"] is not None for r in rows):
        cols += [("auc", "auc", ".3f"), ("accuracy", "acc", ".3f")]

    def cell(stat: dict[str, Any], spec: str, runs: int) -> str:
        if stat["mean"] is None:
            return "-"
        text = format(stat["mean"], spec)
        if stat["std"] is not None:
            text += f"±{format(stat['std'], spec.lstrip('+'))}"
        # undefined in some runs (e.g. the IC of a run that kept the naive forecast)
        return text if stat["n"] >= runs else f"{text} [{stat['n']}/{runs}]"

    table = [["model", "symbol", "runs", *(name for _, name, _ in cols)]]
    for r in rows:
        table.append(
            [
                r["model"],
                r["symbol"],
                str(r["runs"]),
                *(cell(r[k], f, r["runs"]) for k, _, f in cols),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]

    def line(row: list[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        return "  ".join(cells)

    lines = [line(row) for row in table]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        "mean±std over seeds ([n/runs]: defined in n runs only); mase/rmsse < 1: smaller "
        "errors than naive's in-sample errors; "
        "ic per date across symbols in ALL rows; dm / dm p: Diebold-Mariano vs naive "
        "(dm < 0: smaller squared errors)"
    )
    return "\n".join(lines)
