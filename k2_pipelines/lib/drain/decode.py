"""Kafka values of one batch -> rows for an Iceberg table, and dead letters for the rest, each with its reason.

Values are decoded in bulk per writer schema (lib/avro/decode.py). A value that is not Confluent wire format, names
an unknown schema id, does not decode, or holds something the table cannot (a null in a required column, a decimal
with more scale or precision than the column) becomes a dead letter on its own; its neighbours become rows.
"""

import io
from dataclasses import dataclass
from decimal import Decimal

import fastavro
import numpy as np
import pyarrow as pa

from k2_pipelines.lib.avro.block import decode_block
from k2_pipelines.lib.avro.decode import Decoded, decode_records
from k2_pipelines.lib.avro.registry import HEADER, MAGIC, Registry
from k2_pipelines.lib.drain.kafka_batch import KafkaBatch
from k2_pipelines.lib.utils.arrow_decimals import rescaled

DECODE_CHUNK = 65_536


@dataclass
class DecodedBatch:
    rows: pa.Table  # in the table's Arrow schema, in batch order
    positions: np.ndarray  # each row's index in the batch
    schema_ids: np.ndarray  # each row's writer schema id
    dead: list[tuple[int, int | None, str, str]]  # (index in the batch, schema id, error class, message)


def _body_error(schema: dict, body: bytes) -> str:
    """What fastavro says about a body the bulk decoder flagged (it reads some bad bodies fastavro accepts)."""
    try:
        fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema))
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "the body does not fit its schema (trailing bytes, or a decimal beyond its precision)"


def _fit_column(values: pa.ChunkedArray, target: pa.DataType, name: str) -> tuple[pa.Array, np.ndarray, str]:
    """`values` as `target`, with the rows that cannot be (and why)."""
    if pa.types.is_decimal(target) and pa.types.is_decimal(values.type):
        fitted, fits = rescaled(values.combine_chunks(), target.precision, target.scale)
        return fitted, fits, f"{name} does not fit decimal({target.precision},{target.scale})"
    return values.cast(target), np.ones(len(values), dtype=bool), ""


def _placeholder(data_type: pa.DataType) -> pa.Scalar:
    """A value of the type for rows that are dead letters anyway."""
    if pa.types.is_decimal(data_type):
        return pa.scalar(Decimal(0), data_type)
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return pa.scalar("", data_type)
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return pa.scalar(b"", data_type)
    return pa.scalar(0, pa.int64()).cast(data_type)


def _fit_table(decoded: pa.Table, schema: pa.Schema) -> tuple[pa.Table, np.ndarray, dict[int, str]]:
    """Decoded columns as the table's columns; (table, rows that fit, the first reason each other row does not)."""
    ok = np.ones(decoded.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    columns = []
    for field in schema:
        if field.name not in decoded.column_names:
            if not field.nullable:
                raise KeyError(field.name)
            columns.append(pa.nulls(decoded.num_rows, field.type))
            continue
        values = decoded.column(field.name)  # chunked as decoded: joining the chunks would copy every column
        if not field.nullable and values.null_count:
            missing = ~values.is_valid().to_numpy(zero_copy_only=False)
            reasons |= dict.fromkeys(np.flatnonzero(missing & ok).tolist(), f"{field.name} is null")
            ok &= ~missing
            values = values.fill_null(_placeholder(values.type))
        values, fits, reason = _fit_column(values, field.type, field.name)
        reasons |= dict.fromkeys(np.flatnonzero(~fits & ok).tolist(), reason)
        ok &= fits
        columns.append(values)
    return pa.Table.from_arrays(columns, schema=schema), ok, reasons


def _end_to_end(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The values data[starts[i]:ends[i]] laid end to end: a view when they already are."""
    if (starts[1:] == ends[:-1]).all():
        return data[starts[0] : ends[-1]]
    lengths = ends - starts
    return data[np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]


def _decode_chunk(schema: dict, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Decoded:
    """Framed values: polars' reader when every body in the chunk is clean; else the lockstep decoder, which flags
    each bad one."""
    table = decode_block(schema, _end_to_end(data, starts, ends), ends - starts, HEADER.size)
    if table is not None:
        return Decoded(table, np.ones(len(starts), dtype=bool))
    return decode_records(schema, data, starts + HEADER.size, ends)


def _decode_in_chunks(schema: dict, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Decoded:
    """A chunk at a time: temporaries stay small whatever the batch size, and a bad body slows only its chunk."""
    chunks = [_decode_chunk(schema, data, starts[i : i + DECODE_CHUNK], ends[i : i + DECODE_CHUNK])
              for i in range(0, len(starts), DECODE_CHUNK)]
    return Decoded(pa.concat_tables([chunk.table for chunk in chunks]), np.concatenate([chunk.ok for chunk in chunks]))


def decode_batch(batch: KafkaBatch, registry: Registry, schema: pa.Schema, record_name: str) -> DecodedBatch:
    """Rows of `schema` from the batch's values written as Avro records named `record_name` (e.g. TradeV2)."""
    data, starts, ends = batch.data, batch.starts, batch.ends
    framed = (ends - starts >= HEADER.size) & (data[np.minimum(starts, max(data.size - 1, 0))] == MAGIC) \
        if data.size else np.zeros(len(batch), dtype=bool)
    ids = np.zeros(len(batch), dtype=np.int64)
    if framed.any():
        header = data[starts[framed, None] + np.arange(1, HEADER.size)].astype(np.int64)
        ids[framed] = (header[:, 0] << 24) | (header[:, 1] << 16) | (header[:, 2] << 8) | header[:, 3]
    dead = [(int(i), None, "NotWireFormat", "not Confluent wire format (magic byte 0 + 4-byte schema id)")
            for i in np.flatnonzero(~framed)]
    pieces: list[pa.Table] = []
    position_pieces: list[np.ndarray] = []
    for schema_id in np.unique(ids[framed]).tolist():
        rows = np.flatnonzero(framed & (ids == schema_id))
        try:
            writer = registry.schema(schema_id)
        except KeyError:
            dead += [(int(i), schema_id, "UnknownSchemaId", f"schema id {schema_id} is not in the registry")
                     for i in rows]
            continue
        if writer.get("name") != record_name:
            dead += [(int(i), schema_id, "WrongSchema", f"schema id {schema_id} is {writer.get('name')}, not "
                      f"{record_name}") for i in rows]
            continue
        decoded = _decode_in_chunks(writer, data, starts[rows], ends[rows])
        try:
            table, fits, reasons = _fit_table(decoded.table, schema)
        except KeyError as missing:
            dead += [(int(i), schema_id, "WrongSchema", f"schema id {schema_id} has no field {missing}")
                     for i in rows]
            continue
        for i in np.flatnonzero(~decoded.ok):
            body = bytes(data[starts[rows[i]] + HEADER.size : ends[rows[i]]])
            dead.append((int(rows[i]), schema_id, "AvroDecodeError", _body_error(writer, body)))
        for i in np.flatnonzero(decoded.ok & ~fits):
            dead.append((int(rows[i]), schema_id, "InvalidValue", reasons[int(i)]))
        good = np.flatnonzero(decoded.ok & fits)
        pieces.append(table if good.size == table.num_rows else table.take(pa.array(good)))
        position_pieces.append(rows[good])
    if not pieces:
        return DecodedBatch(schema.empty_table(), np.zeros(0, np.int64), np.zeros(0, np.int64), sorted(dead))
    positions = np.concatenate(position_pieces)
    table = pa.concat_tables(pieces)
    if (np.diff(positions) < 0).any():  # several schema ids: back to batch order
        order = np.argsort(positions, kind="stable")
        table, positions = table.take(pa.array(order)), positions[order]
    return DecodedBatch(table, positions, ids[positions], sorted(dead))
