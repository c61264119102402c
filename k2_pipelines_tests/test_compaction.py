"""Compaction of real tables made by real drains (and by drain-sized appends), alone and racing other writers."""

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.schema import Schema
from pyiceberg.table import ALWAYS_TRUE
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.types import LongType, NestedField, StringType

from k2_pipelines.cli.bench.generated import COMPACT_START, append_micro_batch, generated_trades
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.drain.checkpoint import checkpoint_properties, stored_checkpoint
from k2_pipelines.lib.drain.drain import drain_once, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.summary import UPKEEP_OPERATION
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.iceberg.writes import Replacement, conform, replace_atomically, write_rows
from k2_pipelines.lib.upkeep import compaction
from k2_pipelines.lib.upkeep.compaction import ContentMismatch, compact_table, content_checksum, plan_bins
from k2_pipelines_tests.commit_hooks import after_planning
from k2_pipelines_tests.kafka_helpers import drain_all, replay_session, table_ids

TOPIC = "test.trades.generated"


def _append_days(catalog, days: int, batches_per_day: int, rows: int, seed: int = 1) -> None:
    """Drain-sized appends (one file and one commit each, with checkpoint properties) over `days` UTC days; ids
    are unique per seed."""
    rng = np.random.default_rng(seed)
    for day in range(days):
        for batch in range(batches_per_day):
            number = day * batches_per_day + batch
            start = COMPACT_START + timedelta(days=day, hours=batch)
            trades = generated_trades(rng, rows, start, 3_600, seed * 10**7 + number * rows)
            checkpoint = checkpoint_properties(TOPIC, {0: (number + 1) * rows}, 0, f"run-{number}")
            append_micro_batch(catalog, TRADES.identifier, trades, checkpoint)


def _content(catalog, row_filter=ALWAYS_TRUE) -> pa.Table:
    rows = catalog.load_table(TRADES.identifier).scan(row_filter=row_filter).to_arrow()
    return rows.sort_by([("symbol", "ascending"), ("trade_id", "ascending")])


def _live_paths(table) -> set[str]:
    return {task.file.file_path for task in table.scan().plan_files()}


def _files_on_disk(table) -> set[Path]:
    return set((Path(urlparse(table.location()).path) / "data").rglob("*.parquet"))


def _unreferenced(table) -> set[Path]:
    """Data files on disk that no snapshot lists: what a writer left behind."""
    return _files_on_disk(table) - {Path(urlparse(path).path) for path in
                                    table.inspect.all_data_files().column("file_path").to_pylist()}


def _day_filter(day: int):
    start = COMPACT_START + timedelta(days=day)
    return And(EqualTo("exchange", "BINANCE"), And(GreaterThanOrEqual("timestamp", start.isoformat()),
                                                   LessThan("timestamp", (start + timedelta(days=1)).isoformat())))


def _assert_files_sorted(paths: set[str]) -> None:
    for path in paths:
        keys = pq.read_table(urlparse(path).path, columns=["symbol", "timestamp"])
        assert keys.equals(keys.sort_by([("symbol", "ascending"), ("timestamp", "ascending")])), path


def test_thirty_drain_batches_compact_to_a_few_sorted_files_with_the_same_rows(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 8_000, set())
    target = trades_target(topics.trades)
    drains = [r for r in drain_all(kafka_broker, target, Limits(max_messages=80)) if r.messages]
    assert len(drains) >= 30
    table = catalog.load_table(TRADES.identifier)
    before, files_before = _content(catalog), _live_paths(table)

    result = compact_table(catalog, TRADES.identifier)

    table = catalog.load_table(TRADES.identifier)
    after, files_after = _content(catalog), _live_paths(table)
    assert after.equals(before) and after.num_rows == counts["trades"]
    assert len(files_before) == result.files_before >= 30
    assert len(files_after) == result.files_after == result.files_written == result.partitions_compacted
    assert result.files_after <= len(files_before) // 10 and not files_after & files_before
    assert result.files_rewritten == len(files_before) and result.rows == before.num_rows
    # every file was rewritten, so the checksum is that of the whole table as scanned here
    assert result.checksum_before == result.checksum_after == f"{content_checksum(before):016x}"
    _assert_files_sorted(files_after)
    assert table.current_snapshot().snapshot_id == result.snapshot_id
    assert table.current_snapshot().summary[UPKEEP_OPERATION] == "compact"
    checkpoint = stored_checkpoint(table, topics.trades)  # found past the compaction's snapshot
    assert checkpoint.offsets == drains[-1].offsets_to and checkpoint.snapshot_id == drains[-1].snapshot_after


def test_a_dry_run_reports_the_plan_and_changes_nothing(catalog):
    _append_days(catalog, days=2, batches_per_day=6, rows=300)
    table = catalog.load_table(TRADES.identifier)
    files, on_disk = _live_paths(table), _files_on_disk(table)

    result = compact_table(catalog, TRADES.identifier, dry_run=True)

    after = catalog.load_table(TRADES.identifier)
    assert after.current_snapshot().snapshot_id == table.current_snapshot().snapshot_id
    assert _live_paths(after) == files and _files_on_disk(after) == on_disk
    assert result.dry_run and result.snapshot_id is None and result.commit_attempts == 0
    assert (result.files_before, result.files_after, result.bytes_after) == (12, 12, result.bytes_before)
    assert (result.files_rewritten, result.files_written, result.files_planned, result.partitions_compacted) == (
        12, 2, 2, 2)
    assert result.rows == 12 * 300


def test_bins_hold_small_files_of_one_partition_up_to_the_target(catalog):
    _append_days(catalog, days=2, batches_per_day=8, rows=300)
    _append_days(catalog, days=1, batches_per_day=1, rows=6_000, seed=2)  # one file already large enough
    tasks = list(catalog.load_table(TRADES.identifier).scan().plan_files())
    sizes = sorted(task.file.file_size_in_bytes for task in tasks)
    target = 3 * sizes[len(sizes) // 2] + 1  # about three small files per bin
    large = [t.file.file_path for t in tasks if t.file.file_size_in_bytes >= 0.75 * target]
    assert len(large) == 1

    bins = plan_bins(tasks, target)

    assert all(len(b.inputs) > 1 for b in bins) and len(bins) >= 4
    assert all(sum(t.file.file_size_in_bytes for t in b.inputs) <= target for b in bins)
    assert all({t.file.partition for t in b.inputs} == {b.partition} for b in bins)
    planned = [t.file.file_path for b in bins for t in b.inputs]
    assert len(planned) == len(set(planned)) and not set(large) & set(planned)

    before = _content(catalog)
    result = compact_table(catalog, TRADES.identifier, target_file_bytes=target)
    assert result.files_written == len(bins) and result.files_after == len(tasks) - len(planned) + len(bins)
    assert _content(catalog).equals(before)


def test_files_are_written_in_the_tables_own_sort_order(catalog):
    schema = Schema(NestedField(1, "k", LongType(), required=False), NestedField(2, "v", StringType(), required=False))
    table = catalog.create_table("market_data.sorted_scratch", schema=schema, sort_order=SortOrder(
        SortField(source_id=1, direction=SortDirection.DESC, null_order=NullOrder.NULLS_LAST)))
    for batch in ([3, None, 1], [7, 2, None], [5, 9, 4]):
        table.append(pa.table({"k": pa.array(batch, pa.int64()), "v": pa.array([str(k) for k in batch])}))

    result = compact_table(catalog, "market_data.sorted_scratch")

    [path] = _live_paths(catalog.load_table("market_data.sorted_scratch"))
    assert result.files_written == 1 and result.rows == 9
    assert pq.read_table(urlparse(path).path).column("k").to_pylist() == [9, 7, 5, 4, 3, 2, 1, None, None]


def test_rows_written_unlike_those_read_are_refused_and_nothing_is_left(catalog, monkeypatch):
    _append_days(catalog, days=1, batches_per_day=5, rows=200)
    table = catalog.load_table(TRADES.identifier)
    on_disk = _files_on_disk(table)
    write = compaction.write_data_files
    monkeypatch.setattr(compaction, "write_data_files",
                        lambda metadata, io, rows, *args: write(metadata, io, rows.slice(1), *args))  # a row lost

    with pytest.raises(ContentMismatch):
        compact_table(catalog, TRADES.identifier)

    after = catalog.load_table(TRADES.identifier)
    assert after.current_snapshot().snapshot_id == table.current_snapshot().snapshot_id
    assert _files_on_disk(after) == on_disk


def test_a_drain_committing_first_loses_and_duplicates_nothing(kafka_broker, catalog, tmp_path, monkeypatch):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 6_000, set())
    target = trades_target(topics.trades)
    reader = reader_for(kafka_broker.bootstrap, target)
    for _ in range(12):
        drain_once(load_k2_catalog(), reader, target, default_registry(), Limits(max_messages=100))
    ids_before = table_ids(catalog, target)
    racing = []

    def drain_a_batch() -> None:
        if not racing:  # between the compaction's plan and its commit, a drain commits a batch
            racing.append(drain_once(load_k2_catalog(), reader, target, default_registry(), Limits(max_messages=100)))

    monkeypatch.setattr(compaction, "commit", after_planning(drain_a_batch))
    result = compact_table(catalog, TRADES.identifier)

    [drained] = racing
    assert drained.rows_written and result.commit_attempts == 2 and result.files_rewritten >= 12
    table = catalog.load_table(TRADES.identifier)
    assert table.snapshot_by_id(result.snapshot_id).parent_snapshot_id == drained.snapshot_after
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == len(ids_before) + drained.rows_written and set(ids_before) <= set(ids)
    checkpoint = stored_checkpoint(table, topics.trades)
    assert checkpoint.offsets == drained.offsets_to and checkpoint.snapshot_id == drained.snapshot_after

    rest = drain_all(kafka_broker, target)
    assert rest[0].offsets_from == drained.offsets_to
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"]
    reader.close()


def test_a_bin_whose_files_a_reload_replaced_is_dropped_and_the_reload_kept(catalog, monkeypatch):
    _append_days(catalog, days=2, batches_per_day=5, rows=400)
    reload = generated_trades(np.random.default_rng(9), 700, COMPACT_START, 86_000, 10_000_000)
    day_two = _content(catalog, _day_filter(1))
    reloaded = []

    def reload_day_one() -> None:
        if not reloaded:  # between the compaction's plan and its commit, day one is loaded again
            files = write_rows(catalog, TRADES.identifier, reload)
            reloaded.append(replace_atomically(catalog, [Replacement(TRADES.identifier, files, _day_filter(0))],
                                               {"k2.run-id": "reload"}))

    monkeypatch.setattr(compaction, "commit", after_planning(reload_day_one))
    result = compact_table(catalog, TRADES.identifier)

    assert result.commit_attempts == 2 and result.snapshot_id is not None
    assert (result.partitions_compacted, result.files_rewritten, result.files_written) == (1, 5, 1)
    assert result.rows == day_two.num_rows
    day_one = _content(catalog, _day_filter(0))
    assert day_one.equals(conform(reload, day_one.schema).sort_by([("symbol", "ascending"), ("trade_id", "ascending")]))
    assert _content(catalog, _day_filter(1)).equals(day_two)
    assert _content(catalog).num_rows == reload.num_rows + day_two.num_rows
    table = catalog.load_table(TRADES.identifier)
    assert len(_live_paths(table)) == 2  # the reload's file and the compacted day two
    assert not _unreferenced(table)  # the dropped bin's file was deleted
