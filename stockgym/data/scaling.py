"""Per-column feature scaling fit on the training period: :class:`FeatureScaler`.

Statistics (means, ranges, quantiles) are fit **only on rows dated <= end**, where the
caller passes the end of the training period (e.g. ``splits.dates["train"]["last"]``);
the scaler is then passed to whoever transforms validation / test / live data. Fitting
on the whole series is the classic leak (``fit`` with ``end=None`` uses every row
given, which is right only when the frame given *is* the training split).

Scalers are saved as JSON (the fitted parameters, the column names, the fit period) -
never pickle - written atomically, and a loaded scaler transforms bit-identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stockgym.core import write_text
from stockgym.data.errors import DataError

KINDS = ("standard", "minmax", "robust")
_FORMAT = "stockgym.FeatureScaler"
_VERSION = 1
# fitted attributes of each scikit-learn scaler that transform() needs (saved in JSON)
_ARRAYS = {
    "standard": ("mean_", "var_", "scale_"),
    "minmax": ("min_", "scale_", "data_min_", "data_max_", "data_range_"),
    "robust": ("center_", "scale_"),
}


def _make(kind: str, options: dict):
    # scikit-learn is imported here, not at module level: it costs ~1 s of import time.
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
    if kind == "standard":
        return StandardScaler(**options)
    if kind == "minmax":
        return MinMaxScaler(**options)
    return RobustScaler(**options)


def _label_to_json(label):
    return list(label) if isinstance(label, tuple) else label


def _label_from_json(label):
    return tuple(label) if isinstance(label, list) else label


class FeatureScaler:
    """Scale each feature column with a scikit-learn scaler fit on the training period.

    ``kind``: ``"standard"`` (z-score, ``StandardScaler``), ``"minmax"`` (to [0, 1]
    on the fit period, ``MinMaxScaler``) or ``"robust"`` (median / IQR,
    ``RobustScaler``). Extra keyword ``options`` go to the scikit-learn scaler (e.g.
    ``feature_range=(-1, 1)``, ``quantile_range=(10, 90)``); they must be JSON-able.

    After :meth:`fit`: ``columns`` (fitted column labels), ``fit_start`` / ``fit_end``
    (first and last date of the rows used, ISO strings), ``n_rows``.
    """

    def __init__(self, kind: str = "standard", **options):
        if kind not in KINDS:
            raise DataError(f"unknown scaler kind {kind!r}; choose one of {KINDS}")
        self.kind = kind
        self.options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
        try:
            json.dumps(self.options, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DataError(f"scaler options must be JSON-able: {exc}") from exc
        self._scaler = _make(kind, options)
        self.columns: list | None = None
        self.column_names: list | None = None
        self.fit_start: str | None = None
        self.fit_end: str | None = None
        self.n_rows: int | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, features: pd.DataFrame, end=None) -> FeatureScaler:
        """Fit on the rows of ``features`` dated <= ``end`` (the training period's end).

        ``end=None`` uses every row (only right when ``features`` is the train split).
        Raises :class:`DataError` when no row is left or a value is infinite.
        """
        _check_frame(features)
        if features.columns.has_duplicates:
            dup = list(features.columns[features.columns.duplicated()])
            raise DataError(f"duplicate feature columns {dup}")
        rows = features
        if end is not None:
            try:
                end_ts = pd.Timestamp(end)
            except (TypeError, ValueError) as exc:
                raise DataError(f"end {end!r} is not a date") from exc
            rows = features.loc[features.index <= end_ts]
        if len(rows) == 0:
            raise DataError(
                f"no rows to fit the scaler on (end={end!r}, data starts "
                f"{features.index[0].date() if len(features) else 'nowhere'})"
            )
        x = rows.to_numpy(dtype="float64")
        if np.isinf(x).any():
            i, j = np.argwhere(np.isinf(x))[0]
            raise DataError(
                f"infinite value in column {rows.columns[j]!r} on {rows.index[i].date()}"
            )
        nan_cols = [rows.columns[j] for j in np.nonzero(np.isnan(x).all(axis=0))[0]]
        if nan_cols:
            raise DataError(f"column(s) {nan_cols} are all NaN in the fit period")
        self._scaler = _make(self.kind, self.options).fit(x)
        self.columns = list(rows.columns)
        self.column_names = list(rows.columns.names)
        self.fit_start = str(rows.index[0].date())
        self.fit_end = str(rows.index[-1].date())
        self.n_rows = len(rows)
        return self

    def fit_transform(self, features: pd.DataFrame, end=None) -> pd.DataFrame:
        """``fit(features, end)`` then ``transform(features)`` (all rows)."""
        return self.fit(features, end).transform(features)

    # ------------------------------------------------------------ transform
    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        """Scale ``features`` (same index and columns returned, float64).

        Columns are matched by label (order may differ); missing or extra columns raise
        :class:`DataError` naming them. NaN passes through; inf raises.
        """
        if self.columns is None:
            raise DataError("FeatureScaler is not fitted; call fit(features, end=train_end)")
        _check_frame(features)
        given = list(features.columns)
        if given != self.columns:
            missing = [c for c in self.columns if c not in set(given)]
            extra = [c for c in given if c not in set(self.columns)]
            if missing or extra or len(given) != len(self.columns):
                raise DataError(
                    f"columns differ from the fit: missing {missing}, unexpected {extra} "
                    f"(fit on {len(self.columns)} columns)"
                )
        pos = features.columns.get_indexer(pd.Index(self.columns, tupleize_cols=False))
        x = features.iloc[:, pos].to_numpy(dtype="float64")
        if np.isinf(x).any():
            i, j = np.argwhere(np.isinf(x))[0]
            raise DataError(
                f"infinite value in column {self.columns[j]!r} on {features.index[i].date()}"
            )
        y = np.empty_like(x)
        y[:, pos] = self._scaler.transform(x)
        out = pd.DataFrame(y, index=features.index.copy(), columns=features.columns.copy())
        out.attrs = dict(features.attrs)
        return out

    # ---------------------------------------------------------------- save
    def to_dict(self) -> dict:
        """The JSON-able state (what :meth:`save` writes)."""
        if self.columns is None:
            raise DataError("cannot save an unfitted FeatureScaler")
        params = {a: getattr(self._scaler, a).tolist() for a in _ARRAYS[self.kind]}
        if hasattr(self._scaler, "n_samples_seen_"):
            n_seen = self._scaler.n_samples_seen_
            params["n_samples_seen_"] = (
                n_seen.tolist() if isinstance(n_seen, np.ndarray) else int(n_seen)
            )
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "kind": self.kind,
            "options": self.options,
            "columns": [_label_to_json(c) for c in self.columns],
            "column_names": self.column_names,
            "fit_start": self.fit_start,
            "fit_end": self.fit_end,
            "n_rows": self.n_rows,
            "params": params,
            "sklearn_version": _sklearn_version(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the scaler as JSON to ``path`` atomically (temp file + ``os.replace``)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        write_text(path, text)
        return path

    @classmethod
    def from_dict(cls, state: dict) -> FeatureScaler:
        """Rebuild a fitted scaler from :meth:`to_dict` output."""
        if state.get("format") != _FORMAT:
            raise DataError(f"not a FeatureScaler file (format={state.get('format')!r})")
        if state.get("version") != _VERSION:
            raise DataError(f"unsupported FeatureScaler version {state.get('version')!r}")
        self = cls(state["kind"], **state.get("options", {}))
        scaler = self._scaler
        for attr, value in state["params"].items():
            if attr == "n_samples_seen_":
                value = np.asarray(value) if isinstance(value, list) else value
            else:
                value = np.asarray(value, dtype="float64")
            setattr(scaler, attr, value)
        self.columns = [_label_from_json(c) for c in state["columns"]]
        scaler.n_features_in_ = len(self.columns)
        self.column_names = state.get("column_names")
        self.fit_start = state.get("fit_start")
        self.fit_end = state.get("fit_end")
        self.n_rows = state.get("n_rows")
        return self

    @classmethod
    def load(cls, path: str | Path) -> FeatureScaler:
        """Load a scaler written by :meth:`save`."""
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read scaler file {path}: {exc}") from exc
        return cls.from_dict(state)

    def __repr__(self) -> str:
        if self.columns is None:
            return f"FeatureScaler(kind={self.kind!r}, unfitted)"
        return (
            f"FeatureScaler(kind={self.kind!r}, {len(self.columns)} columns, "
            f"fit {self.fit_start}..{self.fit_end}, {self.n_rows} rows)"
        )


def _check_frame(features) -> None:
    if not isinstance(features, pd.DataFrame):
        raise DataError(f"features must be a DataFrame, got {type(features).__name__}")
    if not isinstance(features.index, pd.DatetimeIndex):
        raise DataError("features must have a DatetimeIndex (dates)")


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
