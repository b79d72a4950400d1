"""``stockgym compare``: one table of the metrics of several backtest output dirs.

Runs whose ``config.json`` is the same except for the seed (``seed``, the strategy's
``seed`` parameter, the data hash, the command line and the output dir) form a group;
a group of two or more gets a ``mean ± std`` column (sample std, ddof=1).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym import core
from stockgym.backtest.html_report import fmt_metric, page, png_tag, policy_sections, table_html
from stockgym.backtest.metrics import METRIC_KEYS
from stockgym.backtest.plots import held_price, new_figure
from stockgym.backtest.risk import RELATIVE_KEYS, RISK_KEYS

#: Files ``stockgym compare --out DIR`` writes.
COMPARE_FILES = ("compare.csv", "compare.md", "equity.png", "report.html")
#: Every metric of compare.csv and report.html (the terminal and Markdown tables keep
#: :data:`METRIC_KEYS`).
ALL_KEYS: tuple[str, ...] = (*METRIC_KEYS, *RISK_KEYS, *RELATIVE_KEYS)
PRICE_NOTE = ("<p>The price line is the close while a position is held, recovered from "
              "equity.csv (gaps while flat); fills are drawn at their prices.</p>")  # fmt: skip


@dataclass
class Run:
    """One backtest output dir, read back."""

    label: str
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame | None = None  # trades.csv; None where the dir has none

    @property
    def strategy(self) -> str:
        return self.config.get("strategy", {}).get("description") or self.config.get(
            "strategy", {}
        ).get("name", "?")

    @property
    def symbol_list(self) -> list[str]:
        return list(self.config.get("env", {}).get("symbols", []))

    @property
    def symbols(self) -> str:
        return " ".join(self.config.get("env", {}).get("symbols", []))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def group_label(self) -> str:
        """The strategy with its parameters except the seed."""
        s = self.config.get("strategy", {})
        params = {k: v for k, v in s.get("params", {}).items() if k != "seed"}
        args = ", ".join(f"{k}={v}" for k, v in params.items())
        return s.get("name", "?") + (f" ({args})" if args else "")

    @property
    def benchmark_label(self) -> str:
        b = self.config.get("benchmark", {})
        return f"benchmark {' '.join(b.get('symbols', []))}"


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read ``metrics.json``, ``config.json`` and ``equity.csv`` of a backtest dir;
    ``ValueError`` naming the dir or file when something is missing or unreadable."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{p} is not a directory (give dirs written by `stockgym backtest --out`)")
    docs = {}
    for name in ("metrics.json", "config.json"):
        f = p / name
        if not f.is_file():
            raise ValueError(
                f"{p} is not a backtest output dir: {name} is missing "
                "(give dirs written by `stockgym backtest --out DIR`)"
            )
        try:
            docs[name] = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{f} is not valid JSON: {exc}") from exc
    try:
        equity = pd.read_csv(p / "equity.csv", index_col="date", parse_dates=["date"])
    except (FileNotFoundError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"cannot read {p / 'equity.csv'}: {exc}") from exc
    trades = None
    if (p / "trades.csv").is_file():
        try:
            trades = pd.read_csv(p / "trades.csv")
        except (ValueError, pd.errors.ParserError) as exc:
            raise ValueError(f"cannot read {p / 'trades.csv'}: {exc}") from exc
    return Run(label or p.name, p, docs["metrics.json"], docs["config.json"], equity, trades)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Read several dirs; labels are dir names, or the paths given when names clash."""
    if not paths:
        raise ValueError("give at least one backtest output dir")
    names = [Path(p).name for p in paths]
    dup = {n for n in names if names.count(n) > 1}
    return [load_run(p, str(p) if Path(p).name in dup else None) for p in paths]


def group_key(config: dict[str, Any]) -> str:
    """The config without what differs between seeds of one experiment."""
    c = copy.deepcopy(config)
    for key in ("seed", "command", "out", "versions"):
        c.pop(key, None)
    c.get("data", {}).pop("hash", None)
    c.get("strategy", {}).pop("description", None)
    c.get("strategy", {}).get("params", {}).pop("seed", None)
    return json.dumps(c, sort_keys=True, default=str)


def groups(runs: list[Run]) -> list[list[Run]]:
    """Runs sharing a :func:`group_key`, in first-seen order."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(group_key(r.config), []).append(r)
    return list(out.values())


def _number(v: Any) -> float | int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
        return math.nan
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


def compare_frame(runs: list[Run]) -> pd.DataFrame:
    """The CSV table: one row per run (``kind="run"``), per distinct benchmark
    (``"benchmark"``) and, for groups of >= 2 seeds, a ``"mean"`` and a ``"std"`` row;
    columns ``label, kind, strategy, symbols, seed, n, dir`` then every metric."""
    rows = []
    for r in runs:
        rows.append(_row(r.label, "run", r, 1, r.metrics))
    rows += _benchmark_rows(runs)
    for g in groups(runs):
        if len(g) < 2:
            continue
        vals = np.array([[_number(r.metrics.get(k)) for k in ALL_KEYS] for r in g])
        label = f"{g[0].group_label} [{len(g)} seeds]"
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan metric columns
            mean = np.nanmean(vals, axis=0)
            std = np.nanstd(vals, axis=0, ddof=1)
        rows.append(_row(label, "mean", g[0], len(g), dict(zip(ALL_KEYS, mean, strict=True))))
        rows.append(_row(label, "std", g[0], len(g), dict(zip(ALL_KEYS, std, strict=True))))
    return pd.DataFrame(rows, dtype=object)


def _benchmark_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per distinct benchmark; labelled with its run when labels would clash."""
    found: dict[str, tuple[Run, dict]] = {}
    for r in runs:
        b = r.metrics.get("benchmark") or {}
        if b:
            found.setdefault(json.dumps([r.benchmark_label, b], sort_keys=True), (r, b))
    labels = [r.benchmark_label for r, _ in found.values()]
    return [
        _row(
            r.benchmark_label + (f" ({r.label})" if labels.count(r.benchmark_label) > 1 else ""),
            "benchmark",
            r,
            1,
            b,
        )
        for r, b in found.values()
    ]


def _row(label: str, kind: str, run: Run, n: int, metrics: dict) -> dict[str, Any]:
    return {
        "label": label,
        "kind": kind,
        "strategy": run.strategy,
        "symbols": run.symbols,
        "seed": run.seed if kind == "run" else None,
        "n": n,
        "dir": str(run.path) if kind == "run" else None,
        **{k: _number(metrics.get(k)) for k in ALL_KEYS},
    }


def display_columns(
    frame: pd.DataFrame, keys: tuple[str, ...] = METRIC_KEYS
) -> list[tuple[str, list[str]]]:
    """(header, formatted values of ``keys``) for each run, benchmark and group."""
    cols = []
    for _, row in frame[frame["kind"].isin(["run", "benchmark"])].iterrows():
        cols.append((row["label"], [fmt_metric(k, row[k]) for k in keys]))
    means = frame[frame["kind"] == "mean"]
    stds = frame[frame["kind"] == "std"]
    for (_, m), (_, s) in zip(means.iterrows(), stds.iterrows(), strict=True):
        vals = [
            f"{fmt_metric(k, m[k])} ± {fmt_metric(k, s[k]).replace(' d', '')}"
            if math.isfinite(float(m[k]))
            else "n/a"
            for k in keys
        ]
        cols.append((f"{m['label']} mean ± std", vals))
    return cols


def text_table(frame: pd.DataFrame) -> str:
    """The terminal table: one row per metric, one column per run / benchmark / group."""
    cols = display_columns(frame)
    width = [max(len(h), *(len(v) for v in vals)) + 2 for h, vals in cols]
    lines = [
        f"{'metric':<24}" + "".join(f"{h:>{w}}" for (h, _), w in zip(cols, width, strict=True))
    ]
    lines.append("-" * len(lines[0]))
    for i, k in enumerate(METRIC_KEYS):
        lines.append(
            f"{k:<24}"
            + "".join(f"{vals[i]:>{w}}" for (_, vals), w in zip(cols, width, strict=True))
        )
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """The same table in GitHub Markdown."""
    cols = display_columns(frame)
    esc = [h.replace("|", "\\|") for h, _ in cols]
    lines = ["| metric | " + " | ".join(esc) + " |", "|---|" + "---:|" * len(cols)]
    for i, k in enumerate(METRIC_KEYS):
        lines.append(f"| {k} | " + " | ".join(vals[i] for _, vals in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_equity(runs: list[Run], path: str | Path) -> None:
    """Every run's value over its start value (growth of 1), benchmarks dashed."""
    fig, (ax,) = new_figure(width=10, height=5)
    seen = set()
    names = policy_names(runs)
    for i, r in enumerate(runs):
        v = r.equity["value"]
        ax.plot(v.index, v / v.iloc[0], lw=1.1, color=f"C{i % 10}", label=names[i])
        b = r.equity.get("benchmark")
        key = (r.benchmark_label, tuple(r.equity.index[[0, -1]]))
        if b is not None and b.notna().all() and key not in seen:
            seen.add(key)
            ax.plot(b.index, b / b.iloc[0], lw=0.9, ls="--", color="0.4", label=r.benchmark_label)
    ax.set_ylabel("growth of 1")
    ax.set_title("Growth of 1: " + ", ".join(dict.fromkeys(names)))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def policy_names(runs: list[Run]) -> list[str]:
    """Each run's strategy description, with its label where descriptions repeat."""
    names = [r.strategy for r in runs]
    return [
        n if names.count(n) == 1 else f"{n} ({r.label})" for n, r in zip(names, runs, strict=True)
    ]


def prices_from_equity(equity: pd.DataFrame, symbols: list[str]) -> pd.DataFrame | None:
    """The close of a single symbol while a position is held, ``(value - cash) /
    position`` from ``equity.csv`` (:func:`held_price`: NaN while flat); ``None`` for
    several symbols, whose closes equity.csv does not separate (their fills are drawn at
    their prices)."""
    if len(symbols) != 1 or not {"value", "cash", "position"} <= set(equity.columns):
        return None
    held = (equity["value"] - equity["cash"]).to_numpy(np.float64)
    close = held_price(held, equity["position"].to_numpy(np.float64))
    return pd.DataFrame({symbols[0]: close}, index=equity.index)


def report_html(runs: list[Run], frame: pd.DataFrame, equity_png: bytes) -> str:
    """The comparison page: every metric of every run, benchmark and group, every run's
    growth of 1, then one block per run (equity against its benchmark, drawdowns with
    their table, monthly returns, rolling Sharpe ratio, trades on the price); every
    title names the run's strategy."""
    cols = display_columns(frame, ALL_KEYS)
    names = policy_names(runs)  # the run columns come first, in the order of runs
    cols = [(names[i] if i < len(runs) else h, v) for i, (h, v) in enumerate(cols)]
    table = pd.DataFrame({h: vals for h, vals in cols}, index=list(ALL_KEYS))
    sections = [("Metrics", table_html(table)), ("Growth of 1, every run", png_tag(equity_png))]
    for name, r in zip(names, runs, strict=True):
        bench = r.equity.get("benchmark")
        if bench is not None and not bench.notna().all():
            bench = None
        prices = prices_from_equity(r.equity, r.symbol_list) if r.trades is not None else None
        block = policy_sections(name, r.equity["value"], bench, prices, r.trades,
                                r.symbol_list, prefix=f"{name}: ")  # fmt: skip
        if r.trades is not None:
            heading, body = block[-1]
            block[-1] = (heading, PRICE_NOTE + body)
        sections += block
    return page("Comparison: " + ", ".join(names), sections)


def write_compare(runs: list[Run], out_dir: str | Path) -> pd.DataFrame:
    """Write compare.csv, compare.md, equity.png and report.html into ``out_dir``."""
    out_dir = Path(out_dir)
    frame = compare_frame(runs)
    core.write_text(out_dir / "compare.csv", frame.to_csv(index=False))
    core.write_text(out_dir / "compare.md", markdown_table(frame))
    plot_equity(runs, out_dir / "equity.png")
    core.write_text(out_dir / "report.html",
                    report_html(runs, frame, (out_dir / "equity.png").read_bytes()))  # fmt: skip
    return frame
