"""The results of ``stockgym evaluate`` as statistics, verdicts, files and plots.

Per policy, over every symbol x window ("unit"): the daily log returns of the policy
are averaged over its seeds within each unit, the excess over buy-and-hold is taken day
by day, and the pooled days give the annualised mean excess log return with a 95 %
interval: a circular block bootstrap over days within units (fewer than 10 units), or
the plain bootstrap over units (10 or more, the units being independent test windows).
The Sharpe ratio of the pooled seed-averaged returns gets the same interval; ``psr``
and ``deflated_sharpe`` (:mod:`stockgym.experiment.stats`) use the pooled returns and,
for the deflated ratio, every seed's Sharpe ratio as the trials. The spread over seeds
is reported separately (``per_seed``). Formulas and sources: ``docs/evaluate.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym import core
from stockgym.backtest import metrics as bm
from stockgym.backtest.html_report import fmt_metric, page, png_tag, policy_sections, table_html
from stockgym.backtest.risk import risk_metrics
from stockgym.experiment import stats
from stockgym.experiment.records import json_ready, load_data

AGENTS = ("agent", "agent_no_forecasts")
UNIT_BOOTSTRAP_FROM = 10  # units (symbol x window) from which the bootstrap is over units
COLLAPSE = 0.95  # share of days long and return correlation that count as buy-and-hold
#: How the pages name the baselines (the agents' names come from the config: display_name).
BASELINE_NAMES = {"buy_and_hold": "buy-and-hold", "sma_cross": "SMA 20/50 cross",
                  "forecast_sign": "forecast > 0", "random": "random"}  # fmt: skip
#: The metrics of each policy's chained out-of-sample returns in report.html.
RETURN_METRICS = ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown",
                  "max_drawdown_duration", "calmar", "days")  # fmt: skip


def _units(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Per (symbol, window): seed-averaged daily log returns and the benchmark's."""
    by_unit: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_unit[(r["symbol"], r["window"])].append(r)
    out = {}
    for key, runs in sorted(by_unit.items()):
        logs = np.mean([np.log1p(np.asarray(r["returns"])) for r in runs], axis=0)
        bench = np.log1p(np.asarray(runs[0]["bench_returns"]))
        out[key] = {"log": logs, "bench": bench, "excess": logs - bench}
    return out


def policy_stats(rows: list[dict[str, Any]], n_trials: int, n_boot: int) -> dict[str, Any]:
    """The statistics of one policy's runs (module docstring)."""
    units = _units(rows)
    excess = [u["excess"] for u in units.values()]
    logs = [u["log"] for u in units.values()]
    pooled_ex, pooled = np.concatenate(excess), np.expm1(np.concatenate(logs))

    def ann_mean(x: np.ndarray) -> float:
        return float(np.mean(x) * stats.PERIODS)

    if len(units) >= UNIT_BOOTSTRAP_FROM:
        per_unit = np.array([ann_mean(e) for e in excess])
        ex_ci = stats.unit_bootstrap_ci(per_unit, n_boot=n_boot)
        sr_ci = stats.unit_bootstrap_ci(
            np.array([stats.annual_sharpe(np.expm1(lg)) for lg in logs]), n_boot=n_boot
        )
        method = "bootstrap over windows"
    else:
        ex_ci = stats.block_bootstrap_ci(excess, ann_mean, n_boot=n_boot)
        sr_ci = stats.block_bootstrap_ci(
            logs, lambda x: stats.annual_sharpe(np.expm1(x)), n_boot=n_boot
        )
        method = "circular block bootstrap over days"
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    per_seed = {}
    for s in seeds:
        mine = [r for r in rows if r["seed"] == s]
        ex = np.concatenate([np.log1p(r["returns"]) - np.log1p(r["bench_returns"]) for r in mine])
        ret = np.concatenate([np.asarray(r["returns"]) for r in mine])
        per_seed[str(s)] = {"excess_log_return": ann_mean(ex),
                            "sharpe": stats.annual_sharpe(ret)}  # fmt: skip
    trial_srs = [v["sharpe"] / math.sqrt(stats.PERIODS) for v in per_seed.values()]
    wins = [float(u["log"].sum() > u["bench"].sum()) for u in units.values()]
    out = {
        "excess_log_return": {"mean": ann_mean(pooled_ex), "ci95": list(ex_ci)},
        "sharpe": {"mean": stats.annual_sharpe(pooled), "ci95": list(sr_ci)},
        "psr": stats.psr(pooled),
        "deflated_sharpe": stats.deflated_sharpe(pooled, n_trials, trial_srs),
        "win_rate_windows": float(np.mean(wins)),
        "verdict": stats.verdict(ex_ci),
        "interval": method,
        "runs": len(rows),
        "units": len(units),
        "per_seed": per_seed,
    }
    if rows[0]["policy"] in AGENTS:
        out["diagnostics"] = diagnostics(rows)
    return out


def diagnostics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Collapse diagnostics of an agent's runs: means of the share of days long, turnover,
    action entropy (bits) and correlation of daily returns with buy-and-hold, and how
    many runs collapsed to buy-and-hold (long on >= 95 % of days with a return
    correlation >= 0.95) or never traded."""

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        return float(np.mean(vals)) if vals else None

    collapsed = sum(
        1 for r in rows
        if r["share_long"] >= COLLAPSE and (r["corr_with_buy_and_hold"] or 0) >= COLLAPSE
    )  # fmt: skip
    return {
        "share_long": mean("share_long"),
        "turnover": mean("turnover"),
        "action_entropy": mean("action_entropy"),
        "corr_with_buy_and_hold": mean("corr_with_buy_and_hold"),
        "collapsed_to_buy_and_hold": collapsed,
        "never_trades": sum(1 for r in rows if r["trades"] == 0),
    }


def summarize(config: Any, windows: list[Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_policy[r["policy"]].append(r)
    n_trials = config.n_trials()
    order = [p for p in (*AGENTS, "buy_and_hold", "sma_cross", "forecast_sign", "random")
             if p in by_policy]  # fmt: skip
    return {
        "policies": {
            p: policy_stats(by_policy[p], n_trials if p in AGENTS else 1, config.n_boot)
            for p in order
        },
        "windows": [w.dict() for w in windows],
        "n_trials": n_trials,
        "seeds": list(config.seeds),
        "symbols": sorted({w.symbol for w in windows}),
    }


def sentence(name: str, s: dict[str, Any], summary: dict[str, Any]) -> str:
    """One plain-language verdict with its interval."""
    lo, hi = s["excess_log_return"]["ci95"]
    size = (f"{len({w['k'] for w in summary['windows']})} windows x "
            f"{len(summary['seeds'])} seeds x {len(summary['symbols'])} symbols")  # fmt: skip
    interval = f"excess return {lo:+.1%}..{hi:+.1%} a year, 95 % CI, {size}"
    if s["verdict"] == "edge":
        return f"{name}: an edge over buy-and-hold: {interval}"
    if s["verdict"] == "worse":
        return f"{name}: worse than buy-and-hold: {interval}"
    return f"{name}: no evidence of an edge: {interval}"


def table(summary: dict[str, Any]) -> str:
    """The policies as a Markdown table (intervals in brackets)."""
    head = ("| policy | excess log return / yr [95 % CI] | Sharpe [95 % CI] | PSR | "
            "deflated Sharpe | windows won | verdict |")  # fmt: skip
    lines = [head, "|---|---|---|---:|---:|---:|---|"]
    for name, s in summary["policies"].items():
        ex, sr = s["excess_log_return"], s["sharpe"]
        lines.append(
            f"| {name} | {ex['mean']:+.2%} [{ex['ci95'][0]:+.2%}, {ex['ci95'][1]:+.2%}] | "
            f"{sr['mean']:.2f} [{sr['ci95'][0]:.2f}, {sr['ci95'][1]:.2f}] | "
            f"{_f(s['psr'])} | {_f(s['deflated_sharpe'])} | {s['win_rate_windows']:.0%} | "
            f"{s['verdict']} |"
        )
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def write_report(config: Any, windows: list[Any], results: list[dict[str, Any]],
                 out: Path) -> dict[str, Any]:  # fmt: skip
    """``summary.json``, ``results.csv``, ``report.md`` and the plots; returns the summary."""
    summary = summarize(config, windows, results)
    core.write_json(out / "summary.json", json_ready(summary))
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in ("returns", "bench_returns")}
                          for r in results])  # fmt: skip
    frame["seed"] = frame["seed"].astype("Int64")  # baselines without a seed: empty
    frame = frame.sort_values(["symbol", "window", "policy", "seed"], na_position="first")
    core.write_text(out / "results.csv", frame.to_csv(index=False))
    lines = ["# stockgym evaluate", "", table(summary), ""]
    lines += [f"- {sentence(n, s, summary)}" for n, s in summary["policies"].items()]
    for name in AGENTS:
        d = summary["policies"].get(name, {}).get("diagnostics")
        if d:
            lines.append(
                f"- {name} diagnostics: long {_pct(d['share_long'])} of days, turnover "
                f"{_f(d['turnover'])}, action entropy {_f(d['action_entropy'])} bits, return "
                f"correlation with buy-and-hold {_f(d['corr_with_buy_and_hold'])}; "
                f"{d['collapsed_to_buy_and_hold']} run(s) collapsed to buy-and-hold, "
                f"{d['never_trades']} never traded"
            )
    lines += ["", "Intervals: " + next(iter(summary["policies"].values()))["interval"]
              + "; see docs/evaluate.md.", ""]  # fmt: skip
    core.write_text(out / "report.md", "\n".join(lines))
    _plots(summary, results, out)
    core.write_text(out / "report.html", report_html(config, windows, summary, results, out))
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _plots(summary: dict[str, Any], results: list[dict[str, Any]], out: Path) -> None:
    """``excess_by_window.png`` (each policy's annualised excess per window, with a block
    bootstrap interval) and ``equity.png`` (every run's growth of 1, per window)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    units = sorted({(r["symbol"], r["window"]) for r in results})
    policies = list(summary["policies"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(units) * len(policies) / 3), 4))
    width = 0.8 / max(1, len(policies))
    for j, p in enumerate(policies):
        mine = [r for r in results if r["policy"] == p]
        for i, unit in enumerate(units):
            ex = _units([r for r in mine if (r["symbol"], r["window"]) == unit])[unit]["excess"]
            lo, hi = stats.block_bootstrap_ci([ex], lambda x: float(np.mean(x) * 252), n_boot=300)
            mid = float(np.mean(ex) * 252)
            x = i + (j - (len(policies) - 1) / 2) * width
            ax.errorbar(x, mid, yerr=[[mid - lo], [hi - mid]], fmt="o", color=f"C{j}",
                        label=p if i == 0 else None, capsize=3)  # fmt: skip
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(units)), [f"{s} w{k}" for s, k in units], rotation=45, ha="right")
    ax.set_ylabel("excess log return over buy-and-hold / year")
    ax.set_title("Excess return per test window (95 % block-bootstrap CI), every policy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "excess_by_window.png", dpi=110)
    plt.close(fig)

    cols = min(3, len(units))
    rows_n = math.ceil(len(units) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.2 * rows_n), squeeze=False)
    for i, unit in enumerate(units):
        ax = axes[i // cols][i % cols]
        runs = [r for r in results if (r["symbol"], r["window"]) == unit]
        for j, p in enumerate(policies):
            for r in (x for x in runs if x["policy"] == p):
                label = p if r["seed"] in (None, summary["seeds"][0]) else None
                ax.plot(np.cumprod(1 + np.asarray(r["returns"])), color=f"C{j}", lw=0.9,
                        label=label, alpha=0.8)  # fmt: skip
        bench = np.cumprod(1 + np.asarray(runs[0]["bench_returns"]))
        ax.plot(bench, color="black", ls="--", lw=1, label="buy-and-hold (benchmark)")
        ax.set_title(f"{unit[0]} window {unit[1]}: every run")
        ax.set_xlabel("trading days")
        ax.set_ylabel("growth of 1")
    axes[0][0].legend(fontsize=7)
    for k in range(len(units), rows_n * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "equity.png", dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ report.html
def display_name(policy: str, config: Any) -> str:
    """The name a person reads: ``PPO + LSTM forecasts``, ``PPO without forecasts``,
    ``buy-and-hold``... (the agent's algorithm and forecaster from ``[train]``)."""
    if policy not in AGENTS:
        return BASELINE_NAMES.get(policy, policy)
    tc = config.train_config()
    algo = str(tc.algo).upper()
    fc = tc.env.forecasts
    if policy == "agent_no_forecasts":
        return f"{algo} without forecasts"
    if not fc:
        return algo
    model = fc.get("model") if isinstance(fc, dict) else None
    return f"{algo} + {str(model or 'pretrained').upper()} forecasts"


def _symbol_prices(config: Any, symbols: list[str]) -> dict[str, pd.DataFrame | None]:
    """The evaluated data of each symbol (None where it cannot be loaded)."""
    tc, out = config.train_config(), {}
    for symbol in symbols:
        try:
            out[symbol] = load_data(dataclasses.replace(tc.data, symbols=[symbol]))
        except (OSError, ValueError):
            out[symbol] = None
    return out


def _window_dates(windows: list[Any], prices: dict[str, pd.DataFrame | None]) -> dict:
    """Each window's trading dates from ``start`` (the close the first decision is made
    at) to ``last``; business days where the data cannot be loaded."""
    out = {}
    for w in windows:
        frame = prices.get(w.symbol)
        if frame is None:
            out[(w.symbol, w.k)] = pd.bdate_range(w.start, w.last)
        else:
            idx = frame.index
            out[(w.symbol, w.k)] = idx[
                (idx >= pd.Timestamp(w.start)) & (idx <= pd.Timestamp(w.last))
            ]
    return out


def _chained(rows: list[dict[str, Any]], dates: dict) -> tuple[pd.Series, pd.Series]:
    """The growth of 1 of ``rows`` (one run per window, in window order) and of
    buy-and-hold, compounded across the consecutive windows: ``V_t = prod(1 + r_s)``."""
    idx, r, b = [], [], []
    for row in rows:
        d = dates[(row["symbol"], row["window"])]
        n = min(len(row["returns"]), len(d) - 1)
        idx += list(d[1 : n + 1]) if idx else list(d[: n + 1])
        r += list(row["returns"][:n])
        b += list(row["bench_returns"][:n])
    first = pd.DatetimeIndex(idx)
    v = pd.Series(np.concatenate([[1.0], np.cumprod(1 + np.asarray(r))]), index=first)
    bh = pd.Series(np.concatenate([[1.0], np.cumprod(1 + np.asarray(b))]), index=first)
    return v, bh


def returns_metrics(values: pd.Series, bench: pd.Series | None) -> dict[str, Any]:
    """:data:`RETURN_METRICS` and the risk metrics (relative ones against ``bench``) of a
    value series' daily returns."""
    r = bm.returns_from_values(values.to_numpy(np.float64))
    b = None if bench is None else bm.returns_from_values(bench.to_numpy(np.float64))
    out: dict[str, Any] = {k: getattr(bm, k)(r) for k in RETURN_METRICS if k != "days"}
    out["days"] = len(r)
    return {**out, **risk_metrics(r, b)}


def report_html(config: Any, windows: list[Any], summary: dict[str, Any],
                results: list[dict[str, Any]], out: Path) -> str:  # fmt: skip
    """The evaluation page: the statistics and verdicts of every policy (by display
    name), the per-window excess plot, the metrics of each policy's chained out-of-sample
    curve beside buy-and-hold's, then one block per policy (module text: which runs)."""
    names = {p: display_name(p, config) for p in summary["policies"]}
    symbol = summary["symbols"][0]
    prices = _symbol_prices(config, [symbol])
    dates = _window_dates([w for w in windows if w.symbol == symbol], prices)
    seed0 = summary["seeds"][0] if summary["seeds"] else None
    blocks, columns, bench_metrics = [], {}, None
    for p, name in names.items():
        seeds = {r["seed"] for r in results if r["policy"] == p}
        seed = seed0 if seed0 in seeds else None
        rows = sorted((r for r in results if r["policy"] == p and r["symbol"] == symbol
                       and r["seed"] == seed), key=lambda r: r["window"])  # fmt: skip
        if not rows:
            continue
        values, bench = _chained(rows, dates)
        columns[name] = returns_metrics(values, bench)
        bench_metrics = bench_metrics or returns_metrics(bench, None)
        last = rows[-1]
        tag = p if seed is None else f"{p}-s{seed}"
        trades_csv = out / "runs" / symbol / f"w{last['window']}" / tag / "trades.csv"
        trades = pd.read_csv(trades_csv) if trades_csv.is_file() else None
        d = dates[(symbol, last["window"])]
        closes = None
        if prices[symbol] is not None:
            closes = pd.DataFrame({symbol: prices[symbol]["close"].reindex(d)}, index=d)
        which = f"seed {seed}" if seed is not None else "no seed"
        label = f"{name} ({which}, {symbol})"
        blocks += policy_sections(label, values, bench, closes, trades, [symbol],
                                  prefix=f"{name}: ")  # fmt: skip
        if trades is None:
            blocks[-1] = (blocks[-1][0], f"<p>{html_escape(name)}: the trades of window "
                          f"{last['window']} were not recorded (its run dir has no "
                          "trades.csv).</p>")  # fmt: skip
        else:
            blocks[-1] = (blocks[-1][0], f"<p>Window {last['window']} ({d[0].date()}.."
                          f"{d[-1].date()}), the last test window.</p>" + blocks[-1][1])  # fmt: skip
    keys = list(RETURN_METRICS) + [k for k in next(iter(columns.values()), {})
                                   if k not in RETURN_METRICS]  # fmt: skip
    table = pd.DataFrame(
        {**{n: [fmt_metric(k, m.get(k)) for k in keys] for n, m in columns.items()},
         "buy-and-hold": [fmt_metric(k, (bench_metrics or {}).get(k)) for k in keys]},
        index=keys,
    )  # fmt: skip
    verdicts = "".join(
        f"<li>{html_escape(sentence(names[n], s, summary))}</li>"
        for n, s in summary["policies"].items()
    )
    stats_table = pd.DataFrame(
        {names[n]: {"excess log return / yr": f"{s['excess_log_return']['mean']:+.2%}",
                    "95 % CI": "{:+.2%} .. {:+.2%}".format(*s["excess_log_return"]["ci95"]),
                    "Sharpe": f"{s['sharpe']['mean']:.2f}",
                    "Sharpe 95 % CI": "{:.2f} .. {:.2f}".format(*s["sharpe"]["ci95"]),
                    "PSR": _f(s["psr"]), "deflated Sharpe": _f(s["deflated_sharpe"]),
                    "windows won": f"{s['win_rate_windows']:.0%}", "verdict": s["verdict"]}
         for n, s in summary["policies"].items()}
    ).T  # fmt: skip
    how = (f"<p>Each policy's curve chains its test windows on {html_escape(symbol)} in "
           f"order (window k starts at the close where window k-1 ends, so every day is out "
           f"of sample; agents are retrained before each window): the first seed "
           f"({seed0}) for agents and the random policy, the one run of each other baseline. "
           "Metrics are those of that chained curve; buy-and-hold is chained the same way. "
           "Trades are drawn for the last window's run. The statistics above pool every "
           "seed, window and symbol (docs/evaluate.md).</p>")  # fmt: skip
    sections = [
        ("Policies", table_html(stats_table)),
        ("Verdicts", f"<ul>{verdicts}</ul>"),
        ("Excess return per window", png_tag((out / "excess_by_window.png").read_bytes())),
        ("Every run, per window", png_tag((out / "equity.png").read_bytes())),
        ("Metrics of the chained out-of-sample curves", how + table_html(table)),
        *blocks,
    ]
    return page("stockgym evaluate: " + ", ".join(names.values()), sections)
