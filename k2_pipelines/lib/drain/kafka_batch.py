"""Read one bounded batch of a topic, from explicit offsets, as columns."""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

CONSUME_CHUNK = 1_000  # messages per consume() call (larger ones read slower: measured 0.9M/s at 20,000)
PARTITIONS_TTL_SECONDS = 30.0  # how long a reader trusts the topic's partition list


class OffsetsOutOfRange(RuntimeError):
    """Stored offsets the topic cannot serve: ahead of its end (recreated?) or behind its start (retention)."""


@dataclass(frozen=True)
class Limits:
    max_messages: int = 200_000
    max_bytes: int = 64 << 20  # of values; with max_messages, bounds the drain's memory whatever the backlog
    max_seconds: float = 60.0


@dataclass
class KafkaBatch:
    """The messages' values back to back in one buffer, with their keys, partitions and offsets."""

    data: np.ndarray  # uint8, every value in batch order
    starts: np.ndarray  # message i's value is data[starts[i]:ends[i]]
    ends: np.ndarray
    tombstones: np.ndarray  # positions whose value is null (not empty)
    keys: pa.Array  # binary
    partitions: np.ndarray
    offsets: np.ndarray  # in each partition's offset order
    start: dict[int, int]  # partition -> first offset this batch read from
    end: dict[int, int]  # partition -> next offset after this batch
    high_watermarks: dict[int, int]

    def __len__(self) -> int:
        return len(self.offsets)

    def value(self, position: int) -> bytes | None:
        if position in self.tombstones:
            return None
        return self.data[self.starts[position] : self.ends[position]].tobytes()

    @property
    def lag_after(self) -> dict[int, int]:
        return {p: max(self.high_watermarks[p] - self.end[p], 0) for p in self.end}


class _Columns:
    """A batch being read, a consume() chunk at a time: values kept as bytes until one join at the end."""

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] = []
        self.lengths: list[np.ndarray] = []
        self.partitions: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []

    def add(self, messages: list[Message], lengths: np.ndarray, partitions: np.ndarray, offsets: np.ndarray) -> None:
        self.values += map(Message.value, messages)
        self.keys += map(Message.key, messages)
        self.lengths.append(lengths)
        self.partitions.append(partitions)
        self.offsets.append(offsets)

    def batch(self, start: dict[int, int], end: dict[int, int], high_watermarks: dict[int, int]) -> KafkaBatch:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        ends = np.cumsum(lengths)
        tombstones = np.array([i for i in np.flatnonzero(lengths == 0).tolist() if self.values[i] is None], np.int64)
        data = np.frombuffer(b"".join(filter(None, self.values)), dtype=np.uint8)
        return KafkaBatch(data, ends - lengths, ends, tombstones, pa.array(self.keys, pa.binary()),
                          np.concatenate(self.partitions) if self.partitions else np.zeros(0, np.int32),
                          np.concatenate(self.offsets) if self.offsets else np.zeros(0, np.int64),
                          start, end, high_watermarks)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cycle collection while a batch is read: reading makes no cycles, and each full pass over the process's
    objects (and the batch's growing lists) took 100 ms, several times a batch."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _start_offsets(topic: str, stored: dict[int, int], marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Where each partition's batch starts: its stored offset, or its first retained offset where none is stored."""
    start = {}
    for partition, (low, high) in marks.items():
        offset = stored.get(partition)
        if offset is not None and offset > high:
            raise OffsetsOutOfRange(f"{topic}[{partition}]: stored offset {offset} is past the end ({high}); "
                                    "was the topic recreated?")
        if offset is not None and offset < low:
            raise OffsetsOutOfRange(f"{topic}[{partition}]: stored offset {offset} is before the first retained "
                                    f"offset ({low}); messages {offset}..{low - 1} were deleted before being drained")
        start[partition] = offset if offset is not None else low
    return start


class TopicReader:
    """Bounded batches of one topic, each from explicit offsets. When a batch starts where the consumer already is
    (the last batch's end), the consumer keeps its assignment and what it prefetched meanwhile; otherwise it is
    assigned again at the batch's start."""

    def __init__(self, consumer: Consumer, topic: str, timeout: float = 10):
        self.consumer, self.topic, self.timeout = consumer, topic, timeout
        self._next: dict[int, int] = {}  # partition -> the offset the consumer delivers next under its assignment
        self._partitions: list[int] = []
        self._partitions_read_at = -PARTITIONS_TTL_SECONDS

    def close(self) -> None:
        self.consumer.close()

    def watermarks(self, timeout: float | None = None) -> dict[int, tuple[int, int]]:
        """(low, high) offsets of every partition of the topic (KafkaException past the timeout, the reader's by
        default)."""
        timeout = self.timeout if timeout is None else timeout
        if time.monotonic() - self._partitions_read_at > PARTITIONS_TTL_SECONDS:
            metadata = self.consumer.list_topics(self.topic, timeout=timeout).topics[self.topic]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            self._partitions, self._partitions_read_at = sorted(metadata.partitions), time.monotonic()
        return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
                for p in self._partitions}

    def newest_message_time(self) -> datetime | None:
        """When the topic's newest message was written (its Kafka timestamp); None for an empty topic."""
        newest = None
        for partition, (low, high) in self.watermarks().items():
            if high <= low:
                continue
            self._next = {}  # the next batch assigns again
            self.consumer.assign([TopicPartition(self.topic, partition, high - 1)])
            for message in self.consumer.consume(1, timeout=10):
                if message.error() is None and message.timestamp()[1] > 0:
                    written = datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC)
                    newest = max(newest or written, written)
        return newest

    def read(self, stored: dict[int, int], limits: Limits) -> KafkaBatch:
        """Messages from `stored` offsets up to the end of each partition as it was when the batch began, or until a
        limit is reached."""
        with _collector_paused():
            return self._read(stored, limits)

    def committed(self, partitions: list[int], timeout: float | None = None) -> dict[int, int | None]:
        """The consumer group's committed offset of each partition (None: none committed)."""
        offsets = self.consumer.committed([TopicPartition(self.topic, p) for p in partitions],
                                          timeout=self.timeout if timeout is None else timeout)
        for offset in offsets:
            if offset.error is not None:
                raise KafkaException(offset.error)
        return {o.partition: None if o.offset == OFFSET_INVALID else o.offset for o in offsets}

    def release(self) -> None:
        """Stop fetching until the next read (which assigns the partitions again)."""
        self.consumer.unassign()
        self._next = {}

    def _read(self, stored: dict[int, int], limits: Limits) -> KafkaBatch:
        marks = self.watermarks()
        start = _start_offsets(self.topic, stored, marks)
        high_watermarks = {p: high for p, (_, high) in marks.items()}
        if self._next != start:
            self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in start.items()])
            self._next = dict(start)
        end = dict(start)
        pending = {p for p in start if start[p] < high_watermarks[p]}
        columns = _Columns()
        count, size, deadline = 0, 0, time.monotonic() + limits.max_seconds
        ends = np.zeros(max(high_watermarks, default=-1) + 1, dtype=np.int64)  # high watermark by partition number
        ends[list(high_watermarks)] = list(high_watermarks.values())
        while pending and count < limits.max_messages and size < limits.max_bytes and time.monotonic() < deadline:
            # no more than are known to be there: consume() waits out its timeout for a chunk it cannot fill
            left = sum(high_watermarks[p] - end[p] for p in pending)
            messages = self.consumer.consume(max(min(CONSUME_CHUNK, limits.max_messages - count, left), 1),
                                             timeout=0.1)
            errors = list(map(Message.error, messages))
            if any(errors):
                for message, error in zip(messages, errors):
                    if error is None:
                        continue
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    partition, offset = message.partition(), message.offset()
                    if partition is None or offset is None:
                        raise KafkaException(f"{self.topic}: a partition end without its partition and offset")
                    if offset >= high_watermarks[partition]:  # not an end an earlier batch saw
                        pending.discard(partition)
                messages = [m for m, error in zip(messages, errors) if error is None]
            if not messages:
                continue
            partitions = np.fromiter(map(Message.partition, messages), dtype=np.int32, count=len(messages))
            offsets = np.fromiter(map(Message.offset, messages), dtype=np.int64, count=len(messages))
            for partition in np.unique(partitions).tolist():
                self._next[partition] = int(offsets[partitions == partition].max()) + 1
            # messages past a partition's end as it was when the batch began are for the next batch
            inside = offsets < ends[partitions]
            if not inside.all():
                messages = [m for m, keep in zip(messages, inside.tolist()) if keep]
                partitions, offsets = partitions[inside], offsets[inside]
            lengths = np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
            columns.add(messages, lengths, partitions, offsets)
            count += len(messages)
            size += int(lengths.sum())
            for partition in np.unique(partitions).tolist():
                end[partition] = max(end[partition], int(offsets[partitions == partition].max()) + 1)
                if end[partition] >= high_watermarks[partition]:
                    pending.discard(partition)
        return columns.batch(start, end, high_watermarks)
