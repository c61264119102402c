"""Validate what an ASX load wrote, one trading date at a time, against the lines of its landing files."""

from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo

from k2_pipelines.lib.asx.landing import lines_by_trading_date
from k2_pipelines.lib.asx.layouts import TIMEZONE, CsvLayout
from k2_pipelines.lib.iceberg.run_rows import rows_written_by_run
from k2_pipelines.lib.iceberg.summary import RUN_ID as LOAD_RUN_ID
from k2_pipelines.lib.iceberg.tables import REJECTS
from k2_pipelines.lib.quality.checks import asx_checks, market_checks, required_fields
from k2_pipelines.lib.quality.frames import days_frame, market_rows, trading_dates
from k2_pipelines.lib.quality.report import Validation
from k2_pipelines.lib.quality.rules import listings
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.quality.validate import run_checks
from k2_pipelines.lib.quality.validations import MARKET_TABLES, set_aside_by


def by_trading_date(rows: pa.Table, first: date, last: date) -> dict[str, pa.Table]:
    """The rows of each trading date first..last: slices where a date's rows lie together (each data file of a load
    holds one trading date), else filtered copies."""
    dates = rows.column("trading_date").combine_chunks()
    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    if not len(dates):
        return {str(day): rows for day in days}
    changes = np.flatnonzero(pc.not_equal(dates[1:], dates[:-1]).fill_null(True).to_numpy(zero_copy_only=False)) + 1
    starts, ends = np.concatenate(([0], changes)), np.append(changes, len(dates))
    spans = {day: (start, end - start) for day, start, end in
             zip(dates.take(pa.array(starts)).to_pylist(), starts.tolist(), ends.tolist())}
    if len(spans) < len(starts):  # a date's rows are apart
        return {str(day): rows.filter(pc.equal(dates, pa.scalar(day, pa.date32()))) for day in days}
    return {str(day): rows.slice(*spans.get(day, (0, 0))) for day in days}


def validate_market_load(catalog: Catalog, layout: CsvLayout, landing: Path, run_id: str, first: date, last: date,
                         thresholds: Thresholds, now: datetime) -> list[Validation]:
    """One validation per trading date first..last of an ASX load run."""
    table, id_column = MARKET_TABLES[layout.kind]
    required = required_fields(table.schema())
    rows = rows_written_by_run(catalog.load_table(table.identifier), LOAD_RUN_ID, run_id, required)
    rows = rows.append_column("trading_date", trading_dates(rows.column(id_column).combine_chunks()))
    rejects = catalog.load_table(REJECTS.identifier).scan(
        row_filter=And(EqualTo("run_id", run_id), EqualTo("source", layout.asset)),
        selected_fields=("partition_key", "reason", "source_file", "line_number", "detail")).to_arrow()
    rejected = Counter(rejects.column("partition_key").to_pylist())
    source = sum((lines_by_trading_date(p) for p in sorted((landing / layout.kind).glob("*.csv"))), Counter())
    listed = listings(catalog)
    checks = market_checks(layout.kind, table.schema(), id_column, thresholds, now) + asx_checks(thresholds)
    days = by_trading_date(rows, first, last)
    del rows  # each date's rows are let go once its frame is built
    validations = []
    for day in list(days):
        day_rows = days.pop(day)
        frames = {"rows": market_rows(day_rows, layout.kind, listed, required, local_timezone=TIMEZONE),
                  "days": days_frame({day: source[day]}, {day: day_rows.num_rows}, {day: rejected[day]})}
        count = day_rows.num_rows
        del day_rows
        outcomes = run_checks(frames, checks, {"rows": [id_column], "days": ["trading_date"]})
        day_rejects = rejects.filter(pc.equal(rejects.column("partition_key"), day))
        validations.append(Validation(layout.asset, run_id, now, count, outcomes, partition=day,
                                      set_aside=set_aside_by(day_rejects.drop_columns(["partition_key"]), "reason")))
    return validations
