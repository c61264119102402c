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
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaException
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2_pipelines.lib.avro.registry import RegistryUnavailable, default_registry
from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.drain.checkpoint import Checkpoint, newest_drained_topic, stored_checkpoint, symbol_state
from k2_pipelines.lib.drain.drain import DrainTarget, quotes_target, reader_for, sort_batch, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits, OffsetsOutOfRange
from k2_pipelines.lib.drain.sequences import record_keys
from k2_pipelines.lib.quality.thresholds import DEFAULTS
from k2_pipelines.lib.query.validate import QueryError
from k2_pipelines.settings import bootstrap_servers

Fresh = bool | Literal["strict"]
FRESH_KEY = b"k2.fresh"
TAIL_LIMITS = Limits(max_messages=250_000, max_bytes=64 << 20, max_seconds=5.0)  # held in memory, per topic
KAFKA_TIMEOUT_SECONDS = 2.0  # a broker that does not answer in this long is down, for a query
MAX_READERS = 8
MAX_CHUNKS = 32
RETRY_SECONDS = 5.0  # after a failed read, queries of the topic get the warning at once for this long


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
    seen: pa.Array = field(default_factory=lambda: pa.array([], pa.binary()))  # keys of the tail's new rows so far,
    # set-aside ones too (a drain drops a later copy of them as a duplicate)
    value_bytes: int = 0

    def freshness(self, tail_rows: int, table_rows: int) -> Freshness:
        return Freshness(self.target.topic, self.snapshot_id, self.tail_from, self.tail_to, self.complete,
                         self.messages, tail_rows, table_rows, self.warning)


class _Unreadable(RuntimeError):
    """The tail cannot be read now (the reason is the message)."""


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
    try:
        return _reader(target).tail(catalog, table, snapshot_id, checkpoint, limits)
    except _Unreadable as error:
        reason = f"{target.topic} could not be read ({error}): the result holds {table.name()[-1]} as of " \
                 f"snapshot {snapshot_id} only"
        if fresh == "strict":
            raise TailUnavailable(reason) from None
        warnings.warn(reason, TailWarning, stacklevel=4)
        return Tail(target, snapshot_id, checkpoint.offsets, checkpoint.offsets, False, 0,
                    table.schema().as_arrow().empty_table(), reason)


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
    topic = newest_drained_topic(table) or (Topics.trades if name == "trades" else Topics.quotes)
    return trades_target(topic) if name == "trades" else quotes_target(topic)


class _TopicTail:
    """One consumer per topic for the process's fresh reads, used by one query at a time, and the tail it read last:
    while the table's snapshot stays, the next query reads only the messages produced since, and sorts them out
    against the tail so far as a drain of the whole tail would (a drain's commit starts the tail again)."""

    def __init__(self, target: DrainTarget):
        config = {"group.id": f"k2.fresh.{target.table.name}",  # never committed: a fresh read is nobody's position
                  "socket.timeout.ms": int(KAFKA_TIMEOUT_SECONDS * 1000),
                  # a broker that is down is reported once, by the query's warning or error, not by librdkafka's
                  # reconnect lines on stderr
                  "log_level": 0}
        self.target = target
        self.reader = reader_for(bootstrap_servers(), target, **config)
        self.reader.timeout = KAFKA_TIMEOUT_SECONDS
        self.registry = default_registry(KAFKA_TIMEOUT_SECONDS)
        self.lock = threading.Lock()
        self.closed = False
        self.last: Tail | None = None
        self.last_key: tuple | None = None  # what the last tail was read against
        self.failed: tuple[float, str] | None = None  # when the last read failed, and why

    def tail(self, catalog: Catalog, table: Table, snapshot_id: int | None, checkpoint: Checkpoint,
             limits: Limits) -> Tail:
        # a query waits for another's read of the topic at most this long
        if not self.lock.acquire(timeout=limits.max_seconds + 2 * KAFKA_TIMEOUT_SECONDS):
            raise _Unreadable("other fresh reads of the topic are taking too long")
        try:
            if self.closed:
                raise _Unreadable("its reader was closed")
            if self.failed and time.monotonic() - self.failed[0] < RETRY_SECONDS:  # no wait on a known outage
                raise _Unreadable(self.failed[1])
            try:
                return self._extended(catalog, table, snapshot_id, checkpoint, limits)
            except (KafkaException, OffsetsOutOfRange, RegistryUnavailable) as error:
                self.failed = (time.monotonic(), str(error))
                raise _Unreadable(str(error)) from None
            finally:
                self.reader.release()  # no fetching while no query reads (nor errors queued for the next one)
        finally:
            self.lock.release()

    def _extended(self, catalog: Catalog, table: Table, snapshot_id: int | None, checkpoint: Checkpoint,
                  limits: Limits) -> Tail:
        key = (table.metadata.table_uuid, table.schema().schema_id, snapshot_id, checkpoint.offsets)
        last = self.last if self.last_key == key else None
        budget = replace(limits, max_messages=max(limits.max_messages - (last.messages if last else 0), 0),
                         max_bytes=max(limits.max_bytes - (last.value_bytes if last else 0), 0))
        batch = self.reader.read(last.tail_to if last else checkpoint.offsets, budget)
        rows = last.rows if last else table.schema().as_arrow().empty_table()
        seen = last.seen if last else pa.array([], pa.binary())
        if len(batch):
            state = symbol_state(catalog, self.target.topic, checkpoint)
            sorted_out = sort_batch(catalog, table, self.target, batch, self.registry, state, DEFAULTS)
            keys = record_keys(sorted_out.rows, self.target.id_column)
            new = ~pc.is_in(keys, value_set=seen).to_numpy(zero_copy_only=False)
            rows = _compact(pa.concat_tables([rows, sorted_out.rows.filter(pa.array(new & sorted_out.kept))]))
            seen = pa.concat_arrays([seen, keys.filter(pa.array(new))])
        complete = all(batch.end[p] >= batch.high_watermarks[p] for p in batch.end)
        self.failed, self.last_key = None, key
        self.last = Tail(self.target, snapshot_id, last.tail_from if last else batch.start, batch.end, complete,
                         (last.messages if last else 0) + len(batch), rows, seen=seen,
                         value_bytes=(last.value_bytes if last else 0) + int(batch.data.size))
        return self.last

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.reader.close()


def _compact(rows: pa.Table) -> pa.Table:
    """A tail extended query after query would end up in thousands of small chunks, each a scan step for DuckDB."""
    return rows.combine_chunks() if rows.num_columns and rows.column(0).num_chunks > MAX_CHUNKS else rows


_readers: dict[tuple[str, str], _TopicTail] = {}
_readers_lock = threading.Lock()


def _reader(target: DrainTarget) -> _TopicTail:
    key = (bootstrap_servers(), target.topic)
    with _readers_lock:
        evicted = None
        if key not in _readers:
            if len(_readers) >= MAX_READERS:  # the oldest goes: a process reads the tails of a few topics
                evicted = _readers.pop(next(iter(_readers)))
            _readers[key] = _TopicTail(target)
        reader = _readers[key]
    if evicted is not None:  # once its query, if any, is done; a query that got it meanwhile finds it closed
        evicted.close()
    return reader


@atexit.register
def _close_readers() -> None:
    """Close the process's consumers of fresh reads, forgetting the tails they read."""
    with _readers_lock:
        readers = list(_readers.values())
        _readers.clear()
    for reader in readers:
        reader.close()
