"""Sessions replayed into the real broker, drained, and topics read back, in tests."""

import os
import subprocess
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint, symbol_state
from k2_pipelines.lib.drain.drain import DrainResult, DrainTarget, drain_once, reader_for
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def unique_topics() -> Topics:
    suffix = uuid.uuid4().hex[:10]
    return Topics(trades=f"test.trades.{suffix}", quotes=f"test.quotes.{suffix}", dead_letters=f"test.dlq.{suffix}")


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list:
    """Every message of `topic` from the beginning, waiting until `expected` have arrived (then a little more).
    Each partition is assigned from its start: no group join, whose rebalance could leave one unread."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    messages, deadline = [], time.monotonic() + timeout
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            messages += [m for m in batch if m.error() is None]
            if len(messages) >= expected and not batch:
                break
    finally:
        consumer.close()
    return messages


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def replay_session(kafka_broker, tmp_path, frames: int, faults: set[str], seed: int = 3):
    """A generated session (with `faults`) replayed into fresh topics: (its recording, its counts, the topics)."""
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, SYMBOLS, frames, seed=seed, faults=faults)
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(60) == 0
    return session, counts, topics


def drain_all(kafka_broker, target: DrainTarget, limits: Limits | None = None) -> list[DrainResult]:
    """Drains of the topic until one finds no messages (that empty one last)."""
    catalog, reader, results = load_k2_catalog(), reader_for(kafka_broker.bootstrap, target), []
    while True:
        results.append(drain_once(catalog, reader, target, default_registry(), limits))
        if not results[-1].messages:
            reader.close()
            return results


def table_ids(catalog, target: DrainTarget, snapshot_id: int | None = None) -> list[tuple[str, str]]:
    """(symbol, id) of every row, now or at a snapshot: ids are per symbol (after a reset two symbols may share one)."""
    rows = catalog.load_table(target.table.identifier).scan(selected_fields=("symbol", target.id_column),
                                                            snapshot_id=snapshot_id).to_arrow()
    return list(zip(rows.column("symbol").to_pylist(), rows.column(target.id_column).to_pylist()))


def stored_state(catalog, target: DrainTarget) -> tuple[dict[int, int], dict, dict]:
    """The table's stored drain checkpoint: (offsets, sequences, ceilings)."""
    checkpoint = stored_checkpoint(catalog.load_table(target.table.identifier), target.topic)
    state = symbol_state(catalog, target.topic, checkpoint)
    return checkpoint.offsets, state.sequences, state.ceilings


def drain_process(kafka_broker, topic: str, *extra: str, kill_at: str | None = None) -> subprocess.Popen:
    """`k2 drain binance` of the topic in a process of its own (one a test may kill at a crash point: see
    killed_drain.POINTS)."""
    env = {**os.environ, "K2_KAFKA_PORT": str(kafka_broker.port)}
    k2 = ["k2_pipelines_tests.killed_drain", kill_at] if kill_at else ["k2_pipelines"]
    return subprocess.Popen([sys.executable, "-m", *k2, "drain", "binance", "--table", "trades", "--topic", topic,
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
