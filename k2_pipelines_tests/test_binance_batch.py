"""The bulk path decides every frame exactly as normalize() does, frame by frame, and encodes the same bytes."""

import io
import json

import fastavro
import pyarrow as pa

from k2_pipelines.lib.avro.codec import AvroEncoder
from k2_pipelines.lib.avro.registry import EmbeddedRegistry, unframe
from k2_pipelines.lib.binance.batch import normalize_batch
from k2_pipelines.lib.binance.normalize import BadFrame, normalize
from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.binance.sample import FAULTS, generate_session

RECEIVED_AT_US = 1_763_683_200_123_456
TRADE = {"e": "trade", "E": 1763683200001, "s": "BTCUSDT", "t": 12345, "p": "91877.12000000", "q": "0.00100000",
         "T": 1763683200000, "m": True, "M": True}
TICKER = {"u": 400900217, "s": "ETHUSDT", "b": "3120.55000000", "B": "31.21000000", "a": "3120.56000000",
          "A": "40.66000000"}


def _frame(data: dict, **changes) -> str:
    return json.dumps({"stream": "x", "data": {**data, **changes}}, separators=(",", ":"))


def _without(data: dict, key: str) -> str:
    return json.dumps({"stream": "x", "data": {k: v for k, v in data.items() if k != key}})


# frames whose outcome pyarrow and Python's json could see differently, or that sit on a validation boundary
EDGE_CASES = [
    _frame(TRADE), _frame(TICKER), _frame(TICKER, T=1763683200000), _frame(TICKER, E=1763683200002),
    _frame(TICKER, T=0), _frame(TICKER, e="bookTicker"), _frame(TICKER, e="trade"), _frame(TRADE, e="kline"),
    _without(TRADE, "M"), _frame(TRADE, M=None), _frame(TRADE, M=False), _frame(TRADE, m=False),
    _frame(TRADE, s=None), _frame(TICKER, T=None), _without(TRADE, "E"), _without(TICKER, "A"), _without(TRADE, "s"),
    _frame(TRADE, p="0.00000000"), _frame(TRADE, q="0"), _frame(TICKER, B="0.00000000"), _frame(TICKER, b="0"),
    _frame(TRADE, p="1.123456789"), _frame(TRADE, p="1.12345678000"), _frame(TRADE, p="9999999999.99999999"),
    _frame(TRADE, p="10000000000"), _frame(TRADE, p="000000000001.5"), _frame(TRADE, p="1e5"),
    _frame(TRADE, p="+1.5"), _frame(TRADE, p="-1.5"), _frame(TRADE, p=".5"), _frame(TRADE, p="5."),
    _frame(TRADE, p=""), _frame(TRADE, p=" 1.5"), _frame(TRADE, p="NaN"), _frame(TRADE, p="Infinity"),
    _frame(TRADE, p="١٢"), _frame(TRADE, p=5), _frame(TRADE, t="12"), _frame(TRADE, t=1.0), _frame(TRADE, t=True),
    _frame(TRADE, m=1), _frame(TRADE, t=2**63), _frame(TRADE, t=-(2**63)), _frame(TRADE, T=2**63 // 1000),
    _frame(TRADE, T=2**63 // 1000 + 1), _frame(TRADE, T=-(2**63)), _frame(TICKER, T=2**62),
    _frame(TRADE, s="btcusdt"), _frame(TRADE, s="BTC\u00e9USDT"), _frame(TRADE, s="BTC\tUSDT"),
    _frame(TRADE, s="USDT"), _frame(TRADE, s="BTCXYZ"), _frame(TRADE, s="FDUSD"), _frame(TRADE, s="BTCFDUSD"),
    '{"stream":"x","data":{"e":"trade","s":"BTC\\ud800USDT"}}', '{"data":{"e":"trade","e":"trade"}}',
    _frame(TRADE)[:-1] + ',}', _frame(TRADE) + _frame(TRADE), "\ufeff" + _frame(TRADE), " " + _frame(TRADE),
    _frame(TRADE) + " ", _frame(TRADE).replace(":", ": "), _frame(TRADE) + "\n", "", " ", "null", "[]", "42",
    '{"data":5}', '{"stream":"x"}', '{"data":{}}', '{"data":{"e":"trade"}}', _frame(TRADE, extra={"b": [1, {}]}),
    _frame(TRADE, b=88, a=50), _frame(TRADE).replace("BTCUSDT", "BTC\tUSDT"), _frame(TRADE).replace(",", ",\n", 1),
    _frame(TRADE).replace(",", ",\r", 1), _frame(TRADE).replace("BTCUSDT", "BTC\nUSDT"), _frame(TRADE) + "\r\n",
    _frame(TRADE, p="0" * 30 + "1.5"), _frame(TRADE, p="1.5" + "0" * 30), _frame(TRADE, p="1.2.3"),
    _frame(TRADE, p="0.1"), _frame(TRADE, p="0000000000.00000001"), _frame(TRADE, p="12a"),
    '{"data":' + json.dumps(TRADE) + ',"data":{}}', "{" * 5000,
]


def _decided_one_by_one(frame: str) -> tuple:
    try:
        result = normalize(frame, RECEIVED_AT_US)
    except BadFrame:
        return ("slow",)
    return (result.kind, {k: v for k, v in result.record.items() if k != "message_id"})


def _decided_in_bulk(frames: list[str]) -> list[tuple]:
    batch = normalize_batch(pa.array(frames, pa.string()), RECEIVED_AT_US)
    decided = [("slow",)] * len(frames)
    for kind, table, positions in (("trades", batch.trades, batch.trade_positions),
                                   ("quotes", batch.quotes, batch.quote_positions)):
        for position, record in zip(positions.tolist(), table.to_pylist()):
            assert len(record.pop("message_id")) == 36
            decided[position] = (kind, record)
    return decided


def _comparable(decision: tuple) -> tuple:
    """Bulk records hold Arrow values: maps as key/value pairs, timestamps as microseconds."""
    if decision[0] == "slow":
        return decision
    kind, record = decision
    return kind, {k: dict(v) if isinstance(v, list) and k == "vendor_data" else v for k, v in record.items()}


def _assert_bulk_agrees(frames: list[str]) -> list[tuple]:
    bulk = [_comparable(decision) for decision in _decided_in_bulk(frames)]
    one_by_one = [_decided_one_by_one(frame) for frame in frames]
    for frame, fast, slow in zip(frames, bulk, one_by_one):
        # a frame the bulk path leaves alone goes through normalize() itself, so only its acceptances must agree
        if fast[0] != "slow":
            assert fast == slow, frame
    return bulk


def test_bulk_accepts_only_what_normalize_accepts_on_hostile_frames():
    bulk = _assert_bulk_agrees(EDGE_CASES)
    assert sum(decision[0] == "trades" for decision in bulk) >= 10  # the plain variants did take the bulk path
    assert sum(decision[0] == "quotes" for decision in bulk) >= 5


def test_bulk_decides_a_faulty_session_like_normalize(tmp_path):
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT", "FDUSDUSDT"], 5_000, seed=3, faults=set(FAULTS))
    frames = [frame for _, frame in read_recording(session)]
    bulk = _assert_bulk_agrees(frames)
    # the generator writes plain frames, so every good one is decided in bulk and only the broken ones are left
    assert [decision[0] for decision in bulk] == [decision[0] for decision in map(_decided_one_by_one, frames)]


def test_clean_frames_all_take_the_bulk_path(tmp_path):
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, ["BTCUSDT", "ETHUSDT"], 3_000, seed=5)
    batch = normalize_batch(pa.array([frame for _, frame in read_recording(session)]), RECEIVED_AT_US)
    assert (len(batch.trade_positions), len(batch.quote_positions)) == (counts["trades"], counts["quotes"])


def test_bulk_encoding_is_byte_identical_to_per_record_encoding(tmp_path):
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT", "XRPUSDT"], 2_000, seed=6)
    frames = [frame for _, frame in read_recording(session)]
    batch = normalize_batch(pa.array(frames), RECEIVED_AT_US)
    registry = EmbeddedRegistry(tmp_path / "registry.json")
    for kind, schema, table, positions in (("trades", "trade_v2", batch.trades, batch.trade_positions),
                                           ("quotes", "quote_v2", batch.quotes, batch.quote_positions)):
        encoder = AvroEncoder(registry, f"topic.{kind}", schema)
        bulk_values = encoder.encode_table(table).to_pylist()
        message_ids = table.column("message_id").to_pylist()
        for value, message_id, position in zip(bulk_values, message_ids, positions.tolist()):
            record = normalize(frames[position], RECEIVED_AT_US).record | {"message_id": message_id}
            assert value == encoder.encode(record)
        schema_id, body = unframe(bulk_values[0])
        assert schema_id == encoder.schema_id
        assert fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(registry.schema(schema_id)))
