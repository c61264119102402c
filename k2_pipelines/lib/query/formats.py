"""Query results as bytes, a record batch at a time (a large result is never encoded whole): JSON rows, CSV, Parquet
and the Arrow IPC stream. JSON and CSV values are plain: decimals as strings (exact), times in ISO 8601 (UTC as Z),
maps as objects, lists as arrays, non-finite floats as null."""

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH_ROWS = 10_000  # rows encoded at once: a streamed response's chunk


def plain_rows(rows: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """The rows as JSON values (see the module's docstring)."""
    return _plain(rows).to_pylist(maps_as_pydicts="strict")


def json_rows(rows: pa.Table) -> Iterator[bytes]:
    """The rows as the members of a JSON array, comma-separated, without the brackets."""
    first = True
    for batch in rows.to_batches(BATCH_ROWS):
        if batch.num_rows:
            text = json.dumps(plain_rows(batch), separators=(",", ":"), allow_nan=False)[1:-1]
            yield (text if first else "," + text).encode()
            first = False


def csv_rows(rows: pa.Table) -> Iterator[bytes]:
    """The rows as CSV with a header line; lists and maps as JSON text in their cell."""
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(rows.column_names)
    yield header.getvalue().encode()
    for batch in rows.to_batches(BATCH_ROWS):
        text = io.StringIO()
        csv.DictWriter(text, rows.column_names, lineterminator="\n").writerows(
            {name: value if value is None or isinstance(value, str) else json.dumps(value)
             for name, value in row.items()} for row in plain_rows(batch))
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


def _plain(rows: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """Decimals, times and floats made plain by Arrow's kernels, column at a time (not value at a time in Python)."""
    columns = []
    for field, column in zip(rows.schema, rows.columns):
        kind = field.type
        if pa.types.is_decimal(kind) or pa.types.is_date(kind):
            column = pc.cast(column, pa.string())
        elif pa.types.is_timestamp(kind):
            zone = "Z" if kind.tz in ("UTC", "+00:00") else "%z" if kind.tz else ""
            column = pc.strftime(column, "%Y-%m-%dT%H:%M:%S" + zone)
        elif pa.types.is_floating(kind):
            column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, kind))
        columns.append(column)
    names = rows.schema.names
    return pa.table(columns, names=names) if isinstance(rows, pa.Table) else pa.record_batch(columns, names=names)
