"""The column decoder reads what fastavro wrote, and flags broken bodies one by one."""

import io

import fastavro
import numpy as np
import pyarrow as pa

from k2_pipelines.lib.avro.decode import decode_records
from k2_pipelines_tests.test_avro_arrow import SCHEMA, _fastavro, _random_rows


def _decode(bodies: list[bytes]):
    lengths = np.array([len(body) for body in bodies], dtype=np.int64)
    ends = np.cumsum(lengths)
    return decode_records(SCHEMA, np.frombuffer(b"".join(bodies), np.uint8), ends - lengths, ends)


def _as_fastavro_reads(row: dict) -> dict:
    """Arrow's Python values in fastavro's shapes: maps as dicts, timestamps as datetimes."""
    return row | {"extra": None if row["extra"] is None else dict(row["extra"])}


def test_decodes_what_fastavro_wrote():
    rows = _random_rows(np.random.default_rng(21), 3_000)
    bodies = _fastavro(SCHEMA, rows)
    decoded = _decode(bodies)
    assert decoded.ok.all()
    parsed = fastavro.parse_schema(SCHEMA)
    expected = [fastavro.schemaless_reader(io.BytesIO(body), parsed) for body in bodies]
    assert [_as_fastavro_reads(row) for row in decoded.table.to_pylist()] == expected


def test_broken_bodies_are_flagged_alone():
    rows = _random_rows(np.random.default_rng(22), 400)
    bodies = _fastavro(SCHEMA, rows)
    rng = np.random.default_rng(23)
    broken = set(rng.choice(len(bodies), 60, replace=False).tolist())
    for position in broken:
        body = bodies[position]
        kind = position % 3
        if kind == 0:
            bodies[position] = body[: int(rng.integers(0, len(body)))]  # truncated
        elif kind == 1:
            bodies[position] = body + b"\x00"  # trailing bytes
        else:
            bodies[position] = b"\xff" * 12  # a varint that never ends
    decoded = _decode(bodies)
    assert set(np.flatnonzero(~decoded.ok).tolist()) == broken
    parsed = fastavro.parse_schema(SCHEMA)
    good = [i for i in range(len(bodies)) if i not in broken]
    table = decoded.table.take(pa.array(good))
    assert [_as_fastavro_reads(row) for row in table.to_pylist()] == [
        fastavro.schemaless_reader(io.BytesIO(bodies[i]), parsed) for i in good]


def test_invalid_utf8_and_enum_indexes_are_flagged():
    schema = {"type": "record", "name": "r", "fields": [
        {"name": "text", "type": "string"},
        {"name": "side", "type": {"type": "enum", "name": "s", "symbols": ["A", "B"]}}]}
    bodies = [b"\x02a\x02", b"\x02\xff\x00", b"\x02b\x04", b"\x02c\x00"]  # good, bad UTF-8, enum index 2, good
    lengths = np.array([len(b) for b in bodies])
    ends = np.cumsum(lengths)
    decoded = decode_records(schema, np.frombuffer(b"".join(bodies), np.uint8), ends - lengths, ends)
    assert decoded.ok.tolist() == [True, False, False, True]
    assert decoded.table.column("text").to_pylist()[::3] == ["a", "c"]
    assert decoded.table.column("side").to_pylist()[::3] == ["B", "A"]
