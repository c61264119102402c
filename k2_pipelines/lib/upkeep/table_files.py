"""Every file an Iceberg table's metadata references: what expiry and orphan removal must never delete."""

from datetime import datetime

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestFile
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.utils.concurrent import ExecutorFactory


def cutoff_ms(older_than: datetime) -> int:
    """`older_than` in ms since the epoch; a naive datetime is refused (local time or UTC? K2 cannot tell)."""
    if older_than.tzinfo is None:
        raise ValueError(f"older_than must carry a time zone, not be naive: {older_than!r}")
    return int(older_than.timestamp() * 1000)


class TableFiles:
    """The files of a table's metadata, path -> size in bytes. Manifests never change once written, so each is read
    once per TableFiles however many snapshots or table versions list it."""

    def __init__(self, io: FileIO):
        self.io = io
        self._live: dict[str, dict[str, int]] = {}  # manifest path -> its live (added or existing) files' sizes
        self._sizes: dict[str, int | None] = {}  # of files whose size the metadata does not record (None: gone)

    def referenced(self, metadata: TableMetadata, metadata_location: str) -> dict[str, int | None]:
        """Metadata json (current and logged), statistics, and every snapshot's manifest list, manifests and live
        data or delete files. Sizes are None where the metadata does not record them (json, manifest lists).

        A file a manifest lists only as deleted is not referenced: no snapshot reads it."""
        files: dict[str, int | None] = {metadata_location: None}
        files |= {entry.metadata_file: None for entry in metadata.metadata_log}
        files |= {s.statistics_path: s.file_size_in_bytes
                  for s in [*metadata.statistics, *metadata.partition_statistics]}
        manifests: dict[str, ManifestFile] = {}
        for snapshot in metadata.snapshots:
            files[snapshot.manifest_list] = None
            manifests |= {m.manifest_path: m for m in snapshot.manifests(self.io)}
        unread = [m for path, m in manifests.items() if path not in self._live]
        for manifest, live in zip(unread, ExecutorFactory.get_or_create().map(self._live_files, unread)):
            self._live[manifest.manifest_path] = live
        for path, manifest in manifests.items():
            files[path] = manifest.manifest_length
            files |= self._live[path]
        return files

    def _live_files(self, manifest: ManifestFile) -> dict[str, int]:
        return {e.data_file.file_path: e.data_file.file_size_in_bytes for e in manifest.fetch_manifest_entry(self.io)}

    def sizes(self, files: dict[str, int | None]) -> dict[str, int]:
        """`files` with every size known, asking the file system for those the metadata does not record. Metadata
        json files already gone are left out: a commit since deleted them from its metadata log."""
        missing = [path for path, size in files.items() if size is None and path not in self._sizes]
        for path, size in zip(missing, ExecutorFactory.get_or_create().map(self._size_if_present, missing)):
            self._sizes[path] = size
        known = {path: self._sizes[path] if size is None else size for path, size in files.items()}
        return {path: size for path, size in known.items() if size is not None}

    def _size_if_present(self, path: str) -> int | None:
        try:
            return len(self.io.new_input(path))
        except FileNotFoundError:
            return None
