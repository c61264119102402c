"""Load a range of ASX trading days from a landing drop into Iceberg: rows and rejects in one commit."""

import json
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, In, IsNull, LessThan
from pyiceberg.manifest import DataFile

from k2_pipelines.lib.asx.company_info import read_company_info
from k2_pipelines.lib.asx.fixed_width import EPOCH
from k2_pipelines.lib.asx.landing import fingerprint
from k2_pipelines.lib.asx.layouts import CURRENCY, EXCHANGE, TIMEZONE, CsvLayout
from k2_pipelines.lib.asx.parse import Company, ParsedFile, parse_market_file, raw_lines
from k2_pipelines.lib.iceberg.summary import PARTITIONS, RUN_ID, SOURCE_FILES
from k2_pipelines.lib.iceberg.tables import QUOTES, REFERENCE_DATA, REJECTS, TRADES
from k2_pipelines.lib.iceberg.writes import CommitOutcome, Replacement, replace_atomically, replacement, write_rows
from k2_pipelines.lib.quality.checks import Check, asx_checks, market_checks
from k2_pipelines.lib.quality.rules import broken_rows, listings, row_rules
from k2_pipelines.lib.quality.thresholds import DEFAULTS, Thresholds
from k2_pipelines.lib.utils.uuids import random_uuids

_TABLES = {"trades": TRADES, "quotes": QUOTES}
WRITE_BATCH_ROWS = 2_000_000  # about 0.5 GB of parsed Arrow rows


@dataclass
class LoadResult:
    table: str
    rows_by_day: dict[str, int]
    rejects_by_reason: dict[str, int]
    source_files: list[str]
    commit: CommitOutcome
    rows_read: int = 0

    @property
    def rows_written(self) -> int:
        return sum(self.rows_by_day.values())

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejects_by_reason.values())


def local_midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(TIMEZONE)).astimezone(UTC)


def _reject_rows(rejects: list[dict], source: str, run_id: str, now: datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            dict(source=source, partition_key=r.get("partition_key"), source_file=r["source_file"],
                 line_number=r["line_number"], raw_line=r["raw_line"], reason=r["reason"], detail=r["detail"] or None,
                 run_id=run_id, rejected_at=now)
            for r in rejects
        ],
        schema=REJECTS.schema().as_arrow(),
    )


def _snapshot_properties(run_id: str, source_files: list[Path], partitions: str) -> dict[str, str]:
    return {
        RUN_ID: run_id,
        PARTITIONS: partitions,
        SOURCE_FILES: json.dumps([{"path": str(p), "fingerprint": fingerprint(p)} for p in source_files]),
    }


def _companies(landing: Path) -> dict[str, Company]:
    records, _ = read_company_info(landing / "company_info.csv")
    return {r.company_id: Company(r.company_id, r.symbol) for r in records}


def _with_ingest_columns(rows: pa.Table, now: datetime) -> pa.Table:
    n = rows.num_rows
    return rows.append_column("message_id", random_uuids(n)).append_column(
        "ingestion_timestamp", pa.array(np.full(n, int(now.timestamp() * 1e6)), pa.timestamp("us", tz="UTC"))
    )


def _keep_to_rules(parsed: ParsedFile, rules: list[Check], listed: pa.Table, id_column: str) -> ParsedFile:
    """The file's rows that keep to the row rules; each that breaks one joins its rejects, with its line."""
    if parsed.rows is None:
        raise ValueError(f"{parsed.path} has no rows to judge (its company is unknown)")
    # each row's trading date as its id was built from it (parse), not parsed back out of every id
    judged = parsed.rows.append_column("trading_date", pa.array(parsed.trading_days.astype(np.int32), pa.date32()))
    broken = broken_rows(rules, judged, listed, TIMEZONE)
    if not len(broken.positions):
        return parsed
    kept = np.ones(parsed.rows.num_rows, dtype=bool)
    kept[broken.positions] = False
    ids = parsed.rows.column(id_column).take(pa.array(broken.positions)).to_pylist()
    lines = [int(row_id.rsplit("-", 1)[1]) for row_id in ids]  # an ASX id ends with its line number
    rejects = [dict(line_number=line, raw_line=raw, reason=rule, detail=detail, trading_day=int(day))
               for line, raw, rule, detail, day in zip(lines, raw_lines(parsed.path.read_bytes(), lines), broken.rules,
                                                       broken.details, parsed.trading_days[broken.positions])]
    return replace(parsed, rows=parsed.rows.filter(pa.array(kept)), rejects=parsed.rejects + rejects,
                   trading_days=parsed.trading_days[kept])


def load_market_days(catalog: Catalog, landing: Path, layout: CsvLayout, first: date, last: date, run_id: str,
                     thresholds: Thresholds = DEFAULTS) -> LoadResult:
    """Replace the ASX rows of trading days first..last (local dates) in the trades or quotes table.

    A row that breaks a row rule (lib/quality/rules.py) is a reject, with its rule and line. Parsed files are written
    once WRITE_BATCH_ROWS have gathered: memory stays bounded and a partition gets few files. One commit then adds
    them all, with the rejects.
    """
    table = _TABLES[layout.kind]
    companies = _companies(landing)
    files = sorted((landing / layout.kind).glob("*.csv"))
    first_day, last_day = (first - EPOCH).days, (last - EPOCH).days
    now = datetime.now(UTC)
    rules = row_rules(market_checks(layout.kind, table.schema(), layout.id_field, thresholds, now)
                      + asx_checks(thresholds))
    listed = listings(catalog)
    data_files: list[DataFile] = []
    pending: list[ParsedFile] = []
    rejects: list[dict] = []
    day_counts: Counter[int] = Counter()

    def write_pending() -> None:
        if pending:
            rows = pa.concat_tables([p.rows for p in pending])
            # one trading date per file: reloading a date then drops whole files, never rewrites a neighbour's rows
            trading_days = pa.array(np.concatenate([p.trading_days for p in pending]))
            data_files.extend(write_rows(catalog, table.identifier, rows, trading_days))
            pending.clear()

    for path in files:
        parsed = parse_market_file(path, layout, companies.get(path.stem), first_day, last_day)
        if parsed.rows is not None and parsed.rows.num_rows:
            parsed = _keep_to_rules(replace(parsed, rows=_with_ingest_columns(parsed.rows, now)), rules, listed,
                                    layout.id_field)
            pending.append(parsed)
            if sum(p.rows.num_rows for p in pending if p.rows is not None) >= WRITE_BATCH_ROWS:
                write_pending()
        values, counts = np.unique(parsed.trading_days, return_counts=True)
        day_counts.update(dict(zip(values.tolist(), counts.tolist())))
        rejects += [r | {"source_file": str(path), "partition_key": str(EPOCH + timedelta(days=r["trading_day"]))}
                    for r in parsed.rejects]
    write_pending()

    partition_keys = [str(first + timedelta(days=i)) for i in range((last - first).days + 1)]
    row_filter = And(
        EqualTo("exchange", EXCHANGE),
        And(GreaterThanOrEqual("timestamp", local_midnight_utc(first).isoformat()),
            LessThan("timestamp", local_midnight_utc(last + timedelta(days=1)).isoformat())),
    )
    commit = replace_atomically(
        catalog,
        [
            Replacement(table.identifier, data_files, row_filter),
            replacement(catalog, REJECTS.identifier, _reject_rows(rejects, layout.asset, run_id, now),
                        And(EqualTo("source", layout.asset), In("partition_key", partition_keys))),
        ],
        _snapshot_properties(run_id, [*files, landing / "company_info.csv"], f"{first}..{last}"),
    )
    return LoadResult(
        table=table.identifier,
        rows_by_day={str(EPOCH + timedelta(days=d)): c for d, c in sorted(day_counts.items())},
        rejects_by_reason=dict(Counter(r["reason"] for r in rejects).most_common()),
        source_files=[str(p) for p in files],
        commit=commit,
        rows_read=sum(day_counts.values()) + len(rejects),
    )


def load_reference_data(catalog: Catalog, landing: Path, run_id: str) -> LoadResult:
    """Replace the ASX rows of reference_data with the drop's company_info.csv."""
    path = landing / "company_info.csv"
    records, rejects = read_company_info(path)
    now = datetime.now(UTC)
    today = now.date()

    def midnight(day: date | None) -> datetime | None:
        return local_midnight_utc(day) if day else None

    rows = pa.Table.from_pylist(
        [
            dict(message_id=str(uuid), company_id=r.company_id, symbol=r.symbol, exchange=EXCHANGE,
                 asset_class="equities", company_name=r.company_name, isin=r.isin, currency=CURRENCY,
                 listing_date=midnight(r.start_date), delisting_date=midnight(r.end_date),
                 is_active=r.end_date is None or r.end_date >= today, ingestion_timestamp=now, vendor_data=None)
            for r, uuid in zip(records, random_uuids(len(records)).to_pylist())
        ],
        schema=REFERENCE_DATA.schema().as_arrow(),
    )
    source = "asx_reference_data"
    commit = replace_atomically(
        catalog,
        [
            replacement(catalog, REFERENCE_DATA.identifier, rows, EqualTo("exchange", EXCHANGE)),
            replacement(catalog, REJECTS.identifier,
                        _reject_rows([r | {"source_file": str(path)} for r in rejects], source, run_id, now),
                        And(EqualTo("source", source), IsNull("partition_key"))),
        ],
        _snapshot_properties(run_id, [path], "all"),
    )
    return LoadResult(
        table=REFERENCE_DATA.identifier,
        rows_by_day={"all": len(records)},
        rejects_by_reason=dict(Counter(r["reason"] for r in rejects).most_common()),
        source_files=[str(path)],
        commit=commit,
        rows_read=len(records) + len(rejects),
    )

