"""Snapshot expiry on a real catalog: drains resume where they were, rows stay, files of expired snapshots go."""

import os
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlparse

import pyarrow as pa
import pyiceberg.table.snapshots
import pytest
from pyiceberg.expressions import EqualTo
from pyiceberg.table.snapshots import ancestors_of

from k2_pipelines.lib.drain.checkpoint import checkpoint_properties, stored_checkpoint
from k2_pipelines.lib.iceberg.commit import commit_atomically
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID
from k2_pipelines.lib.iceberg.tables import REJECTS
from k2_pipelines.lib.iceberg.writes import append_files, replace_atomically, replacement, write_rows
from k2_pipelines.lib.query.plan import snapshot_id
from k2_pipelines.lib.query.validate import QueryError, as_of
from k2_pipelines.lib.recovery.incidents import Incident, record_incident, runs_named_by_open_incidents
from k2_pipelines.lib.upkeep.expiry import expire_snapshots
from k2_pipelines.lib.upkeep.table_files import TableFiles
from k2_pipelines_tests.helpers import scan

LATER = timedelta(minutes=5)  # a cutoff after every snapshot of the test


def _rows(source: str, first: int, count: int) -> pa.Table:
    return pa.Table.from_pylist(
        [dict(source=source, partition_key=None, source_file="f", line_number=n, raw_line=f"{source}-{n}", reason="r",
              detail=None, run_id="r", rejected_at=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py())
         for n in range(first, first + count)],
        schema=REJECTS.schema().as_arrow(),
    )


def _checkpoint(topic: str, offset: int) -> dict[str, str]:
    return checkpoint_properties(topic, {0: offset}, 0, f"run-{topic}-{offset}")


def _append(catalog, rows: pa.Table, properties: dict[str, str]) -> int:
    transaction = catalog.load_table(REJECTS.identifier).transaction()
    append_files(transaction, write_rows(catalog, REJECTS.identifier, rows), properties)
    [table] = commit_atomically(catalog, [transaction])
    return table.current_snapshot().snapshot_id


def _replace(catalog, source: str, rows: pa.Table, properties: dict[str, str] | None = None) -> int:
    replace_atomically(catalog, [replacement(catalog, REJECTS.identifier, rows, EqualTo("source", source))],
                       properties or {})
    return catalog.load_table(REJECTS.identifier).current_snapshot().snapshot_id


def _referenced(table) -> set[str]:
    return set(TableFiles(table.io).referenced(table.metadata, table.metadata_location))


def _exists(uri: str) -> bool:
    return os.path.exists(urlparse(uri).path)


def _lines(table: pa.Table) -> list[str]:
    return sorted(table.column("raw_line").to_pylist())


def test_expiry_keeps_the_ancestry_back_to_each_topics_offsets_and_deletes_only_what_expired(catalog):
    snapshots = [
        _append(catalog, _rows("a", 0, 10), {}),  # its file is replaced by the next commit
        _append(catalog, _rows("b", 0, 10), _checkpoint("t1", 10)),
        _replace(catalog, "a", _rows("a", 100, 5)),
        _append(catalog, _rows("c", 0, 10), _checkpoint("t2", 7)),  # t2's newest offsets
        _append(catalog, _rows("d", 0, 10), _checkpoint("t1", 20)),  # t1's newest offsets
        _replace(catalog, "b", _rows("b", 100, 5)),
        _append(catalog, _rows("e", 0, 10), {}),
    ]
    table = catalog.load_table(REJECTS.identifier)
    ancestry = [s.snapshot_id for s in ancestors_of(table.current_snapshot(), table.metadata)]
    expected_kept = ancestry[: ancestry.index(snapshots[3]) + 1]  # current back to t2's offsets
    checkpoints = {topic: stored_checkpoint(table, topic) for topic in ("t1", "t2")}
    rows, rows_at_kept = (
        _lines(scan(catalog, REJECTS.identifier)),
        _lines(table.scan(snapshot_id=snapshots[3]).to_arrow()),
    )
    before = _referenced(table)
    [first_a] = [e.data_file.file_path for m in table.snapshot_by_id(snapshots[0]).manifests(table.io)
                 for e in m.fetch_manifest_entry(table.io)]
    assert "source=a" in first_a and all(_exists(uri) for uri in before)

    dry = expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER, dry_run=True)
    assert catalog.load_table(REJECTS.identifier).metadata_location == table.metadata_location
    assert all(_exists(uri) for uri in before) and dry.files_deleted > 0

    result = expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER)
    after_table = catalog.load_table(REJECTS.identifier)
    after = _referenced(after_table)
    assert sorted(s.snapshot_id for s in after_table.snapshots()) == sorted(expected_kept)
    assert (
        sorted(result.snapshots_expired) == sorted(set(ancestry) - set(expected_kept)) == sorted(dry.snapshots_expired)
    )
    assert sorted(result.snapshots_kept_for_offsets) == sorted(expected_kept[1:])  # all but the current one
    assert {topic: stored_checkpoint(after_table, topic) for topic in ("t1", "t2")} == checkpoints
    assert _lines(scan(catalog, REJECTS.identifier)) == rows
    assert _lines(after_table.scan(snapshot_id=snapshots[3]).to_arrow()) == rows_at_kept  # time travel still works
    assert all(_exists(uri) for uri in after)
    assert not any(_exists(uri) for uri in before - after)
    assert first_a in before - after  # the data file only expired snapshots read
    assert (result.files_before, result.files_after, result.files_deleted) == (
        len(before),
        len(after),
        len(before - after),
    )
    assert (dry.files_before, dry.files_deleted, dry.bytes_deleted) == (
        result.files_before, result.files_deleted, result.bytes_deleted)
    new_metadata = os.path.getsize(urlparse(after_table.metadata_location).path)  # the expiry commit's
    assert result.bytes_before - result.bytes_deleted + new_metadata == result.bytes_after

    again = expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER)
    assert again.snapshots_expired == [] and again.files_deleted == 0


def test_expiry_racing_a_drain_like_writer_loses_no_file_and_no_offset(catalog):
    _append(catalog, _rows("base", 0, 20), {})
    errors, writes = [], 25

    def write() -> None:
        try:
            for offset in range(1, writes + 1):  # each commit replaces the last one's slice: its files fall out
                _replace(catalog, "w", _rows("w", offset * 10, 3), _checkpoint("t", offset))
        except Exception as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    expiries = []
    while writer.is_alive():
        expiries.append(expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER))
    writer.join()
    expiries.append(expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER))

    assert not errors
    table = catalog.load_table(REJECTS.identifier)
    assert stored_checkpoint(table, "t").offsets == {0: writes}
    assert _lines(scan(catalog, REJECTS.identifier)) == sorted(
        [f"base-{n}" for n in range(20)] + [f"w-{n}" for n in range(writes * 10, writes * 10 + 3)])
    assert all(_exists(uri) for uri in _referenced(table))
    # the current snapshot holds the offsets
    assert sum(e.files_deleted for e in expiries) > 0 and len(table.snapshots()) == 1


def test_snapshots_of_a_run_an_open_incident_names_are_kept_until_it_is_resolved(catalog):
    run_id = "0b5c8f8e-6c1f-4a5e-9d4e-2f1a7c3b9e10"  # a Dagster run id
    theirs = _append(catalog, _rows("bad", 0, 3), _checkpoint("t", 3) | {DRAIN_RUN_ID: run_id})
    _append(catalog, _rows("later", 0, 3), _checkpoint("t", 6))
    incident = Incident("quality_check_failed", f"market_data.rejects batch of run {run_id}",
                        datetime.now(UTC), "test", "a blocking check failed", "docs/runbooks/x.md")
    record_incident(catalog, incident)

    kept = expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER,
                            kept_runs=runs_named_by_open_incidents(catalog))
    assert theirs not in kept.snapshots_expired
    assert catalog.load_table(REJECTS.identifier).snapshot_by_id(theirs) is not None

    record_incident(catalog, incident.resolve("quarantined", "done", None))
    assert not runs_named_by_open_incidents(catalog)
    gone = expire_snapshots(catalog, REJECTS.identifier, datetime.now(UTC) + LATER,
                            kept_runs=runs_named_by_open_incidents(catalog))
    assert theirs in gone.snapshots_expired


def test_a_table_kept_in_hours_keeps_each_days_newest_snapshot_for_days(catalog, monkeypatch):
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    days_ago = [midnight - timedelta(days=3) + timedelta(hours=10), midnight - timedelta(days=3) + timedelta(hours=11),
                midnight - timedelta(days=2) + timedelta(hours=9), midnight - timedelta(days=2) + timedelta(hours=10)]
    ids = []
    for n, at in enumerate(days_ago):  # snapshots stamped days ago, as a week of drains leaves them
        monkeypatch.setattr(pyiceberg.table.snapshots, "time", SimpleNamespace(time=at.timestamp))
        ids.append(_append(catalog, _rows(f"r{n}", 0, 2), _checkpoint("t", n)))
    monkeypatch.undo()
    current = _append(catalog, _rows("now", 0, 2), _checkpoint("t", 9))

    week = expire_snapshots(
        catalog, REJECTS.identifier, now - timedelta(hours=2), days_ends_after=now - timedelta(days=7)
    )
    assert sorted(week.snapshots_expired) == sorted([ids[0], ids[2]])  # each earlier day's newest stays
    table = catalog.load_table(REJECTS.identifier)
    assert table.scan(snapshot_id=ids[1]).to_arrow().num_rows == 4
    # time travel: exact where nothing between was expired, an error where the snapshots of that time are gone
    assert snapshot_id(table, as_of(days_ago[3] + timedelta(minutes=30))) == ids[3]
    with pytest.raises(QueryError, match="were expired"):
        snapshot_id(table, as_of(days_ago[2] + timedelta(minutes=30)))
    with pytest.raises(QueryError, match="no snapshot yet"):
        snapshot_id(table, as_of(days_ago[0] + timedelta(minutes=30)))
    two_days = expire_snapshots(catalog, REJECTS.identifier, now - timedelta(hours=2),
                                days_ends_after=now - timedelta(days=2, hours=12))
    assert two_days.snapshots_expired == [ids[1]]
    assert {s.snapshot_id for s in catalog.load_table(REJECTS.identifier).snapshots()} == {ids[3], current}
