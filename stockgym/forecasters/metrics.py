"""Forecast metrics by the field's standards (numpy / scipy only; no torch).

Notation: ``y_t`` the realised target, ``f_t`` the forecast, ``n_t`` the naive forecast
(zero log return, last close, probability 0.5), ``e_t = y_t - f_t``; ``y'_i``, ``n'_i``
the targets and naive forecasts of the *training* samples (``N`` of them).

``mase`` (Hyndman & Koehler 2006, "Another look at measures of forecast accuracy")
    ``mean_t |e_t| / Q`` with ``Q = mean_i |y'_i - n'_i|``, the in-sample mean absolute
    error of the naive forecast on the training data. < 1: the forecast's errors are
    smaller than the naive forecast's in-sample errors. The naive forecast is of the same
    target, so for a horizon ``h > 1`` the scale is the ``h``-step naive's (Hyndman &
    Koehler scale by the one-step naive; for ``h = 1`` the two agree).
``rmsse`` (the M5 competition's root mean squared scaled error, Makridakis et al. 2022)
    ``sqrt(mean_t e_t^2 / Q2)`` with ``Q2 = mean_i (y'_i - n'_i)^2``.
``ic`` / ``rank_ic`` (information coefficient; Grinold & Kahn, Qlib's IC / Rank IC)
    Pearson / Spearman correlation of the forecast change ``f_t - n_t`` with the realised
    change ``y_t - n_t`` (the forecast itself for returns). With several symbols per
    date: the correlation across the symbols on each date (dates with >= 3 of them;
    two points always correlate +-1), averaged over dates; with one symbol: the
    correlation over time.
``icir``
    ``mean(IC_k) / std(IC_k)`` (sample std, ``ddof=1``) over the dates (several symbols)
    or the evaluation windows (one symbol), ``k`` indexing them.
``dm_stat`` / ``dm_pvalue`` (Diebold & Mariano 1995; Harvey, Leybourne & Newbold 1997)
    loss differential ``d_t = e_t^2 - (y_t - n_t)^2`` (squared errors, model minus
    naive), ``V = (g_0 + 2 sum_{k=1}^{h-1} g_k) / T`` with ``g_k`` the lag-``k``
    autocovariance of ``d`` (divisor ``T``) and ``h`` the horizon, ``DM = mean(d) /
    sqrt(V)``; the small-sample correction ``DM* = DM sqrt((T + 1 - 2h + h(h-1)/T) /
    T)``; two-sided p-value from Student's t with ``T - 1`` degrees of freedom.
    ``dm_stat < 0``: the model's squared errors are smaller than naive's.
``auc`` (area under the ROC curve) / ``accuracy`` (classification, target ``direction``)
    ``auc = P(score of an up day > score of a not-up day)``, ties counted 1/2 (the
    Mann-Whitney U statistic / (n_up n_down)); ``accuracy = mean((p_t > 0.5) == y_t)``.

Undefined values (a constant series, fewer than 2 windows, identical losses) are NaN
(``null`` in JSON).

:func:`leaderboard` aggregates runs: mean and std over seeds per model and symbol, and
the ICs across symbols per date (``stockgym forecast compare``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

NAN = float("nan")


def _arrays(*xs: Any) -> list[np.ndarray]:
    out = [np.asarray(x, dtype="float64").ravel() for x in xs]
    if any(a.shape != out[0].shape for a in out):
        raise ValueError(f"arrays differ in length: {[a.size for a in out]}")
    if out[0].size == 0:
        raise ValueError("no samples to score")
    return out


# ------------------------------------------------------------------------ point errors
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


# ------------------------------------------------------------------------ scaled errors
def naive_scale(y_train: Any, naive_train: Any) -> dict[str, float]:
    """``{"mae": Q, "mse": Q2, "samples": N}``: the in-sample errors of the naive
    forecast on the training samples (the MASE / RMSSE denominators)."""
    y, n = _arrays(y_train, naive_train)
    err = y - n
    return {"mae": float(np.mean(np.abs(err))), "mse": float(np.mean(err**2)), "samples": y.size}


def mase(y_true: Any, y_pred: Any, scale_mae: float) -> float:
    """``mean|y - f| / Q`` (NaN when ``Q`` is 0)."""
    y, f = _arrays(y_true, y_pred)
    return NAN if not scale_mae > 0 else float(np.mean(np.abs(y - f)) / scale_mae)


def rmsse(y_true: Any, y_pred: Any, scale_mse: float) -> float:
    """``sqrt(mean (y - f)^2 / Q2)`` (NaN when ``Q2`` is 0)."""
    y, f = _arrays(y_true, y_pred)
    return NAN if not scale_mse > 0 else float(np.sqrt(np.mean((y - f) ** 2) / scale_mse))


# ------------------------------------------------------------------------ correlations
def pearson(a: Any, b: Any) -> float:
    """Pearson correlation; NaN for fewer than 2 pairs or a constant series."""
    x, y = _arrays(a, b)
    if x.size < 2:
        return NAN
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return NAN if den == 0 else float(np.sum(x * y) / den)


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation: Pearson of the ranks (ties get their average rank)."""
    x, y = _arrays(a, b)
    return pearson(stats.rankdata(x), stats.rankdata(y))


def ratio(values: Sequence[float]) -> float:
    """``mean / std`` (``ddof=1``) of the finite values; NaN for < 2 of them or std 0."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype="float64")
    if v.size < 2:
        return NAN
    sd = float(np.std(v, ddof=1))
    return NAN if sd == 0 else float(np.mean(v) / sd)


def information_coefficients(
    forecast: Any, actual: Any, *, dates: Any = None, windows: Any = None
) -> dict[str, float]:
    """``ic``, ``rank_ic``, ``icir``, ``rank_icir`` and ``ic_periods`` (module docstring).

    ``forecast`` / ``actual``: forecast and realised *changes*. ``dates``: the decision
    date of each value; when some date holds several values (several symbols), the ICs
    are cross-sectional per date and the IR is over dates. Otherwise the ICs are over
    time and the IR is over ``windows`` (a window label per value), if given.
    """
    f, y = _arrays(forecast, actual)
    groups = None
    if dates is not None:
        d = np.asarray(dates).ravel()
        _, inverse, counts = np.unique(d, return_inverse=True, return_counts=True)
        if counts.max() > 1:
            groups = inverse
    if groups is not None:
        ics, rics = [], []
        for g in np.unique(groups):
            m = groups == g
            if m.sum() >= 3:  # two points always correlate +-1
                ics.append(pearson(f[m], y[m]))
                rics.append(spearman(f[m], y[m]))
        finite = [x for x in ics if np.isfinite(x)]
        rfinite = [x for x in rics if np.isfinite(x)]
        return {
            "ic": float(np.mean(finite)) if finite else NAN,
            "rank_ic": float(np.mean(rfinite)) if rfinite else NAN,
            "icir": ratio(ics),
            "rank_icir": ratio(rics),
            "ic_periods": len(finite),
        }
    out = {"ic": pearson(f, y), "rank_ic": spearman(f, y), "icir": NAN, "rank_icir": NAN}
    out["ic_periods"] = 0
    if windows is not None:
        w = np.asarray(windows).ravel()
        labels = list(dict.fromkeys(w.tolist()))
        ics = [pearson(f[w == k], y[w == k]) for k in labels]
        rics = [spearman(f[w == k], y[w == k]) for k in labels]
        out.update(icir=ratio(ics), rank_icir=ratio(rics))
        out["ic_periods"] = sum(bool(np.isfinite(x)) for x in ics)
    return out


# ------------------------------------------------------------------- Diebold-Mariano
def diebold_mariano(
    e_model: Any, e_reference: Any, horizon: int = 1, power: int = 2
) -> tuple[float, float]:
    """``(DM*, two-sided p-value)`` of ``d_t = |e_model|^power - |e_reference|^power``
    with the Harvey-Leybourne-Newbold correction (module docstring). NaN when the
    losses are identical or there are fewer than 3 samples."""
    a, b = _arrays(e_model, e_reference)
    d = np.abs(a) ** power - np.abs(b) ** power
    t, h = d.size, int(horizon)
    if t < 3:
        return NAN, NAN
    dc = d - d.mean()
    gamma = [float(np.sum(dc[k:] * dc[: t - k]) / t) for k in range(min(h, t))]
    var = (gamma[0] + 2.0 * sum(gamma[1:])) / t
    if not var > 0:  # long-run estimate can go negative for h > 1: fall back to lag 0
        var = gamma[0] / t
    if not var > 0:
        return NAN, NAN
    dm = float(d.mean() / np.sqrt(var))
    corr = (t + 1 - 2 * h + h * (h - 1) / t) / t
    if not corr > 0:
        return NAN, NAN
    stat = dm * float(np.sqrt(corr))
    return stat, float(2.0 * stats.t.sf(abs(stat), df=t - 1))


# ---------------------------------------------------------------------- classification
def auc(y_true: Any, score: Any) -> float:
    """ROC AUC of ``score`` for the labels ``y_true > 0.5`` (Mann-Whitney; ties 1/2);
    NaN when only one class is present."""
    y, s = _arrays(y_true, score)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = stats.rankdata(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy(y_true: Any, prob: Any) -> float:
    """``mean((prob > 0.5) == (y_true > 0.5))``."""
    y, p = _arrays(y_true, prob)
    return float(np.mean((p > 0.5) == (y > 0.5)))


# ----------------------------------------------------------------------------- bundles
def field_metrics(
    target: str,
    y_true: Any,
    y_pred: Any,
    naive: Any,
    *,
    scale: dict[str, float] | None,
    horizon: int = 1,
    dates: Any = None,
    windows: Any = None,
) -> dict[str, float]:
    """``mase, rmsse, ic, rank_ic, icir, rank_icir, dm_stat, dm_pvalue, auc, accuracy``
    of one forecast (``auc`` / ``accuracy`` are NaN unless ``target == "direction"``;
    ``mase`` / ``rmsse`` NaN without ``scale``, a :func:`naive_scale` dict)."""
    y, f, n = _arrays(y_true, y_pred, naive)
    out: dict[str, float] = {
        "mase": mase(y, f, scale["mae"]) if scale else NAN,
        "rmsse": rmsse(y, f, scale["mse"]) if scale else NAN,
    }
    ics = information_coefficients(f - n, y - n, dates=dates, windows=windows)
    out.update({k: ics[k] for k in ("ic", "rank_ic", "icir", "rank_icir")})
    out["dm_stat"], out["dm_pvalue"] = diebold_mariano(y - f, y - n, horizon)
    is_dir = target == "direction"
    out["auc"] = auc(y, f) if is_dir else NAN
    out["accuracy"] = accuracy(y, f) if is_dir else NAN
    return out


def window_labels(n: int, windows: int, min_size: int = 5) -> np.ndarray:
    """Window index (0, 1, ...) of each of ``n`` consecutive samples: ``windows``
    contiguous blocks of near-equal size (fewer when a block would hold fewer than
    ``min_size`` samples); each block starts at a new forecast origin."""
    k = max(1, min(int(windows), n // max(1, min_size)))
    out = np.empty(n, dtype="int64")
    for i, idx in enumerate(np.array_split(np.arange(n), k)):
        out[idx] = i
    return out


# -------------------------------------------------------------------------- leaderboard
LEADER_KEYS: tuple[str, ...] = (
    "rmse",
    "mase",
    "rmsse",
    "directional_accuracy",
    "ic",
    "rank_ic",
    "icir",
    "dm_stat",
    "dm_pvalue",
    "auc",
    "accuracy",
    "skill",
)
ALL_SYMBOLS = "ALL"


@dataclass
class Entry:
    """One forecaster's scores in one run: ``label`` (model name), ``symbol``,
    ``replicate`` (the seed; runs of one label and symbol with different seeds are
    replicates), ``metrics`` (a ``metrics.json`` entry) and ``changes`` (decision-date
    index; columns ``forecast`` and ``actual``: changes against the naive forecast), used
    for the ICs across symbols."""

    label: str
    symbol: str
    replicate: int
    metrics: dict[str, Any]
    changes: pd.DataFrame | None = None


def mean_std(values: Sequence[Any]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the finite values (``std``: ``ddof=1``; None for
    fewer than 2 values; ``mean`` None for none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype="float64")
    return {
        "mean": float(v.mean()) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size >= 2 else None,
        "n": int(v.size),
    }


def _cross_section(entries: list[Entry]) -> dict[str, float]:
    """ICs per date across the symbols of ``entries`` (one entry per symbol)."""
    parts = [e.changes.assign(symbol=e.symbol) for e in entries if e.changes is not None]
    empty = {"ic": NAN, "rank_ic": NAN, "icir": NAN, "rank_icir": NAN}
    if len(parts) < 2:
        return empty
    both = pd.concat(parts).dropna(subset=["forecast", "actual"])
    dates = both.index.to_numpy()
    if both.empty or pd.Index(dates).value_counts().max() < 3:
        return empty  # no date shared by three symbols (two always correlate +-1)
    ics = information_coefficients(both["forecast"], both["actual"], dates=dates)
    return {k: ics[k] for k in empty}


def leaderboard(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Rows ``{"model", "symbol", "runs", "seeds", <LEADER_KEYS>: mean_std}``: one per
    (label, symbol) with the mean and std over its replicates, and with two or more
    symbols one ``symbol="ALL"`` row per label: for each replicate, the other metrics
    averaged over the symbols and ``ic`` / ``rank_ic`` / ``icir`` per date across the
    symbols (cross-sectional), then mean and std over the replicates (no DM test:
    p-values of different series do not average). Sorted by symbol
    (``ALL`` last), then by mean MASE (lowest first)."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.label, e.symbol), []).append(e)
    rows = [_row(label, sym, es, [e.metrics for e in es]) for (label, sym), es in groups.items()]
    symbols = list(dict.fromkeys(e.symbol for e in entries))
    if len(symbols) >= 2:
        for label in dict.fromkeys(e.label for e in entries):
            reps: dict[int, dict[str, Entry]] = {}
            for e in entries:
                if e.label == label:
                    reps.setdefault(e.replicate, {}).setdefault(e.symbol, e)
            pooled, used = [], []
            for by_sym in reps.values():
                if len(by_sym) < 2:
                    continue
                es = list(by_sym.values())
                m = {k: mean_std([e.metrics.get(k) for e in es])["mean"] for k in LEADER_KEYS}
                m.update(_cross_section(es), dm_stat=NAN, dm_pvalue=NAN)  # p-values don't average
                pooled.append(m)
                used.extend(es)
            if pooled:
                rows.append(_row(label, ALL_SYMBOLS, used, pooled, runs=len(pooled)))
    order = {s: i for i, s in enumerate([*symbols, ALL_SYMBOLS])}

    def key(r: dict[str, Any]) -> tuple[int, float]:
        m = r["mase"]["mean"]
        return order[r["symbol"]], (m if m is not None else np.inf)

    return sorted(rows, key=key)


def _row(
    label: str, symbol: str, es: list[Entry], metrics: list[dict], runs: int | None = None
) -> dict[str, Any]:
    return {
        "model": label,
        "symbol": symbol,
        "runs": len(metrics) if runs is None else runs,
        "seeds": sorted({int(e.replicate) for e in es}),
        **{k: mean_std([m.get(k) for m in metrics]) for k in LEADER_KEYS},
    }
