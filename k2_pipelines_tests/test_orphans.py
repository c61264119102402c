"""Orphan removal on real orphans: files a drain killed between writing and committing left behind."""

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest

from k2_pipelines.lib.drain.drain import trades_target
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE, remove_orphan_files
from k2_pipelines.lib.upkeep.table_files import TableFiles
from k2_pipelines_tests.kafka_helpers import drain_process, replay_session, table_ids

TWO_DAYS = 2 * 24 * 3600


def _files_under(table) -> set[str]:
    return {str(path) for path in Path(urlparse(table.location()).path).rglob("*") if path.is_file()}


def _referenced(table) -> set[str]:
    return {urlparse(uri).path for uri in TableFiles(table.io).referenced(table.metadata, table.metadata_location)}


def test_a_killed_drains_files_are_deleted_once_old_and_referenced_files_never(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 2_000, set())
    killed = drain_process(kafka_broker, topics.trades, "--max-messages", "500", kill_at="files-written")
    assert killed.wait(120) == -9, killed.stdout.read().decode()
    finished = drain_process(kafka_broker, topics.trades, "--until-caught-up")
    assert finished.wait(300) == 0, finished.stdout.read().decode()
    table, target = catalog.load_table(TRADES.identifier), trades_target(topics.trades)
    ids, referenced, on_disk = sorted(table_ids(catalog, target)), _referenced(table), _files_under(table)
    assert len(ids) == counts["trades"] and referenced <= on_disk
    # independently of TableFiles: the killed drain's data files, which no snapshot lists, and metadata json files
    # outside the metadata log (each process's ensure_tables writes one before finding the table exists)
    listed = {urlparse(uri).path for uri in table.inspect.all_data_files().column("file_path").to_pylist()}
    logged = {
        urlparse(uri).path for uri in [table.metadata_location, *(e.metadata_file for e in table.metadata.metadata_log)]
    }
    orphans = {path for path in on_disk if (path.endswith(".parquet") and path not in listed)
               or (path.endswith(".metadata.json") and path not in logged)}
    assert any(path.endswith(".parquet") for path in orphans) and on_disk - referenced == orphans
    sizes = {path: os.path.getsize(path) for path in orphans}

    cutoff = datetime.now(UTC) - MIN_ORPHAN_AGE
    young = remove_orphan_files(catalog, TRADES.identifier, cutoff)
    assert (young.orphans, young.kept_too_young, young.deleted) == (len(orphans), len(orphans), 0)
    assert young.files_scanned == len(on_disk) and _files_under(table) == on_disk

    kept_young = min(path for path in orphans if path.endswith(".parquet"))
    aged = time.time() - TWO_DAYS
    for path in on_disk - {kept_young}:  # referenced files too: their age must not matter
        os.utime(path, (aged, aged))
    dry = remove_orphan_files(catalog, TRADES.identifier, cutoff, dry_run=True)
    assert (dry.deleted, dry.kept_too_young) == (len(orphans) - 1, 1) and _files_under(table) == on_disk

    result = remove_orphan_files(catalog, TRADES.identifier, cutoff)
    assert (result.orphans, result.deleted, result.kept_too_young) == (len(orphans), len(orphans) - 1, 1)
    assert result.deleted_bytes == sum(sizes.values()) - sizes[kept_young] == dry.deleted_bytes
    assert _files_under(table) == referenced | {kept_young}
    assert sorted(table_ids(catalog, target)) == ids


def test_the_age_floor_is_enforced(catalog):
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="MIN_ORPHAN_AGE"):
        remove_orphan_files(catalog, TRADES.identifier, now - MIN_ORPHAN_AGE / 2)
    with pytest.raises(ValueError, match="time zone"):
        remove_orphan_files(catalog, TRADES.identifier, datetime.now() - 2 * MIN_ORPHAN_AGE)
    assert remove_orphan_files(catalog, TRADES.identifier, now - MIN_ORPHAN_AGE).deleted == 0
