"""Which rows of a batch could repeat committed rows, and which do, in a real Iceberg table."""

from datetime import UTC, datetime

import pyarrow as pa

from k2_pipelines.lib.drain.replays import NOT_NUMBERED, ceilings_after, could_repeat, id_numbers, quarantined, repeats
from k2_pipelines.lib.drain.sequences import record_keys
from k2_pipelines.lib.iceberg.tables import QUARANTINE, TRADES

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _rows(*trades: tuple[str, str, str, int]) -> pa.Table:
    """Trades (exchange, symbol, id, seconds after AT) in the table's schema, other columns filled in."""
    schema = TRADES.schema().as_arrow()
    return pa.Table.from_pylist([{
        "message_id": f"m{i}", "trade_id": trade_id, "symbol": symbol, "exchange": exchange, "asset_class": "crypto",
        "timestamp": AT.replace(second=second), "price": 1, "quantity": 1, "currency": "USDT", "side": "BUY",
        "trade_conditions": [], "source_sequence": None, "ingestion_timestamp": AT, "platform_sequence": None,
        "vendor_data": None} for i, (exchange, symbol, trade_id, second) in enumerate(trades)], schema=schema)


def test_ids_are_numbered_only_when_written_canonically_after_their_exchange():
    rows = _rows(("BINANCE", "BTCUSDT", "BINANCE-42", 0), ("BINANCE", "BTCUSDT", "BINANCE-0", 0),
                 ("BINANCE", "BTCUSDT", "BINANCE--7", 0), ("BINANCE", "BTCUSDT", "BINANCE-007", 0),
                 ("BINANCE", "BTCUSDT", "BINANCE-4x", 0), ("BINANCE", "BTCUSDT", "KRAKEN-42", 0),
                 ("ASX", "BHP", "ASX-7078-20140310-5", 0), ("BINANCE", "BTCUSDT", "BINANCE-" + "9" * 19, 0))
    assert id_numbers(rows, "trade_id").tolist() == [42, 0, -7] + [NOT_NUMBERED] * 5


def test_only_rows_at_or_below_their_symbols_ceiling_or_not_numbered_are_looked_up():
    rows = _rows(("BINANCE", "BTCUSDT", "BINANCE-101", 0), ("BINANCE", "BTCUSDT", "BINANCE-100", 0),
                 ("BINANCE", "ETHUSDT", "BINANCE-5", 0), ("BINANCE", "BTCUSDT", "BINANCE-late", 0),
                 ("BINANCE", "SOLUSDT", "BINANCE-1", 0))
    numbers = id_numbers(rows, "trade_id")
    ceilings = {"BTCUSDT": 100, "ETHUSDT": 4}
    assert could_repeat(rows, numbers, ceilings).tolist() == [False, True, False, True, True]  # SOL: no ceiling yet
    assert ceilings_after(rows, numbers, ceilings) == {"BTCUSDT": 101, "ETHUSDT": 5, "SOLUSDT": 1}


def test_repeats_are_found_in_the_table_and_new_rows_are_not(catalog):
    table = catalog.load_table(TRADES.identifier)
    table.append(_rows(("BINANCE", "BTCUSDT", "BINANCE-7", 10), ("BINANCE", "BTCUSDT", "BINANCE-odd", 20),
                       ("BINANCE", "ETHUSDT", "BINANCE-7", 30)).cast(table.schema().as_arrow()))
    batch = _rows(("BINANCE", "BTCUSDT", "BINANCE-7", 55),  # a replay, stamped when it was received again
                  ("BINANCE", "BTCUSDT", "BINANCE-odd", 20),  # a replay of an id that is not numbered
                  ("BINANCE", "BTCUSDT", "BINANCE-6", 5),  # a late arrival, new
                  ("BINANCE", "SOLUSDT", "BINANCE-7", 10),  # same id, another symbol: new
                  ("BINANCE", "ETHUSDT", "BINANCE-8", 31))  # above its ceiling: not even looked up
    found = repeats(table, batch, record_keys(batch, "trade_id"), id_numbers(batch, "trade_id"), "trade_id",
                    {"BTCUSDT": 7, "ETHUSDT": 7})
    assert found.tolist() == [True, True, False, False, False]


def _quarantine_rows(*held: tuple[str, str, str]) -> pa.Table:
    """Quarantined rows (table_name, symbol, record_id), other columns filled in."""
    return pa.Table.from_pylist([{
        "table_name": table_name, "record_id": record_id, "symbol": symbol, "event_timestamp": AT, "row_json": "{}",
        "reason": "price_positive", "detail": None, "source_run_id": "run-1", "source_snapshot_id": 1,
        "quarantine_run_id": "quarantine-1", "quarantined_at": AT} for table_name, symbol, record_id in held],
        schema=QUARANTINE.schema().as_arrow())


def test_repeats_of_rows_taken_out_into_quarantine_are_found_for_their_table_only(catalog):
    quarantine = catalog.load_table(QUARANTINE.identifier)
    quarantine.append(
        _quarantine_rows(
            ("market_data.trades", "BTCUSDT", "BINANCE-7"),
            ("market_data.trades", "BTCUSDT", "BINANCE-odd"),
            ("market_data.quotes", "ETHUSDT", "BINANCE-5"),
            ("market_data.trades", "ETHUSDT", "BINANCE-9"),
        ).cast(quarantine.schema().as_arrow())
    )
    batch = _rows(("BINANCE", "BTCUSDT", "BINANCE-7", 0),  # quarantined from trades
                  ("BINANCE", "BTCUSDT", "BINANCE-odd", 0),  # quarantined, not numbered
                  ("BINANCE", "BTCUSDT", "BINANCE-6", 0),  # at or below the ceiling, but never quarantined
                  ("BINANCE", "ETHUSDT", "BINANCE-5", 0),  # quarantined from quotes, not from trades
                  ("BINANCE", "SOLUSDT", "BINANCE-7", 0),  # same id, another symbol
                  ("BINANCE", "ETHUSDT", "BINANCE-9", 0))  # quarantined, but above its ceiling: not looked up
    found = quarantined(quarantine, TRADES.identifier, batch, id_numbers(batch, "trade_id"), "trade_id",
                        {"BTCUSDT": 7, "ETHUSDT": 8})
    assert found.tolist() == [True, True, False, False, False, False]
