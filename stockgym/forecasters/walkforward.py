"""Walk-forward (out-of-sample) forecasts, usable as environment features.

:func:`walk_forward` refits a forecaster every ``refit_every`` rows and forecasts the
rows up to the next refit, so the forecast dated t is made after the close of t by a
model whose training samples all have targets dated <= t:

* a refit at decision date ``t_r`` trains on the samples whose *target* date is <= t_r
  (expanding from the first sample, or the last ``train_size`` of them with
  ``mode="rolling"``); the last ``valid_fraction`` of those samples (after a purge of
  ``horizon`` samples) is its early-stopping validation set;
* its input scaler is fit on input rows dated <= t_r;
* it forecasts the decision dates ``t_r <= t < t_{r+1}``.

The first refit happens once ``min_train`` training samples exist; earlier dates get no
forecast (they are not in the output). The schedule depends only on dates, never on
prices, so changing prices after t cannot change a forecast dated <= t (a test perturbs
the future to check it).

Results are cached on disk (``<price cache dir>/forecasts/``, see
:func:`stockgym.data.fdr.resolve_cache_dir`), keyed by a SHA-256 of the prices and the
configuration, written atomically (``.npz``, loaded without pickle).

:func:`env_features` builds "indicators + forecasts" for
:class:`stockgym.envs.StockTradingEnv` in one call.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.core import resolve_device
from stockgym.data import DataError, FeatureScaler, build_features
from stockgym.forecasters import storage
from stockgym.forecasters.data import (
    build_inputs,
    default_features,
    default_scaler,
    make_windows,
    single_symbol,
    valuation_close,
)
from stockgym.forecasters.forecaster import Forecaster
from stockgym.forecasters.models import build_model
from stockgym.forecasters.training import (
    DictConfig,
    ForecastConfig,
    check_int,
    fit,
    seeded,
    target_scaling,
)

CACHE_FORMAT = 1
MODES = ("expanding", "rolling")


def _default_forecast() -> ForecastConfig:
    return ForecastConfig(
        model="mlp",
        window=20,
        hidden_size=32,
        num_layers=2,
        dropout=0.1,
        epochs=30,
        patience=5,
        batch_size=128,
    )


@dataclass
class WalkForwardConfig(DictConfig):
    """Walk-forward settings (``forecast``: the model, inputs, target and training).

    ``refit_every``: rows between refits; ``min_train``: training samples needed before
    the first forecast; ``mode``: ``"expanding"`` or ``"rolling"`` (the last
    ``train_size`` samples); ``valid_fraction``: share of each refit's samples used for
    early stopping (taken from their end); ``warm_start``: start each refit from the
    previous refit's weights (faster; still leak-free).
    """

    forecast: ForecastConfig = field(default_factory=_default_forecast)
    refit_every: int = 126
    min_train: int = 500
    mode: str = "expanding"
    train_size: int | None = None
    valid_fraction: float = 0.2
    warm_start: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.forecast, dict):
            self.forecast = ForecastConfig.from_dict(self.forecast)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not isinstance(self.forecast, ForecastConfig):
            raise ValueError("forecast must be a ForecastConfig")
        self.forecast.validate()
        check_int("refit_every", self.refit_every)
        check_int("min_train", self.min_train)
        check_int("train_size", self.train_size, 2, optional=True)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "rolling" and self.train_size is None:
            raise ValueError("mode='rolling' needs train_size (samples per refit)")
        if not isinstance(self.valid_fraction, (int, float)) or not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction!r}")

    def key_dict(self) -> dict[str, Any]:
        """The fields that change the forecasts (for the cache key)."""
        d = self.to_dict()
        f = d["forecast"]
        for k in (
            "symbol",
            "source",
            "start",
            "end",
            "data_options",
            "cache_dir",
            "train_end",
            "valid_end",
            "run_dir",
            "progress",
            "plots",
            "tensorboard",
            "eval_windows",  # how forecasts are scored, not what they are
        ):
            f.pop(k)
        return d


def walk_forward(
    prices: pd.DataFrame,
    config: WalkForwardConfig | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Out-of-sample forecasts for every date after the first refit (module docstring).

    ``prices``: one symbol (flat columns) or several (``(symbol, field)`` columns; each
    symbol gets its own models). Returns a float64 frame indexed by date with one column
    ``"forecast"`` (target units: next-``horizon`` log return by default), or columns
    ``(symbol, "forecast")`` for several symbols. ``attrs["refits"]`` lists, per
    symbol, each refit's ``date``, ``last_target_date`` (the latest target its training
    used, always <= ``date``), sample counts and ``best_epoch``; ``attrs["config"]`` the
    config. ``cache=False`` skips the disk cache.
    """
    config = config or WalkForwardConfig()
    config.validate()
    if isinstance(prices, pd.DataFrame) and isinstance(prices.columns, pd.MultiIndex):
        symbols = [str(s) for s in dict.fromkeys(prices.columns.get_level_values(0))]
        parts = {s: _one(single_symbol(prices, s)[1], s, config, cache, cache_dir) for s in symbols}
        out = pd.concat({s: p["forecast"] for s, p in parts.items()}, axis=1, join="inner")
        out.columns = pd.MultiIndex.from_product(
            [symbols, ["forecast"]], names=["symbol", "feature"]
        )
        out.attrs = {
            "refits": {s: p.attrs["refits"] for s, p in parts.items()},
            "config": config.to_dict(),
        }
        return out
    symbol, frame = single_symbol(prices)
    return _one(frame, symbol, config, cache, cache_dir)


def _cache_file(
    prices: pd.DataFrame, symbol: str | None, config: WalkForwardConfig, cache_dir
) -> Path:
    from stockgym.data.fdr import resolve_cache_dir

    device = resolve_device(config.forecast.device).type
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "config": config.key_dict(),
            "device": device,
            "data": storage.data_hash(prices),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    name = storage.slug(symbol or "series")
    return resolve_cache_dir(cache_dir) / "forecasts" / f"{name}-{key}.npz"


def _read_cache(path: Path) -> pd.DataFrame | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            dates = pd.DatetimeIndex(z["dates"], name="date")
            values = z["forecast"].astype("float64")
            meta = json.loads(str(z["meta"]))
    except Exception:  # noqa: BLE001 - an unreadable cache file is a miss, never a crash
        return None
    out = pd.DataFrame({"forecast": values}, index=dates)
    out.attrs = {**meta, "cache": str(path), "cached": True}
    return out


def _write_cache(path: Path, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    meta = {k: v for k, v in frame.attrs.items() if k not in ("cache", "cached")}
    np.savez(
        buf,
        dates=frame.index.values,
        forecast=frame["forecast"].to_numpy("float64"),
        meta=np.array(json.dumps(meta)),
    )
    storage.write_bytes(path, buf.getvalue())


def _one(
    prices: pd.DataFrame, symbol: str | None, config: WalkForwardConfig, cache: bool, cache_dir
) -> pd.DataFrame:
    path = _cache_file(prices, symbol, config, cache_dir) if cache else None
    if path is not None and path.is_file():
        hit = _read_cache(path)
        if hit is not None:
            return hit
    out = _compute(prices, symbol, config)
    if path is not None:
        _write_cache(path, out)
        out.attrs["cache"] = str(path)
    return out


def _compute(prices: pd.DataFrame, symbol: str | None, config: WalkForwardConfig) -> pd.DataFrame:
    fc_cfg = config.forecast
    fc_cfg = fc_cfg.replace(
        features=fc_cfg.features or default_features(fc_cfg.target),
        scaler=fc_cfg.scaler or default_scaler(fc_cfg.target),
    )
    h, w = fc_cfg.horizon, fc_cfg.window
    device = resolve_device(fc_cfg.device)
    inputs = build_inputs(prices, fc_cfg.features)
    close = valuation_close(prices)
    n_samples = len(inputs) - w + 1
    # a refit at sample s trains on samples 0..s-h (targets dated <= its decision date)
    first = config.min_train + h - 1
    if n_samples <= first:
        raise DataError(
            f"walk-forward needs more than {config.min_train} training samples before the "
            f"first forecast (window={w}, horizon={h}), but the {len(inputs)} rows with every "
            f"input give {max(n_samples, 0)} samples; lower min_train or use more data"
        )
    forecasts = np.full(n_samples, np.nan)
    refits: list[dict[str, Any]] = []
    model = None
    for s in range(first, n_samples, config.refit_every):
        decision = inputs.index[s + w - 1]
        scaler = FeatureScaler(fc_cfg.scaler).fit(inputs, end=decision)
        win = make_windows(scaler.transform(inputs), close, w, h, fc_cfg.target)
        hi = s - h + 1  # samples [lo, hi) have targets dated <= decision
        lo = 0 if config.mode == "expanding" else max(0, hi - config.train_size)
        n_valid = max(1, int(round((hi - lo) * config.valid_fraction)))
        tr = np.arange(lo, max(lo, hi - n_valid - h + 1))  # purged: targets <= first valid date
        va = np.arange(hi - n_valid, hi)
        if len(tr) < 1:
            raise DataError(
                f"refit on {decision.date()}: too few samples to train "
                f"({hi - lo}); raise min_train or train_size"
            )
        shift, scale = target_scaling(fc_cfg.target, win.y[tr])
        if model is None or not config.warm_start:
            with seeded(fc_cfg.seed, device):
                model = build_model(fc_cfg.model, len(fc_cfg.features), w, **fc_cfg.model_kwargs())
        fc = Forecaster(
            model,
            features=fc_cfg.features,
            scaler=scaler,
            target=fc_cfg.target,
            horizon=h,
            target_shift=shift,
            target_scale=scale,
            symbol=symbol,
        )
        res = fit(
            model,
            (win.x[tr], fc.scale_target(win.y[tr])),
            (win.x[va], fc.scale_target(win.y[va])),
            fc_cfg,
        )
        end = min(s + config.refit_every, n_samples)
        forecasts[s:end] = fc.predict_windows(win.x[s:end])
        last_target = win.target_dates[hi - 1]
        if not last_target <= decision:  # the contract, checked on every refit
            raise RuntimeError(f"walk-forward bug: target {last_target} after refit {decision}")
        refits.append(
            {
                "date": str(decision.date()),
                "last_target_date": str(last_target.date()),
                "first_forecast": str(win.dates[s].date()),
                "last_forecast": str(win.dates[end - 1].date()),
                "n_train": int(len(tr)),
                "n_valid": int(len(va)),
                "best_epoch": res.best_epoch,
                "epochs": len(res.history),
            }
        )
    dates = inputs.index[w - 1 :][first:]
    out = pd.DataFrame({"forecast": forecasts[first:]}, index=dates)
    out.index.name = "date"
    out.attrs = {"refits": refits, "config": config.to_dict(), "symbol": symbol}
    return out


def env_features(
    prices: pd.DataFrame,
    *,
    features: list[str] | None = None,
    forecast: WalkForwardConfig | None = None,
    fit_end: str | pd.Timestamp | None = None,
    scaler: str = "standard",
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Indicators + walk-forward forecasts in one frame, ready for the env.

    ``features``: :func:`stockgym.data.build_features` names (default
    ``DEFAULT_FEATURES``); ``forecast``: the walk-forward config (default
    :class:`WalkForwardConfig()`). Rows are the dates that have every column (the
    forecasts start after the walk-forward's ``min_train``). With ``fit_end`` (the end
    of the env's training period) every column is scaled by a
    :class:`~stockgym.data.FeatureScaler` of kind ``scaler`` fit on rows <= ``fit_end``;
    its state is in ``attrs["scaler"]`` (``FeatureScaler.from_dict``). Use it as::

        feats = env_features(prices, fit_end=splits.dates["train"]["last"])
        env = StockTradingEnv(prices, features=[], extra_features=feats)
    """
    ind = build_features(prices, features)
    fc = walk_forward(prices, forecast, cache=cache, cache_dir=cache_dir)
    if isinstance(ind.columns, pd.MultiIndex):
        symbols = list(dict.fromkeys(ind.columns.get_level_values(0)))
        frame = pd.concat(
            {s: pd.concat([ind[s], fc[s]], axis=1, join="inner") for s in symbols},
            axis=1,
            names=["symbol", "feature"],
        )
    else:
        frame = pd.concat([ind, fc], axis=1, join="inner")
        frame.columns = pd.Index([str(c) for c in frame.columns], name="feature")
    frame.attrs = {"refits": fc.attrs.get("refits"), "features": list(frame.columns)}
    if fit_end is not None:
        fitted = FeatureScaler(scaler).fit(frame, end=fit_end)
        attrs = dict(frame.attrs)
        frame = fitted.transform(frame)
        frame.attrs = {**attrs, "scaler": fitted.to_dict()}
    return frame


# ------------------------------------------------------------------------ runs (CLI)
@dataclass
class WalkForwardRun:
    """What :func:`run_walk_forward` returns: ``forecasts`` (the :func:`walk_forward`
    frame), ``metrics`` (out-of-sample metrics vs the naive forecast, the layout of
    ``metrics.json``), ``run_dir``, ``from_cache``, ``seconds``."""

    forecasts: pd.DataFrame
    metrics: dict[str, Any]
    run_dir: Path
    from_cache: bool
    seconds: float


def forecast_frame(
    forecasts: pd.DataFrame, prices: pd.DataFrame, target: str, horizon: int
) -> pd.DataFrame:
    """One symbol's forecasts with their outcomes: columns ``target_date, base_close,
    actual, model, naive, window`` for the dates whose target is inside the data.

    ``window`` numbers the refit that made each forecast (the rolling origins, from
    ``forecasts.attrs["refits"]``; 0 everywhere without them). ``attrs["scale"]``: the
    naive forecast's in-sample errors (:func:`~stockgym.forecasters.metrics.naive_scale`)
    over the targets dated <= the first forecast date (the first refit's data), the
    MASE / RMSSE denominators."""
    from stockgym.forecasters.data import targets
    from stockgym.forecasters.evaluation import naive_forecast
    from stockgym.forecasters.metrics import naive_scale

    close = valuation_close(prices)
    y = pd.Series(targets(close.to_numpy(), target, horizon), index=close.index)
    tdates = pd.Series(
        close.index[horizon:].append(pd.DatetimeIndex([pd.NaT] * horizon)), index=close.index
    )
    dates = forecasts.index
    frame = pd.DataFrame(
        {
            "target_date": tdates.reindex(dates).to_numpy(),
            "base_close": close.reindex(dates).to_numpy(),
            "actual": y.reindex(dates).to_numpy(),
            "model": forecasts["forecast"].to_numpy("float64"),
        },
        index=dates,
    )
    frame = frame[np.isfinite(frame["actual"].to_numpy())].copy()
    frame["naive"] = naive_forecast(target, frame["base_close"].to_numpy())
    window = np.zeros(len(frame), dtype="int64")
    for k, refit in enumerate(forecasts.attrs.get("refits") or []):
        if isinstance(refit, dict) and "first_forecast" in refit:
            window[frame.index >= pd.Timestamp(refit["first_forecast"])] = k
    frame["window"] = window
    scale = None
    if len(dates):
        past = (tdates <= dates[0]).to_numpy() & np.isfinite(y.to_numpy())
        if past.any():
            base = close.to_numpy()[past]
            scale = naive_scale(y.to_numpy()[past], naive_forecast(target, base))
    frame.attrs = {"scale": scale}
    return frame


def forecast_metrics(frame: pd.DataFrame, target: str, horizon: int) -> dict[str, Any]:
    """``metrics.json`` dict of a :func:`forecast_frame` (model vs naive), with the
    metrics of each refit window (rolling origin, refit at each origin)."""
    from stockgym.forecasters.evaluation import compare, json_safe, per_window

    if len(frame) == 0:
        raise DataError("no forecast has a known outcome yet (the data ends too soon)")
    scale = frame.attrs.get("scale")
    labels = frame["window"].to_numpy() if "window" in frame else np.zeros(len(frame), int)
    return json_safe(
        {
            "target": target,
            "horizon": horizon,
            "period": {
                "first": str(frame.index[0].date()),
                "last": str(frame.index[-1].date()),
                "samples": len(frame),
            },
            "scale": scale,
            **compare(
                target,
                frame["actual"],
                {"model": frame["model"], "naive": frame["naive"]},
                frame["base_close"],
                scale=scale,
                horizon=horizon,
                windows=labels,
            ),
            "windows": {
                "count": len(np.unique(labels)),
                "origin": "one refit per window",
                "per_window": per_window(target, frame, labels, scale=scale, horizon=horizon),
            },
        }
    )


def run_walk_forward(
    config: WalkForwardConfig,
    run_dir: str | os.PathLike[str],
    *,
    prices: pd.DataFrame | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> WalkForwardRun:
    """Walk forward one symbol and write a run dir: ``config.json``, ``forecasts.csv``
    (date, forecast, actual outcome, naive), ``refits.json``, ``metrics.json`` and
    ``plots/forecasts.png`` (built in a temporary sibling, renamed at the end).

    ``prices`` default: loaded as ``config.forecast`` names (symbol, source, dates).
    """
    import time

    from stockgym.forecasters.evaluation import plot_predictions
    from stockgym.forecasters.training import load_config_prices, run_record

    config.validate()
    run_dir = storage.check_new_dir(run_dir)
    fc_cfg = config.forecast
    if prices is None:
        prices = load_config_prices(fc_cfg)
        source = fc_cfg.source
    else:
        source = prices.attrs.get("source", "given")
    symbol, prices = single_symbol(prices, fc_cfg.symbol)
    t0 = time.perf_counter()
    out = walk_forward(prices, config, cache=cache, cache_dir=cache_dir)
    seconds = time.perf_counter() - t0
    frame = forecast_frame(out, prices, fc_cfg.target, fc_cfg.horizon)
    metrics = forecast_metrics(frame, fc_cfg.target, fc_cfg.horizon)
    record = run_record(
        fc_cfg.replace(symbol=symbol), {}, prices, source, resolve_device(fc_cfg.device)
    )
    record.pop("splits")
    record["config"] = {
        **config.to_dict(),
        "run_dir": str(run_dir),
        "forecast": {**fc_cfg.to_dict(), "symbol": symbol},
    }
    with storage.staged_dir(run_dir) as tmp:
        storage.write_json(tmp / "config.json", record)
        storage.write_json(tmp / "metrics.json", metrics)
        storage.write_json(tmp / "refits.json", out.attrs.get("refits", []))
        table = out.join(frame[["target_date", "actual", "naive"]], how="left")
        storage.write_text(tmp / "forecasts.csv", table.to_csv(date_format="%Y-%m-%d"))
        if fc_cfg.plots:
            plot_predictions(
                frame,
                fc_cfg.target,
                tmp / "plots" / "forecasts.png",
                title=f"{symbol or ''} walk-forward {fc_cfg.model}",
            )
    return WalkForwardRun(out, metrics, Path(run_dir), bool(out.attrs.get("cached")), seconds)
