"""Honest evaluation: metrics on the test period, naive baselines side by side, plots.

Metrics (keys of every entry of ``metrics.json``, stable):

``rmse``, ``mae``
    root mean squared / mean absolute error in target units (log return, probability,
    or price).
``mape``
    mean absolute percentage error of the *price* implied by the forecast, in percent:
    ``100 * mean(|p_hat - p| / p)`` with ``p = c[t+h]`` and, for a log-return forecast
    ``r_hat``, ``p_hat = c[t] * exp(r_hat)``. ``None`` for ``direction`` (no price).
``directional_accuracy``
    fraction of samples where the forecast's direction matches the realised one:
    ``(pred_change > 0) == (actual_change > 0)``, where the change is the log return,
    ``price - c[t]``, or ``probability - 0.5``. A forecast of exactly no change counts
    as predicting "not up" (so the zero-return baseline scores the share of days that
    were not up).
``skill``
    ``1 - rmse / rmse_naive`` (> 0: better than the naive forecast). The naive entry's
    skill is 0 by definition.
``mase``, ``rmsse``, ``ic``, ``rank_ic``, ``icir``, ``rank_icir``, ``dm_stat``,
``dm_pvalue``, ``auc``, ``accuracy``
    the field's metrics (formulas and sources in :mod:`stockgym.forecasters.metrics`):
    errors scaled by the naive forecast's in-sample errors on the training samples,
    information coefficients, the Diebold-Mariano test against naive, and for
    ``direction`` the ROC AUC and accuracy.

Baselines: ``naive`` - zero return / last close (for ``direction``: probability 0.5);
``linear`` - a scikit-learn ridge regression (``Ridge(alpha=1.0)``; logistic regression
for ``direction``) on the same flattened, scaled input windows, fit on the training
samples only. ``direction`` adds two classification baselines: ``majority`` - the
training share of up moves as P(up) (the majority class by sign, the best constant in
Brier score), and ``last_sign`` - P(up) = 1 if the last realised ``h``-day log return
``log(c[t] / c[t-h])`` was > 0, else 0.

``metrics.json`` layout: ``{"target", "horizon", "period": {"first", "last",
"samples"}, "scale": {"mae", "mse", "samples"}, "model": {...}, "baselines": {"naive":
{...}, "linear": {...}}, "windows": {"count", "origin", "per_window": [...]}}`` (the
rolling-origin windows, see :func:`evaluate`).

:func:`load_entries`, :func:`dedupe_baselines` and :func:`plot_leaderboard` serve
``stockgym forecast compare`` (the aggregation is
:func:`stockgym.forecasters.metrics.leaderboard`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.forecasters import storage
from stockgym.forecasters.data import valuation_close
from stockgym.forecasters.metrics import (
    Entry,
    _pair,
    directional_accuracy,
    field_metrics,
    mae,
    mape,
    naive_scale,
    rmse,
    skill,
    window_labels,
)

METRIC_KEYS: tuple[str, ...] = ("rmse", "mae", "mape", "directional_accuracy")
FIELD_KEYS: tuple[str, ...] = (
    "mase",
    "rmsse",
    "ic",
    "rank_ic",
    "icir",
    "rank_icir",
    "dm_stat",
    "dm_pvalue",
    "auc",
    "accuracy",
)
BASELINES: tuple[str, ...] = ("naive", "linear")
DEFAULT_WINDOWS = 12


# ----------------------------------------------------------------------------- metrics
def score(target: str, y_true, y_pred, base_close) -> dict[str, float | None]:
    """``rmse, mae, mape, directional_accuracy`` of one forecast (see module docstring).

    ``base_close`` is the valuation close at each decision date (``c[t]``).
    """
    y, p = _pair(y_true, y_pred)
    base = np.asarray(base_close, dtype="float64").ravel()
    if base.shape != y.shape:
        raise ValueError(f"base_close has {base.size} values, y_true {y.size}")
    out: dict[str, float | None] = {"rmse": rmse(y, p), "mae": mae(y, p)}
    if target == "log_return":
        out["mape"] = mape(base * np.exp(y), base * np.exp(p))
        out["directional_accuracy"] = directional_accuracy(y, p)
    elif target == "close":
        out["mape"] = mape(y, p)
        out["directional_accuracy"] = directional_accuracy(y - base, p - base)
    elif target == "direction":
        out["mape"] = None
        out["directional_accuracy"] = directional_accuracy(y - 0.5, p - 0.5)
    else:
        raise ValueError(f"unknown target {target!r}")
    return out


def naive_forecast(target: str, base_close) -> np.ndarray:
    """Zero return (``log_return``), last close (``close``), 0.5 (``direction``)."""
    base = np.asarray(base_close, dtype="float64")
    if target == "close":
        return base.copy()
    return np.full(base.shape, 0.5 if target == "direction" else 0.0)


def majority_forecast(y_train, n: int) -> np.ndarray:
    """``n`` copies of the training share of up moves (``direction``'s ``majority``)."""
    y = np.asarray(y_train, dtype="float64")
    return np.full(n, float(np.mean(y)) if len(y) else 0.5)


def last_sign_forecast(prices: pd.DataFrame, dates, horizon: int) -> np.ndarray:
    """1.0 where ``log(c[t] / c[t-h]) > 0`` at each decision date ``t``, else 0.0."""
    close = valuation_close(prices)
    last = np.log(close / close.shift(horizon)).reindex(pd.DatetimeIndex(dates))
    return (last.to_numpy(dtype="float64") > 0).astype("float64")


def linear_forecast(target: str, x_train, y_train, x_test) -> np.ndarray:
    """Ridge regression (logistic regression for ``direction``) on flattened windows."""
    from sklearn.linear_model import LogisticRegression, Ridge

    xt = np.asarray(x_train, dtype="float64").reshape(len(x_train), -1)
    xs = np.asarray(x_test, dtype="float64").reshape(len(x_test), -1)
    y = np.asarray(y_train, dtype="float64")
    if target == "direction":
        classes = np.unique(y)
        if len(classes) < 2:
            return np.full(len(xs), float(classes[0]) if len(classes) else 0.5)
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(xt, y.astype(int))
        return clf.predict_proba(xs)[:, 1]
    return Ridge(alpha=1.0).fit(xt, y).predict(xs)


def compare(
    target: str,
    y_true,
    predictions: dict[str, np.ndarray],
    base_close,
    *,
    model_key: str = "model",
    scale: dict[str, float] | None = None,
    horizon: int = 1,
    windows=None,
) -> dict[str, Any]:
    """Score ``predictions`` (which must include ``"naive"``) and add skill vs naive and
    the field's metrics (:func:`stockgym.forecasters.metrics.field_metrics`: MASE /
    RMSSE with ``scale``, IC over time with its IR over ``windows``, DM vs naive).

    Returns ``{"model": {...}, "baselines": {name: {...}}}`` (model under ``model_key``).
    """
    if "naive" not in predictions:
        raise ValueError("predictions must include the 'naive' baseline")
    scores = {k: score(target, y_true, v, base_close) for k, v in predictions.items()}
    ref = scores["naive"]["rmse"]
    for k, s in scores.items():
        s["skill"] = 0.0 if k == "naive" else skill(s["rmse"], ref)
        s.update(
            field_metrics(
                target,
                y_true,
                predictions[k],
                predictions["naive"],
                scale=scale,
                horizon=horizon,
                windows=windows,
            )
        )
    return {
        model_key: scores.get(model_key),
        "baselines": {k: v for k, v in scores.items() if k != model_key},
    }


WINDOW_KEYS = ("rmse", "mase", "rmsse", "directional_accuracy", "ic", "rank_ic", "auc", "accuracy")


def per_window(
    target: str,
    frame: pd.DataFrame,
    labels,
    *,
    scale: dict[str, float] | None,
    horizon: int = 1,
) -> list[dict[str, Any]]:
    """The model's metrics in each evaluation window (one forecast origin each): a list of
    ``{"window", "first", "last", "samples", "naive_rmse", <WINDOW_KEYS>}``.

    ``frame``: columns ``actual, model, naive, base_close`` indexed by decision date."""
    labels = np.asarray(labels)
    out = []
    for k in dict.fromkeys(labels.tolist()):
        part = frame[labels == k]
        y, f, n = (part[c].to_numpy("float64") for c in ("actual", "model", "naive"))
        m = score(target, y, f, part["base_close"].to_numpy("float64"))
        m.update(field_metrics(target, y, f, n, scale=scale, horizon=horizon))
        out.append(
            {
                "window": int(k),
                "first": str(part.index[0].date()),
                "last": str(part.index[-1].date()),
                "samples": len(part),
                "naive_rmse": rmse(y, n),
                **{key: m[key] for key in WINDOW_KEYS},
            }
        )
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def format_table(metrics: dict[str, Any], period: str = "test period") -> str:
    """The metrics of a ``metrics.json`` dict as a text table (model first), headed by
    ``period`` and its dates when the dict has them."""
    rows = [("model", metrics["model"])] + list(metrics["baselines"].items())
    direction = metrics.get("target") == "direction"
    cols = [("rmse", 12, ".6g"), ("mae", 12, ".6g"), ("mape", 9, ".3f")]
    cols += [("mase", 8, ".4f"), ("rmsse", 8, ".4f"), ("directional_accuracy", 8, ".3f")]
    cols += [("ic", 8, "+.4f"), ("rank_ic", 8, "+.4f"), ("icir", 7, "+.2f")]
    cols += [("dm_stat", 7, "+.2f"), ("dm_pvalue", 7, ".3f"), ("skill", 9, "+.4f")]
    if direction:
        cols += [("auc", 7, ".3f"), ("accuracy", 7, ".3f")]
    names = {"mape": "mape %", "directional_accuracy": "dir.acc"}
    names.update(dm_stat="dm", dm_pvalue="dm p")
    lines = [f"{'':<10}" + "".join(f"{names.get(k, k):>{w}}" for k, w, _ in cols)]
    for name, m in rows:
        lines.append(f"{name:<10}" + "".join(f"{_fmt(m.get(k), f):>{w}}" for k, w, f in cols))
    span = metrics.get("period")
    if span:
        lines.insert(
            0,
            f"{period} {span['first']}..{span['last']} "
            f"({span['samples']} samples), target {metrics.get('target')}"
            f" h={metrics.get('horizon')}",
        )
    win = metrics.get("windows")
    if win:
        lines.append(
            f"{win['count']} rolling-origin windows ({win['origin']}); icir = mean/std of "
            "the per-window IC; dm (< 0: model better), dm p = Diebold-Mariano (HLN) vs naive"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False)
class Evaluation:
    """``metrics`` (the ``metrics.json`` dict) and ``predictions``: one row per test
    sample (index: decision date; columns ``target_date, base_close, actual, model,
    naive, linear``)."""

    metrics: dict[str, Any]
    predictions: pd.DataFrame


def evaluate(
    forecaster, prices: pd.DataFrame, splits: dict[str, dict], *, windows: int = DEFAULT_WINDOWS
) -> Evaluation:
    """Test-period metrics of ``forecaster`` and the baselines on ``prices``.

    ``splits`` is a resolved split dict (``Splits.dates``: ``{"train": {"first",
    "last"}, "test": {...}}``). The linear baseline is fit on the training samples;
    the test samples are those with decision and target dates inside the test period.
    MASE / RMSSE are scaled by the naive forecast's errors on the training samples.

    Rolling origin: the model is fit once and forecasts from every test date with the
    data up to that date (neuralforecast's ``cross_validation(refit=False)``); the test
    period is cut into ``windows`` consecutive blocks (each >= 5 samples), one origin
    each, scored one by one in ``metrics["windows"]["per_window"]``; ``icir`` is over them.
    """
    win = forecaster.windows(prices)
    train = win.between(splits["train"]["first"], splits["train"]["last"])
    test = win.between(splits["test"]["first"], splits["test"]["last"])
    if len(test) == 0:
        raise ValueError(
            f"no test samples between {splits['test']['first']} and {splits['test']['last']} "
            f"(window={forecaster.window}, horizon={forecaster.horizon})"
        )
    target = forecaster.target
    preds = {
        "model": forecaster.predict_windows(test.x),
        "naive": naive_forecast(target, test.base_close),
        "linear": linear_forecast(target, train.x, train.y, test.x),
    }
    if target == "direction":
        preds["majority"] = majority_forecast(train.y, len(test))
        preds["last_sign"] = last_sign_forecast(prices, test.dates, forecaster.horizon)
    scale = naive_scale(train.y, naive_forecast(target, train.base_close)) if len(train) else None
    labels = window_labels(len(test), windows)
    frame = pd.DataFrame(
        {
            "target_date": test.target_dates,
            "base_close": test.base_close,
            "actual": test.y,
            **preds,
            "window": labels,
        },
        index=test.dates,
    )
    frame.index.name = "date"
    h = forecaster.horizon
    metrics = {
        "target": target,
        "horizon": h,
        "period": {
            "first": str(test.dates[0].date()),
            "last": str(test.dates[-1].date()),
            "samples": len(test),
        },
        "scale": scale,
        **compare(target, test.y, preds, test.base_close, scale=scale, horizon=h, windows=labels),
        "windows": {
            "count": int(labels.max()) + 1,
            "origin": "one fit, consecutive blocks of the test period",
            "per_window": per_window(target, frame, labels, scale=scale, horizon=h),
        },
    }
    return Evaluation(json_safe(metrics), frame)


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None (recursively in dicts), so the result is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------------------- plots
def _figure(nrows: int = 1, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, imported lazily
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height * nrows), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, 1, squeeze=False)[:, 0]


def _save(fig, path: str | os.PathLike[str]) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return storage.write_bytes(path, buf.getvalue())


def plot_predictions(
    predictions: pd.DataFrame, target: str, path: str | os.PathLike[str], title: str = ""
) -> Path:
    """PNG of predicted vs actual on the test period (an :class:`Evaluation`'s frame).

    Returns / log returns: the implied price path on top, the values below; prices:
    one panel; direction: the probability of up with the realised direction.
    """
    dates = pd.DatetimeIndex(predictions["target_date"])
    if target == "log_return":
        fig, (ax_p, ax_r) = _figure(2, 3.2)
        base = predictions["base_close"].to_numpy()
        # the two price paths nearly coincide: a thick actual under a thin dashed forecast
        ax_p.plot(dates, base * np.exp(predictions["actual"]), label="actual close", lw=2.2,
                  color="0.65")  # fmt: skip
        ax_p.plot(dates, base * np.exp(predictions["model"]), label="forecast (implied close)",
                  lw=0.9, ls="--", color="C1")  # fmt: skip
        ax_p.set_ylabel("price")
        ax_p.legend(loc="best")
        # forecasts are ~100x smaller than realised returns: their own (right) axis
        ax_r.plot(dates, predictions["actual"], label="actual log return (left)", lw=0.6,
                  color="0.55")  # fmt: skip
        ax_r.axhline(0.0, color="k", lw=0.5)
        ax_r.set_ylabel("actual log return")
        ax_f = ax_r.twinx()
        ax_f.plot(dates, predictions["model"], label="forecast (right)", lw=1.0, color="C1")
        ax_f.set_ylabel("forecast log return", color="C1")
        lines = ax_r.get_lines()[:1] + ax_f.get_lines()
        ax_r.legend(lines, [x.get_label() for x in lines], loc="best")
    else:
        fig, (ax,) = _figure(1)
        if target == "close":
            ax.plot(dates, predictions["actual"], label="actual close", lw=2.2, color="0.65")
            ax.plot(dates, predictions["model"], label="forecast", lw=0.9, ls="--", color="C1")
            ax.plot(dates, predictions["naive"], label="naive (last close)", lw=0.8, ls=":")
            ax.set_ylabel("price")
        else:
            ax.scatter(dates, predictions["actual"], s=3, label="actual up (1) / not (0)")
            ax.plot(dates, predictions["model"], label="P(up)", lw=1)
            ax.axhline(0.5, color="k", lw=0.5)
            ax.set_ylabel("probability")
        ax.legend(loc="best")
    fig.axes[0].set_title(title or f"test period: forecast vs actual ({target})")
    return _save(fig, path)


def plot_losses(
    history: list[dict[str, Any]],
    path: str | os.PathLike[str],
    best_epoch: int | None = None,
    loss: str = "loss",
    model: str = "",
) -> Path:
    """PNG of training and validation loss per epoch (``loss`` names it)."""
    fig, (ax,) = _figure(1)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train", marker=".")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation", marker=".")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="k", lw=0.6, ls="--", label=f"best (epoch {best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss)
    ax.set_yscale("log")
    ax.legend(loc="best")
    ax.set_title(f"{model + ': ' if model else ''}{loss} per epoch, training and validation")
    return _save(fig, path)


# ------------------------------------------------------------------------- leaderboard
def load_entries(run_dir: str | os.PathLike[str]) -> list[Entry]:
    """The scored forecasters of one run dir (``forecast train`` or ``walk-forward``):
    the model (labelled by its name, ``"<name> wf"`` for walk-forward, with the target
    and horizon when not the default) and the baselines in its ``metrics.json``, each
    with its per-date changes against naive (from ``predictions.csv`` /
    ``forecasts.csv``). Raises ``FileNotFoundError`` / ``ValueError`` saying why."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist (or is not a directory)")
    record = storage.read_json(run_dir / "config.json", "run config (config.json)")
    metrics = storage.read_json(run_dir / "metrics.json", "run metrics (metrics.json)")
    cfg = record.get("config", {}) if isinstance(record, dict) else {}
    walk = isinstance(cfg.get("forecast"), dict)
    fc = cfg["forecast"] if walk else cfg
    if not fc.get("model") or not isinstance(metrics, dict) or "model" not in metrics:
        raise ValueError(f"{run_dir} is not a `forecast train` or `walk-forward` run")
    csv = run_dir / ("forecasts.csv" if walk else "predictions.csv")
    frame = pd.read_csv(csv, index_col="date", parse_dates=["date"]) if csv.is_file() else None
    if frame is not None and walk:
        frame = frame.rename(columns={"forecast": "model"})
    label = fc["model"] + (" wf" if walk else "")
    if fc.get("target", "log_return") != "log_return":
        label += f" {fc['target']}"
    if int(fc.get("horizon", 1)) != 1:
        label += f" h{fc['horizon']}"
    symbol = str(fc.get("symbol") or record.get("data", {}).get("symbol") or run_dir.name)
    seed = int(fc.get("seed", 0))
    out = []
    for name, m in [("model", metrics["model"]), *metrics.get("baselines", {}).items()]:
        changes = None
        if frame is not None and name in frame.columns and "naive" in frame.columns:
            changes = pd.DataFrame(
                {
                    "forecast": frame[name] - frame["naive"],
                    "actual": frame["actual"] - frame["naive"],
                }
            )
        name = label if name == "model" else name + (" wf" if walk else "")
        out.append(Entry(name, symbol, seed, m, changes))
    return out


def dedupe_baselines(entries: list[Entry]) -> list[Entry]:
    """Keep one copy of identical baselines (same name, symbol and scores), which every
    run on the same data repeats; distinct copies become replicates 0, 1, ..."""
    seen: dict[tuple, int] = {}
    counts: dict[tuple[str, str], int] = {}
    out = []
    for e in entries:
        if e.label.removesuffix(" wf") not in BASELINES + ("majority", "last_sign"):
            out.append(e)
            continue
        key = (e.label, e.symbol, e.metrics.get("rmse"), e.metrics.get("mae"))
        if key in seen:
            continue
        seen[key] = rep = counts.get((e.label, e.symbol), 0)
        counts[(e.label, e.symbol)] = rep + 1
        out.append(Entry(e.label, e.symbol, rep, e.metrics, e.changes))
    return out


def plot_leaderboard(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """PNG of the leaderboard: MASE (top) and rank IC (bottom) per symbol, one marker per
    model (hollow: baselines), error bars = std over seeds."""
    fig, axes = _figure(2, 3.4)
    symbols = list(dict.fromkeys(r["symbol"] for r in rows))
    labels = list(dict.fromkeys(r["model"] for r in rows))
    base = {b + w for b in (*BASELINES, "majority", "last_sign") for w in ("", " wf")}
    labels = [x for x in labels if x not in base] + [x for x in labels if x in base]
    width = 0.8 / max(1, len(labels))
    cell = {(r["model"], r["symbol"]): r for r in rows}
    # markers, not bars: models differ by ~0.1% of MASE, so the axis must zoom to the data
    for ax, key, name in ((axes[0], "mase", "MASE"), (axes[1], "rank_ic", "rank IC")):
        for i, label in enumerate(labels):
            xs, ys, es = [], [], []
            for j, sym in enumerate(symbols):
                stat = cell.get((label, sym), {}).get(key) or {}
                if stat.get("mean") is not None:
                    xs.append(j + (i - (len(labels) - 1) / 2) * width)
                    ys.append(stat["mean"])
                    es.append(stat["std"] or 0.0)
            color = f"C{i % 10}"
            ax.errorbar(xs, ys, yerr=es, fmt="o" if label not in base else "s", ms=5,
                        capsize=2, label=label, color=color,
                        mfc=color if label not in base else "none")  # fmt: skip
        ax.set_xticks(range(len(symbols)), symbols)
        for j in range(1, len(symbols)):
            ax.axvline(j - 0.5, color="0.85", lw=0.6)
        ax.set_ylabel(name)
        ax.grid(axis="y", lw=0.3)
    axes[1].axhline(0.0, color="k", lw=0.6, ls="--")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    runs = max((r["runs"] for r in rows), default=1)
    seeds = f"{runs} seed{'s' if runs != 1 else ''}"
    axes[0].set_title(
        "Forecast leaderboard: MASE (errors / naive's in-sample errors; lower is better)\n"
        f"and rank IC (higher is better) by model and symbol; mean ± std over up to {seeds}; "
        "ALL = across symbols"
    )
    return _save(fig, path)
