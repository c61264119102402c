"""Dead letters of a topic decoded again, the way the drain decodes, and the ones that now decode landed.

A message becomes a dead letter when its value cannot be a row yet or ever (lib/drain/decode.py): its schema id is
not in the registry (a producer registered a schema the registry K2 reads does not have yet), its body is not
Avro, it names another record, or a value does not fit the table; or when its row breaks a row rule
(lib/quality/rules.py). Once the cause is fixed (the schema is there, the table widened, a threshold or the
reference data corrected) a replay decodes them again with the same code and applies the same rules. Rows that
decode are deduplicated as the drain does (in the batch, then against committed and quarantined rows: replays.py)
and appended; the dead letters that landed, or repeat such a row, are deleted; the rest stay as they were. Rows and
deletions are one atomic commit.

The main table's snapshot carries the drain's checkpoint forward (same offsets and sequences, id ceilings raised
to the replayed ids in the state table, in the same commit), so that the next drain's dedupe sees the replayed
rows. A drain committing meanwhile makes the compare-and-set fail, and the replay is planned again from the new
checkpoint.
"""

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In, Or
from pyiceberg.table import Table, Transaction

from k2_pipelines.lib.avro.registry import Registry
from k2_pipelines.lib.drain.checkpoint import (
    Checkpoint,
    SymbolState,
    keep_position,
    next_checkpoint,
    state_files,
    state_transaction,
    stored_checkpoint,
    symbol_state,
)
from k2_pipelines.lib.drain.decode import decode_batch
from k2_pipelines.lib.drain.drain import DrainTarget, set_aside
from k2_pipelines.lib.drain.kafka_batch import KafkaBatch
from k2_pipelines.lib.drain.replays import ceilings_after, id_numbers, quarantined, repeats
from k2_pipelines.lib.drain.sequences import first_occurrences, record_keys
from k2_pipelines.lib.iceberg.commit import commit, new_transaction
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID
from k2_pipelines.lib.iceberg.tables import DEAD_LETTERS, QUARANTINE
from k2_pipelines.lib.iceberg.writes import append_files, write_rows
from k2_pipelines.lib.quality.thresholds import DEFAULTS, Thresholds


@dataclass
class ReplayResult:
    topic: str
    table: str
    run_id: str
    dry_run: bool
    dead_letters_seen: int = 0
    landed: int = 0
    duplicates: int = 0  # decoded, but repeating a committed or quarantined row or another dead letter: deleted
    still_dead: int = 0
    still_dead_by_class: dict[str, int] = field(default_factory=dict)
    snapshot_after: int | None = None  # the main table's
    commit_attempts: int = 0
    seconds: float = 0.0


@dataclass
class _Plan:
    checkpoint: Checkpoint
    state: SymbolState
    rows: pa.Table  # to append
    numbers: np.ndarray  # their id numbers
    resolved: pa.Table  # (partition, offset) of the dead letters to delete: landed or duplicates


def _as_batch(letters: pa.Table) -> KafkaBatch:
    """Dead letters as the batch they were read in: their raw values back to back."""
    values = letters.column("value").to_pylist()
    lengths = np.fromiter((len(v or b"") for v in values), dtype=np.int64, count=len(values))
    ends = np.cumsum(lengths)
    return KafkaBatch(np.frombuffer(b"".join(filter(None, values)), dtype=np.uint8), ends - lengths, ends,
                      np.flatnonzero([v is None for v in values]), letters.column("key").combine_chunks(),
                      letters.column("partition").to_numpy(), letters.column("offset").to_numpy(), {}, {}, {})


def _plan(catalog: Catalog, main: Table, dead_letters: Table, target: DrainTarget, registry: Registry,
          thresholds: Thresholds, result: ReplayResult) -> _Plan:
    checkpoint = stored_checkpoint(main, target.topic)
    state = symbol_state(catalog, target.topic, checkpoint)
    quarantine = catalog.load_table(QUARANTINE.identifier)
    letters = dead_letters.scan(row_filter=EqualTo("topic", target.topic),
                                selected_fields=("partition", "offset", "key", "value")).to_arrow() \
        .sort_by([("partition", "ascending"), ("offset", "ascending")])  # arrival order per partition
    decoded = decode_batch(_as_batch(letters), registry, main.schema().as_arrow(), target.record_name)
    kept, broken = set_aside(catalog, target, decoded.rows, thresholds)  # a row rule still broken keeps it dead
    rows, positions = decoded.rows.filter(pa.array(kept)), decoded.positions[kept]
    keys, numbers = record_keys(rows, target.id_column), id_numbers(rows, target.id_column)
    landing = first_occurrences(keys) & ~repeats(main, rows, keys, numbers, target.id_column, state.ceilings) \
        & ~quarantined(quarantine, target.table.identifier, rows, numbers, target.id_column, state.ceilings)
    still_dead = Counter([error_class for _, _, error_class, _ in decoded.dead] + [rule for _, rule, _ in broken])
    result.dead_letters_seen, result.landed = letters.num_rows, int(landing.sum())
    result.duplicates, result.still_dead = rows.num_rows - result.landed, sum(still_dead.values())
    result.still_dead_by_class = dict(sorted(still_dead.items()))
    landed = rows if landing.all() else rows.filter(pa.array(landing))
    return _Plan(checkpoint, state, landed, numbers[landing],
                 letters.select(["partition", "offset"]).take(pa.array(positions, pa.int64())))


def _among(resolved: pa.Table, topic: str) -> BooleanExpression:
    """A filter for exactly these dead letters of the topic: per partition, their offsets."""
    partitions = resolved.column("partition")
    return And(EqualTo("topic", topic), reduce(Or, [
        And(EqualTo("partition", p),
            In("offset", resolved.column("offset").filter(pc.equal(partitions, p)).to_pylist()))
        for p in pc.unique(partitions).to_pylist()]))


def _snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def replay_dead_letters(catalog: Catalog, target: DrainTarget, registry: Registry, run_id: str,
                        dry_run: bool = False, thresholds: Thresholds = DEFAULTS) -> ReplayResult:
    started = time.perf_counter()
    result = ReplayResult(target.topic, target.table.identifier, run_id, dry_run)

    def plan_commit(attempt: int) -> list[Transaction] | None:
        main, dead_letters = catalog.load_table(target.table.identifier), catalog.load_table(DEAD_LETTERS.identifier)
        plan = _plan(catalog, main, dead_letters, target, registry, thresholds, result)
        result.snapshot_after = _snapshot_id(main)
        if dry_run or not plan.resolved.num_rows:
            return None
        result.commit_attempts = attempt
        transactions = [new_transaction(dead_letters)]
        transactions[0].delete(delete_filter=_among(plan.resolved, target.topic),
                               snapshot_properties={DRAIN_RUN_ID: run_id})
        if plan.rows.num_rows:
            transactions.append(new_transaction(main))
            after = next_checkpoint(target.topic, plan.checkpoint.offsets, run_id, plan.checkpoint, plan.state,
                                    plan.state.sequences, ceilings_after(plan.rows, plan.numbers, plan.state.ceilings))
            append_files(transactions[1], write_rows(catalog, target.table.identifier, plan.rows), after.properties)
            keep_position(transactions[1], target.topic, after)
            state_changes = state_transaction(catalog, target.topic, after, state_files(catalog, after), run_id)
            transactions += [state_changes] if state_changes else []
        return transactions

    committed = commit(catalog, plan_commit, "planning the replay again")
    if committed and result.table in committed.tables:  # rows landed, not only dead letters deleted
        result.snapshot_after = committed.snapshot_id(result.table)
    result.seconds = time.perf_counter() - started
    return result
