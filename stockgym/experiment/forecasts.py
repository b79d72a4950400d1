"""Walk-forward forecasts as observation features: :func:`forecast_features`.

The value dated t is made after the close of t by a model trained only on targets dated
<= t (:func:`stockgym.forecasters.walkforward.walk_forward`: a refit every
``refit_every`` rows once ``min_train`` samples exist; the schedule depends on dates
only), so changing prices after t changes no forecast dated <= t. Or, with
``pretrained = DIR``, a trained forecaster used as it is, only for dates after the data
it was trained and selected on.

A run with ``[env.forecasts]`` appends these columns to every observation row (after the
indicator features), scaled by a :class:`~stockgym.data.FeatureScaler` fitted on the
training period's forecasts only; ``obs_layout.feature_names`` names them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stockgym.core import check_int

#: what ``forecast_features`` needs besides the prices; ``[env.forecasts]`` in a config
SPEC_KEYS = ("model", "window", "refit_every", "min_train", "horizon", "epochs", "seed",
             "hidden_size", "pretrained", "device")  # fmt: skip


@dataclass
class ForecastSpec:
    """Which forecasts to add (``[env.forecasts]``).

    ``model``: a forecaster of :data:`stockgym.forecasters.MODELS`; ``window``: input rows;
    ``horizon``: days ahead (a list gives one column each); ``refit_every`` /
    ``min_train``: the walk-forward schedule (rows); ``epochs``, ``hidden_size``,
    ``seed``, ``device``: training. ``pretrained``: a trained forecaster's dir instead
    (then only its own model, window and horizon count).
    """

    model: str = "lstm"
    window: int = 20
    refit_every: int = 126
    min_train: int = 252
    horizon: list[int] = field(default_factory=lambda: [1])
    epochs: int = 20
    seed: int = 0
    hidden_size: int = 32
    pretrained: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.horizon, int) and not isinstance(self.horizon, bool):
            self.horizon = [self.horizon]

    @classmethod
    def from_any(cls, spec: Any) -> ForecastSpec:
        """A spec from a :class:`ForecastSpec`, a dict (unknown keys refused) or a model
        name (``"lstm"``)."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, str):
            return cls(model=spec)
        if not isinstance(spec, dict):
            raise ValueError(f"forecasts must be a table of {SPEC_KEYS} or a model name, "
                             f"got {spec!r}")  # fmt: skip
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"unknown [env.forecasts] key(s) {unknown}; known: {SPEC_KEYS}")
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """``ValueError`` naming the first bad value (before anything is trained)."""
        from stockgym.forecasters.models import MODELS

        if self.pretrained is None and self.model not in MODELS:
            raise ValueError(f"forecasts.model must be one of {sorted(MODELS)}, got {self.model!r}")
        if not isinstance(self.horizon, list) or not self.horizon:
            raise ValueError(f"forecasts.horizon must be an integer >= 1 or a list of them, "
                             f"got {self.horizon!r}")  # fmt: skip
        for h in self.horizon:
            check_int("forecasts.horizon", h, 1)
        if len(set(self.horizon)) != len(self.horizon):
            raise ValueError(f"forecasts.horizon lists a value twice: {self.horizon}")
        for name in ("window", "refit_every", "min_train", "epochs", "hidden_size"):
            check_int(f"forecasts.{name}", getattr(self, name), 1)
        check_int("forecasts.seed", self.seed)
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise ValueError(f"forecasts.pretrained must be a path, got {self.pretrained!r}")

    def columns(self) -> list[str]:
        """The column names, e.g. ``forecast_lstm_h1`` (pretrained: known after loading)."""
        return [f"forecast_{self.model}_h{h}" for h in self.horizon]


def forecast_features(
    prices: pd.DataFrame, spec: ForecastSpec | dict[str, Any] | str, *, cache: bool = True,
    cache_dir: str | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Walk-forward forecasts of ``prices``, one row per date that has one (module
    docstring). One symbol (flat columns): columns like ``forecast_lstm_h1``; several
    (``(symbol, field)`` columns): the same names under each symbol. Computed once per
    (data, spec) and cached on disk atomically (a cache hit equals a recomputation bit
    for bit); ``cache=False`` recomputes."""
    spec = ForecastSpec.from_any(spec)
    spec.validate()
    if isinstance(prices.columns, pd.MultiIndex):
        symbols = [str(s) for s in dict.fromkeys(prices.columns.get_level_values(0))]
        parts = {s: _one(prices[s], s, spec, cache, cache_dir) for s in symbols}
        out = pd.concat(parts, axis=1, join="inner", names=["symbol", "feature"])
    else:
        out = _one(prices, None, spec, cache, cache_dir)
        out.columns = pd.Index([str(c) for c in out.columns], name="feature")
    out.attrs = {"forecasts": spec.to_dict()}
    return out


def _one(prices: pd.DataFrame, symbol: str | None, spec: ForecastSpec, cache: bool,
         cache_dir: str | None) -> pd.DataFrame:  # fmt: skip
    if spec.pretrained is not None:
        return _pretrained(prices, spec.pretrained)
    from stockgym.forecasters.training import ForecastConfig
    from stockgym.forecasters.walkforward import WalkForwardConfig, walk_forward

    cols = {}
    for h, name in zip(spec.horizon, spec.columns(), strict=True):
        fc = ForecastConfig(model=spec.model, window=spec.window, horizon=h,
                            hidden_size=spec.hidden_size, epochs=spec.epochs, seed=spec.seed,
                            device=spec.device, patience=5, batch_size=128)  # fmt: skip
        wf = WalkForwardConfig(forecast=fc, refit_every=spec.refit_every,
                               min_train=spec.min_train)  # fmt: skip
        frame = prices.copy()
        if symbol is not None:
            frame.attrs["symbols"] = [symbol]
        cols[name] = walk_forward(frame, wf, cache=cache, cache_dir=cache_dir)["forecast"]
    return pd.concat(cols, axis=1, join="inner")


def _pretrained(prices: pd.DataFrame, path: str) -> pd.DataFrame:
    """A trained forecaster's forecasts, only for dates after the data it was trained and
    selected on (earlier ones would be in-sample)."""
    from stockgym.forecasters.forecaster import Forecaster

    fc = Forecaster.load(path, device="cpu")
    used = fc.config.get("valid_end") or fc.scaler.fit_end
    series = fc.predict(prices)
    if used is not None:
        series = series[series.index > pd.Timestamp(used)]
    if series.empty:
        raise ValueError(f"pretrained forecaster {path} was trained on data through {used}: "
                         "it has no out-of-sample dates in these prices")  # fmt: skip
    return series.to_frame(f"forecast_{fc.model_name}_h{fc.horizon}")


def extra_features(
    prices: pd.DataFrame,
    forecasts: dict[str, Any] | None,
    autoencoder: dict[str, Any] | None,
    *,
    cache_dir: str | None = None,
    precomputed: pd.DataFrame | None = None,
) -> pd.DataFrame | None:
    """The raw (unscaled) features a run appends to its observations: the walk-forward
    forecasts of ``forecasts`` (``precomputed`` when given) and the walk-forward
    autoencoder's reconstruction error and latent code of ``autoencoder``
    (:func:`stockgym.forecasters.autoencoder.autoencoder_features`), joined on the dates
    both have; ``None`` when neither is asked for."""
    parts = []
    if forecasts is not None:
        parts.append(
            precomputed
            if precomputed is not None
            else forecast_features(prices, forecasts, cache_dir=cache_dir)
        )
    if autoencoder is not None:
        from stockgym.forecasters.autoencoder import autoencoder_features

        parts.append(autoencoder_features(prices, autoencoder, cache_dir=cache_dir))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else pd.concat(parts, axis=1, join="inner")
