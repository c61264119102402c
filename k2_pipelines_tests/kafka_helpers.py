"""Reading topics back from the real broker in tests."""

import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from k2_pipelines.lib.binance.producer import Topics


def unique_topics() -> Topics:
    suffix = uuid.uuid4().hex[:10]
    return Topics(trades=f"test.trades.{suffix}", quotes=f"test.quotes.{suffix}", dead_letters=f"test.dlq.{suffix}")


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list:
    """Every message of `topic` from the beginning, waiting until `expected` have arrived (then a little more)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages, deadline = [], time.monotonic() + timeout
    try:
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
