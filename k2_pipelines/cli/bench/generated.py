"""Generated trades appended as a drain appends a micro-batch: the tables the benchmarks (and tests) build."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from k2_pipelines.lib.iceberg.commit import commit_atomically, new_transaction
from k2_pipelines.lib.iceberg.writes import append_files, write_rows

COMPACT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
COMPACT_START = datetime(2025, 3, 3, tzinfo=UTC)


def generated_trades(rng: np.random.Generator, rows: int, start: datetime, seconds: float, first_id: int,
                     symbols: tuple[str, ...] = COMPACT_SYMBOLS) -> pa.Table:
    """`rows` trades spread over `seconds` from `start`, in time order as a drain's micro-batch has them."""
    start_us = int(start.timestamp() * 1_000_000)
    times = np.sort(rng.integers(start_us, start_us + int(seconds * 1_000_000), rows))
    ids = np.arange(first_id, first_id + rows).astype(str)
    return pa.table({
        "message_id": pc.binary_join_element_wise("m-", pa.array(ids), ""),
        "trade_id": pc.binary_join_element_wise("BINANCE-", pa.array(ids), ""),
        "symbol": pa.array(np.array(symbols)[rng.integers(0, len(symbols), rows)]),
        "exchange": pa.array(["BINANCE"] * rows),
        "asset_class": pa.array(["crypto"] * rows),
        "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        "price": pc.cast(pa.array(np.round(rng.uniform(10, 100_000, rows), 2)), pa.decimal128(18, 8), safe=False),
        "quantity": pc.cast(pa.array(np.round(rng.uniform(0.001, 10, rows), 3)), pa.decimal128(18, 8), safe=False),
        "currency": pa.array(["USDT"] * rows),
        "side": pa.array(np.array(["BUY", "SELL"])[rng.integers(0, 2, rows)]),
        "trade_conditions": pa.array([[]] * rows, pa.large_list(pa.large_string())),
        "ingestion_timestamp": pa.array(times + 50_000, pa.timestamp("us", tz="UTC")),
    })


def append_micro_batch(catalog: Catalog, identifier: str, rows: pa.Table, properties: dict[str, str]) -> None:
    """Append `rows` as a drain commits a batch: its own files, a fast append, a compare-and-set commit."""
    transaction = new_transaction(catalog.load_table(identifier))
    append_files(transaction, write_rows(catalog, identifier, rows), properties)
    commit_atomically(catalog, [transaction])


def generated_quotes(rng: np.random.Generator, rows: int, start: datetime, seconds: float, first_id: int,
                     symbols: tuple[str, ...] = COMPACT_SYMBOLS) -> pa.Table:
    """`rows` best bid/ask quotes as generated_trades makes trades (times, symbols, ids): the bid a trade's price
    and quantity, the ask up to a unit above."""
    made = generated_trades(rng, rows, start, seconds, first_id, symbols)
    spread = pc.cast(pa.array(np.round(rng.uniform(0.01, 1, rows), 2)), pa.decimal128(18, 8), safe=False)
    return pa.table({
        "message_id": made["message_id"], "quote_id": made["trade_id"], "symbol": made["symbol"],
        "exchange": made["exchange"], "asset_class": made["asset_class"], "timestamp": made["timestamp"],
        "bid_price": made["price"], "bid_quantity": made["quantity"],
        "ask_price": pc.add(made["price"], spread).cast(pa.decimal128(18, 8)), "ask_quantity": made["quantity"],
        "currency": made["currency"], "ingestion_timestamp": made["ingestion_timestamp"],
    })
