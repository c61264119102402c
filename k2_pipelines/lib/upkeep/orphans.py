"""Delete the files under a table's location that its metadata does not reference.

They are left by drains and loads killed, or beaten by another writer, between writing their files and committing
them, and by old metadata json files that dropped out of the metadata log. A file written for a commit still in
flight is unreferenced too, so only files older than a cutoff go, and the cutoff is never later than
now - MIN_ORPHAN_AGE.
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

from pyarrow.fs import FileInfo, FileSelector, FileSystem, FileType
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table

from k2_pipelines.lib.upkeep.table_files import TableFiles, cutoff_ms

log = logging.getLogger(__name__)

# A drain holds written files uncommitted for at most ~7 minutes: a batch read of Limits.max_seconds (60 s), its
# writes (seconds), then COMMIT_ATTEMPTS (10) commits, each waiting up to the SQLite busy timeout (30 s) plus a backoff
# (at most 5 s). Loads and compaction write longer; an hour covers them all with a wide margin.
MIN_ORPHAN_AGE = timedelta(hours=1)


@dataclass
class OrphanResult:
    table: str
    dry_run: bool
    files_scanned: int
    orphans: int
    orphan_bytes: int
    deleted: int
    deleted_bytes: int
    kept_too_young: int  # unreferenced but newer than the cutoff (maybe a commit in flight)
    seconds: float


def _file_system(table: Table) -> tuple[FileSystem, str]:
    """The file system the table's FileIO uses (with the catalog's S3 settings), and the table's root in it."""
    if isinstance(table.io, PyArrowFileIO):
        scheme, netloc, root = PyArrowFileIO.parse_location(table.location())
        return table.io.fs_by_scheme(scheme, netloc), root
    return FileSystem.from_uri(table.location())


def _referenced(table: Table, files: TableFiles) -> set[str]:
    """Paths as the file system lists them (for S3: bucket/key, without the scheme), with the checksum file Hadoop's
    local file system writes beside each file (`.name.crc`: Spark's files in a local warehouse) as part of it."""
    paths = {PyArrowFileIO.parse_location(uri)[2] for uri in files.referenced(table.metadata, table.metadata_location)}
    return paths | {str(PurePosixPath(path).with_name(f".{PurePosixPath(path).name}.crc")) for path in paths}


def remove_orphan_files(catalog: Catalog, identifier: str, older_than: datetime, dry_run: bool = False) -> OrphanResult:
    """Delete the unreferenced files under the table's location last modified before `older_than`.
    A dry run deletes nothing and reports what would go."""
    started, cutoff = time.perf_counter(), cutoff_ms(older_than)
    latest = datetime.now(UTC) - MIN_ORPHAN_AGE
    if older_than > latest:
        raise ValueError(f"older_than {older_than.isoformat()} is later than now - MIN_ORPHAN_AGE "
                         f"({latest.isoformat()}): files of a commit in flight could be taken for orphans")
    table = catalog.load_table(identifier)
    files = TableFiles(table.io)
    referenced = _referenced(table, files)
    fs, root = _file_system(table)
    listed = [info for info in fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
              if info.type == FileType.File]
    current = PyArrowFileIO.parse_location(table.metadata_location)[2]
    if current.startswith(root) and current not in {info.path for info in listed}:
        raise RuntimeError(f"the listing of {root} misses the current metadata {current}: paths of the listing and "
                           "the metadata do not match, so nothing is deleted")

    unreferenced = [info for info in listed if info.path not in referenced]
    if unreferenced:  # a commit may have landed while listing: its files are referenced now
        referenced |= _referenced(catalog.load_table(identifier), files)
        unreferenced = [info for info in unreferenced if info.path not in referenced]
    old = [info for info in unreferenced if _mtime_ms(info) < cutoff]
    if not dry_run:
        for info in old:
            with contextlib.suppress(FileNotFoundError):  # expiry may have deleted it first
                fs.delete_file(info.path)
    result = OrphanResult(
        table=identifier, dry_run=dry_run, files_scanned=len(listed),
        orphans=len(unreferenced), orphan_bytes=sum(info.size for info in unreferenced),
        deleted=len(old), deleted_bytes=sum(info.size for info in old),
        kept_too_young=len(unreferenced) - len(old), seconds=time.perf_counter() - started,
    )
    log.info("%s: %s%d of %d files unreferenced, %d deleted (%d bytes), %d kept as too young", identifier,
             "dry run: " if dry_run else "", result.orphans, result.files_scanned, result.deleted,
             result.deleted_bytes, result.kept_too_young)
    return result


def _mtime_ms(info: FileInfo) -> int:
    return info.mtime_ns // 1_000_000
