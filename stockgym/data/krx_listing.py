"""Which KRX board (KOSPI, KOSDAQ...) a six-digit code is listed on, from
finance-datareader's listing (``StockListing("KRX")``, its ``Code`` and ``Market``
columns), cached on disk next to the price cache.

``load_prices(..., source="fdr")`` puts the boards it finds in ``prices.attrs["boards"]``
(``{code: "KOSPI" | "KOSDAQ" | ...}``); the env's ``board="auto"`` (its default) reads
them for the KRX sell-tax split and the pre-2023 tick tables. A code the listing does
not have, or a listing that cannot be fetched (offline), is simply absent: the env then
uses KOSPI's rules, and a warning says so here. The cache file (``krx-listing.json``) is
refreshed when a code is missing from it and the file is older than a day.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

from stockgym.core import write_text
from stockgym.data.fdr import _run_bounded, resolve_cache_dir

LISTING_FILE = "krx-listing.json"
MAX_AGE_S = 24 * 3600


def is_krx_code(symbol: str) -> bool:
    return re.fullmatch(r"\d{6}", str(symbol)) is not None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("boards"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"fetched_at": 0.0, "boards": {}}


def _fetch_listing(timeout: float | None) -> dict[str, str]:
    def call() -> Any:
        import FinanceDataReader  # imported lazily: slow, and only needed online

        return FinanceDataReader.StockListing("KRX")

    table = _run_bounded(call, timeout)
    if not {"Code", "Market"} <= set(getattr(table, "columns", [])):
        raise ValueError("the KRX listing has no Code and Market columns")
    return {str(c).zfill(6): str(m) for c, m in zip(table["Code"], table["Market"], strict=True)}


def krx_boards(
    symbols: list[str], cache_dir: str | Path | None = None, timeout: float | None = 30.0
) -> dict[str, str]:
    """``{code: market}`` for the six-digit codes in ``symbols`` that the listing has."""
    codes = [s for s in symbols if is_krx_code(s)]
    if not codes:
        return {}
    path = resolve_cache_dir(cache_dir) / LISTING_FILE
    cached = _read(path)
    boards = cached["boards"]
    missing = [c for c in codes if c not in boards]
    if missing and time.time() - float(cached.get("fetched_at", 0.0)) > MAX_AGE_S:
        try:
            boards = _fetch_listing(timeout)
            write_text(path, json.dumps({"fetched_at": time.time(), "boards": boards}))
        except Exception as exc:  # noqa: BLE001 - offline or a changed site: no board
            warnings.warn(
                f"KRX listing unavailable ({type(exc).__name__}: {exc}); {missing} trade "
                "under KOSPI's rules unless you pass board=",
                stacklevel=3,
            )
            return {c: boards[c] for c in codes if c in boards}
    unknown = [c for c in codes if c not in boards]
    if unknown:
        warnings.warn(
            f"{unknown} not in the KRX listing; they trade under KOSPI's rules unless you "
            "pass board=",
            stacklevel=3,
        )
    return {c: boards[c] for c in codes if c in boards}
