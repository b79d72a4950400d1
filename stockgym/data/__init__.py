"""Market data: load, validate, cache and split prices; trailing-window features.

Public names: :func:`load_prices`, :func:`sample_symbols`, :func:`build_features`,
:func:`split`, :func:`walk_forward`, :class:`FeatureScaler`,
:func:`check_no_lookahead`, :class:`DataError`.
"""

from stockgym.data.errors import DataError, LookaheadError
from stockgym.data.sources import AlignmentWarning, load_prices, sample_symbols

__all__ = [
    "AlignmentWarning",
    "DataError",
    "LookaheadError",
    "load_prices",
    "sample_symbols",
]
