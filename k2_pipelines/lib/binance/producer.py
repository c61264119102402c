"""Produce v2 records to Kafka (idempotent, acks=all) and bad frames, raw, to the dead-letter topic.

Nothing is dropped: delivery has no timeout (librdkafka retries until the broker is back), and when the bounded
local buffer is full the caller blocks until deliveries free room (backpressure).
"""

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaError, Message, Producer

from k2_pipelines.lib.avro.codec import AvroEncoder
from k2_pipelines.lib.avro.registry import Registry
from k2_pipelines.lib.binance.batch import normalize_batch
from k2_pipelines.lib.binance.normalize import BadFrame, Normalized, normalize

log = logging.getLogger(__name__)
Headers = list[tuple[str, str | bytes | None]]  # as confluent_kafka takes them


@dataclass(frozen=True)
class Topics:
    trades: str = "market.crypto.trades.binance"
    quotes: str = "market.crypto.quotes.binance"
    dead_letters: str = "market.crypto.dlq.binance"


class MarketDataProducer:
    def __init__(self, bootstrap: str, registry: Registry, topics: Topics = Topics(), buffer_messages: int = 100_000,
                 **kafka_config: Any) -> None:
        self.topics = topics
        self.counts: Counter[str] = Counter()
        self._encoders = {
            "trades": AvroEncoder(registry, topics.trades, "trade_v2"),
            "quotes": AvroEncoder(registry, topics.quotes, "quote_v2"),
        }
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 20,
            "message.timeout.ms": 0,  # never give up on a message: wait for the broker instead of dropping
            "queue.buffering.max.messages": buffer_messages,
            **kafka_config,
        })

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.counts[f"delivered:{message.topic()}"] += 1
        else:
            self.counts["produce_errors"] += 1
            log.error("delivery failed for key %r on %s: %s", message.key(), message.topic(), error)

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, headers=headers, on_delivery=self._delivered)
                return
            except BufferError:  # bounded buffer full: wait for deliveries (backpressure), never drop
                self.counts["backpressure_waits"] += 1
                self._producer.poll(0.1)

    def _produce_all(self, topic: str, keys: list[bytes], values: list[bytes]) -> None:
        produce, delivered = self._producer.produce, self._delivered
        for key, value in zip(keys, values):
            try:
                produce(topic, value, key, on_delivery=delivered)
            except BufferError:
                self._produce(topic, key, value)
        self._producer.poll(0)

    def send(self, normalized: Normalized) -> None:
        value = self._encoders[normalized.kind].encode(normalized.record)
        self._produce(getattr(self.topics, normalized.kind), normalized.symbol.encode(), value)
        self._producer.poll(0)
        self.counts[f"produced:{normalized.kind}"] += 1

    def dead_letter(self, raw: str | bytes, error: BadFrame, received_at_us: int) -> None:
        raw_bytes = raw.encode() if isinstance(raw, str) else raw
        headers: Headers = [("k2.reason", error.reason.encode()), ("k2.detail", error.detail.encode()),
                            ("k2.received_at_us", str(received_at_us).encode()), ("k2.source", b"binance")]
        self._produce(self.topics.dead_letters, None, raw_bytes, headers)
        self._producer.poll(0)
        self.counts[f"dead_letters:{error.reason}"] += 1

    def handle_frame(self, raw: str | bytes, received_at_us: int) -> None:
        """Normalize and produce one frame; a bad frame goes, raw, to the dead-letter topic."""
        try:
            normalized = normalize(raw, received_at_us)
        except BadFrame as error:
            self.dead_letter(raw, error, received_at_us)
            return
        self.send(normalized)

    def handle_frames(self, frames: pa.Array, received_at_us: int) -> None:
        """handle_frame() for each of `frames` (a string array), normalizing and encoding most of them in bulk.
        Each topic gets its messages in frame order."""
        batch = normalize_batch(frames, received_at_us)
        bulk: list[tuple[str, np.ndarray, list[bytes], list[bytes]]] = []  # per kind: (topic, positions, keys, values)
        for kind, records, positions in (("trades", batch.trades, batch.trade_positions),
                                          ("quotes", batch.quotes, batch.quote_positions)):
            bulk.append((getattr(self.topics, kind), positions, records.column("symbol").cast(pa.binary()).to_pylist(),
                         self._encoders[kind].encode_table(records).to_pylist()))
            self.counts[f"produced:{kind}"] += len(positions)
        one_by_one = np.setdiff1d(np.arange(len(frames)),
                                  np.concatenate([batch.trade_positions, batch.quote_positions]))
        done = [0] * len(bulk)
        for stop in [*one_by_one.tolist(), len(frames)]:  # the bulk messages before each frame left to handle_frame
            for slot, (topic, positions, keys, values) in enumerate(bulk):
                end = int(np.searchsorted(positions, stop))
                self._produce_all(topic, keys[done[slot] : end], values[done[slot] : end])
                done[slot] = end
            if stop < len(frames):
                self.handle_frame(frames[stop].as_py(), received_at_us)

    def in_flight(self) -> int:
        return len(self._producer)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every delivery; the number still in flight (0 unless timeout passed)."""
        return self._producer.flush(timeout) if timeout is not None else self._producer.flush()
