"""KRX rules by date in the single env, hand-computed on tiny synthetic series: the sell
tax by settlement date (T+2), daily price-limit locks, tick sizes, the volume cap and square-root
impact, the accounting identity under a rollout with every rule on, no look-ahead
through the rules, and bad input (docs/market-rules.md). Expected numbers come from the
rule as written here, not from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stockgym.data import DataError
from stockgym.envs import StockTradingEnv, krx

SYM = "005930"
V0 = 100_000_000.0
COMM = 0.00015  # the krx preset's commission
SLIP = 0.0005  # the krx preset's 5 bps slippage


# ----------------------------------------------------------------- helpers
def ohlc(o: float, c: float | None = None) -> tuple:
    """A traded bar: high above and low below open/close (never flat, so never locked)."""
    c = o if c is None else c
    return (o, max(o, c) * 1.01, min(o, c) * 0.99, c)


def flat(x: float) -> tuple:
    """A bar that traded at one price all day (open = high = low = close)."""
    return (x, x, x, x)


def frame(rows, dates, volume=1e9, prev_close=None) -> pd.DataFrame:
    """OHLCV from (open, high, low, close) rows; ``dates``: a first business day, or every
    date (a list or one space-separated string)."""
    if isinstance(dates, str) and " " not in dates:
        idx = pd.bdate_range(dates, periods=len(rows), name="date")
    else:
        days = dates.split() if isinstance(dates, str) else list(dates)
        idx = pd.DatetimeIndex(pd.to_datetime(days), name="date")
    a = np.asarray(rows, dtype=float)
    vol = np.broadcast_to(np.asarray(volume, dtype=float), (len(rows),)).copy()
    df = pd.DataFrame(
        {"open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3], "volume": vol},
        index=idx,
    )
    if prev_close is not None:
        df["prev_close"] = np.asarray(prev_close, dtype=float)
    return df


def make_env(frames, listed=None, **kw) -> StockTradingEnv:
    """window_size=1 and one hand-made feature column, so no warm-up eats bars."""
    if isinstance(frames, pd.DataFrame):
        frames = {SYM: frames}
    prices = pd.concat(frames, axis=1)
    if listed is not None:
        prices.attrs["boards"] = listed
    x = pd.DataFrame({"x": np.linspace(0.0, 1.0, len(prices))}, index=prices.index)
    extra = pd.concat({s: x for s in frames}, axis=1)
    kw.setdefault("market", "krx")
    kw.setdefault("initial_cash", V0)
    kw.setdefault("action_type", "continuous")
    return StockTradingEnv(prices, features=[], extra_features=extra, window_size=1, **kw)


def approx(x, rel=1e-12):
    return pytest.approx(x, rel=rel, abs=1e-9)


def check_step(info, closes, v_prev) -> float:
    """V = cash + sum(shares * close), dV = PnL - cost, cost = the orders' costs, cash >= 0."""
    v = info["cash"] + float(np.dot(info["position"], closes))
    assert info["portfolio_value"] == pytest.approx(v, rel=1e-12, abs=1e-6)
    assert abs((v - v_prev) - (info["pnl"] - info["cost"])) <= 1e-9 * v_prev
    costs = sum(o["commission"] + o["tax"] + o["slippage"] for o in info["trades"])
    assert info["cost"] == pytest.approx(costs, rel=1e-12, abs=1e-9)
    assert info["cash"] >= 0.0
    return info["portfolio_value"]


def act(env, *w):
    return env.step(np.array(w, dtype=np.float64))[-1]


def one(info) -> dict:
    assert len(info["trades"]) == 1
    return info["trades"][0]


# ------------------------------------------------------ 1. sell tax by date
# The rate is the one in force on the sale's settlement date (T+2): the date of bar
# t + 2 of the data for a sale filled on bar t, or past the last date the next weekdays
# other than Dec 31 and Jan 1 (docs/market-rules.md, "Rate chosen by settlement date"). Each row of the law:
TAX_BY_SETTLEMENT = [  # (settlement date, total sell tax on both boards)
    *[(d, 0.0030) for d in ("2015-01-01", "2019-06-02")],  # 06-02: the last day of 0.30 %
    *[(d, 0.0025) for d in ("2019-06-03", "2020-12-31")],
    *[(d, 0.0023) for d in ("2021-01-01", "2022-12-31")],
    *[("2023-01-02", 0.0020), ("2024-07-15", 0.0018), ("2025-01-02", 0.0015)],
    ("2026-07-15", 0.0020),
]
# (sale date on a business-day calendar, rate): settlement two business days later
TAX_BY_SALE_DATE = [
    *[(d, 0.0030) for d in ("2015-07-15", "2016-07-15", "2017-07-14", "2018-07-13")],
    ("2019-05-29", 0.0030),  # settles Fri 2019-05-31: the last sale at 0.30 %
    ("2019-05-30", 0.0025),  # settles Mon 2019-06-03: the first sale at 0.25 %
    *[(d, 0.0025) for d in ("2020-07-15", "2020-12-29")],  # 12-29 settles 12-31
    *[(d, 0.0023) for d in ("2020-12-30", "2021-07-15", "2022-07-15")],  # 12-30: 2021-01-01
    *[("2023-07-14", 0.0020), ("2024-07-15", 0.0018), ("2025-07-15", 0.0015)],
    ("2026-07-15", 0.0020),
]


def buy_then_sell(dates, sale: int, **kw):
    """Buy 1,000 shares at 50,000 on bar ``sale - 1`` (weight 0.5, no slippage), sell
    them at 52,000 on bar ``sale``. Both prices are on the tick of every table."""
    dates = dates.split() if isinstance(dates, str) else dates
    rows = [ohlc(50_000) if t < sale else ohlc(52_000) for t in range(len(dates))]
    prices = frame(rows, dates)
    env = make_env(prices, **kw)
    env.reset(options={"start": prices.index[sale - 2]})
    buy = act(env, 0.5)
    sell = act(env, 0.0)
    assert sell["date"] == prices.index[sale]
    return env, buy, sell


def around(day: str) -> pd.DatetimeIndex:
    """Business days: two before ``day``, ``day``, two after (``day`` is bar 2)."""
    return pd.bdate_range(end=day, periods=3).append(pd.bdate_range(day, periods=3)[1:])


def check_sale_tax(buy, sell, rate):
    cash1 = V0 - 1_000 * 50_000 - COMM * 50_000_000
    assert one(buy)["tax"] == 0.0 and buy["cash"] == approx(cash1)
    t = one(sell)
    assert (t["filled"], t["price"], t["value"]) == (-1_000, 52_000.0, 52_000_000.0)
    assert t["tax"] == approx(rate * 52_000_000)
    assert sell["cash"] == approx(cash1 + 52_000_000 - COMM * 52_000_000 - rate * 52_000_000)


@pytest.mark.parametrize("board", ["kospi", "kosdaq"])
@pytest.mark.parametrize(("sale_date", "rate"), TAX_BY_SALE_DATE)
def test_sell_tax_by_date(sale_date, rate, board):
    env, buy, sell = buy_then_sell(around(sale_date), 2, board=board, slippage_bps=0.0)
    assert env.rules.tax_schedule == "krx" and env.rules.boards == (board,)
    check_sale_tax(buy, sell, rate)


YEAR_END_2024 = "2024-12-23 2024-12-24 2024-12-26 2024-12-27 2024-12-30 2025-01-02"
MAY_2019 = "2019-05-29 2019-05-30 2019-05-31 2019-06-01 2019-06-02 2019-06-03"


@pytest.mark.parametrize(
    ("dates", "sale", "rate"),
    [
        # KRX was shut on 2024-12-31 and 2025-01-01: a sale on Fri 12-27 settles on
        # 2025-01-02 (0.15 %), one on Thu 12-26 on Mon 12-30 (0.18 %)
        (YEAR_END_2024, 3, 0.0015),
        (YEAR_END_2024, 2, 0.0018),
        # the data's own calendar, even with weekend bars: Fri 05-31 settles Sun 06-02
        (MAY_2019, 2, 0.0030),
        (MAY_2019, 3, 0.0025),
        # at the end of the data: the next weekdays but Dec 31 and Jan 1 (KRX is shut)
        ("2024-12-24 2024-12-26 2024-12-27", 2, 0.0015),  # settles Thu 2025-01-02
        ("2025-12-24 2025-12-26 2025-12-29", 2, 0.0020),  # settles Fri 2026-01-02
        ("2024-12-26 2024-12-27 2024-12-30", 2, 0.0015),  # settles Fri 2025-01-03
        ("2019-05-29 2019-05-30 2019-05-31", 2, 0.0025),  # settles Mon 06-03, not Sun 06-02
    ],
)
def test_settlement_follows_the_data_calendar(dates, sale, rate):
    _, buy, sell = buy_then_sell(dates, sale, slippage_bps=0.0)
    check_sale_tax(buy, sell, rate)


@pytest.mark.parametrize(("settles", "rate"), TAX_BY_SETTLEMENT)
def test_tax_parts_split_by_board(settles, rate):
    stt, rural = krx.tax_parts(settles, "kospi")
    assert rural == 0.0015 and stt == pytest.approx(rate - 0.0015, abs=1e-15)
    assert krx.tax_parts(settles, "kosdaq") == (pytest.approx(rate, abs=1e-15), 0.0)


def test_issue_example_june_2021_sale_pays_023_percent():
    # 1,427 shares bought at 70,000, sold at 70,050 on 2021-06-16 (no slippage, no ticks)
    cash0 = 1_427.5 * 70_000  # weight 1 buys trunc(1427.5) = 1,427 shares, costs fit
    rows = [ohlc(70_000), ohlc(70_000), ohlc(70_050)]
    env = make_env(frame(rows, "2021-06-14"), initial_cash=cash0, slippage_bps=0.0, ticks=False)
    env.reset()
    buy = one(act(env, 1.0))
    assert buy["filled"] == 1_427 and buy["status"] == "filled"
    cash1 = cash0 - 1_427 * 70_000 * (1 + COMM)
    info = act(env, 0.0)
    sale = one(info)
    value = 1_427 * 70_050  # 99,961,350 KRW
    assert (sale["filled"], sale["price"]) == (-1_427, 70_050.0)
    assert sale["tax"] == approx(0.0023 * value)  # 229,911.105 KRW
    assert info["cash"] == approx(cash1 + value - COMM * value - 0.0023 * value)


@pytest.mark.parametrize("sell_date", ["2016-07-15", "2019-05-30", "2024-12-30", "2025-07-15"])
def test_explicit_sell_tax_overrides_every_date(sell_date):
    env, _, sell = buy_then_sell(around(sell_date), 2, sell_tax=0.001, slippage_bps=0.0)
    assert env.rules.tax_schedule is None and env.cost_kwargs()["sell_tax"] == 0.001
    assert one(sell)["tax"] == approx(0.001 * 52_000_000)


def test_krx_config_and_us_market_has_no_tax():
    env, _, _ = buy_then_sell(around("2024-07-15"), 2)
    assert env.config()["rules"]["tax_schedule"] == "krx"
    assert "sell_tax" not in env.cost_kwargs()
    assert env.cost_kwargs()["price_limit"] is True and env.cost_kwargs()["ticks"] is True
    env, _, sell = buy_then_sell(around("2024-07-15"), 2, market="us")
    assert one(sell)["tax"] == 0.0
    assert (env.rules.price_limit, env.rules.ticks, env.rules.tax_schedule) == (False, False, None)


@pytest.mark.parametrize(
    ("listed", "board", "want_board", "tick"),
    [
        (None, None, "kospi", 500),
        ({SYM: "KOSDAQ"}, None, "kosdaq", 100),
        ({SYM: "KOSDAQ"}, "kospi", "kospi", 500),  # an explicit board wins
        ({SYM: "KOSPI"}, {SYM: "kosdaq"}, "kosdaq", 100),
    ],
)
def test_board_from_listing_and_explicit_board(listed, board, want_board, tick):
    # Before 2023-01-25, 100,000-500,000 KRW moves in 500 on KOSPI, in 100 on KOSDAQ.
    env = make_env(frame([ohlc(150_300)] * 3, "2021-03-02"), listed=listed, board=board)
    assert env.rules.boards == (want_board,)
    assert env.config()["rules"]["boards"] == [want_board]
    assert env.cost_kwargs()["board"] == {SYM: want_board}
    env.reset()
    fill = math.ceil(150_300 * (1 + SLIP) / tick) * tick  # 150,500 or 150,400
    assert one(act(env, 0.5))["price"] == fill


# ------------------------------------------------------------ 2. price limits
def test_limit_up_blocks_buys_and_limit_down_blocks_sells():
    rows = [
        ohlc(10_000),  # d0: close 10,000
        flat(13_000),  # d1: +30 % all day: locked up
        ohlc(13_000),  # d2: trades normally
        flat(16_900),  # d3: 13,000 * 1.3, locked up again
        flat(11_830),  # d4: 16,900 * 0.7, locked down
        flat(8_281),  # d5: 11,830 * 0.7, locked down
    ]
    prices = frame(rows, "2024-03-04")
    closes = prices["close"].to_numpy()
    env = make_env(prices)
    _, info = env.reset()
    v = info["portfolio_value"]

    info = act(env, 0.5)  # buy on the locked-up d1: nothing fills
    t = one(info)
    assert (t["status"], t["filled"], t["side"]) == ("limit_locked", 0.0, "buy")
    assert t["requested"] == math.trunc(0.5 * V0 / 13_010)  # sized at 13,000 * 1.0005 -> 13,010
    assert "upper" in t["reason"] and "limit" in t["reason"]
    assert (info["cash"], info["position"].tolist(), info["cost"]) == (V0, [0.0], 0.0)
    v = check_step(info, closes[1:2], v)
    assert v == V0

    info = act(env, 0.5)  # d2 trades: the buy fills at 13,010
    q = math.trunc(0.5 * V0 / 13_010)
    cash = V0 - q * 13_010 * (1 + COMM)
    assert one(info)["status"] == "filled" and info["cash"] == approx(cash)
    v = check_step(info, closes[2:3], v)

    info = act(env, 0.0)  # a sell on the locked-up d3 fills at floor(16,891.55 / 10) * 10
    t = one(info)
    assert (t["status"], t["filled"], t["price"]) == ("filled", -q, 16_890.0)
    cash += q * 16_890 * (1 - COMM - 0.0018)
    assert info["cash"] == approx(cash) and info["position"].tolist() == [0.0]
    v = check_step(info, closes[3:4], v)

    info = act(env, 0.5)  # a buy on the locked-down d4 fills at ceil(11,835.915 / 10) * 10
    q = math.trunc(0.5 * cash / 11_840)
    assert one(info)["status"] == "filled" and info["position"].tolist() == [q]
    cash -= q * 11_840 * (1 + COMM)
    assert info["cash"] == approx(cash)
    v = check_step(info, closes[4:5], v)

    info = act(env, 0.0)  # a sell on the locked-down d5 does not fill
    t = one(info)
    assert (t["status"], t["filled"], t["requested"]) == ("limit_locked", 0.0, -q)
    assert "lower" in t["reason"]
    assert info["cash"] == approx(cash) and info["position"].tolist() == [q]
    check_step(info, closes[5:6], v)


def first_buy(prices, **kw) -> dict:
    env = make_env(prices, **kw)
    env.reset()
    return one(act(env, 0.5))


def test_limit_was_15_percent_before_2015_06_15():
    rows = [ohlc(10_000), flat(11_500), ohlc(11_500)]  # +15 % all day
    with pytest.warns(UserWarning, match="before 2015-01-01"):
        env = make_env(frame(rows, "2014-03-03"))
    env.reset()
    assert one(act(env, 0.5))["status"] == "limit_locked"
    assert first_buy(frame(rows, "2016-03-02"))["status"] == "filled"
    # The 30 % limit took effect on 2015-06-15 (a Monday).
    assert first_buy(frame(rows, "2015-06-11 2015-06-12 2015-06-13"))["status"] == "limit_locked"
    assert first_buy(frame(rows, "2015-06-12 2015-06-15 2015-06-16"))["status"] == "filled"


def test_unlocked_limit_bars():
    day = "2024-03-04"
    up = [ohlc(10_000), flat(13_000), ohlc(13_000)]
    spread = [ohlc(10_000), (13_000, 13_000, 12_900, 13_000), ohlc(13_000)]  # high != low
    assert first_buy(frame(spread, day))["status"] == "filled"
    assert first_buy(frame(up, day), price_limit=False)["status"] == "filled"
    assert first_buy(frame(up, day), market="us")["status"] == "filled"
    assert first_buy(frame(up, day))["status"] == "limit_locked"


def test_prev_close_column_is_the_base_price():
    # A 1:2 split: the close before is 20,000, KRX's base price for d1 is 10,000.
    rows = [ohlc(20_000), flat(13_000), ohlc(13_000)]
    assert first_buy(frame(rows, "2024-03-04"))["status"] == "filled"  # -35 %: locked down
    base = [np.nan, 10_000.0, np.nan]
    t = first_buy(frame(rows, "2024-03-04", prev_close=base))
    assert t["status"] == "limit_locked" and "upper" in t["reason"]


# -------------------------------------------------------------- 3. tick sizes
TICK_CASES = [  # (first date, board, open, tick of the band the fill price falls in)
    *[("2024-03-04", "kospi", p, k) for p, k in [(1_234, 1), (3_210, 5), (12_340, 10)]],
    *[("2024-03-04", "kospi", p, k) for p, k in [(33_350, 50), (123_400, 100)]],
    *[("2024-03-04", "kosdaq", p, k) for p, k in [(345_500, 500), (789_000, 1_000)]],
    *[("2022-03-02", "kospi", p, k) for p, k in [(567, 1), (2_345, 5), (7_890, 10)]],
    *[("2022-03-02", "kospi", p, k) for p, k in [(23_450, 50), (67_800, 100)]],
    *[("2022-03-02", "kospi", p, k) for p, k in [(234_500, 500), (678_000, 1_000)]],
    *[("2022-03-02", "kosdaq", p, k) for p, k in [(567, 1), (2_345, 5), (7_890, 10)]],
    *[("2022-03-02", "kosdaq", p, k) for p, k in [(23_450, 50), (67_800, 100)]],
    *[("2022-03-02", "kosdaq", p, k) for p, k in [(234_500, 100), (678_000, 100)]],
]


@pytest.mark.parametrize(("day", "board", "p", "tick"), TICK_CASES)
def test_tick_rounding_against_the_trader(day, board, p, tick):
    prices = frame([ohlc(p), ohlc(p), ohlc(p)], day)
    closes = prices["close"].to_numpy()
    env = make_env(prices, board=board)
    _, info = env.reset()
    info_b = act(env, 0.5)
    buy = one(info_b)
    fill_b = math.ceil(p * (1 + SLIP) / tick) * tick
    q = math.trunc(0.5 * V0 / fill_b)
    assert (buy["price"], buy["filled"]) == (fill_b, q)
    assert buy["slippage"] == approx(q * (fill_b - p))
    assert info_b["cash"] == approx(V0 - q * fill_b * (1 + COMM))
    v = check_step(info_b, closes[1:2], V0)
    info_s = act(env, 0.0)
    sell = one(info_s)
    fill_s = math.floor(p * (1 - SLIP) / tick) * tick
    assert (sell["price"], sell["filled"]) == (fill_s, -q)
    assert sell["slippage"] == approx(q * (p - fill_s))
    check_step(info_s, closes[2:3], v)


def test_tick_table_changes_on_2023_01_25():
    # KOSDAQ 234,500: tick 100 until 2023-01-24, 500 in the unified table from 2023-01-25
    prices = frame([ohlc(234_500)] * 3, ["2023-01-23", "2023-01-24", "2023-01-25"])
    env = make_env(prices, board="kosdaq")
    env.reset()
    assert one(act(env, 0.5))["price"] == math.ceil(234_500 * (1 + SLIP) / 100) * 100
    assert one(act(env, 0.0))["price"] == math.floor(234_500 * (1 - SLIP) / 500) * 500


def test_ticks_off():
    t = first_buy(frame([ohlc(12_340)] * 3, "2024-03-04"), ticks=False)
    assert t["price"] == approx(12_340 * (1 + SLIP))


# ------------------------------------------------------ 4. volume cap and impact
def test_volume_cap_on_buys_and_sells():
    rows = [ohlc(10_000)] * 3
    env = make_env(frame(rows, "2024-03-04", volume=[1e6, 10_000, 5_000]), max_participation=0.01)
    assert env.rule_arrays.cap[1:, 0].tolist() == [100.0, 50.0]
    env.reset()
    info = act(env, 1.0)
    t = one(info)
    # sized at ceil(10,005 / 10) * 10 = 10,010: trunc(1e8 / 10,010) = 9,990 wanted
    assert (t["status"], t["requested"], t["filled"]) == ("capped", 9_990, 100)
    assert "volume" in t["reason"]
    cash = V0 - 100 * 10_010 * (1 + COMM)
    assert info["cash"] == approx(cash) and info["position"].tolist() == [100]
    info = act(env, 0.0)
    t = one(info)
    assert (t["status"], t["requested"], t["filled"], t["price"]) == ("capped", -100, -50, 9_990)
    cash += 50 * 9_990 * (1 - COMM - 0.0018)
    assert info["cash"] == approx(cash) and info["position"].tolist() == [50]


def test_volume_cap_fractional_is_exact():
    prices = frame([ohlc(10_000)] * 2, "2024-03-04", volume=12_345)
    t = first_buy(prices, max_participation=0.01, fractional=True, ticks=False)
    assert t["status"] == "capped" and t["filled"] == approx(123.45)
    assert first_buy(prices, max_participation=0.01)["filled"] == 123


def test_sqrt_impact_on_the_capped_size():
    prices = frame([ohlc(10_000)] * 3, "2024-03-04", volume=10_000)
    closes = prices["close"].to_numpy()
    env = make_env(prices, max_participation=0.01, impact="sqrt", impact_coef=0.01)
    assert env.config()["rules"]["impact"] == "sqrt"
    env.reset()
    move = 0.01 * math.sqrt(100 / 10_000)  # q = the capped 100 shares
    info = act(env, 1.0)
    t = one(info)
    buy = math.ceil(10_000 * (1 + SLIP) * (1 + move) / 10) * 10  # 10,015.005 -> 10,020
    assert (t["status"], t["filled"], t["price"]) == ("capped", 100, buy)
    assert t["slippage"] == approx(100 * (buy - 10_000))
    cash = V0 - 100 * buy * (1 + COMM)
    assert info["cash"] == approx(cash)
    v = check_step(info, closes[1:2], V0)
    info = act(env, 0.0)
    t = one(info)
    sell = math.floor(10_000 * (1 - SLIP) / (1 + move) / 10) * 10  # 9,985.01 -> 9,980
    assert (t["status"], t["filled"], t["price"]) == ("filled", -100, sell)
    cash += 100 * sell * (1 - COMM - 0.0018)
    assert info["cash"] == approx(cash)
    check_step(info, closes[2:3], v)


def test_sqrt_impact_without_cap_uses_the_order_size():
    prices = frame([ohlc(10_000)] * 2, "2024-03-04", volume=1e6)
    env = make_env(prices, impact="sqrt", impact_coef=0.01)
    env.reset()
    q = math.trunc(0.5 * V0 / 10_010)  # sized before impact
    price = math.ceil(10_000 * (1 + SLIP) * (1 + 0.01 * math.sqrt(q / 1e6)) / 10) * 10
    info = act(env, 0.5)
    assert (one(info)["filled"], one(info)["price"]) == (q, price)
    assert info["cash"] == approx(V0 - q * price * (1 + COMM))


# ------------------------------------------- 5./6. rollouts with every rule on
def krx_panel(n: int, seed: int, start: str = "2022-09-01"):
    """Three KOSPI-level assets (50,000-80,000 KRW, prices on 100) with flat limit-up and
    limit-down bars every ~20 bars, volumes 300-20,000 shares. Returns the frames and
    the set of (bar, asset) that are locked up / down."""
    rng = np.random.default_rng(seed)
    frames, ups, downs = {}, set(), set()
    for k, sym in enumerate(("005930", "000660", "035420")):
        rows, c = [], 55_000.0 + 10_000 * k
        for t in range(n):
            if t % 20 == 3 + 5 * k:
                c = math.floor(c * 1.3 / 100) * 100
                rows.append(flat(c))
                ups.add((t, k))
            elif t % 20 == 5 + 5 * k:
                c = math.ceil(c * 0.7 / 100) * 100
                rows.append(flat(c))
                downs.add((t, k))
            else:
                o = round(c * math.exp(rng.normal(0, 0.01)), -2)
                c = round(o * math.exp(rng.normal(0, 0.015) - 0.2 * math.log(o / 65_000)), -2)
                hi = math.ceil(max(o, c) * (1 + rng.uniform(0.001, 0.01)) / 100) * 100
                lo = math.floor(min(o, c) * (1 - rng.uniform(0.001, 0.01)) / 100) * 100
                rows.append((o, hi, lo, c))
        frames[sym] = frame(rows, start, volume=rng.integers(300, 20_000, n).astype(float))
    return frames, ups, downs


RULES_ON = dict(max_participation=0.01, impact="sqrt", impact_coef=0.01)


def actions(n: int, seed: int, ups, downs) -> list[np.ndarray]:
    """Random weights; into a locked-up bar the asset is bought, into a locked-down one
    sold, so that the locks are hit."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n - 1):
        w = rng.dirichlet(np.ones(4))[:3]
        for k in range(3):
            if (s + 1, k) in ups:
                w[k] = 0.6
            if (s + 1, k) in downs:
                w[k] = 0.0
        out.append(w / max(1.0, w.sum()))
    return out


def test_identity_under_random_rollout_with_every_rule():
    n = 300
    frames, ups, downs = krx_panel(n, seed=3)
    prices = pd.concat(frames, axis=1)
    closes = np.stack([frames[s]["close"].to_numpy() for s in frames], axis=1)
    assert 40_000 < closes.min() and closes.max() < 110_000
    env = make_env(frames, **RULES_ON)
    assert prices.index[0].year == 2022 and prices.index[-1].year == 2023  # crosses 2023-01-25
    _, info = env.reset()
    v = V0
    reasons = []
    for s, w in enumerate(actions(n, 4, ups, downs)):
        _, r, term, trunc, info = env.step(w)
        assert not term and trunc == (s == n - 2)
        v_new = check_step(info, closes[s + 1], v)
        assert r == pytest.approx(math.log(v_new / v), rel=1e-12, abs=1e-15)
        v = v_new
        assert all(q == math.floor(q) for q in info["position"].tolist())
        for o in info["trades"]:
            reasons.append((o["status"], o["reason"]))
            if o["status"] == "capped":
                assert abs(o["filled"]) < abs(o["requested"])
    statuses = {s for s, _ in reasons}
    assert {"filled", "capped", "limit_locked"} <= statuses
    locked = [why for s, why in reasons if s == "limit_locked"]
    assert any("upper" in why for why in locked) and any("lower" in why for why in locked)


def run_all(frames, acts) -> list[dict]:
    env = make_env(frames, **RULES_ON)
    env.reset()
    return [env.step(w)[-1] for w in acts]


def test_changing_the_future_leaves_the_past_unchanged():
    n, cut = 60, 37  # bars after index ``cut`` are changed
    frames, ups, downs = krx_panel(n, seed=5)
    acts = actions(n, 6, ups, downs)
    acts[cut - 1] = np.zeros(3)  # sell all on bar cut (unchanged) ...
    acts[cut] = np.full(3, 0.3)  # ... and buy on bar cut + 1, locked up in the new future
    rng = np.random.default_rng(7)
    changed = {}
    for s, df in frames.items():
        df = df.copy()
        later = df.index[cut + 1 :]
        factor = rng.uniform(0.8, 1.2, len(later))
        for col in ("open", "high", "low", "close"):
            df.loc[later, col] = (df.loc[later, col].to_numpy() * factor).round(-2)
        df.loc[later, "volume"] = rng.integers(10, 500, len(later)).astype(float)
        for t in (cut + 1, cut + 4):  # locked bars right after the cut
            x = math.floor(df["close"].iloc[t - 1] * 1.3 / 100) * 100
            df.iloc[t, :4] = x
        changed[s] = df
    a, b = run_all(frames, acts), run_all(changed, acts)
    cut_date = frames[SYM].index[cut]
    for ia, ib in zip(a, b, strict=True):
        if ia["date"] > cut_date:
            break
        assert ia["trades"] == ib["trades"]
        assert (ia["cash"], ia["portfolio_value"]) == (ib["cash"], ib["portfolio_value"])
        assert ia["position"].tolist() == ib["position"].tolist()
    assert ia["date"] > cut_date and ia["portfolio_value"] != ib["portfolio_value"]
    statuses = {o["status"] for o in b[cut]["trades"]}  # the step filling on bar cut + 1
    assert "limit_locked" in statuses


# ------------------------------------------------------------- 7. bad input
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_participation": 0}, "max_participation"),
        ({"max_participation": 1.5}, "max_participation"),
        ({"impact": "linear"}, "impact"),
        ({"board": "nyse"}, "board.*nyse"),
    ],
)
def test_bad_rule_keywords(kw, match):
    with pytest.raises(ValueError, match=match):
        make_env(frame([ohlc(10_000)] * 3, "2024-03-04"), **kw)


def test_negative_prev_close_is_a_data_error():
    prices = frame([ohlc(10_000)] * 3, "2024-03-04", prev_close=[np.nan, -5.0, 10_000.0])
    with pytest.raises(DataError, match=r"prev_close.*2024-03-05"):
        make_env(prices)
