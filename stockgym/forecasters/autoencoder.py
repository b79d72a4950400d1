"""Walk-forward autoencoder features: a reconstruction-error (anomaly / regime) score and a
latent code for every date, each made only from data dated <= that date.

An autoencoder ``x -> z = enc(x) -> x_hat = dec(z)`` compresses a window of ``window``
scaled input rows (``features``, :func:`stockgym.data.build_features` names or raw
fields, as the forecasters' inputs) into ``latent_dim`` numbers and is trained to
minimise the reconstruction error ``mean((x_hat - x)^2)``. Windows unlike those it was
trained on reconstruct badly, so the error is an anomaly / regime-change score; ``z`` is
a learned dimension reduction of the window. Two kinds:

``"mlp"``
    flatten -> Linear(hidden) -> ReLU -> Linear(latent_dim) ; decoder mirrored.
``"lstm"``
    an LSTM reads the window, its last hidden state -> Linear(latent_dim); the decoder
    feeds ``Linear(z)`` to an LSTM at every step and maps each step to the features.

Walk-forward, on the date schedule of :func:`stockgym.forecasters.walk_forward`:
samples are the windows ending at each row; the first refit happens at sample
``min_train`` (so ``min_train`` earlier samples exist), then every ``refit_every``
samples. A refit at decision date ``t_r`` fits the input scaler on rows dated <= ``t_r``
and trains on the windows ending <= ``t_r`` (all of them, or the last ``train_size`` with
``mode="rolling"``); the last ``valid_fraction`` of those is the early-stopping set,
purged by ``window - 1`` samples so no row is in both. Its model scores the dates
``t_r <= t < t_{r+1}``. With the same ``features``, ``window``, ``min_train`` and
``refit_every`` as a walk-forward forecast of horizon 1, the refit dates are the same
(a horizon-h forecast refits ``h - 1`` samples later). The schedule depends only on dates,
so changing prices after t changes no value dated <= t (tested by perturbing the future).

Results are cached like the walk-forward forecasts (``<price cache dir>/autoencoder/``,
keyed by a SHA-256 of the prices and the config; ``.npz`` loaded without pickle).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from stockgym.core import resolve_device
from stockgym.data import DEFAULT_FEATURES, DataError, FeatureScaler
from stockgym.data.fdr import resolve_cache_dir
from stockgym.data.scaling import KINDS as SCALER_KINDS
from stockgym.forecasters import storage
from stockgym.forecasters.data import build_inputs, single_symbol
from stockgym.forecasters.training import DictConfig, check_int, seeded

KINDS = ("mlp", "lstm")
MODES = ("expanding", "rolling")
CACHE_FORMAT = 1


@dataclass
class AutoencoderConfig(DictConfig):
    """Autoencoder features settings (see the module docstring).

    Inputs: ``features`` (``None``: :data:`stockgym.data.DEFAULT_FEATURES`), ``scaler``
    (``FeatureScaler`` kind, fit at each refit on rows <= its date), ``window``.
    Model: ``kind`` (``mlp | lstm``), ``hidden_size``, ``latent_dim``. Training: Adam
    (``lr``, ``weight_decay``), ``epochs`` (maximum), ``batch_size``, ``patience`` (early
    stopping on the validation reconstruction error, best weights restored),
    ``grad_clip``, ``seed``, ``device`` (default ``cpu``: these models are small;
    ``auto``: cuda when available), ``threads``.
    Schedule: ``refit_every``, ``min_train``, ``mode`` (``expanding | rolling``),
    ``train_size`` (rolling), ``valid_fraction``, ``warm_start`` (start each refit from
    the previous weights). Output: ``latent`` (add the ``ae_z*`` columns), ``prefix``.
    """

    features: list[str] | None = None
    scaler: str = "standard"
    window: int = 20
    kind: str = "mlp"
    hidden_size: int = 32
    latent_dim: int = 2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    refit_every: int = 126
    min_train: int = 500
    mode: str = "expanding"
    train_size: int | None = None
    valid_fraction: float = 0.2
    warm_start: bool = False
    latent: bool = True
    prefix: str = "ae"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.scaler not in SCALER_KINDS:
            raise ValueError(f"unknown scaler {self.scaler!r}; choose one of {SCALER_KINDS}")
        for name in ("window", "hidden_size", "latent_dim", "epochs", "batch_size"):
            check_int(name, getattr(self, name))
        for name in ("patience", "refit_every", "min_train"):
            check_int(name, getattr(self, name))
        check_int("train_size", self.train_size, 2, optional=True)
        if self.mode == "rolling" and self.train_size is None:
            raise ValueError("mode='rolling' needs train_size (samples per refit)")
        if not _number(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not _number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and (not _number(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        if not _number(self.valid_fraction) or not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction!r}")
        if self.features is not None and (isinstance(self.features, str) or not self.features):
            raise ValueError(f"features must be a non-empty list, got {self.features!r}")
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError(f"prefix must be a non-empty string, got {self.prefix!r}")

    def columns(self) -> list[str]:
        """Output column names: ``<prefix>_error`` then ``<prefix>_z0 ..`` (if ``latent``)."""
        z = [f"{self.prefix}_z{i}" for i in range(self.latent_dim)] if self.latent else []
        return [f"{self.prefix}_error", *z]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class MLPAutoencoder(nn.Module):
    """Flattened window -> hidden -> ``latent_dim`` -> hidden -> window (linear code)."""

    def __init__(self, n_features: int, window: int, hidden_size: int, latent_dim: int) -> None:
        super().__init__()
        d = n_features * window
        self.encoder = nn.Sequential(
            nn.Linear(d, hidden_size), nn.ReLU(), nn.Linear(hidden_size, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, d)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, latent_dim)``."""
        return self.encoder(x.flatten(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction shaped like x, code)``."""
        z = self.encode(x)
        return self.decoder(z).view_as(x), z


class LSTMAutoencoder(nn.Module):
    """LSTM encoder (last hidden state -> ``latent_dim``); the decoder LSTM reads
    ``Linear(z)`` at every step and a Linear maps each step back to the features."""

    def __init__(self, n_features: int, window: int, hidden_size: int, latent_dim: int) -> None:
        super().__init__()
        self.window = window
        self.enc = nn.LSTM(n_features, hidden_size, batch_first=True)
        self.to_code = nn.Linear(hidden_size, latent_dim)
        self.from_code = nn.Linear(latent_dim, hidden_size)
        self.dec = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, n_features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, latent_dim)``."""
        h, _ = self.enc(x)
        return self.to_code(h[:, -1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction shaped like x, code)``."""
        z = self.encode(x)
        seq = self.from_code(z)[:, None, :].expand(-1, self.window, -1)
        h, _ = self.dec(seq)
        return self.out(h), z


def build_autoencoder(kind: str, n_features: int, window: int, hidden_size: int, latent_dim: int):
    """A new :class:`MLPAutoencoder` or :class:`LSTMAutoencoder`."""
    cls = {"mlp": MLPAutoencoder, "lstm": LSTMAutoencoder}.get(kind)
    if cls is None:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return cls(n_features, window, hidden_size, latent_dim)


def _error(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample reconstruction MSE and codes (float64 numpy), in eval mode."""
    model.eval()
    errs, codes = [], []
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch]
            rec, z = model(xb)
            errs.append(((rec - xb) ** 2).mean(dim=(1, 2)).double().cpu())
            codes.append(z.double().cpu())
    return torch.cat(errs).numpy(), torch.cat(codes).numpy()


def fit_autoencoder(
    model: nn.Module, x_train: np.ndarray, x_valid: np.ndarray, config: AutoencoderConfig
) -> dict[str, Any]:
    """Train ``model`` in place (MSE reconstruction, Adam, seeded mini-batch order, early
    stopping on ``x_valid``, best weights restored). Returns ``{"best_epoch",
    "epochs", "valid_error"}`` (epoch 0: the untrained model)."""
    device = resolve_device(config.device)
    model.to(device)
    xt = torch.as_tensor(np.array(x_train, dtype="float32"), device=device)  # own copies
    xv = torch.as_tensor(np.array(x_valid, dtype="float32"), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(config.seed)
    best, best_epoch, bad, epoch = float(_error(model, xv)[0].mean()), 0, 0, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with seeded(config.seed, device, config.threads):
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = torch.randperm(len(xt), generator=order).to(device)
            for lo in range(0, len(xt), config.batch_size):
                xb = xt[perm[lo : lo + config.batch_size]]
                opt.zero_grad(set_to_none=True)
                loss = ((model(xb)[0] - xb) ** 2).mean()
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
            val = float(_error(model, xv)[0].mean())
            if not math.isfinite(val):
                raise ValueError(f"autoencoder training diverged at epoch {epoch}; lower the lr")
            if val < best:
                best, best_epoch, bad = val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= config.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "epochs": epoch, "valid_error": best}


def autoencoder_features(
    prices: pd.DataFrame,
    spec: AutoencoderConfig | dict[str, Any] | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Walk-forward reconstruction error and latent code for every date after the first
    refit (see the module docstring).

    ``prices``: one symbol (flat columns) or several (``(symbol, field)`` columns; each
    symbol gets its own autoencoders). ``spec``: an :class:`AutoencoderConfig` or a dict
    of its fields (e.g. an ``[env.autoencoder]`` TOML table). Returns a float64 frame
    indexed by date with the columns :meth:`AutoencoderConfig.columns` (default
    ``ae_error, ae_z0, ae_z1``), or ``(symbol, column)`` columns for several symbols
    (dates every symbol has). ``attrs["refits"]``: per refit its ``date``, sample
    counts, ``best_epoch`` and ``valid_error``; ``attrs["config"]``. ``cache=False``
    skips the disk cache.
    """
    if spec is None:
        spec = AutoencoderConfig()
    elif isinstance(spec, dict):
        spec = AutoencoderConfig.from_dict(spec)
    spec.validate()
    if isinstance(prices, pd.DataFrame) and isinstance(prices.columns, pd.MultiIndex):
        symbols = [str(s) for s in dict.fromkeys(prices.columns.get_level_values(0))]
        parts = {s: _one(single_symbol(prices, s)[1], s, spec, cache, cache_dir) for s in symbols}
        out = pd.concat(parts, axis=1, join="inner", names=["symbol", "feature"])
        out.attrs = {
            "refits": {s: p.attrs["refits"] for s, p in parts.items()},
            "config": spec.to_dict(),
        }
        return out
    symbol, frame = single_symbol(prices)
    return _one(frame, symbol, spec, cache, cache_dir)


def _cache_file(prices: pd.DataFrame, symbol: str | None, spec: AutoencoderConfig, cache_dir):
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "config": spec.to_dict(),
            "device": resolve_device(spec.device).type,
            "data": storage.data_hash(prices),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    return (
        resolve_cache_dir(cache_dir)
        / "autoencoder"
        / f"{storage.slug(symbol or 'series')}-{key}.npz"
    )


def _one(
    prices: pd.DataFrame, symbol: str | None, spec: AutoencoderConfig, cache: bool, cache_dir
) -> pd.DataFrame:
    path: Path | None = _cache_file(prices, symbol, spec, cache_dir) if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                out = pd.DataFrame(
                    z["values"].astype("float64"),
                    index=pd.DatetimeIndex(z["dates"], name="date"),
                    columns=pd.Index(spec.columns(), name="feature"),
                )
                meta = json.loads(str(z["meta"]))
            out.attrs = {**meta, "cache": str(path), "cached": True}
            return out
        except Exception:  # noqa: BLE001 - an unreadable cache file is a miss, never a crash
            pass
    out = _compute(prices, symbol, spec)
    if path is not None:
        buf = io.BytesIO()
        np.savez(
            buf,
            dates=out.index.values,
            values=out.to_numpy("float64"),
            meta=np.array(json.dumps(dict(out.attrs))),
        )
        storage.write_bytes(path, buf.getvalue())
        out.attrs["cache"] = str(path)
    return out


def _compute(prices: pd.DataFrame, symbol: str | None, spec: AutoencoderConfig) -> pd.DataFrame:
    features = list(spec.features or DEFAULT_FEATURES)
    w = spec.window
    device = resolve_device(spec.device)
    inputs = build_inputs(prices, features)
    n_samples = len(inputs) - w + 1
    first = spec.min_train
    if n_samples <= first:
        raise DataError(
            f"autoencoder features need more than {spec.min_train} windows before the first "
            f"refit (window={w}), but the {len(inputs)} rows with every input give "
            f"{max(n_samples, 0)}; lower min_train or use more data"
        )
    values = np.full((n_samples, 1 + spec.latent_dim), np.nan)
    refits: list[dict[str, Any]] = []
    model = None
    for s in range(first, n_samples, spec.refit_every):
        decision = inputs.index[s + w - 1]
        scaled = FeatureScaler(spec.scaler).fit(inputs, end=decision).transform(inputs)
        end = min(s + spec.refit_every, n_samples)
        # only rows up to the last window this refit scores are read
        arr = scaled.iloc[: end + w - 1].to_numpy(dtype="float32")
        x = np.lib.stride_tricks.sliding_window_view(arr, w, axis=0).transpose(0, 2, 1)
        hi = s + 1  # windows [lo, hi) end on or before the decision date
        lo = 0 if spec.mode == "expanding" else max(0, hi - spec.train_size)
        n_valid = max(1, int(round((hi - lo) * spec.valid_fraction)))
        tr = np.arange(lo, max(lo, hi - n_valid - (w - 1)))  # no row in train and valid
        if len(tr) < 1:
            raise DataError(
                f"refit on {decision.date()}: too few windows to train ({hi - lo}); "
                "raise min_train or train_size"
            )
        if model is None or not spec.warm_start:
            with seeded(spec.seed, device):
                model = build_autoencoder(
                    spec.kind, len(features), w, spec.hidden_size, spec.latent_dim
                )
        res = fit_autoencoder(model, x[tr], x[hi - n_valid : hi], spec)
        xs = torch.as_tensor(np.array(x[s:end]), device=device)
        err, z = _error(model, xs)
        values[s:end, 0] = err
        values[s:end, 1:] = z
        refits.append(
            {
                "date": str(decision.date()),
                "last_value": str(inputs.index[end + w - 2].date()),
                "n_train": int(len(tr)),
                "n_valid": int(n_valid),
                **res,
            }
        )
    cols = 1 + (spec.latent_dim if spec.latent else 0)
    out = pd.DataFrame(
        values[first:, :cols],
        index=inputs.index[w - 1 :][first:],
        columns=pd.Index(spec.columns(), name="feature"),
    )
    out.index.name = "date"
    out.attrs = {"refits": refits, "config": spec.to_dict(), "symbol": symbol}
    return out
