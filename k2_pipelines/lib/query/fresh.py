"""Fresh reads: a snapshot's rows plus the Kafka messages beyond the offsets stored in that very snapshot.

The drain commits each batch's end offsets in the snapshot of its rows, so a snapshot's rows are exactly its topic's
messages before those offsets (less what a drain sets aside). The tail, read from there to each partition's end, is
turned into rows by the drain's own decode, dedupe and row rules (drain.sort_batch), against the same snapshot: a
row is never in both, and none between them is missing, whatever drains commit meanwhile.

The tail is bounded (Limits: messages, bytes, seconds). If Kafka cannot be read, the result holds the snapshot's
rows only and says why (a TailWarning), or, with fresh="strict", the query fails (TailUnavailable)."""

import atexit
import json
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaException
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.drain.checkpoint import newest_checkpoint, stored_checkpoint, symbol_state
from k2_pipelines.lib.drain.drain import DrainTarget, quotes_target, reader_for, sort_batch, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits, OffsetsOutOfRange, TopicReader
from k2_pipelines.lib.drain.sequences import record_keys
from k2_pipelines.lib.quality.thresholds import DEFAULTS
from k2_pipelines.lib.query.validate import QueryError
from k2_pipelines.settings import bootstrap_servers

Fresh = bool | Literal["strict"]
FRESH_KEY = b"k2.fresh"
TAIL_LIMITS = Limits(max_messages=500_000, max_bytes=128 << 20, max_seconds=5.0)
KAFKA_TIMEOUT_SECONDS = 2.0  # a broker that does not answer in this long is down, for a query
MAX_READERS = 8


class TailUnavailable(QueryError):
    """fresh="strict" and the tail could not be read."""


class TailWarning(UserWarning):
    """A fresh read returned the snapshot's rows only: the tail could not be read."""


@dataclass(frozen=True)
class Freshness:
    """What a fresh result holds, kept in its schema metadata (`result_freshness`)."""
    topic: str
    snapshot_id: int | None  # the snapshot whose rows the result holds, and whose offsets the tail starts at
    tail_from: dict[int, int]  # partition -> first offset of the tail
    tail_to: dict[int, int]  # partition -> the offset after the tail's last message
    complete: bool  # the tail reached each partition's end as it was when read (else a limit stopped it)
    tail_messages: int
    tail_rows: int  # rows of the result from the tail (for bars: the tail's trades in the range)
    table_rows: int  # rows of the result from the snapshot (for bars: its trades in the bars)
    warning: str | None = None  # why the tail is missing, if it is


@dataclass(frozen=True)
class Tail:
    target: DrainTarget
    snapshot_id: int | None
    tail_from: dict[int, int]
    tail_to: dict[int, int]
    complete: bool
    messages: int
    rows: pa.Table  # in the table's Arrow schema: what a drain to `tail_to` would commit
    warning: str | None = None

    def freshness(self, tail_rows: int, table_rows: int) -> Freshness:
        return Freshness(self.target.topic, self.snapshot_id, self.tail_from, self.tail_to, self.complete,
                         self.messages, tail_rows, table_rows, self.warning)


def fresh_mode(fresh: Fresh) -> Fresh:
    if fresh not in (False, True, "strict"):
        raise QueryError(f"fresh is true, false or 'strict', not {fresh!r:.40}")
    return fresh


def read_tail(catalog: Catalog, table: Table, name: str, fresh: Fresh, limits: Limits = TAIL_LIMITS) -> Tail:
    """The tail of the topic drained into `table` (as loaded: its current snapshot), beyond that snapshot's offsets."""
    target = _target(table, name)
    snapshot = table.current_snapshot()
    snapshot_id = snapshot.snapshot_id if snapshot else None
    checkpoint = stored_checkpoint(table, target.topic)
    empty = table.schema().as_arrow().empty_table()
    try:
        with _reader(target) as reader:
            batch = reader.read(checkpoint.offsets, limits)
    except (KafkaException, OffsetsOutOfRange) as error:
        reason = f"{target.topic} could not be read ({error}): the result holds {table.name()[-1]} as of " \
                 f"snapshot {snapshot_id} only"
        if fresh == "strict":
            raise TailUnavailable(reason) from None
        warnings.warn(reason, TailWarning, stacklevel=4)
        return Tail(target, snapshot_id, checkpoint.offsets, checkpoint.offsets, False, 0, empty, reason)
    rows = empty
    if len(batch):
        state = symbol_state(catalog, target.topic, checkpoint)
        rows = sort_batch(catalog, table, target, batch, default_registry(), state, DEFAULTS).landed
    complete = all(batch.end[p] >= batch.high_watermarks[p] for p in batch.end)
    return Tail(target, snapshot_id, batch.start, batch.end, complete, len(batch), rows)


def tail_rows_in(result: pa.Table, tail: pa.Table, id_column: str) -> int:
    """How many rows of `result` came from the tail (keys are unique across the two sides: the tail is deduped)."""
    if not tail.num_rows or not result.num_rows:
        return 0
    found = pc.is_in(record_keys(result, id_column), value_set=record_keys(tail, id_column))
    return int(pc.sum(found).as_py() or 0)


def with_freshness(result: pa.Table, freshness: Freshness) -> pa.Table:
    return result.replace_schema_metadata({**(result.schema.metadata or {}),
                                           FRESH_KEY: json.dumps(asdict(freshness)).encode()})


def result_freshness(result: pa.Table) -> Freshness | None:
    """What a fresh result holds (None: not a fresh read)."""
    value = (result.schema.metadata or {}).get(FRESH_KEY)
    if value is None:
        return None
    fields = json.loads(value)
    for key in ("tail_from", "tail_to"):
        fields[key] = {int(partition): offset for partition, offset in fields[key].items()}
    return Freshness(**fields)


def _target(table: Table, name: str) -> DrainTarget:
    """The drain target of the topic the table's newest checkpoint names (K2's default topic: never drained)."""
    newest = newest_checkpoint(table)
    topic = newest[0] if newest else Topics.trades if name == "trades" else Topics.quotes
    return trades_target(topic) if name == "trades" else quotes_target(topic)


class _SharedReader:
    """One consumer per topic for the process's fresh reads, used by one query at a time."""

    def __init__(self, target: DrainTarget):
        config = {"group.id": f"k2.fresh.{target.table.name}",  # never committed: a fresh read is nobody's position
                  "socket.timeout.ms": int(KAFKA_TIMEOUT_SECONDS * 1000),
                  # a broker that is down is reported once, by the query's warning or error, not by librdkafka's
                  # reconnect lines on stderr
                  "log_level": 0}
        self.reader = reader_for(bootstrap_servers(), target, **config)
        self.reader.timeout = KAFKA_TIMEOUT_SECONDS
        self.lock = threading.Lock()

    def __enter__(self) -> TopicReader:
        self.lock.acquire()
        return self.reader

    def __exit__(self, *_: object) -> None:
        self.lock.release()


_readers: dict[tuple[str, str], _SharedReader] = {}
_readers_lock = threading.Lock()


def _reader(target: DrainTarget) -> _SharedReader:
    key = (bootstrap_servers(), target.topic)
    with _readers_lock:
        if key not in _readers:
            if len(_readers) >= MAX_READERS:  # the oldest goes: a process reads the tails of a few topics
                oldest = _readers.pop(next(iter(_readers)))
                with oldest:
                    oldest.reader.close()
            _readers[key] = _SharedReader(target)
        return _readers[key]


@atexit.register
def _close_readers() -> None:
    with _readers_lock:
        for shared in _readers.values():
            shared.reader.close()
        _readers.clear()
