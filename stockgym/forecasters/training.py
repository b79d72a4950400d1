"""Training: :class:`ForecastConfig` (every hyperparameter) and :func:`train`.

``train(config)`` loads the data the config names (or uses ``prices=``), splits it by
date (validation carved from the end of the training period, test last), fits the input
scaler on the training period only, trains with mini-batches, gradient clipping and
early stopping on the validation loss (best weights restored), evaluates once on the
test period against naive baselines, and writes a run directory (built in a temporary
sibling and renamed at the end):

``config.json``
    ``{"config": resolved ForecastConfig, "splits": split dates, "data": source, symbol,
    rows, dates and SHA-256 of the prices, "device", "versions", "created"}``.
``checkpoint/``
    the :class:`~stockgym.forecasters.forecaster.Forecaster` (weights, scaler, JSON).
``metrics.json``
    test-period metrics (see :mod:`stockgym.forecasters.evaluation`).
``history.json``
    per-epoch ``train_loss`` / ``val_loss``, ``best_epoch``, ``stopped_early``.
``predictions.csv``
    test-period forecasts of the model and the baselines, with the actual values.
``plots/predictions.png``, ``plots/loss.png``; ``tensorboard/`` (scalars
    ``forecast/train_loss`` and ``forecast/val_loss``).

:func:`fit` is the bare training loop (arrays in, model trained in place), also used
by the walk-forward refits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from stockgym.core import resolve_device
from stockgym.data import DataError, FeatureScaler, load_prices, split
from stockgym.data.scaling import KINDS as SCALER_KINDS
from stockgym.data.sources import SOURCES
from stockgym.forecasters import storage
from stockgym.forecasters.data import (
    build_inputs,
    check_target,
    default_features,
    default_scaler,
    make_windows,
    single_symbol,
    target_scaling,
    valuation_close,
)
from stockgym.forecasters.evaluation import Evaluation, evaluate, plot_losses, plot_predictions
from stockgym.forecasters.forecaster import Forecaster
from stockgym.forecasters.models import MODELS, ForecastNet, build_model

OPTIMIZERS = ("adam", "adamw")
#: the ForecastConfig fields that must be integers >= 1
_COUNTS = "window epochs batch_size patience hidden_size num_layers kernel_size n_heads patch_len"


def check_int(name: str, value: Any, least: int = 1, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= ``least`` (or None if
    ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer >= {least}{extra}, got {value!r}")


class DictConfig:
    """``to_dict`` / ``from_dict`` / ``replace`` for the config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (nested configs as dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class ForecastConfig(DictConfig):
    """Everything a forecasting run needs; ``config.json`` holds the resolved copy.

    Data: ``symbol``, ``source`` (``load_prices`` source), ``start`` / ``end``,
    ``data_options`` (``load_prices`` options of the synthetic source, e.g.
    ``{"kind": "edge", "edge": 0.3, "n_days": 3000, "seed": 0}``), ``cache_dir``.

    Inputs and target: ``features`` (``None``: by target, see
    :func:`~stockgym.forecasters.data.default_features`), ``scaler`` (``FeatureScaler``
    kind; ``None``: by target), ``window``, ``horizon``, ``target``.

    Splits: ``train_end`` / ``valid_end`` (inclusive dates); ``None`` for both: the
    project default (test = last 20 % of dates, validation = last 20 % of the rest).

    Model: ``model`` (a :data:`~stockgym.forecasters.models.MODELS` name: ``mlp | cnn |
    lstm | gru | tcn | transformer``), ``hidden_size``, ``num_layers``, ``dropout``,
    ``kernel_size`` (CNN, TCN), ``n_heads`` and ``patch_len`` (Transformer: attention
    heads, rows per token; ``hidden_size`` must be a multiple of ``n_heads``).

    Target ``direction`` is up/down classification: BCE-with-logits loss, predictions
    are probabilities of "up", evaluated beside the ``majority`` and ``last_sign``
    baselines.

    Optimisation: ``epochs`` (maximum), ``batch_size``, ``lr``, ``weight_decay``,
    ``optimizer`` (``adam | adamw``), ``grad_clip`` (max gradient norm, ``None``: off),
    ``patience`` (epochs without a validation improvement of more than ``tol`` before
    stopping), ``tol``, ``seed``, ``device`` (``auto``: cuda when available),
    ``threads`` (CPU threads torch uses while training, restored after; ``None``:
    torch's setting. These models are small: on a busy CPU one thread is often fastest).
    ``eval_windows``: rolling-origin windows the test period is cut into for the metrics.

    Output: ``run_dir`` (``None``: a new ``runs/forecast/<time>-<model>-<symbol>``),
    ``progress`` (a bar on a terminal, a line per epoch, or per 10 % of ``epochs``, when
    stderr is redirected), ``plots``, ``tensorboard``.
    """

    symbol: str | None = None
    source: str = "auto"
    start: str | None = None
    end: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None

    features: list[str] | None = None
    scaler: str | None = None
    window: int = 30
    horizon: int = 1
    target: str = "log_return"

    train_end: str | None = None
    valid_end: str | None = None

    model: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2
    kernel_size: int = 3
    n_heads: int = 4
    patch_len: int = 1

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    grad_clip: float | None = 1.0
    patience: int = 10
    tol: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    eval_windows: int = 12

    run_dir: str | None = None
    progress: bool = False
    plots: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        check_target(self.target, self.horizon)
        for name in _COUNTS.split():
            check_int(name, getattr(self, name))
        if self.model == "transformer" and self.hidden_size % self.n_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be a multiple of n_heads={self.n_heads}"
            )
        if self.model == "transformer" and self.patch_len > self.window:
            raise ValueError(f"patch_len={self.patch_len} is longer than window={self.window}")
        if not _finite_number(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("weight_decay", "tol"):
            if not _finite_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not _finite_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.grad_clip is not None and (
            not _finite_number(self.grad_clip) or self.grad_clip <= 0
        ):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.scaler is not None and self.scaler not in SCALER_KINDS:
            raise ValueError(f"unknown scaler {self.scaler!r}; choose one of {SCALER_KINDS}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose one of {SOURCES}")
        if self.features is not None:
            if isinstance(self.features, str) or not len(self.features):
                raise ValueError(f"features must be a non-empty list, got {self.features!r}")
            self.features = [str(f) for f in self.features]
        if not isinstance(self.data_options, dict):
            raise ValueError(f"data_options must be a dict, got {self.data_options!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        check_int("threads", self.threads, optional=True)
        check_int("eval_windows", self.eval_windows)
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string, got {self.device!r}")

    def model_kwargs(self) -> dict[str, Any]:
        """Hyperparameters handed to :func:`~stockgym.forecasters.models.build_model`."""
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "kernel_size": self.kernel_size,
            "n_heads": self.n_heads,
            "patch_len": self.patch_len,
        }


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------ fitting
@contextlib.contextmanager
def seeded(seed: int, device: torch.device, threads: int | None = None) -> Iterator[None]:
    """Seed torch's RNGs inside the block (and use ``threads`` CPU threads if given);
    restore the caller's RNG state and thread count after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        if threads is not None:
            torch.set_num_threads(before)


@dataclass
class FitResult:
    """What :func:`fit` did: ``history`` (one dict per epoch: ``epoch, train_loss,
    val_loss``; epoch 0 is the untrained model), ``best_epoch`` (0: no epoch beat the
    untrained model, which forecasts the naive value), ``best_val_loss``,
    ``stopped_early``, ``seconds``."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    seconds: float


def loss_function(target: str) -> nn.Module:
    """BCE-with-logits for ``direction``, else MSE."""
    return nn.BCEWithLogitsLoss() if target == "direction" else nn.MSELoss()


def _mean_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, batch_size: int = 4096
) -> float:
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            out = model(x[lo : lo + batch_size])[:, 0]
            total += loss_fn(out, y[lo : lo + batch_size]).double() * len(out)
    return float(total.item() / max(len(x), 1))


def fit(
    model: ForecastNet,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    config: ForecastConfig,
    *,
    writer: Any = None,
) -> FitResult:
    """Train ``model`` in place on ``train = (x, y)`` with early stopping on ``valid``.

    ``x``: (n, window, features) float; ``y``: (n,) targets in training units. Mini-
    batches in a seeded random order (``config.seed``), Adam/AdamW, gradient clipping,
    stop after ``config.patience`` epochs without a validation-loss improvement larger
    than ``config.tol``; the best epoch's weights are restored. ``writer`` (a
    TensorBoard ``SummaryWriter``) gets ``forecast/train_loss`` and ``forecast/val_loss``.

    Epoch 0 is the untrained model: its head starts at zero, so it forecasts the naive
    value, and a run where no epoch improves on it keeps that (``best_epoch == 0``).
    """
    for name, (x, y) in (("train", train), ("valid", valid)):
        if len(x) == 0 or len(x) != len(y):
            raise DataError(f"the {name} part has no samples (or x and y differ in length)")
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    model.to(device)
    xt, yt = (torch.as_tensor(np.asarray(a, dtype="float32"), device=device) for a in train)
    xv, yv = (torch.as_tensor(np.asarray(a, dtype="float32"), device=device) for a in valid)
    loss_fn = loss_function(config.target)
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(config.seed)
    n, bs = len(xt), config.batch_size
    history: list[dict[str, float]] = []
    best_epoch, bad, stopped = 0, 0, False
    # tqdm only where stderr is a terminal: in a file its \r frames pile up unread, so
    # redirected output gets plain lines (as the agents' monitor does)
    lines = config.progress and not sys.stderr.isatty()
    bar_on = config.progress and not lines
    name, every = type(model).__name__, max(1, config.epochs // 10)
    bar = tqdm(total=config.epochs, desc=name, unit="epoch", disable=not bar_on, leave=False)

    def record(epoch: int, train_loss: float, val_loss: float, stop: bool = False) -> None:
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if writer is not None:
            writer.add_scalar("forecast/train_loss", train_loss, epoch)
            writer.add_scalar("forecast/val_loss", val_loss, epoch)
        if epoch == 0:
            return
        bar.update()  # by hand, redrawn every epoch: tqdm skips redraws within 0.1 s
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        if lines and (epoch % every == 0 or epoch == config.epochs or stop):
            end = ", stopped early" if stop else ""
            line = f"{name}: epoch {epoch}/{config.epochs}, train loss {train_loss:.4g}"
            print(f"{line}, valid loss {val_loss:.4g}{end}", file=sys.stderr, flush=True)

    with seeded(config.seed, device, config.threads):
        # epoch 0: the untrained model (the naive forecast, see models.py) is the first best
        best = _mean_loss(model, xv, yv, loss_fn)
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record(0, _mean_loss(model, xt, yt, loss_fn), best)
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=order).to(device)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for lo in range(0, n, bs):
                idx = perm[lo : lo + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx])[:, 0], yt[idx])
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                total += loss.detach().double() * len(idx)
            train_loss = float(total.item() / n)
            val_loss = _mean_loss(model, xv, yv, loss_fn)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise ValueError(
                    f"training diverged at epoch {epoch} (train loss {train_loss}, validation "
                    f"loss {val_loss}); lower the lr"
                )
            if val_loss < best - config.tol:
                best, best_epoch, bad = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            stopped = bad >= config.patience
            record(epoch, train_loss, val_loss, stopped)
            if stopped:
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(history, best_epoch, best, stopped, time.perf_counter() - t0)


# ------------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``forecaster`` (trained, best weights), ``config`` (resolved), ``splits`` (dates),
    ``fit`` (:class:`FitResult`: history, best epoch, early stop), ``metrics`` (the
    ``metrics.json`` dict), ``predictions`` (test-period frame), ``run_dir``.
    """

    forecaster: Forecaster
    config: ForecastConfig
    splits: dict[str, dict]
    fit: FitResult
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    run_dir: Path


def load_config_prices(config: ForecastConfig) -> pd.DataFrame:
    """The prices a config names (``symbol``, ``source``, ``start``, ``end``, options)."""
    if not config.symbol:
        raise ValueError("the config names no symbol (and no prices were given)")
    extra: dict[str, Any] = dict(config.data_options)
    if config.source != "synthetic":
        if extra:
            raise ValueError(f"data_options {sorted(extra)} only apply to source 'synthetic'")
        extra = {"cache_dir": config.cache_dir}
    return load_prices(config.symbol, config.start, config.end, source=config.source, **extra)


def resolve(config: ForecastConfig, prices: pd.DataFrame) -> tuple[ForecastConfig, dict]:
    """Fill the config's defaults that depend on the data: features, scaler, split dates.

    Returns ``(resolved config, split dates)``.
    """
    features = config.features or default_features(config.target)
    scaler = config.scaler or default_scaler(config.target)
    if config.train_end is None and config.valid_end is None:
        parts = split(prices)
    elif config.train_end is None or config.valid_end is None:
        raise ValueError("give both train_end and valid_end, or neither (default split)")
    else:
        parts = split(prices, train=config.train_end, valid=config.valid_end)
    dates = parts.dates
    resolved = config.replace(
        features=list(features),
        scaler=scaler,
        train_end=dates["train"]["last"],
        valid_end=dates["valid"]["last"],
    )
    return resolved, dates


def prepare(config: ForecastConfig, prices: pd.DataFrame, dates: dict):
    """Fit the input scaler on the training period and build the three sample sets.

    Returns ``(scaler, train, valid, test)`` windows; raises :class:`DataError` when a
    part has no sample (e.g. a window longer than the data).
    """
    inputs = build_inputs(prices, config.features)
    scaler = FeatureScaler(config.scaler).fit(inputs, end=dates["train"]["last"])
    windows = make_windows(
        scaler.transform(inputs),
        valuation_close(prices),
        config.window,
        config.horizon,
        config.target,
    )
    parts = []
    for name in ("train", "valid", "test"):
        w = windows.between(dates[name]["first"], dates[name]["last"])
        if len(w) == 0:
            raise DataError(
                f"the {name} period {dates[name]['first']}..{dates[name]['last']} has no "
                f"sample with window={config.window}, horizon={config.horizon} (inputs start "
                f"{inputs.index[0].date()}); use a shorter window or more data"
            )
        parts.append(w)
    return (scaler, *parts)


def train(config: ForecastConfig, *, prices: pd.DataFrame | None = None) -> TrainResult:
    """Train, evaluate and save a forecaster as ``config`` says (see module docstring).

    ``prices``: a one-symbol price frame to use instead of loading ``config.symbol``
    (a multi-symbol frame needs ``config.symbol``). Bad input raises ``ValueError``
    (``DataError`` for data problems); nothing is left under ``run_dir`` then.
    """
    config.validate()
    device = resolve_device(config.device)
    if prices is None:
        prices = load_config_prices(config)
        source = config.source
    else:
        source = prices.attrs.get("source", "given")
    symbol, prices = single_symbol(prices, config.symbol)
    config = config.replace(symbol=symbol)
    run_dir = (
        Path(config.run_dir)
        if config.run_dir
        else storage.default_run_dir("forecast", config.model, symbol)
    )
    storage.check_new_dir(run_dir)
    config, dates = resolve(config.replace(run_dir=str(run_dir)), prices)
    scaler, tr, va, te = prepare(config, prices, dates)
    shift, scale = target_scaling(config.target, tr.y)

    with storage.staged_dir(run_dir) as tmp:
        with seeded(config.seed, device):
            model = build_model(
                config.model, len(config.features), config.window, **config.model_kwargs()
            )
        writer = None
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(tmp / "tensorboard"))
        try:
            fc = Forecaster(
                model,
                features=config.features,
                scaler=scaler,
                target=config.target,
                horizon=config.horizon,
                target_shift=shift,
                target_scale=scale,
                symbol=symbol,
                config=config.to_dict(),
            )
            result = fit(
                model,
                (tr.x, fc.scale_target(tr.y)),
                (va.x, fc.scale_target(va.y)),
                config,
                writer=writer,
            )
        finally:
            if writer is not None:
                writer.close()
        ev: Evaluation = evaluate(fc, prices, dates, windows=config.eval_windows)
        (tmp / "checkpoint").mkdir()
        fc.write_into(tmp / "checkpoint")
        storage.write_json(tmp / "config.json", run_record(config, dates, prices, source, device))
        storage.write_json(tmp / "metrics.json", ev.metrics)
        storage.write_json(
            tmp / "history.json",
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "stopped_early": result.stopped_early,
                "seconds": round(result.seconds, 3),
            },
        )
        storage.write_text(tmp / "predictions.csv", ev.predictions.to_csv(date_format="%Y-%m-%d"))
        if config.plots:
            title = f"{symbol or ''} {config.model} - test period"
            plot_predictions(
                ev.predictions, config.target, tmp / "plots" / "predictions.png", title=title
            )
            loss = ("binary cross-entropy" if config.target == "direction"
                    else "mean squared error of the scaled target")  # fmt: skip
            plot_losses(
                result.history,
                tmp / "plots" / "loss.png",
                result.best_epoch,
                loss=loss,
                model=f"{config.model.upper()} forecaster",
            )
    return TrainResult(fc, config, dates, result, ev.metrics, ev.predictions, run_dir)


def run_record(
    config: ForecastConfig, dates: dict, prices: pd.DataFrame, source: str, device: torch.device
) -> dict[str, Any]:
    """The ``config.json`` of a run."""
    import sklearn

    import stockgym

    return {
        "config": config.to_dict(),
        "splits": dates,
        "data": {
            "symbol": config.symbol,
            "source": source,
            "first": str(prices.index[0].date()),
            "last": str(prices.index[-1].date()),
            "rows": len(prices),
            "sha256": storage.data_hash(prices),
        },
        "device": str(device),
        "versions": {
            "stockgym": stockgym.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[dict[str, Any], Forecaster]:
    """``(config.json dict, Forecaster)`` of a :func:`train` run directory; a path that
    is not one raises ``FileNotFoundError`` / ``ValueError`` saying why."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist (or is not a directory)")
    record = storage.read_json(run_dir / "config.json", "run config (config.json)")
    if not isinstance(record, dict) or "config" not in record or "splits" not in record:
        raise ValueError(f"{run_dir / 'config.json'} is not a `forecast train` run config")
    return record, Forecaster.load(run_dir / "checkpoint", device=device)
