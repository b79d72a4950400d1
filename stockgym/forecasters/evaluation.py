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

Baselines: ``naive`` - zero return / last close (for ``direction``: probability 0.5);
``linear`` - a scikit-learn ridge regression (``Ridge(alpha=1.0)``; logistic regression
for ``direction``) on the same flattened, scaled input windows, fit on the training
samples only.

``metrics.json`` layout: ``{"target", "horizon", "period": {"first", "last",
"samples"}, "model": {...}, "baselines": {"naive": {...}, "linear": {...}}}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRIC_KEYS: tuple[str, ...] = ("rmse", "mae", "mape", "directional_accuracy")
BASELINES: tuple[str, ...] = ("naive", "linear")


# ----------------------------------------------------------------------------- metrics
def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype="float64").ravel()
    b = np.asarray(y_pred, dtype="float64").ravel()
    if a.shape != b.shape:
        raise ValueError(f"y_true has {a.size} values but y_pred has {b.size}")
    if a.size == 0:
        raise ValueError("no samples to score")
    return a, b


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    a, b = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(np.abs(a - b)))


def mape(price_true, price_pred) -> float:
    """Mean absolute percentage error in percent (``price_true`` must be nonzero)."""
    a, b = _pair(price_true, price_pred)
    if np.any(a == 0):
        raise ValueError("MAPE is undefined where the true value is 0")
    return float(100.0 * np.mean(np.abs(b - a) / np.abs(a)))


def directional_accuracy(change_true, change_pred) -> float:
    """Fraction of samples with ``(change_pred > 0) == (change_true > 0)``."""
    a, b = _pair(change_true, change_pred)
    return float(np.mean((a > 0) == (b > 0)))


def skill(rmse_model: float, rmse_naive: float) -> float:
    """``1 - rmse_model / rmse_naive`` (NaN when the naive RMSE is 0)."""
    return float("nan") if rmse_naive == 0 else float(1.0 - rmse_model / rmse_naive)


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
    target: str, y_true, predictions: dict[str, np.ndarray], base_close, *, model_key: str = "model"
) -> dict[str, Any]:
    """Score ``predictions`` (which must include ``"naive"``) and add skill vs naive.

    Returns ``{"model": {...}, "baselines": {name: {...}}}`` (model under ``model_key``).
    """
    if "naive" not in predictions:
        raise ValueError("predictions must include the 'naive' baseline")
    scores = {k: score(target, y_true, v, base_close) for k, v in predictions.items()}
    ref = scores["naive"]["rmse"]
    for k, s in scores.items():
        s["skill"] = 0.0 if k == "naive" else skill(s["rmse"], ref)
    return {
        model_key: scores.get(model_key),
        "baselines": {k: v for k, v in scores.items() if k != model_key},
    }


def format_table(metrics: dict[str, Any], period: str = "test period") -> str:
    """The metrics of a ``metrics.json`` dict as a text table (model first), headed by
    ``period`` and its dates when the dict has them."""
    rows = [("model", metrics["model"])] + list(metrics["baselines"].items())
    head = f"{'':<8}{'rmse':>12}{'mae':>12}{'mape %':>10}{'dir.acc':>9}{'skill':>9}"
    lines = [head]
    for name, m in rows:
        mp = "-" if m.get("mape") is None else f"{m['mape']:.3f}"
        sk = "-" if m.get("skill") is None else f"{m['skill']:+.4f}"
        lines.append(
            f"{name:<8}{m['rmse']:>12.6g}{m['mae']:>12.6g}{mp:>10}"
            f"{m['directional_accuracy']:>9.3f}{sk:>9}"
        )
    span = metrics.get("period")
    if span:
        lines.insert(
            0,
            f"{period} {span['first']}..{span['last']} "
            f"({span['samples']} samples), target {metrics.get('target')}"
            f" h={metrics.get('horizon')}",
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


def evaluate(forecaster, prices: pd.DataFrame, splits: dict[str, dict]) -> Evaluation:
    """Test-period metrics of ``forecaster`` and the baselines on ``prices``.

    ``splits`` is a resolved split dict (``Splits.dates``: ``{"train": {"first",
    "last"}, "test": {...}}``). The linear baseline is fit on the training samples;
    the test samples are those with decision and target dates inside the test period.
    """
    windows = forecaster.windows(prices)
    train = windows.between(splits["train"]["first"], splits["train"]["last"])
    test = windows.between(splits["test"]["first"], splits["test"]["last"])
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
    metrics = {
        "target": target,
        "horizon": forecaster.horizon,
        "period": {
            "first": str(test.dates[0].date()),
            "last": str(test.dates[-1].date()),
            "samples": len(test),
        },
        **compare(target, test.y, preds, test.base_close),
    }
    frame = pd.DataFrame(
        {
            "target_date": test.target_dates,
            "base_close": test.base_close,
            "actual": test.y,
            **preds,
        },
        index=test.dates,
    )
    frame.index.name = "date"
    return Evaluation(json_safe(metrics), frame)


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None (recursively in dicts), so the result is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
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

    from stockgym.forecasters import storage

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
