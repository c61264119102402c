"""The column encoder writes exactly the bytes fastavro writes, for every type the v2 schemas use."""

import io
from decimal import Decimal

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from k2_pipelines.lib.avro.arrow import encode_records, varints
from k2_pipelines.lib.avro.iceberg import load_avro

SCHEMA = {
    "type": "record", "name": "Everything", "fields": [
        {"name": "text", "type": "string"},
        {"name": "side", "type": {"type": "enum", "name": "Side", "symbols": ["BUY", "SELL", "UNKNOWN"]}},
        {"name": "count", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "maybe_count", "type": ["null", "long"]},
        {"name": "maybe_text", "type": ["string", "null"]},
        {"name": "extra", "type": ["null", {"type": "map", "values": "string"}]},
    ],
}
LONG_EDGES = [0, 1, -1, 63, 64, -64, -65, 127, 128, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63)]
DECIMAL_EDGES = [0, 1, -1, 127, 128, -128, -129, 255, 256, 2**31, 10**18 - 1, -(10**18 - 1), 2**55, -(2**55)]


def _fastavro(schema: dict, rows: list[dict]) -> list[bytes]:
    parsed = fastavro.parse_schema(schema)
    encoded = []
    for row in rows:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, row)
        encoded.append(buffer.getvalue())
    return encoded


def _random_rows(rng: np.random.Generator, n: int) -> list[dict]:
    words = ["", "a", "BTCUSDT", "é", "日本", "x" * 200, "emoji \U0001f600"]
    rows = []
    for i in range(n):
        rows.append({
            "text": words[int(rng.integers(len(words)))],
            "side": ["BUY", "SELL", "UNKNOWN"][int(rng.integers(3))],
            "count": LONG_EDGES[i] if i < len(LONG_EDGES) else int(rng.integers(-(2**62), 2**62)),
            "at": int(rng.integers(0, 2**57)),  # datetimes up to year 6537
            "price": Decimal(DECIMAL_EDGES[i % len(DECIMAL_EDGES)] if i < 50 else int(rng.integers(-(10**17), 10**17)))
            .scaleb(-8),
            "tags": [words[int(rng.integers(len(words)))] for _ in range(int(rng.integers(0, 4)))],
            "maybe_count": None if rng.random() < 0.3 else int(rng.integers(-(2**40), 2**40)),
            "maybe_text": None if rng.random() < 0.3 else words[int(rng.integers(len(words)))],
            "extra": None if rng.random() < 0.3 else {
                f"k{j}": words[int(rng.integers(len(words)))] for j in range(int(rng.integers(0, 4)))},
        })
    return rows


def _table(rows: list[dict]) -> pa.Table:
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    return pa.table({
        "text": pa.array(columns["text"], pa.string()),
        "side": pa.array(columns["side"], pa.string()),
        "count": pa.array(columns["count"], pa.int64()),
        "at": pa.array(columns["at"], pa.timestamp("us", tz="UTC")),
        "price": pa.array(columns["price"], pa.decimal128(18, 8)),
        "tags": pa.array(columns["tags"], pa.list_(pa.string())),
        "maybe_count": pa.array(columns["maybe_count"], pa.int64()),
        "maybe_text": pa.array(columns["maybe_text"], pa.string()),
        "extra": pa.array([None if m is None else list(m.items()) for m in columns["extra"]],
                          pa.map_(pa.string(), pa.string())),
    })


def test_column_encoding_is_byte_identical_to_fastavro():
    rows = _random_rows(np.random.default_rng(7), 2_000)
    assert encode_records(SCHEMA, _table(rows)).to_pylist() == _fastavro(SCHEMA, rows)


def test_sliced_columns_encode_only_their_rows():
    rows = _random_rows(np.random.default_rng(8), 300)
    assert encode_records(SCHEMA, _table(rows).slice(100, 50)).to_pylist() == _fastavro(SCHEMA, rows[100:150])


def test_v2_schemas_round_trip_through_fastavro():
    schema = load_avro("trade_v2")
    row = {"message_id": "m", "trade_id": "BINANCE-1", "symbol": "BTCUSDT", "exchange": "BINANCE",
           "asset_class": "crypto", "timestamp": 1_763_683_200_000_000, "price": Decimal("91877.12000000"),
           "quantity": Decimal("0.00100000"), "currency": "USDT", "side": "SELL", "trade_conditions": [],
           "source_sequence": 42, "ingestion_timestamp": 1_763_683_200_000_001, "platform_sequence": None,
           "vendor_data": {"base_asset": "BTC", "quote_asset": "USDT"}}
    table = _table_for(schema, [row])
    [body] = encode_records(schema, table).to_pylist()
    decoded = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema))
    assert decoded["price"] == row["price"] and decoded["vendor_data"] == row["vendor_data"]
    assert decoded["timestamp"].timestamp() * 1_000_000 == row["timestamp"]


def _table_for(schema: dict, rows: list[dict]) -> pa.Table:
    types = {"timestamp": pa.int64(), "ingestion_timestamp": pa.int64(), "price": pa.decimal128(18, 8),
             "quantity": pa.decimal128(18, 8), "trade_conditions": pa.list_(pa.string()),
             "source_sequence": pa.int64(), "platform_sequence": pa.int64(),
             "vendor_data": pa.map_(pa.string(), pa.string())}
    return pa.table(
        {
            field["name"]: pa.array([row[field["name"]] for row in rows], types.get(field["name"], pa.string()))
            for field in schema["fields"]
        }
    )


def test_varints_are_zigzag_base128():
    assert varints(np.array([0, -1, 1, -64, 64, 2**63 - 1])).to_pylist() == [
        b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80\x01", b"\xfe" + b"\xff" * 8 + b"\x01"]


def test_values_the_schema_cannot_hold_are_refused():
    table = pa.table({"side": pa.array(["BUY", "HOLD"])})
    with pytest.raises(ValueError, match="HOLD"):
        encode_records({"type": "record", "name": "r", "fields": [SCHEMA["fields"][1]]}, table)
    with pytest.raises(ValueError, match="null"):
        encode_records({"type": "record", "name": "r", "fields": [{"name": "side", "type": "string"}]},
                       pa.table({"side": pa.array(["a", None])}))
