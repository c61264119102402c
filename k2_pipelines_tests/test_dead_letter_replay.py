"""Dead letters replayed once their schema is registered: real dead letters from a real drain of the real broker."""

import io
import json
import shutil
import uuid
from dataclasses import dataclass

import dagster as dg
import fastavro
import pyarrow.compute as pc
from confluent_kafka import Producer
from pyiceberg.expressions import EqualTo

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.recovery.dead_letter_sensor import dead_letter_sensor
from k2_pipelines.defs.recovery.runbooks import replay_dead_letters_job
from k2_pipelines.lib.avro.codec import AvroEncoder
from k2_pipelines.lib.avro.iceberg import load_avro
from k2_pipelines.lib.avro.registry import EmbeddedRegistry, default_registry, frame
from k2_pipelines.lib.binance.normalize import normalize
from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.dead_letter_replay import replay_dead_letters
from k2_pipelines.lib.drain.drain import drain, reader_for, trades_target
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID
from k2_pipelines.lib.iceberg.tables import DRAIN_STATE
from k2_pipelines.lib.recovery.incidents import NEEDS_HUMAN, RESOLVED, incidents
from k2_pipelines_tests.kafka_helpers import drain_all, end_offsets, replay_session, stored_state, table_ids
from k2_pipelines_tests.recovery_helpers import tick

LATE = 40  # trades written with a schema the registry K2 reads does not have yet
FIRST_LATE_ID = 9_000_000_000  # above every sampled trade id: the replay must raise the ceiling


def _newer_trade_schema() -> dict:
    """trade_v2 with a field added: a producer's newer version of TradeV2."""
    schema = json.loads(json.dumps(load_avro("trade_v2")))
    schema["fields"].append({"name": "venue_note", "type": ["null", "string"], "default": None})
    return schema


def _dead_letters(catalog, topic: str) -> list[dict]:
    letters = catalog.load_table("market_data.dead_letters").scan().to_arrow()
    return letters.filter(pc.equal(letters["topic"], topic)).to_pylist()


def _snapshots(catalog) -> tuple:
    return tuple(catalog.load_table(name).current_snapshot().snapshot_id
                 for name in ("market_data.trades", "market_data.dead_letters"))


@dataclass
class LateTrades:
    """A drained topic of sampled trades, then trades framed with a schema id K2's registry does not know yet."""

    topics: object
    counts: dict
    registry: EmbeddedRegistry  # K2's
    newer_id: int  # the producer's id for the newer schema
    drained: dict  # a sampled trade, drained
    records: list[dict]  # the late trades
    values: list[bytes]  # as produced

    def late(self, record: dict) -> bytes:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(_newer_trade_schema()), record | {"venue_note": "late"})
        return frame(self.newer_id, body.getvalue())

    def register(self) -> None:
        assert self.registry.register(f"{self.topics.trades}-value", _newer_trade_schema()) == self.newer_id

    def produce(self, values: list[bytes], bootstrap: str) -> None:
        producer = Producer({"bootstrap.servers": bootstrap})
        for value in values:
            producer.produce(self.topics.trades, value, self.drained["symbol"].encode())
        assert producer.flush(30) == 0

    def numbered(self, first: int, count: int) -> list[dict]:
        return [self.drained | {"trade_id": f"BINANCE-{first + i}", "source_sequence": None} for i in range(count)]


def _late_trades(kafka_broker, tmp_path) -> LateTrades:
    session, counts, topics = replay_session(kafka_broker, tmp_path, 400, set())
    registry = default_registry()
    ahead = EmbeddedRegistry(tmp_path / "producer-registry" / "schemas.json")  # the registry the producer uses
    shutil.copy(registry.path, ahead.path)
    drained = normalize(next(f for _, f in read_recording(session) if '"e":"trade"' in f), 1).record
    late = LateTrades(topics, counts, registry, ahead.register(f"{topics.trades}-value", _newer_trade_schema()),
                      drained, [], [])
    late.records = late.numbered(FIRST_LATE_ID, LATE)
    late.values = [late.late(r) for r in late.records]
    return late


def test_dead_letters_land_once_their_schema_is_registered(kafka_broker, catalog, tmp_path):
    trades = _late_trades(kafka_broker, tmp_path)
    topics, counts, registry, drained, records, values = (trades.topics, trades.counts, trades.registry,
                                                          trades.drained, trades.records, trades.values)
    target = trades_target(topics.trades)
    malformed = [b"not avro at all",
                 AvroEncoder(registry, topics.trades, "trade_v2").encode(drained | {"trade_id": "BINANCE-x"})[:-9]]
    # and a repeat of a late one, and of a drained one
    trades.produce([*values, values[0], trades.late(drained), *malformed], kafka_broker.bootstrap)
    drain_all(kafka_broker, target)
    dead = _dead_letters(catalog, topics.trades)
    assert sorted(d["error_class"] for d in dead) == \
        ["AvroDecodeError", "NotWireFormat"] + ["UnknownSchemaId"] * (LATE + 2)
    assert len(table_ids(catalog, target)) == counts["trades"]
    offsets, sequences, ceilings = stored_state(catalog, target)

    before = _snapshots(catalog)
    unresolved = replay_dead_letters(catalog, target, registry, "replay-0")  # the schema is still unknown
    assert (unresolved.landed, unresolved.duplicates, unresolved.still_dead) == (0, 0, LATE + 4)
    assert unresolved.still_dead_by_class == {"AvroDecodeError": 1, "NotWireFormat": 1, "UnknownSchemaId": LATE + 2}
    trades.register()  # now K2's registry has it too
    dry = replay_dead_letters(catalog, target, registry, "replay-dry", dry_run=True)
    assert (dry.dead_letters_seen, dry.landed, dry.duplicates, dry.still_dead) == (LATE + 4, LATE, 2, 2)
    assert _snapshots(catalog) == before and dry.commit_attempts == unresolved.commit_attempts == 0

    run_id = uuid.uuid4().hex
    replayed = replay_dead_letters(catalog, target, registry, run_id)
    assert (replayed.dead_letters_seen, replayed.landed, replayed.duplicates, replayed.still_dead) == \
        (LATE + 4, LATE, 2, 2)
    assert replayed.still_dead_by_class == {"AvroDecodeError": 1, "NotWireFormat": 1}
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"] + LATE
    assert {(r["symbol"], r["trade_id"]) for r in records} <= set(ids)
    left = _dead_letters(catalog, topics.trades)
    assert {(d["partition"], d["offset"], d["error_class"]) for d in left} == \
        {(d["partition"], d["offset"], d["error_class"]) for d in dead if d["error_class"] != "UnknownSchemaId"}
    main = catalog.load_table(target.table.identifier)
    assert main.current_snapshot().snapshot_id == replayed.snapshot_after
    assert main.current_snapshot().summary[DRAIN_RUN_ID] == run_id
    assert stored_checkpoint(main, target.topic).snapshot_id == replayed.snapshot_after
    # the drain's checkpoint, ceilings raised to the replayed ids
    assert stored_state(catalog, target) == (offsets, sequences,
                                             ceilings | {drained["symbol"]: FIRST_LATE_ID + LATE - 1})

    again = replay_dead_letters(catalog, target, registry, "replay-2")
    assert (again.dead_letters_seen, again.landed, again.duplicates, again.still_dead) == (2, 0, 0, 2)
    assert again.commit_attempts == 0 and again.snapshot_after == replayed.snapshot_after

    more = trades.numbered(FIRST_LATE_ID + LATE, 5)
    trades.produce([*values, *map(trades.late, more)], kafka_broker.bootstrap)  # the late ones again, and newer
    results = drain_all(kafka_broker, target)
    assert sum(r.duplicates_committed for r in results) == LATE and sum(r.rows_written for r in results) == len(more)
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"] + LATE + len(more)
    assert len(_dead_letters(catalog, topics.trades)) == 2


class _CommitsFirst:
    """K2's registry, except that its first lookup lets another writer commit first (a drain, a replay): the one
    decoding then loses its compare-and-set to a writer that moved the tables after it loaded them."""

    def __init__(self, registry, drain):
        self.registry, self.drain = registry, drain

    def register(self, subject: str, schema: dict) -> int:
        return self.registry.register(subject, schema)

    def schema(self, schema_id: int) -> dict:
        drain, self.drain = self.drain, None
        if drain:
            drain()
        return self.registry.schema(schema_id)


def test_a_replay_that_loses_to_a_drain_plans_again_from_its_checkpoint(kafka_broker, catalog, tmp_path):
    trades = _late_trades(kafka_broker, tmp_path)
    target = trades_target(trades.topics.trades)
    trades.produce(trades.values, kafka_broker.bootstrap)
    drain_all(kafka_broker, target)
    trades.register()
    newer = trades.numbered(FIRST_LATE_ID + LATE, 5)  # for the drain that commits during the replay
    trades.produce(list(map(trades.late, newer)), kafka_broker.bootstrap)

    replayed = replay_dead_letters(catalog, target, _CommitsFirst(trades.registry, lambda: drain_all(
        kafka_broker, target)), "replay")
    assert replayed.commit_attempts == 2 and (replayed.landed, replayed.still_dead) == (LATE, 0)
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == trades.counts["trades"] + LATE + len(newer)
    carried_offsets, _, carried_ceilings = stored_state(catalog, target)
    assert sum(carried_offsets.values()) == end_offsets(kafka_broker.bootstrap, target.topic)  # the drain's offsets
    assert carried_ceilings[trades.drained["symbol"]] == FIRST_LATE_ID + LATE + len(newer) - 1
    assert not _dead_letters(catalog, target.topic)


def test_a_drain_that_loses_to_a_replay_plans_again_from_the_replays_state(kafka_broker, catalog, tmp_path):
    trades = _late_trades(kafka_broker, tmp_path)
    target = trades_target(trades.topics.trades)
    trades.produce(trades.values, kafka_broker.bootstrap)
    drain_all(kafka_broker, target)  # the late trades are dead letters: their schema is unknown
    trades.register()
    newer = trades.numbered(FIRST_LATE_ID + LATE, 5)
    trades.produce(list(map(trades.late, newer)), kafka_broker.bootstrap)

    # the drain reads its checkpoint, then a replay commits (ceilings raised) before the drain commits
    replays = _CommitsFirst(trades.registry, lambda: replay_dead_letters(catalog, target, trades.registry, "replay"))
    reader = reader_for(kafka_broker.bootstrap, target)
    result = drain(load_k2_catalog(), reader, target, replays)
    reader.close()
    assert result.rows_written == len(newer) and result.duplicates_committed == 0
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == trades.counts["trades"] + LATE + len(newer)
    _, _, ceilings = stored_state(catalog, target)  # the replay's raise and the drain's, neither lost
    assert ceilings[trades.drained["symbol"]] == FIRST_LATE_ID + LATE + len(newer) - 1
    state = catalog.load_table(DRAIN_STATE.identifier).scan(row_filter=EqualTo("topic", target.topic)).to_arrow()
    numbered = list(zip(state.column("symbol").to_pylist(), state.column("checkpoint").to_pylist()))
    assert len(numbered) == len(set(numbered))  # one state per symbol and checkpoint: the drain did not reuse one


def test_the_sensor_asks_for_a_fix_then_replays_once_the_schema_is_registered(kafka_broker, catalog, tmp_path):
    trades = _late_trades(kafka_broker, tmp_path)
    trades.produce(trades.values, kafka_broker.bootstrap)
    target = trades_target(trades.topics.trades)
    drain_all(kafka_broker, target)
    used = {"iceberg": IcebergCatalogResource(), "quality": QualityResource(dead_letters_for_incident=LATE),
            "binance_kafka": BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=trades.topics.trades,
                                                  quotes_topic=trades.topics.quotes)}
    with dg.instance_for_test() as instance:
        stuck = tick(dead_letter_sensor, instance, used)
        assert not stuck.run_requests
        [asked] = incidents(catalog)
        assert asked.status == NEEDS_HUMAN and f"{LATE:,} do not" in asked.detail
        assert not tick(dead_letter_sensor, instance, used, stuck.cursor).run_requests
        assert len(incidents(catalog)) == 1  # asked once, not on every tick

        trades.register()
        [request] = tick(dead_letter_sensor, instance, used, stuck.cursor).run_requests
        replayed = replay_dead_letters_job.execute_in_process(run_config=request.run_config, resources=used,
                                                              instance=instance)
        assert replayed.success
    assert not _dead_letters(catalog, trades.topics.trades)
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == trades.counts["trades"] + LATE
    resolved = [i for i in incidents(catalog) if i.status == RESOLVED]
    assert len(resolved) == 1 and resolved[0].outcome.startswith(f"{LATE} landed")


def test_rows_a_row_rule_set_aside_stay_dead_until_the_rule_passes_them_then_land_once(kafka_broker, catalog,
                                                                                        tmp_path):
    session, counts, topics = replay_session(kafka_broker, tmp_path, 400, set())
    target = trades_target(topics.trades)
    registry = default_registry()
    drained = normalize(next(f for _, f in read_recording(session) if '"e":"trade"' in f), 1).record
    ahead = [drained | {"trade_id": f"BINANCE-{FIRST_LATE_ID + i}", "source_sequence": None,
                        "timestamp": 4_070_908_800_000_000} for i in range(3)]  # 2099-01-01
    producer, encoder = Producer({"bootstrap.servers": kafka_broker.bootstrap}), AvroEncoder(registry, topics.trades,
                                                                                            "trade_v2")
    for record in ahead:
        producer.produce(topics.trades, encoder.encode(record), drained["symbol"].encode())
    assert producer.flush(30) == 0
    drain_all(kafka_broker, target)
    dead = _dead_letters(catalog, topics.trades)
    assert [d["error_class"] for d in dead] == ["not_in_future"] * 3
    assert all("timestamp=2099-" in d["error_message"] for d in dead)
    assert len(table_ids(catalog, target)) == counts["trades"]

    still = replay_dead_letters(catalog, target, registry, "replay-0")  # the same thresholds: still in the future
    assert (still.landed, still.still_dead, still.still_dead_by_class) == (0, 3, {"not_in_future": 3})
    lenient = QualityResource(future_tolerance_seconds=100 * 365 * 86_400).thresholds()  # a tolerance fixed
    replayed = replay_dead_letters(catalog, target, registry, "replay-1", thresholds=lenient)
    again = replay_dead_letters(catalog, target, registry, "replay-2", thresholds=lenient)
    assert (replayed.landed, replayed.still_dead, again.dead_letters_seen) == (3, 0, 0)
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"] + 3
    assert _dead_letters(catalog, topics.trades) == []
