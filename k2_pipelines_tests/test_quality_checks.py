"""Each data-quality check, run by Great Expectations: a clean dataset passes every check, and a dataset with exactly
one kind of violation fails exactly that check, with the number of failing rows it holds."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from k2_pipelines.lib.asx.layouts import TIMEZONE
from k2_pipelines.lib.iceberg.tables import QUOTES, REFERENCE_DATA, TRADES
from k2_pipelines.lib.quality.checks import (
    ERROR,
    WARN,
    asx_checks,
    market_checks,
    reference_checks,
    required_fields,
    stream_checks,
)
from k2_pipelines.lib.quality.frames import days_frame, market_rows, stream_frames, trading_dates
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.quality.validate import run_checks

AT = datetime(2014, 3, 10, 0, 0, tzinfo=UTC)  # 11:00 in Sydney (AEDT)
NOW = datetime(2026, 11, 29, tzinfo=UTC)
N = 60
DECIMAL = pa.decimal128(18, 8)
TIME = pa.timestamp("us", tz="UTC")


def _market(kind: str, exchange: str) -> list[dict]:
    """Clean rows: two symbols taking turns, a second apart, at steady prices."""
    rows = []
    for i in range(N):
        symbol = ("BHP", "RIO")[i % 2] if exchange == "ASX" else ("BTCUSDT", "ETHUSDT")[i % 2]
        row_id = f"ASX-7078-20140310-{i + 1}" if exchange == "ASX" else f"BINANCE-{1000 + i}"
        row = {"message_id": f"m{i}", "symbol": symbol, "exchange": exchange, "asset_class": "equities",
               "timestamp": AT + timedelta(seconds=i), "currency": "AUD", "ingestion_timestamp": AT}
        if kind == "trades":
            row |= {"trade_id": row_id, "price": Decimal("36.5") + i % 2, "quantity": Decimal(100),
                    "side": ("BUY", "SELL")[i % 3 % 2], "trade_conditions": ["3"]}
        else:
            row |= {"quote_id": row_id, "bid_price": Decimal("36.4"), "ask_price": Decimal("36.6"),
                    "bid_quantity": Decimal(300), "ask_quantity": Decimal(0)}
        rows.append(row)
    return rows


def _table(rows: list[dict], kind: str) -> pa.Table:
    schema = (TRADES if kind == "trades" else QUOTES).schema().as_arrow()
    fields = [pa.field(f.name, f.type) for f in schema if f.name in rows[0]]  # nullable: violations may be nulls
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


LISTINGS = pa.table({"exchange": ["ASX", "ASX", "BINANCE"], "symbol": ["BHP", "RIO", "BTCUSDT"],
                     "listing_date": pa.array([datetime(2014, 1, 1, tzinfo=UTC)] * 3, TIME)})


def _market_outcomes(kind: str, exchange: str, mutate=lambda rows: None) -> dict:
    rows = _market(kind, exchange)
    mutate(rows)
    table = _table(rows, kind)
    definition, id_column = (TRADES, "trade_id") if kind == "trades" else (QUOTES, "quote_id")
    required = required_fields(definition.schema())
    checks = market_checks(kind, definition.schema(), id_column, Thresholds(), NOW)
    asx = exchange == "ASX"
    if asx:
        table = table.append_column("trading_date", trading_dates(table.column(id_column).combine_chunks()))
        checks += [c for c in asx_checks(Thresholds()) if c.frame == "rows"]
    frame = market_rows(table, kind, LISTINGS, required, TIMEZONE if asx else None)
    return {o.check: o for o in run_checks({"rows": frame}, checks, {"rows": [id_column]})}


def _set(field: str, value, positions) -> callable:
    def mutate(rows: list[dict]) -> None:
        for i in positions:
            rows[i][field] = value(rows[i]) if callable(value) else value
    return mutate


def _swap_ids(rows: list[dict]) -> None:
    for i in (10, 20):  # two rows take the ids of the rows two before them (same symbol)
        rows[i]["trade_id"] = rows[i - 2]["trade_id"]


def _shift_prices(rows: list[dict]) -> None:
    for i, row in enumerate(rows):  # each symbol's price level moves up 20% once
        if (row["symbol"] == "BHP" and i >= 20) or (row["symbol"] == "RIO" and i >= 41):
            row["price"] *= Decimal("1.2")


def _cross(rows: list[dict]) -> None:
    for i in (3, 7):
        rows[i]["bid_price"], rows[i]["ask_price"] = rows[i]["ask_price"], rows[i]["bid_price"]


def _zero_bid(rows: list[dict]) -> None:
    for i in (5, 9):  # the mid price stays where it was
        rows[i]["bid_price"], rows[i]["ask_price"] = Decimal(0), Decimal("73.0")


VIOLATIONS = [
    ("trades", "BINANCE", "required_fields", 3, _set("currency", None, (1, 2, 3))),
    ("trades", "BINANCE", "price_and_quantity_positive", 2, _set("quantity", Decimal(0), (4, 5))),
    ("trades", "BINANCE", "side_known", 4, _set("side", "HOLD", (6, 7, 8, 9))),
    ("trades", "BINANCE", "not_in_future", 2, _set("timestamp", NOW + timedelta(hours=1), (11, 13))),
    ("trades", "BINANCE", "not_before_listing", 3, _set("timestamp", lambda r: r["timestamp"] - timedelta(days=365),
                                                        (0, 2, 4, 1))),  # 1 is ETHUSDT: no listing known
    ("trades", "ASX", "unique_ids", 4, _swap_ids),
    ("trades", "ASX", "price_jumps", 2, _shift_prices),
    ("trades", "ASX", "trading_date_matches", 3, _set("trade_id", lambda r: r["trade_id"].replace("0310", "0311"),
                                                      (30, 31, 32))),
    ("trades", "ASX", "out_of_hours", 5, _set("timestamp", lambda r: r["timestamp"] - timedelta(hours=3),
                                              range(5))),
    ("quotes", "BINANCE", "required_fields", 1, _set("quote_id", None, (8,))),
    ("quotes", "BINANCE", "prices_positive", 2, _zero_bid),
    ("quotes", "BINANCE", "sizes_not_negative", 3, _set("bid_quantity", Decimal(-1), (1, 2, 3))),
    ("quotes", "BINANCE", "book_not_crossed", 2, _cross),
]


@pytest.mark.parametrize("kind,exchange", [("trades", "ASX"), ("trades", "BINANCE"), ("quotes", "ASX"),
                                           ("quotes", "BINANCE")])
def test_clean_rows_pass_every_check(kind, exchange):
    outcomes = _market_outcomes(kind, exchange)
    assert {name: (o.passed, o.failing) for name, o in outcomes.items()} == {name: (True, 0) for name in outcomes}
    assert all(o.evaluated == N for o in outcomes.values())


@pytest.mark.parametrize("kind,exchange,check,failing,mutate", VIOLATIONS, ids=[f"{v[0]}-{v[2]}" for v in VIOLATIONS])
def test_each_violation_fails_its_check_with_its_count(kind, exchange, check, failing, mutate):
    outcomes = _market_outcomes(kind, exchange, mutate)
    assert (outcomes[check].passed, outcomes[check].failing) == (False, failing)
    assert [name for name, o in outcomes.items() if not o.passed] == [check]  # and no other check
    assert len(outcomes[check].sample) == min(failing, 10) and all(outcomes[check].sample)


def test_a_sample_names_the_failing_rows_and_their_values():
    outcome = _market_outcomes("trades", "BINANCE", _set("side", "HOLD", (6, 7)))["side_known"]
    assert outcome.sample == [
        {"trade_id": "BINANCE-1006", "side": "HOLD"},
        {"trade_id": "BINANCE-1007", "side": "HOLD"},
    ]
    assert (
        outcome.severity == ERROR and _market_outcomes("trades", "ASX", _shift_prices)["price_jumps"].severity == WARN
    )


def _reconciliation(source: int, loaded: int, rejected: int):
    frame = days_frame({"2014-03-10": source}, {"2014-03-10": loaded}, {"2014-03-10": rejected})
    checks = [c for c in asx_checks(Thresholds()) if c.frame == "days"]
    return run_checks({"days": frame}, checks, {"days": ["trading_date"]})[0]


def test_reconciliation_counts_every_source_line_as_a_row_or_a_reject():
    assert _reconciliation(100, 98, 2).passed
    missing = _reconciliation(100, 97, 2)
    assert (missing.passed, missing.failing) == (False, 1)  # one trading date does not add up
    assert missing.sample == [{"trading_date": "2014-03-10", "source_lines": 100, "accounted": 99}]


def _stream(gaps: list[tuple[str, int]] = (), dead_letters: int = 0, newest_event_minutes: float | None = 1,
            newest_message_minutes: float | None = 1) -> dict:
    written = pa.table({"symbol": ["BTCUSDT"] * 600 + ["ETHUSDT"] * 400})
    gap_rows = pa.table({"symbol": pa.array([s for s, _ in gaps], pa.string()),
                         "missing": pa.array([m for _, m in gaps], pa.int64())})
    ago = lambda minutes: NOW - timedelta(minutes=minutes) if minutes is not None else None  # noqa: E731
    frames = stream_frames(written, gap_rows, 1000 + dead_letters, dead_letters, ago(newest_event_minutes),
                           ago(newest_message_minutes), NOW, Thresholds().freshness_minutes)
    return {o.check: o for o in run_checks(frames, stream_checks(Thresholds(), gaps_tracked=True),
                                           {"symbols": ["symbol"]})}


def test_a_healthy_batch_passes_the_stream_checks():
    outcomes = _stream(gaps=[("BTCUSDT", 3)], dead_letters=5)  # 0.5% missing, 0.5% dead letters
    assert all(o.passed for o in outcomes.values())
    assert _stream(newest_event_minutes=600, newest_message_minutes=None)["freshness"].passed  # the feed is down


@pytest.mark.parametrize("check,stream", [
    ("sequence_gaps", dict(gaps=[("ETHUSDT", 3), ("ETHUSDT", 2)])),  # 5 of 405 ids missing: 1.2%
    ("dead_letter_rate", dict(dead_letters=30)),
    ("freshness", dict(newest_event_minutes=60)),
])
def test_each_stream_problem_fails_its_check(check, stream):
    outcomes = _stream(**stream)
    assert [name for name, o in outcomes.items() if not o.passed] == [check]
    assert outcomes[check].failing == 1 and outcomes[check].severity == WARN


def _reference(mutate=lambda rows: None) -> dict:
    rows = [{"message_id": f"m{i}", "company_id": str(7000 + i), "symbol": f"S{i}", "exchange": "ASX",
             "asset_class": "equities", "company_name": f"Company {i}", "is_active": True, "ingestion_timestamp": AT,
             "listing_date": datetime(2000, 1, 1, tzinfo=UTC), "delisting_date": None} for i in range(5)]
    mutate(rows)
    schema = pa.schema([pa.field(f.name, f.type) for f in REFERENCE_DATA.schema().as_arrow() if f.name in rows[0]])
    frame = pa.Table.from_pylist(rows, schema=schema).to_pandas()
    return {o.check: o for o in run_checks({"rows": frame}, reference_checks(REFERENCE_DATA.schema()),
                                           {"rows": ["symbol"]})}


@pytest.mark.parametrize("check,failing,mutate", [
    (None, 0, lambda rows: None),
    ("required_fields", 1, _set("company_name", None, (2,))),
    ("unique_companies", 2, _set("company_id", "7000", (1,))),
    ("listed_before_delisted", 1, _set("delisting_date", datetime(1999, 1, 1, tzinfo=UTC), (3,))),
])
def test_reference_data_checks(check, failing, mutate):
    outcomes = _reference(mutate)
    assert [name for name, o in outcomes.items() if not o.passed] == ([check] if check else [])
    assert sum(o.failing for o in outcomes.values()) == failing


def test_a_loads_rows_split_by_trading_date_whether_or_not_they_lie_together():
    from k2_pipelines.lib.asx.validation import by_trading_date

    day, next_day = AT.date(), AT.date() + timedelta(days=1)
    for dates in ([day, day, next_day], [day, next_day, day]):  # a date's files may be written in several batches
        rows = pa.table({"n": range(3), "trading_date": pa.array(dates, pa.date32())})
        split = by_trading_date(rows, day, next_day + timedelta(days=1))
        assert {d: t.column("n").to_pylist() for d, t in split.items()} == {
            str(day): [n for n, d in enumerate(dates) if d == day], str(next_day): [dates.index(next_day)],
            str(next_day + timedelta(days=1)): []}
