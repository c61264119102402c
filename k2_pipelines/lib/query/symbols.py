"""The symbols a table holds as of a snapshot, to tell an unknown symbol from one without rows in a range.

Cached per data file (Iceberg never changes a file once written), so a snapshot after a drain reads only the drain's
new files, and per snapshot (immutable too)."""

from collections.abc import Hashable

import pyarrow.compute as pc
from pyiceberg.table import Table

from k2_pipelines.lib.query.engine import TIME_LIMIT_SECONDS, engine
from k2_pipelines.lib.query.plan import plan
from k2_pipelines.lib.utils.bounded_cache import BoundedCache

MAX_CACHED = 100_000  # files (or snapshots) remembered
_by_file: BoundedCache[frozenset[str]] = BoundedCache(MAX_CACHED)
_by_snapshot: BoundedCache[frozenset[str]] = BoundedCache(MAX_CACHED)


def table_symbols(table: Table, snapshot: int | None) -> frozenset[str]:
    if snapshot is None:
        return frozenset()
    return _by_snapshot.get_or_make((str(table.metadata.table_uuid), snapshot), lambda: _read(table, snapshot))


def _read(table: Table, snapshot: int) -> frozenset[str]:
    planned = plan(table, snapshot)
    if planned.pyiceberg_read:
        rows = planned.table.scan(snapshot_id=snapshot, selected_fields=("symbol",)).to_arrow()
        return frozenset(pc.unique(rows["symbol"]).to_pylist())
    return frozenset().union(*_file_symbols(planned.files))


def _file_symbols(files: tuple[str, ...]) -> list[frozenset[str]]:
    known = {path: _by_file.get(path) for path in files}
    missing = [path for path, symbols in known.items() if symbols is None]
    read: dict[Hashable, frozenset[str]] = {}
    if missing:
        rows = engine().run("SELECT DISTINCT filename, symbol FROM {source}", {}, tuple(missing), TIME_LIMIT_SECONDS)
        found: dict[str, set[str]] = {path: set() for path in missing}
        for path, symbol in zip(rows["filename"].to_pylist(), rows["symbol"].to_pylist()):
            found[path].add(symbol)
        read = {path: frozenset(symbols) for path, symbols in found.items()}
        _by_file.put_all(read)
    return [read[path] if symbols is None else symbols for path, symbols in known.items()]
