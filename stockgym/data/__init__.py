"""Market data: load, validate, cache and split prices; trailing-window features.

Public names: :func:`load_prices`, :func:`sample_symbols`, :func:`build_features`,
:func:`feature_names`, :data:`FEATURES`, :data:`DEFAULT_FEATURES`, :func:`split`,
:class:`Splits`, :func:`walk_forward`, :class:`Fold`, :class:`FeatureScaler`,
:func:`check_no_lookahead`, :class:`DataError`, :class:`LookaheadError`,
:class:`DataWarning` (data accepted with a repair or a caveat, e.g. a long gap).
"""

from stockgym.data.errors import DataError, LookaheadError
from stockgym.data.features import DEFAULT_FEATURES, FEATURES, build_features, feature_names
from stockgym.data.lookahead import check_no_lookahead
from stockgym.data.quality import DataWarning
from stockgym.data.scaling import FeatureScaler
from stockgym.data.sources import AlignmentWarning, load_prices, sample_symbols
from stockgym.data.splits import Fold, Splits, split, walk_forward

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "AlignmentWarning",
    "DataError",
    "DataWarning",
    "FeatureScaler",
    "Fold",
    "LookaheadError",
    "Splits",
    "build_features",
    "check_no_lookahead",
    "feature_names",
    "load_prices",
    "sample_symbols",
    "split",
    "walk_forward",
]
