"""Errors raised by the data layer. All are ``ValueError``s with a message naming the
problem (source, symbol, column, date, value) so users never see a numpy traceback."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing market data (the message says what, where and how to fix it)."""


class LookaheadError(AssertionError):
    """A feature function used information from after the decision date."""
