"""Expire a table's old snapshots, keeping what drains resume from, and delete the files only they referenced.

PyIceberg's expiry only edits the metadata; the files that no snapshot references afterwards are deleted here.
Only files referenced before the commit and not by the table as committed are deleted: never anything unknown
(a concurrent writer's uncommitted files are not ours), never a manifest a newer snapshot still lists.

Snapshots a run named by an open incident committed are kept too: its runbook (a quarantine, say) still needs them.
Old metadata json files are deleted by every commit as they drop out of the metadata log (lib/iceberg/commit).
"""

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.table.update.snapshot import ExpireSnapshots

from k2_pipelines.lib.drain.checkpoint import checkpointed_topics, stored_checkpoint
from k2_pipelines.lib.iceberg.commit import commit, new_transaction
from k2_pipelines.lib.iceberg.summary import RUN_IDS
from k2_pipelines.lib.upkeep.table_files import TableFiles, cutoff_ms

log = logging.getLogger(__name__)
# the retention of DRAINED_TABLES: each snapshot stays in every metadata json the table writes (~1 KB each)
DRAINED_RETENTION_HOURS = 2.0
_DAY_MS = 86_400_000


@dataclass
class ExpiryResult:
    table: str
    dry_run: bool
    snapshots_before: int
    snapshots_expired: list[int]
    snapshots_kept_for_offsets: list[int]  # older than the cutoff, kept because a drain resumes from them
    files_before: int  # every file the table references (metadata json, manifest lists, manifests, data)
    bytes_before: int
    files_after: int
    bytes_after: int
    files_deleted: int
    bytes_deleted: int
    seconds: float


def kept_for_offsets(table: Table) -> set[int]:
    """The current snapshot and its ancestors back to the newest one holding each topic's drain offsets:
    stored_checkpoint walks this ancestry by parent ids, so a gap in it would lose the offsets."""
    ancestry = list(ancestors_of(table.current_snapshot(), table.metadata))
    topics = {topic for s in ancestry if s.summary for topic in checkpointed_topics(s.summary.additional_properties)}
    holders = {stored_checkpoint(table, topic).snapshot_id for topic in topics}
    kept = set()
    for snapshot in ancestry:
        if not holders:
            break
        kept.add(snapshot.snapshot_id)
        holders.discard(snapshot.snapshot_id)
    return kept


def _committed_by(snapshot: Snapshot, runs: frozenset[str]) -> bool:
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    return any(summary.get(key) in runs for key in RUN_IDS)


def _days_ends(snapshots: list[Snapshot], since: int | None) -> set[int]:
    """The newest snapshot of each UTC day from `since` (ms) on: time travel to the end of any day stays possible."""
    if since is None:
        return set()
    newest: dict[int, Snapshot] = {}
    for snapshot in (s for s in snapshots if s.timestamp_ms >= since):
        day = snapshot.timestamp_ms // _DAY_MS
        if day not in newest or snapshot.timestamp_ms > newest[day].timestamp_ms:
            newest[day] = snapshot
    return {s.snapshot_id for s in newest.values()}


def _plan(table: Table, cutoff: int, kept_runs: frozenset[str], days_since: int | None) -> tuple[list[int], list[int]]:
    """(snapshots to expire, snapshots as old but kept for drain offsets or for `kept_runs`)."""
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}  # branch and tag heads: the current one
    protected |= _days_ends(table.snapshots(), days_since)
    # a snapshot's age counts from when the next one replaced it: a query that planned it just before reads its files
    log = table.metadata.snapshot_log
    replaced_at = {entry.snapshot_id: after.timestamp_ms for entry, after in itertools.pairwise(log)}
    old = [s.snapshot_id for s in table.snapshots() if replaced_at.get(s.snapshot_id, s.timestamp_ms) < cutoff
           and s.snapshot_id not in protected and not _committed_by(s, kept_runs)]
    pinned = kept_for_offsets(table)
    return [i for i in old if i not in pinned], [i for i in old if i in pinned]


def expire_snapshots(catalog: Catalog, identifier: str, older_than: datetime, dry_run: bool = False,
                     kept_runs: frozenset[str] = frozenset(), days_ends_after: datetime | None = None) -> ExpiryResult:
    """Expire the snapshots older than `older_than` except the current one, those drains resume from, those that
    runs in `kept_runs` committed and, after `days_ends_after`, the newest snapshot of each UTC day (a table kept
    in hours keeps a week of daily time travel for a few snapshots); delete the files referenced before and not
    after. A dry run commits and deletes nothing and reports what would go
    (its files_after leaves out the metadata json the commit would write)."""
    started, cutoff = time.perf_counter(), cutoff_ms(older_than)
    table: Table  # as the last attempt planned from
    transaction: Transaction
    expired: list[int]
    pinned: list[int]

    def plan_commit(attempt: int) -> list[Transaction] | None:
        nonlocal table, transaction, expired, pinned
        table = catalog.load_table(identifier)
        expired, pinned = _plan(table, cutoff, kept_runs, cutoff_ms(days_ends_after) if days_ends_after else None)
        # not table.maintenance.expire_snapshots(): it commits with no requirement, and PyIceberg's retries would
        # apply the removal to whatever the table has become; the same builder on our own transaction is committed
        # as a compare-and-set on the metadata it was planned from
        transaction = new_transaction(table)
        if expired:
            expire = ExpireSnapshots(transaction)
            # not by_ids: it checks each id against a fresh copy of the whole metadata, quadratic in snapshots (about
            # 2 minutes for a day of drains); these ids come from this very metadata
            expire._snapshot_ids_to_expire = set(expired)
            expire.commit()  # stages: the transaction does not autocommit
        return None if dry_run or not expired else [transaction]

    committed = commit(catalog, plan_commit, "planning the expiry again")  # a drain may commit meanwhile
    if committed:
        expired_table = committed.tables[identifier]
        after, after_location = expired_table.metadata, expired_table.metadata_location
    else:
        after, after_location = transaction.table_metadata, table.metadata_location

    files = TableFiles(table.io)
    referenced_before = files.sizes(files.referenced(table.metadata, table.metadata_location))
    referenced_after = files.sizes(files.referenced(after, after_location))
    unreferenced = {path: size for path, size in referenced_before.items() if path not in referenced_after}
    if not dry_run:
        for path in unreferenced:
            with contextlib.suppress(FileNotFoundError):  # orphan removal may have taken it first
                table.io.delete(path)
    result = ExpiryResult(
        table=identifier, dry_run=dry_run, snapshots_before=len(table.snapshots()), snapshots_expired=expired,
        snapshots_kept_for_offsets=pinned,
        files_before=len(referenced_before), bytes_before=sum(referenced_before.values()),
        files_after=len(referenced_after), bytes_after=sum(referenced_after.values()),
        files_deleted=len(unreferenced), bytes_deleted=sum(unreferenced.values()),
        seconds=time.perf_counter() - started,
    )
    log.info("%s: %s%d of %d snapshots expired (%d kept for drain offsets), %d files (%d bytes) deleted",
             identifier, "dry run: " if dry_run else "", len(expired), result.snapshots_before, len(pinned),
             result.files_deleted, result.bytes_deleted)
    return result
