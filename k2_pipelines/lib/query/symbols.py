"""The symbols a table holds as of a snapshot, to tell an unknown symbol from one without rows in a range.

Cached per data file (Iceberg never changes a file once written), so a snapshot after a drain reads only the drain's
new files, and per snapshot (immutable too)."""

import threading

import pyarrow.compute as pc
from pyiceberg.table import Table

from k2_pipelines.lib.query.engine import TIME_LIMIT_SECONDS, engine
from k2_pipelines.lib.query.plan import plan

MAX_CACHED = 100_000  # files (or snapshots) remembered; past it the cache starts again
_by_file: dict[str, frozenset[str]] = {}
_by_snapshot: dict[tuple[str, int], frozenset[str]] = {}
_lock = threading.Lock()


def table_symbols(table: Table, snapshot: int | None) -> frozenset[str]:
    if snapshot is None:
        return frozenset()
    key = (str(table.metadata.table_uuid), snapshot)
    if key in _by_snapshot:
        return _by_snapshot[key]
    planned = plan(table, snapshot)
    if planned.pyiceberg_read:
        rows = planned.table.scan(snapshot_id=snapshot, selected_fields=("symbol",)).to_arrow()
        found = frozenset(pc.unique(rows["symbol"]).to_pylist())
    else:
        found = frozenset().union(*_file_symbols(planned.files))
    with _lock:
        if len(_by_snapshot) >= MAX_CACHED:
            _by_snapshot.clear()
        _by_snapshot[key] = found
    return found


def _file_symbols(files: tuple[str, ...]) -> list[frozenset[str]]:
    known = {path: _by_file.get(path) for path in files}
    missing = [path for path, symbols in known.items() if symbols is None]
    if missing:
        rows = engine().run("SELECT DISTINCT filename, symbol FROM {source}", {}, tuple(missing), TIME_LIMIT_SECONDS)
        found: dict[str, set[str]] = {path: set() for path in missing}
        for path, symbol in zip(rows["filename"].to_pylist(), rows["symbol"].to_pylist()):
            found[path].add(symbol)
        known.update((path, frozenset(symbols)) for path, symbols in found.items())
        with _lock:
            if len(_by_file) + len(found) > MAX_CACHED:
                _by_file.clear()
            _by_file.update((path, known[path]) for path in missing)
    return list(known.values())
