"""One exactly-once micro-batch from a Kafka topic into an Iceberg table.

1. Start from the offsets stored in the table's newest drain snapshot (not from Kafka's group offsets), and the
   symbols' state at that checkpoint (checkpoint.py).
2. Read a bounded batch, decode it in bulk; bad messages become dead letters, duplicates (and repeats of
   quarantined rows) are dropped, sequence breaks are recorded.
3. Write the data files (rows, dead letters, sequence breaks, the symbols' changed state), then commit them in one
   catalog transaction whose snapshot of the main table stores the batch's end offsets. The commit is a
   compare-and-set: if any table moved meanwhile, the stored checkpoint is read again; if another writer committed
   one (a drain this range, a replay or quarantine the state), the batch is abandoned (its files are orphans for
   cleanup) and planned again from it; if not, the commit is planned again.
4. Only then commit the consumer group's offsets, for lag monitoring.
"""

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction

from k2_pipelines.lib.avro.registry import Registry
from k2_pipelines.lib.drain.checkpoint import (
    Checkpoint,
    NextCheckpoint,
    SymbolState,
    keep_position,
    next_checkpoint,
    state_files,
    state_transaction,
    stored_checkpoint,
    symbol_state,
)
from k2_pipelines.lib.drain.decode import decode_batch
from k2_pipelines.lib.drain.kafka_batch import KafkaBatch, Limits, TopicReader
from k2_pipelines.lib.drain.replays import ceilings_after, id_numbers, quarantined, repeats
from k2_pipelines.lib.drain.sequences import Break, SequenceRules, classify, first_occurrences, record_keys
from k2_pipelines.lib.iceberg.catalog import load_table
from k2_pipelines.lib.iceberg.commit import commit, new_transaction
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID
from k2_pipelines.lib.iceberg.tables import DEAD_LETTERS, QUARANTINE, QUOTES, SEQUENCE_GAPS, TRADES, TableDefinition
from k2_pipelines.lib.iceberg.writes import append_files, write_rows
from k2_pipelines.lib.quality.rules import broken_rows, listings, write_rules
from k2_pipelines.lib.quality.thresholds import DEFAULTS, Thresholds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainTarget:
    table: TableDefinition
    topic: str
    record_name: str  # the Avro record the topic carries
    id_column: str
    rules: SequenceRules


def trades_target(topic: str) -> DrainTarget:
    return DrainTarget(TRADES, topic, "TradeV2", "trade_id", SequenceRules(track_gaps=True))


def quotes_target(topic: str) -> DrainTarget:
    return DrainTarget(QUOTES, topic, "QuoteV2", "quote_id", SequenceRules(track_gaps=False))


class DrainAbandoned(RuntimeError):
    """Another writer committed a checkpoint first (a drain this range, or a replay or quarantine the symbols'
    state); nothing of this batch was committed, and it is planned again from the new checkpoint."""


@dataclass
class DrainResult:
    topic: str
    table: str
    run_id: str
    offsets_from: dict[int, int] = field(default_factory=dict)
    offsets_to: dict[int, int] = field(default_factory=dict)
    lag_after: dict[int, int] = field(default_factory=dict)
    messages: int = 0
    rows_written: int = 0
    rows_by_symbol: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)  # by error class
    set_aside: Counter = field(default_factory=Counter)  # of dead_letters: rows that broke a row rule, by rule
    duplicates_in_batch: int = 0
    duplicates_committed: int = 0
    quarantined_repeats: int = 0  # rows repeating rows a quarantine took out of the table: dropped, not written back
    breaks: Counter = field(default_factory=Counter)  # by kind
    resumed_from_group: dict[int, int] = field(default_factory=dict)  # the position was lost: read from these
    snapshot_before: int | None = None
    snapshot_after: int | None = None
    commit_attempts: int = 0
    seconds: float = 0.0


def group_id(target: DrainTarget) -> str:
    """The consumer group whose committed offsets serve lag monitoring only (drains read from Iceberg's)."""
    return f"k2.drain.{target.table.name}"


def group_position(reader: TopicReader) -> dict[int, int]:
    """Where the drain's group is (empty if it never committed): where a drain resumes if its checkpoint is truly
    gone (expired with its table's properties, say). The group commits after each Iceberg commit, so it is never
    ahead of the table; the messages it is behind are read again and dropped as duplicates."""
    return {p: o for p, o in reader.committed(sorted(reader.watermarks())).items() if o is not None}


def reader_for(bootstrap: str, target: DrainTarget, **config: Any) -> TopicReader:
    return TopicReader(Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group_id(target),
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",  # every read starts at an explicit offset; one the broker lost is an error
        # a full prefetch queue pauses fetching for fetch.queue.backoff.ms (default 1 s) while the drain empties it
        # in far less (measured: 1.2M instead of 400k messages/s read)
        "fetch.queue.backoff.ms": 10,
        "queued.max.messages.kbytes": 16384,  # the prefetch queue stays small beside the batch
        # partitions at their end keep no fetch waiting at the broker, which would hold up metadata requests
        "fetch.wait.max.ms": 10,
        **config,
    }), target.topic)


def _where(rows: pa.Table, mask: np.ndarray) -> pa.Table:
    """The rows where mask is true (no copy when it is true everywhere)."""
    return rows if mask.all() else rows.filter(pa.array(mask))


def _dead_letter_rows(batch: KafkaBatch, target: DrainTarget, dead: list, run_id: str, now_us: int) -> pa.Table:
    positions = [position for position, *_ in dead]
    return pa.table({
        "topic": pa.array([target.topic] * len(dead)),
        "partition": pa.array(batch.partitions[positions] if dead else [], pa.int32()),
        "offset": pa.array(batch.offsets[positions] if dead else [], pa.int64()),
        "key": batch.keys.take(pa.array(positions, pa.int64())),
        "value": pa.array([batch.value(p) for p in positions], pa.binary()),
        "schema_id": pa.array([schema_id for _, schema_id, _, _ in dead], pa.int32()),
        "error_class": pa.array([error_class for _, _, error_class, _ in dead], pa.string()),
        "error_message": pa.array([message for _, _, _, message in dead], pa.string()),
        "run_id": pa.array([run_id] * len(dead)),
        "dead_lettered_at": pa.array([now_us] * len(dead), pa.timestamp("us", tz="UTC")),
    })


def _break_rows(breaks: list[Break], target: DrainTarget, exchange: dict[str, str], run_id: str,
                now_us: int) -> pa.Table:
    return pa.table({
        "table_name": pa.array([target.table.name] * len(breaks), pa.string()),
        "exchange": pa.array([exchange[b.symbol] for b in breaks], pa.string()),
        "symbol": pa.array([b.symbol for b in breaks], pa.string()),
        "kind": pa.array([b.kind for b in breaks], pa.string()),
        "from_sequence": pa.array([b.from_sequence for b in breaks], pa.int64()),
        "to_sequence": pa.array([b.to_sequence for b in breaks], pa.int64()),
        "missing": pa.array([b.missing for b in breaks], pa.int64()),
        "event_timestamp": pa.array([b.event_timestamp for b in breaks], pa.timestamp("us", tz="UTC")),
        "detected_in_run": pa.array([run_id] * len(breaks), pa.string()),
        "detected_at": pa.array([now_us] * len(breaks), pa.timestamp("us", tz="UTC")),
    })


def _commit(catalog: Catalog, target: DrainTarget, checkpoint: Checkpoint, files: dict[str, list[DataFile]],
            after: NextCheckpoint, state: list[DataFile], result: DrainResult) -> None:
    """Append every table's files in one transaction; the main table's snapshot carries the checkpoint, the state
    table the symbols' state it numbers."""

    def plan_commit(attempt: int) -> list[Transaction]:
        result.commit_attempts = attempt
        tables = {identifier: load_table(catalog, identifier) for identifier in files}
        main = tables[target.table.identifier]
        stored = stored_checkpoint(main, target.topic)
        if stored.offsets != checkpoint.offsets:
            raise DrainAbandoned(f"{target.table.identifier} already holds offsets past {checkpoint.offsets} of "
                                 f"{target.topic}: another drain committed this range")
        if stored.snapshot_id != checkpoint.snapshot_id:  # a replay or quarantine moved the symbols' state
            raise DrainAbandoned(f"{target.table.identifier}: a checkpoint of {target.topic} was committed since "
                                 "this batch read its state (a dead-letter replay or a quarantine)")
        transactions = []
        for identifier, table in tables.items():
            if identifier != target.table.identifier and not files[identifier]:
                continue
            transaction = new_transaction(table)
            if identifier == target.table.identifier:
                append_files(transaction, files[identifier], after.properties)
                keep_position(transaction, target.topic, after)
            else:
                append_files(transaction, files[identifier], {DRAIN_RUN_ID: result.run_id})
            transactions.append(transaction)
        state_changes = state_transaction(catalog, target.topic, after, state, result.run_id)
        return transactions + ([state_changes] if state_changes else [])

    committed = commit(catalog, plan_commit, "checking the stored offsets again")
    result.snapshot_after = committed.snapshot_id(target.table.identifier)


def set_aside(catalog: Catalog, target: DrainTarget, rows: pa.Table, thresholds: Thresholds
              ) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Which decoded rows keep to the row rules (mask), and (row, rule, detail) of each that breaks one."""
    broken = broken_rows(write_rules(target.table.name, target.table.schema(), target.id_column, thresholds), rows,
                         listings(catalog))
    kept = np.ones(rows.num_rows, dtype=bool)
    kept[broken.positions] = False
    return kept, list(zip(broken.positions.tolist(), broken.rules, broken.details))


@dataclass
class SortedBatch:
    """A batch sorted out as a drain commits it: the new rows, which of them keep to the row rules, the dead letters."""
    rows: pa.Table  # first occurrences of rows neither committed nor quarantined before, in batch order
    numbers: np.ndarray  # their id numbers (replays.id_numbers)
    kept: np.ndarray  # which of `rows` keep to the row rules: the rows that land
    broken: list[tuple[int, str, str]]  # (row of `rows`, rule, detail) of the others
    dead: list[tuple[int, int | None, str, str]]  # every dead letter: (position in the batch, schema id, class, why)
    duplicates_in_batch: int
    duplicates_committed: int
    quarantined_repeats: int

    @property
    def landed(self) -> pa.Table:
        return _where(self.rows, self.kept)


def sort_batch(catalog: Catalog, main: Table, target: DrainTarget, batch: KafkaBatch, registry: Registry,
               state: SymbolState, thresholds: Thresholds) -> SortedBatch:
    """Decode the batch and sort its messages out against `main` (the table as loaded, at the checkpoint `state` is
    of): new rows, duplicates, repeats of committed or quarantined rows, and dead letters."""
    decoded = decode_batch(batch, registry, main.schema().as_arrow(), target.record_name)
    rows = decoded.rows
    keys, numbers = record_keys(rows, target.id_column), id_numbers(rows, target.id_column)
    first = first_occurrences(keys)
    committed = repeats(main, rows, keys, numbers, target.id_column, state.ceilings)
    held = quarantined(load_table(catalog, QUARANTINE.identifier), target.table.identifier, rows, numbers,
                       target.id_column, state.ceilings)
    written = first & ~committed & ~held
    rows, numbers = _where(rows, written), numbers[written]
    # a row breaking a row rule is a dead letter; it still counts in the sequences and id ceilings: it arrived
    kept, broken = set_aside(catalog, target, rows, thresholds)
    positions, schema_ids = decoded.positions[written], decoded.schema_ids[written]
    dead = sorted(decoded.dead + [(int(positions[row]), int(schema_ids[row]), rule, detail)
                                  for row, rule, detail in broken])
    return SortedBatch(rows, numbers, kept, broken, dead, int((~first).sum()), int((first & committed).sum()),
                       int((first & held & ~committed).sum()))


def drain_once(catalog: Catalog, reader: TopicReader, target: DrainTarget, registry: Registry,
               limits: Limits | None = None, run_id: str | None = None, thresholds: Thresholds = DEFAULTS
               ) -> DrainResult:
    started = time.perf_counter()
    limits = limits or Limits()
    run_id = run_id or uuid.uuid4().hex
    result = DrainResult(target.topic, target.table.identifier, run_id)
    main = load_table(catalog, target.table.identifier)
    checkpoint = stored_checkpoint(main, target.topic)
    state = symbol_state(catalog, target.topic, checkpoint)
    before = main.current_snapshot()
    result.snapshot_before = before.snapshot_id if before else None
    start = checkpoint.offsets
    if not start and before is not None:  # stored nowhere: never drained, or the position lost (see group_position)
        start = result.resumed_from_group = group_position(reader)
    batch = reader.read(start, limits)
    result.offsets_from, result.offsets_to, result.lag_after = batch.start, batch.end, batch.lag_after
    result.messages = len(batch)
    if not len(batch):
        result.snapshot_after = result.snapshot_before
        result.seconds = time.perf_counter() - started
        return result

    now_us = time.time_ns() // 1000
    sorted_out = sort_batch(catalog, main, target, batch, registry, state, thresholds)
    rows, numbers, dead = sorted_out.rows, sorted_out.numbers, sorted_out.dead
    result.duplicates_in_batch, result.duplicates_committed, result.quarantined_repeats = (
        sorted_out.duplicates_in_batch, sorted_out.duplicates_committed, sorted_out.quarantined_repeats)
    sequenced = _where(rows, rows.column("source_sequence").is_valid().to_numpy(zero_copy_only=False))
    breaks, sequences = classify(
        sequenced.column("symbol").combine_chunks(), sequenced.column("source_sequence").to_numpy(),
        sequenced.column("timestamp").cast(pa.int64()).to_numpy(), state.sequences, target.rules)
    pairs = rows.group_by(["symbol", "exchange"]).aggregate([])
    exchange = dict(zip(pairs.column("symbol").to_pylist(), pairs.column("exchange").to_pylist()))

    landed = sorted_out.landed
    files = {
        target.table.identifier: write_rows(catalog, target.table.identifier, landed),
        DEAD_LETTERS.identifier: write_rows(catalog, DEAD_LETTERS.identifier,
                                            _dead_letter_rows(batch, target, dead, run_id, now_us)),
        SEQUENCE_GAPS.identifier: write_rows(catalog, SEQUENCE_GAPS.identifier,
                                             _break_rows(breaks, target, exchange, run_id, now_us)),
    }
    after = next_checkpoint(target.topic, batch.end, run_id, checkpoint, state, sequences,
                            ceilings_after(rows, numbers, state.ceilings))
    state_written = state_files(catalog, after)
    _commit(catalog, target, checkpoint, files, after, state_written, result)
    try:
        reader.consumer.commit(offsets=[TopicPartition(target.topic, p, o) for p, o in batch.end.items()],
                               asynchronous=False)
    except KafkaException as error:  # e.g. NOT_COORDINATOR while a fresh broker elects one; the rows are committed
        log.warning("%s: group offsets not committed (%s); lag reads behind until the next drain or "
                    "offset_drift.realign_group", target.topic, error)

    result.rows_written = landed.num_rows
    result.rows_by_symbol = Counter({entry["values"]: entry["counts"] for entry in
                                     landed.column("symbol").combine_chunks().value_counts().to_pylist()})
    result.dead_letters = Counter(error_class for _, _, error_class, _ in dead)
    result.set_aside = Counter(rule for _, rule, _ in sorted_out.broken)
    result.breaks = Counter(b.kind for b in breaks)
    result.seconds = time.perf_counter() - started
    return result


def drain(catalog: Catalog, reader: TopicReader, target: DrainTarget, registry: Registry, limits: Limits | None = None,
          run_id: str | None = None, thresholds: Thresholds = DEFAULTS, attempts: int = 3) -> DrainResult:
    """drain_once, starting again from the new offsets if another drain committed this range first."""
    for attempt in range(1, attempts + 1):
        try:
            return drain_once(catalog, reader, target, registry, limits, run_id, thresholds)
        except DrainAbandoned:
            if attempt == attempts:
                raise
            log.warning("another drain committed this range of %s first; draining on from its offsets", target.topic)
    raise AssertionError("unreachable")
