"""A finished sweep's outputs: the results table (one row per configuration, sorted by
the metric, mean and spread over seeds) on the terminal and as CSV and Markdown, the
runs table (one row per run), the best configuration as a runnable ``stockgym train``
config, and the test-period backtest of the best configuration (run once, after the
selection; never used for it).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from stockgym.core import write_json, write_text
from stockgym.sweep.config import SweepConfig
from stockgym.sweep.trees import build_tree

NOTE_TEST = (
    "test period: backtested once, after the best configuration was chosen on "
    "the validation metric; never used for selection"
)


# ------------------------------------------------------------------ tables
def run_rows(reports: list[dict[str, Any]], sweep: SweepConfig) -> list[dict[str, Any]]:
    """One row per run (failed and unfinished trials included, with their status)."""
    rows = []
    for rep in reports:
        base = {"config": rep["config"], **_param_cols(rep["params"], sweep)}
        if rep["runs"]:
            for r in rep["runs"]:
                rows.append(
                    {
                        **base,
                        "seed": r["seed"],
                        "status": "ok",
                        sweep.metric: r["metric"],
                        "valid_return": r["valid_return"],
                        "valid_sharpe": r["valid_sharpe"],
                        "valid_buy_and_hold_return": r["valid_bh_return"],
                        "timesteps": r["timesteps"],
                        "seconds": r["seconds"],
                        "run_dir": r["run_dir"],
                    }
                )
        else:
            status = rep["status"] + (f": {rep['error']}" if rep.get("error") else "")
            for seed, name in zip(rep.get("seeds", []), rep.get("names", []), strict=False):
                rows.append(
                    {
                        **base,
                        "seed": seed,
                        "status": status,
                        sweep.metric: None,
                        "valid_return": None,
                        "valid_sharpe": None,
                        "valid_buy_and_hold_return": None,
                        "timesteps": None,
                        "seconds": None,
                        "run_dir": str(Path("runs") / name),
                    }
                )
    rows.sort(key=lambda r: (r["config"], r["seed"]))
    return rows


def config_rows(reports: list[dict[str, Any]], sweep: SweepConfig) -> list[dict[str, Any]]:
    """One row per configuration, sorted by the mean metric over its seeds (best first;
    configurations without a finished run last): ``rank, config, <params>, seeds, mean,
    std`` (sample std over seeds; empty for one seed), ``min, max, values`` (per seed),
    ``valid_return`` (mean), ``status``."""
    by_config: dict[str, dict[str, Any]] = {}
    for rep in reports:
        entry = by_config.setdefault(
            rep["config"], {"params": rep["params"], "runs": [], "failed": []}
        )
        entry["runs"] += rep["runs"]
        if not rep["runs"]:
            entry["failed"].append(
                rep["status"] + (f": {rep['error']}" if rep.get("error") else "")
            )
    rows = []
    for cid, e in by_config.items():
        runs = sorted(e["runs"], key=lambda r: r["seed"])
        vals = [r["metric"] for r in runs]
        n_total = len(runs) + sum(
            len(sweep.seeds) if sweep.search == "optuna" else 1 for _ in e["failed"]
        )
        rets = [r["valid_return"] for r in runs if r["valid_return"] is not None]
        rows.append(
            {
                "rank": None,
                "config": cid,
                **_param_cols(e["params"], sweep),
                "seeds": f"{len(vals)}/{n_total}",
                "mean": statistics.fmean(vals) if vals else None,
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "min": min(vals) if vals else None,
                "max": max(vals) if vals else None,
                "values": " ".join(f"s{r['seed']}={r['metric']:.4g}" for r in runs),
                "valid_return": statistics.fmean(rets) if rets else None,
                "status": "ok" if not e["failed"] else "; ".join(sorted(set(e["failed"]))),
                "runs": [r["name"] for r in runs],
            }
        )
    sign = -1.0 if sweep.mode == "max" else 1.0
    rows.sort(key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0.0), r["config"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i if r["mean"] is not None else None
    return rows


def _param_cols(params: dict[str, Any], sweep: SweepConfig) -> dict[str, Any]:
    return {k: params.get(k) for k in sweep.keys}


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.{digits}g}"
    if isinstance(value, list):
        return "+".join(_cell(v) for v in value)
    return str(value)


def _config_columns(sweep: SweepConfig) -> list[str]:
    return [
        "rank",
        "config",
        *sweep.keys,
        "seeds",
        "mean",
        "std",
        "min",
        "max",
        "values",
        "valid_return",
        "status",
    ]


def _run_columns(sweep: SweepConfig) -> list[str]:
    return [
        "config",
        *sweep.keys,
        "seed",
        "status",
        sweep.metric,
        "valid_return",
        "valid_sharpe",
        "valid_buy_and_hold_return",
        "timesteps",
        "seconds",
        "run_dir",
    ]


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV text (full precision; lists joined with ``+``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                ""
                if r.get(c) is None
                else "+".join(map(str, r[c]))
                if isinstance(r.get(c), list)
                else r[c]
                for c in columns
            ]
        )
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table (numbers to 4 significant digits)."""
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows
    ]
    return "\n".join([head, sep, *body]) + "\n"


def to_text(rows: list[dict[str, Any]], columns: list[str], max_width: int = 40) -> str:
    """A fixed-width text table for the terminal."""
    cells = [[_cell(r.get(c))[:max_width] for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def write_tables(
    sweep_dir: Path, sweep: SweepConfig, configs: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> list[Path]:
    """``results.csv`` (configurations), ``runs.csv`` (runs), ``results.md`` (both)."""
    ccols, rcols = _config_columns(sweep), _run_columns(sweep)
    paths = [
        write_text(sweep_dir / "results.csv", to_csv(configs, ccols)),
        write_text(sweep_dir / "runs.csv", to_csv(runs, rcols)),
    ]
    md = (
        f"# Sweep results\n\nMetric: `{sweep.metric}` ({sweep.mode}), validation period; "
        f"search: {sweep.search}; seeds: {', '.join(map(str, sweep.seeds))}. Mean and sample "
        f"std over seeds per configuration, best first.\n\n"
        f"## Configurations\n\n{to_markdown(configs, ccols)}\n## Runs\n\n"
        f"{to_markdown(runs, rcols)}"
    )
    paths.append(write_text(sweep_dir / "results.md", md))
    return paths


# ------------------------------------------------------------------ the best configuration
def best_tree(sweep: SweepConfig, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The best configuration as a ``stockgym train`` config dict (no run dir)."""
    from stockgym.sweep.trees import _absolute_paths

    base = json.loads(json.dumps(sweep.train))
    _absolute_paths(base)
    tree = build_tree(base, params, seed)
    tree.pop("run_dir", None)
    tree.pop("progress", None)
    return tree


def write_best(sweep_dir: Path, sweep: SweepConfig, best: dict[str, Any]) -> Path:
    """``best.toml``: ``stockgym train --config SWEEP/best.toml`` trains the best
    configuration (with the sweep's first seed; ``--seed N`` for another)."""
    from stockgym.experiment.config import to_toml

    tree = best_tree(sweep, _params_of(best, sweep), sweep.seeds[0])
    spread = f", std {best['std']:.4g}" if best["std"] is not None else ""
    head = [
        f"# Best configuration of the sweep in {sweep_dir}",
        f"# ({sweep.search} search; metric {sweep.metric}, {sweep.mode}, validation period).",
        f"# {best['config']}: "
        + (", ".join(f"{k} = {_cell(best[k])}" for k in sweep.keys) or "the base config"),
        f"# {sweep.metric}: mean {best['mean']:.4g}{spread} over {best['seeds']} seeds "
        f"({best['values']})",
        f"# Run it: stockgym train --config {sweep_dir / 'best.toml'} [--seed N] [--run-dir DIR]",
        "",
    ]
    return write_text(sweep_dir / "best.toml", "\n".join(head) + to_toml(tree))


def _params_of(row: dict[str, Any], sweep: SweepConfig) -> dict[str, Any]:
    return {k: row[k] for k in sweep.keys}


def test_backtest(
    sweep_dir: Path,
    best: dict[str, Any],
    runs: list[dict[str, Any]],
    *,
    plots: bool = True,
    n_random: int = 5,
) -> dict[str, Any]:
    """Backtest every run of the best configuration on its held-out test period, once:
    ``stockgym backtest --model RUN --out SWEEP/best/test-<run>`` (the full report) and
    :func:`stockgym.experiment.holdout_returns` (agent, buy-and-hold and the mean of
    ``n_random`` random policies, after-cost log returns). Writes and returns
    ``best/test.json``."""
    from stockgym.backtest.report import atomic_dir, format_report, write_backtest
    from stockgym.experiment import backtest_run, holdout_returns, read_record

    out_root = sweep_dir / "best"
    chosen = sorted(
        (r for r in runs if r["config"] == best["config"] and r["status"] == "ok"),
        key=lambda r: r["seed"],
    )
    earlier = _earlier_test(out_root / "test.json", best["config"], chosen)
    if earlier is not None:  # a resumed sweep with the same best: the test stays touched once
        return earlier
    rows = []
    period = None
    for r in chosen:
        run_dir = Path(r["run_dir"])
        name = run_dir.name
        record = read_record(run_dir)
        period = record["splits"]["test"]
        held = holdout_returns(run_dir, "test", n_random=n_random)
        out = out_root / f"test-{name}"
        bt = backtest_run(run_dir, "test")
        config = bt.report_config(out)
        with atomic_dir(out, force=True) as tmp:
            metrics = write_backtest(bt.result, tmp, config, plots=plots)
        write_text(out / "report.txt", format_report(config, metrics, out) + "\n")
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        rows.append(
            {
                "run": name,
                "seed": r["seed"],
                "run_dir": str(run_dir),
                "backtest_dir": str(out),
                "log_return": held["agent"],
                "buy_and_hold_log_return": held["buy_and_hold"],
                "random_log_return": held.get("random"),
                "total_return": metrics.get("total_return"),
                "sharpe": metrics.get("sharpe"),
                "max_drawdown": metrics.get("max_drawdown"),
                "buy_and_hold_sharpe": (metrics.get("benchmark") or {}).get("sharpe"),
            }
        )
    mean = {
        k: _mean([row[k] for row in rows])
        for k in (
            "log_return",
            "buy_and_hold_log_return",
            "random_log_return",
            "total_return",
            "sharpe",
            "max_drawdown",
        )
    }
    std = {k: _std([row[k] for row in rows]) for k in ("log_return", "sharpe")}
    result = {
        "note": NOTE_TEST,
        "config": best["config"],
        "params": {
            k: best[k]
            for k in best
            if k
            not in (
                "rank",
                "config",
                "seeds",
                "mean",
                "std",
                "min",
                "max",
                "values",
                "valid_return",
                "status",
                "runs",
            )
        },
        "period": period,
        "runs": rows,
        "mean": mean,
        "std": std,
    }
    write_json(out_root / "test.json", _finite(result))
    return result


def _earlier_test(path: Path, config: str, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``best/test.json`` of an earlier invocation when it covers the same runs."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if old.get("config") != config or [r.get("run_dir") for r in old.get("runs", [])] != [
        r["run_dir"] for r in runs
    ]:
        return None
    return {**old, "earlier": True}


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def _std(xs: list[Any]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.stdev(xs) if len(xs) > 1 else None


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
