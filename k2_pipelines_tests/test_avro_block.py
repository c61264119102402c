"""Polars' block decoding gives what the lockstep decoder gives, and refuses any chunk whose records it cannot
prove were read each from its own body."""

import io

import numpy as np
import polars as pl
import pytest

from k2_pipelines.lib.avro.block import _container, decode_block
from k2_pipelines.lib.avro.decode import decode_records
from k2_pipelines_tests.test_avro_arrow import SCHEMA, _fastavro, _random_rows

LONG = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}


def _ranges(bodies: list[bytes], prefix: bytes = b"") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, starts, ends) of the bodies, each after `prefix`, as Avro bodies sit after Confluent headers."""
    data = b"".join(prefix + body for body in bodies)
    lengths = np.array([len(body) for body in bodies], dtype=np.int64)
    ends = np.cumsum(lengths + len(prefix))
    return np.frombuffer(data, np.uint8), ends - lengths, ends


def _block(schema: dict, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, prefix: int = 0):
    """decode_block of the records (prefix and body) laid end to end in data."""
    return decode_block(schema, data, ends - starts + prefix, prefix)


def test_block_decodes_exactly_what_the_lockstep_decoder_does():
    bodies = _fastavro(SCHEMA, _random_rows(np.random.default_rng(31), 3_000))
    data, starts, ends = _ranges(bodies, prefix=b"\x00\x00\x00\x00\x07")
    block = _block(SCHEMA, data, starts, ends, prefix=5)
    lockstep = decode_records(SCHEMA, data, starts, ends)
    assert block is not None and lockstep.ok.all()
    assert block.schema == lockstep.table.schema
    assert block.to_pylist() == lockstep.table.to_pylist()


def test_misaligned_bodies_polars_reads_without_complaint_are_refused():
    bodies = [b"\x02\x00", b"\x04"]  # 1 with a trailing byte, then 2
    data, starts, ends = _ranges(bodies)
    assert pl.read_avro(io.BytesIO(_container(LONG, data, 2)))["n"].to_list() == [1, 0]  # silently wrong
    assert _block(LONG, data, starts, ends) is None


@pytest.mark.parametrize("broken", [
    lambda body: body[:-3],  # truncated
    lambda body: body + b"\x00",  # trailing bytes
    lambda body: b"\xff" * 12,  # a varint that never ends
    lambda body: body.replace(b"BTCUSDT", b"BTC\xffSDT"),  # not UTF-8
])
def test_a_broken_body_sends_its_chunk_to_the_lockstep_decoder(broken):
    rows = _random_rows(np.random.default_rng(32), 200)
    rows[100]["text"] = "BTCUSDT"
    bodies = _fastavro(SCHEMA, rows)
    bodies[100] = broken(bodies[100])
    data, starts, ends = _ranges(bodies)
    assert _block(SCHEMA, data, starts, ends) is None
    assert np.flatnonzero(~decode_records(SCHEMA, data, starts, ends).ok).tolist() == [100]


def test_valid_but_padded_encodings_take_the_lockstep_path():
    bodies = [b"\x02", b"\x82\x00"]  # 1, and 1 again as a two-byte varint
    data, starts, ends = _ranges(bodies)
    assert _block(LONG, data, starts, ends) is None
    decoded = decode_records(LONG, data, starts, ends)
    assert decoded.ok.all() and decoded.table.column("n").to_pylist() == [1, 1]


def test_ints_take_the_lockstep_path_since_polars_wraps_them():
    schema = {"type": "record", "name": "r", "fields": [{"name": "i", "type": "int"}]}
    data, starts, ends = _ranges(_fastavro(LONG, [{"n": 2**31}]))  # what an int field cannot hold
    assert pl.read_avro(io.BytesIO(_container(schema, data, 1)))["i"].to_list() == [-(2**31)]
    assert _block(schema, data, starts, ends) is None
    assert not decode_records(schema, data, starts, ends).ok.any()
