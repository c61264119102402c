"""Files under a table's location that none of its snapshots references (left by failed or abandoned commits)."""

from pathlib import Path
from urllib.parse import urlparse

from pyiceberg.table import Table


def _local_path(location: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"orphan listing reads local warehouses only, not {location}")
    return Path(parsed.path)


def orphan_data_files(table: Table) -> list[Path]:
    """Data files in the table's data directory that no snapshot (current or older) lists."""
    referenced = {_local_path(path) for path in table.inspect.all_data_files().column("file_path").to_pylist()}
    data_dir = _local_path(table.location()) / "data"
    return sorted(path for path in data_dir.rglob("*.parquet") if path not in referenced)
