"""Exactly-once drains from the real broker into real Iceberg tables."""

import io
import json
import random
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import fastavro
import pyarrow.compute as pc
from confluent_kafka import Producer

from k2_pipelines.lib.avro.codec import AvroEncoder
from k2_pipelines.lib.avro.iceberg import load_avro
from k2_pipelines.lib.avro.registry import default_registry, frame
from k2_pipelines.lib.binance.normalize import normalize
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import read_recording, replay
from k2_pipelines.lib.drain.drain import quotes_target, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE, remove_orphan_files
from k2_pipelines_tests.kafka_helpers import drain_all, drain_process, replay_session, stored_state, table_ids


def test_a_faulty_session_lands_once_with_every_break_classified(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 30_000, {"gaps", "duplicates", "out_of_order", "resets"})
    assert counts["resets"] and counts["gap_ids"] and counts["out_of_order:trades"] and counts["duplicates:trades"]
    [trades, _] = drain_all(kafka_broker, trades_target(topics.trades))
    [quotes, _] = drain_all(kafka_broker, quotes_target(topics.quotes))

    assert trades.messages == counts["trades"] and trades.duplicates_in_batch == counts["duplicates:trades"]
    assert trades.rows_written == counts["trades"] - counts["duplicates:trades"]
    ids = table_ids(catalog, trades_target(topics.trades))
    assert len(ids) == len(set(ids)) == trades.rows_written
    gaps = catalog.load_table("market_data.sequence_gaps").scan().to_arrow()
    trade_gaps = gaps.filter(pc.equal(gaps["table_name"], "trades"))
    kinds = trade_gaps.group_by("kind").aggregate([("missing", "sum"), ("missing", "count")])
    by_kind = {row["kind"]: (row["missing_count"], row["missing_sum"]) for row in kinds.to_pylist()}
    assert by_kind.pop("out_of_order")[0] == counts["out_of_order:trades"]
    assert by_kind.pop("reset")[0] == counts["resets"]
    assert sum(count for count, _ in by_kind.values()) == counts["gaps"]  # gap_small / gap_large
    assert sum(missing for _, missing in by_kind.values()) == counts["gap_ids"]
    quote_kinds = gaps.filter(pc.equal(gaps["table_name"], "quotes")).column("kind").to_pylist()
    assert quote_kinds == ["out_of_order"] * counts["out_of_order:quotes"]  # update ids skip by design: no gaps
    assert quotes.rows_written == counts["quotes"] - counts["duplicates:quotes"]


def test_replayed_ids_already_committed_are_dropped(kafka_broker, catalog, tmp_path):
    session, counts, topics = replay_session(kafka_broker, tmp_path, 4_000, set())
    targets = (trades_target(topics.trades), quotes_target(topics.quotes))
    for target in targets:
        drain_all(kafka_broker, target)
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)  # the same messages again; the quotes get new event times (received-at)
    assert producer.flush(60) == 0
    for target, kind in zip(targets, ("trades", "quotes")):
        again = drain_all(kafka_broker, target)
        assert sum(r.messages for r in again) == counts[kind]
        assert sum(r.rows_written for r in again) == 0
        assert sum(r.duplicates_committed for r in again) == counts[kind]
        assert len(table_ids(catalog, target)) == counts[kind]


def _variant(**field_types) -> dict:
    """trade_v2 with some fields' types changed: what a misbehaving producer might register."""
    schema = json.loads(json.dumps(load_avro("trade_v2")))
    for field in schema["fields"]:
        if field["name"] in field_types:
            field["type"] = field_types[field["name"]]
    return schema


def test_poison_messages_are_dead_letters_and_their_neighbours_land(kafka_broker, catalog, tmp_path):
    session, counts, topics = replay_session(kafka_broker, tmp_path, 200, set())
    registry = default_registry()
    good = AvroEncoder(registry, topics.trades, "trade_v2")
    record = normalize(next(f for _, f in read_recording(session) if '"e":"trade"' in f), 1).record
    wide_price = _variant(price={"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 10})
    nullable_symbol = _variant(symbol=["null", "string"])

    def body(schema: dict, values: dict) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record | values)
        return frame(registry.register(f"{topics.trades}-variant-{schema['fields'][1]['name']}", schema),
                     buffer.getvalue())

    poison = {
        "NotWireFormat": b"not avro at all",
        "UnknownSchemaId": frame(987_654, b"\x00"),
        "AvroDecodeError": good.encode(record | {"trade_id": "BINANCE-poison-1"})[:-9],  # truncated
        "InvalidValue:price": body(wide_price, {"trade_id": "BINANCE-poison-2", "price": Decimal("1.1234567891")}),
        "InvalidValue:symbol": body(nullable_symbol, {"trade_id": "BINANCE-poison-3", "symbol": None}),
        "WrongSchema": AvroEncoder(registry, topics.quotes, "quote_v2").encode(
            normalize(next(f for _, f in read_recording(session) if '"u":' in f), 1).record),
    }
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    fine = [record | {"trade_id": f"BINANCE-fine-{i}", "source_sequence": None} for i in range(len(poison) + 1)]
    producer.produce(topics.trades, good.encode(fine[0]), b"BTCUSDT")
    for value, neighbour in zip(poison.values(), fine[1:]):  # each poison message between two good ones
        producer.produce(topics.trades, value, b"BTCUSDT")
        producer.produce(topics.trades, good.encode(neighbour), b"BTCUSDT")
    producer.produce(topics.trades, None, b"BTCUSDT")  # a tombstone is not a trade either
    assert producer.flush(30) == 0

    results = drain_all(kafka_broker, trades_target(topics.trades))
    assert sum(r.rows_written for r in results) == counts["trades"] + len(fine)
    landed = {trade_id for _, trade_id in table_ids(catalog, trades_target(topics.trades))}
    assert {f"BINANCE-fine-{i}" for i in range(len(fine))} <= landed
    dead = catalog.load_table("market_data.dead_letters").scan().to_arrow().to_pylist()
    by_class = {}
    for letter in dead:
        by_class.setdefault(letter["error_class"], []).append(letter)
    assert {k: len(v) for k, v in by_class.items()} == {
        "NotWireFormat": 2, "UnknownSchemaId": 1, "AvroDecodeError": 1, "InvalidValue": 2, "WrongSchema": 1}
    assert [letter["value"] for letter in by_class["NotWireFormat"]].count(None) == 1  # the tombstone
    assert by_class["UnknownSchemaId"][0]["schema_id"] == 987_654
    assert {letter["error_message"].split(" ")[0] for letter in by_class["InvalidValue"]} == {"price", "symbol"}
    assert len({(letter["partition"], letter["offset"]) for letter in dead}) == len(dead)  # each its own position
    for letter in dead:
        assert letter["topic"] == topics.trades and letter["run_id"]
        if letter["value"] is not None:
            assert letter["value"] in poison.values()  # kept raw


def test_drains_killed_anywhere_lose_and_duplicate_nothing(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 40_000, set())
    kills = 0
    for point in ["files-written", "state-written", "before-commit", "iceberg-committed"] * 2:  # those that matter most
        process = drain_process(kafka_broker, topics.trades, "--max-messages", "900", kill_at=point)
        assert process.wait(120) == -9, process.stdout.read().decode()
        kills += 1
    rng = random.Random(5)
    while kills < 24:  # and anywhere else
        process = drain_process(kafka_broker, topics.trades, "--max-messages", "700", "--until-caught-up")
        time.sleep(rng.uniform(0.5, 4.0))
        if process.poll() is None:
            process.kill()
            kills += process.wait(30) == -9
    finished = drain_process(kafka_broker, topics.trades, "--until-caught-up")
    assert finished.wait(300) == 0, finished.stdout.read().decode()
    ids = table_ids(catalog, trades_target(topics.trades))
    assert len(ids) == len(set(ids)) == counts["trades"]
    _, sequences, ceilings = stored_state(catalog, trades_target(topics.trades))
    highest = {}
    for symbol, trade_id in ids:
        highest[symbol] = max(highest.get(symbol, 0), int(trade_id.rsplit("-", 1)[1]))
    assert ceilings == highest and sequences.keys() == highest.keys()  # the state of every commit that landed
    orphans = remove_orphan_files(catalog, "market_data.trades", datetime.now(UTC) - MIN_ORPHAN_AGE).orphans
    print(f"{kills} kills left {orphans} orphaned files")
    assert orphans  # the kills between writing and committing left files no snapshot references


def test_two_drains_at_once_write_each_message_once(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 20_000, set())
    drains = [drain_process(kafka_broker, topics.trades, "--max-messages", "1500", "--until-caught-up")
              for _ in range(2)]
    outputs = [d.communicate(timeout=300)[0].decode() for d in drains]
    assert [d.returncode for d in drains] == [0, 0], outputs
    ids = table_ids(catalog, trades_target(topics.trades))
    assert len(ids) == len(set(ids)) == counts["trades"]


def test_a_drain_in_a_thread_and_one_in_another_agree(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 10_000, set())
    errors = []

    def run() -> None:
        try:
            drain_all(kafka_broker, trades_target(topics.trades), Limits(max_messages=700))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    ids = table_ids(catalog, trades_target(topics.trades))
    assert not [e for e in errors if type(e).__name__ != "DrainAbandoned"]
    assert len(ids) == len(set(ids)) == counts["trades"]
