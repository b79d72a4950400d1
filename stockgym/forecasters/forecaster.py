"""A trained forecaster: model + fitted input scaler + target mapping, saved as one dir.

:class:`Forecaster` turns a raw price frame into forecasts: it builds the input features,
applies the scaler fitted on the training period, windows them and maps the model's
outputs back to target units (log returns, probabilities of "up", or prices).

Checkpoint directory (``Forecaster.save(dir)``, written atomically):

``model.pt``
    ``torch.save`` of the model's ``state_dict`` (loaded with ``weights_only=True``).
``forecaster.json``
    model class name and constructor arguments, input features, target, horizon, the
    target's affine scaling (``shift``, ``scale``), symbol, and the training config.
``scaler.json``
    the fitted :class:`stockgym.data.FeatureScaler` (JSON, never pickle).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stockgym.core import resolve_device
from stockgym.data import FeatureScaler
from stockgym.forecasters import storage
from stockgym.forecasters.data import (
    Windows,
    build_inputs,
    check_target,
    make_windows,
    valuation_close,
)
from stockgym.forecasters.models import MODELS, ForecastNet

FORMAT = "stockgym.Forecaster"
VERSION = 1
FILES = ("model.pt", "forecaster.json", "scaler.json")


class Forecaster:
    """A trained model with everything it needs to forecast from prices.

    ``target_shift`` / ``target_scale``: the model is trained on
    ``(y - shift) / scale``; predictions are mapped back (``direction``: a sigmoid,
    giving the probability of an up move).
    """

    def __init__(
        self,
        model: ForecastNet,
        *,
        features: list[str],
        scaler: FeatureScaler,
        target: str = "log_return",
        horizon: int = 1,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        symbol: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        check_target(target, horizon)
        if not isinstance(model, ForecastNet):
            raise TypeError(f"model must be one of {sorted(MODELS)}, got {type(model).__name__}")
        if scaler.columns is None:
            raise ValueError("the scaler must be fitted (on the training period)")
        if list(scaler.columns) != list(features):
            raise ValueError(f"scaler columns {scaler.columns} differ from features {features}")
        if len(features) != model.n_features:
            raise ValueError(
                f"{len(features)} features but the model takes n_features={model.n_features}"
            )
        if not (np.isfinite(target_scale) and target_scale > 0 and np.isfinite(target_shift)):
            raise ValueError(f"bad target scaling shift={target_shift}, scale={target_scale}")
        self.model = model
        self.features = list(features)
        self.scaler = scaler
        self.target = target
        self.horizon = int(horizon)
        self.target_shift = float(target_shift)
        self.target_scale = float(target_scale)
        self.symbol = symbol
        self.config = dict(config or {})

    @property
    def window(self) -> int:
        return self.model.window

    @property
    def model_name(self) -> str:
        return type(self.model).__name__.lower()

    # ------------------------------------------------------------------ targets
    def scale_target(self, y: np.ndarray) -> np.ndarray:
        """Targets in the units the model is trained on."""
        return (np.asarray(y, dtype="float64") - self.target_shift) / self.target_scale

    def unscale_output(self, out: np.ndarray) -> np.ndarray:
        """Model outputs -> target units (probabilities for ``direction``)."""
        out = np.asarray(out, dtype="float64")
        if self.target == "direction":
            return 1.0 / (1.0 + np.exp(-out))
        return out * self.target_scale + self.target_shift

    # ------------------------------------------------------------------ predict
    def windows(self, prices: pd.DataFrame) -> Windows:
        """Every sample of ``prices`` (inputs scaled with the fitted scaler)."""
        inputs = build_inputs(prices, self.features)
        return make_windows(
            self.scaler.transform(inputs),
            valuation_close(prices),
            self.window,
            self.horizon,
            self.target,
        )

    def predict_windows(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Forecasts (target units, float64) for windows ``x`` of shape (n, window, features)."""
        device = next(self.model.parameters()).device
        self.model.eval()
        outs = []
        with torch.inference_mode():
            for lo in range(0, len(x), batch_size):
                xb = torch.as_tensor(
                    np.asarray(x[lo : lo + batch_size], dtype="float32"), device=device
                )
                outs.append(self.model(xb)[:, 0].double().cpu().numpy())
        raw = np.concatenate(outs) if outs else np.empty(0)
        return self.unscale_output(raw)

    def predict(self, prices: pd.DataFrame) -> pd.Series:
        """Forecast made after the close of every date with a full window.

        Returns a float64 series named ``"forecast"`` indexed by decision date (in
        target units: next-``horizon`` log return, probability of up, or price). The
        value dated t uses bars <= t only.
        """
        w = self.windows(prices)
        return pd.Series(self.predict_windows(w.x), index=w.dates, name="forecast")

    # ---------------------------------------------------------------- save/load
    def to_dict(self) -> dict[str, Any]:
        """The JSON written as ``forecaster.json``."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model_name,
            "model_kwargs": self.model.kwargs,
            "features": self.features,
            "target": self.target,
            "horizon": self.horizon,
            "target_shift": self.target_shift,
            "target_scale": self.target_scale,
            "symbol": self.symbol,
            "config": self.config,
        }

    def write_into(self, directory: str | os.PathLike[str]) -> None:
        """Write the checkpoint files into an existing directory (each file atomically)."""
        directory = Path(directory)
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, buf)
        storage.write_bytes(directory / "model.pt", buf.getvalue())
        storage.write_json(directory / "forecaster.json", self.to_dict())
        self.scaler.save(directory / "scaler.json")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to a new directory ``path`` (built in a temporary sibling, then renamed)."""
        path = Path(path)
        with storage.staged_dir(path) as tmp:
            self.write_into(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Forecaster:
        """Load a checkpoint dir (or a run dir holding ``checkpoint/``)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no forecaster checkpoint at {path} (not a directory)")
        if not (path / "forecaster.json").is_file() and (path / "checkpoint").is_dir():
            path = path / "checkpoint"
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a forecaster checkpoint: missing {', '.join(missing)}"
            )
        meta = storage.read_json(path / "forecaster.json", "forecaster file")
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(
                f"{path / 'forecaster.json'} is not a stockgym forecaster (format "
                f"{meta.get('format')!r}, version {meta.get('version')!r})"
            )
        name = meta["model"]
        if name not in MODELS:
            raise ValueError(f"checkpoint names unknown model {name!r}")
        model = MODELS[name](**meta["model_kwargs"])
        dev = resolve_device(device)
        try:
            state = torch.load(path / "model.pt", map_location=dev, weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, EOFError, KeyError, pickle.UnpicklingError) as exc:
            raise ValueError(f"cannot load weights {path / 'model.pt'}: {exc}") from exc
        model.to(dev).eval()
        return cls(
            model,
            features=list(meta["features"]),
            scaler=FeatureScaler.load(path / "scaler.json"),
            target=meta["target"],
            horizon=int(meta["horizon"]),
            target_shift=float(meta["target_shift"]),
            target_scale=float(meta["target_scale"]),
            symbol=meta.get("symbol"),
            config=meta.get("config"),
        )

    def __repr__(self) -> str:
        return (
            f"Forecaster({self.model_name}, target={self.target!r}, horizon={self.horizon}, "
            f"window={self.window}, features={self.features}, symbol={self.symbol!r})"
        )
