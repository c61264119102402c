"""Query results as bytes, a record batch at a time (a large result is never encoded whole): JSON rows, CSV, Parquet
and the Arrow IPC stream. JSON and CSV values are plain: decimals as strings (exact), times in ISO 8601 (UTC as Z),
maps as objects, lists as arrays, non-finite floats as null."""

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 10_000  # rows encoded at once: a streamed response's chunk
_json_database = duckdb.connect()  # its cursors, one per batch, write JSON on any thread
_json_database.execute("SET GLOBAL TimeZone = 'UTC'")
_json_database.execute("SET GLOBAL threads = 1")  # a batch is small; a server encodes many at once


def plain_rows(rows: pa.Table) -> list[dict[str, Any]]:
    """The rows as JSON values (see the module's docstring), as json_rows writes them."""
    return [row for batch in rows.to_batches(BATCH_ROWS) for row in _plain_batch(batch)]


def _plain_batch(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    return list(json.loads("[" + ",".join(_json_texts(batch)) + "]"))


def json_rows(rows: pa.Table) -> Iterator[bytes]:
    """The rows as the members of a JSON array, comma-separated, without the brackets. DuckDB writes them: 12 times
    faster than Python's json for 10,000 trades (14 against 163 ms), and its MAP is a JSON object."""
    first = True
    for batch in rows.to_batches(BATCH_ROWS):
        if batch.num_rows:
            text = ",".join(_json_texts(batch))
            yield (text if first else "," + text).encode()
            first = False


def _json_texts(batch: pa.RecordBatch) -> list[str]:
    columns = []
    for field in batch.schema:
        name = '"' + field.name.replace('"', '""') + '"'
        kind = field.type
        if pa.types.is_decimal(kind) or pa.types.is_date(kind):
            value = f"CAST({name} AS VARCHAR)"
        elif pa.types.is_timestamp(kind):  # the connection's time zone is UTC
            value = f"strftime({name}, '%Y-%m-%dT%H:%M:%S.%f{'Z' if kind.tz else ''}')"
        elif pa.types.is_floating(kind):
            value = f"CASE WHEN isfinite({name}) THEN {name} END"
        else:
            value = name
        columns.append(f"{value} AS {name}")
    cursor = _json_database.cursor()
    try:
        cursor.register("batch", batch)
        texts = cursor.sql(f"SELECT to_json(t)::VARCHAR AS j FROM (SELECT {', '.join(columns)} FROM batch) t")
        return [str(text) for text in texts.fetchnumpy()["j"]]
    finally:
        cursor.close()


def csv_rows(rows: pa.Table) -> Iterator[bytes]:
    """The rows as CSV with a header line; lists and maps as JSON text in their cell."""
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(rows.column_names)
    yield header.getvalue().encode()
    for batch in rows.to_batches(BATCH_ROWS):
        text = io.StringIO()
        csv.DictWriter(text, rows.column_names, lineterminator="\n").writerows(
            {name: value if value is None or isinstance(value, str) else json.dumps(value)
             for name, value in row.items()} for row in _plain_batch(batch))
        yield text.getvalue().encode()


def arrow_stream(rows: pa.Table) -> Iterator[bytes]:
    """The rows as an Arrow IPC stream: the schema, then each batch."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        for batch in rows.to_batches(BATCH_ROWS):
            writer.write_batch(batch)
            yield _taken(sink)
    yield _taken(sink)  # the end-of-stream marker


def parquet_file(rows: pa.Table) -> bytes:
    """The rows as one Parquet file (its footer comes last, so it is made whole)."""
    sink = io.BytesIO()
    pq.write_table(rows, sink)
    return sink.getvalue()


def _taken(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data
