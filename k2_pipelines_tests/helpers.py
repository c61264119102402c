"""Independent reading of landing files (plain Python csv), to check what the pipelines wrote."""

import csv
from collections import Counter
from datetime import datetime
from pathlib import Path

import dagster as dg

from k2_pipelines.definitions import defs
from k2_pipelines.defs.asx.sensors import RANGE_END_TAG, RANGE_START_TAG


def lines_by_date(folder: Path) -> Counter:
    """Lines per trading date (YYYY-MM-DD) over all CSV files of a landing sub-folder."""
    counts = Counter()
    for path in folder.glob("*.csv"):
        with path.open(newline="") as handle:
            for row in csv.reader(handle):
                counts[datetime.strptime(row[0], "%m/%d/%Y").date().isoformat()] += 1
    return counts


def run_asx_load(
    start: str,
    end: str | None = None,
    raise_on_error: bool = True,
    instance: dg.DagsterInstance | None = None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("asx_load")
    tags = {RANGE_START_TAG: start, RANGE_END_TAG: end or start}
    return job.execute_in_process(tags=tags, raise_on_error=raise_on_error, instance=instance, run_config=run_config)


def scan(catalog, identifier: str, row_filter=None):
    table = catalog.load_table(identifier)
    return table.scan(row_filter=row_filter).to_arrow() if row_filter is not None else table.scan().to_arrow()
