"""The gate in front of the gold bars: a UTC day is not built from trades whose blocking quality checks failed.

Within one run Dagster itself stops the bars when a blocking check on the trades fails. But the bars are mostly built
by other runs (the hourly schedule, backfills) after the trades' runs have ended, and a failed check leaves the rows
in the table, so the gate reads what the checks of the runs that wrote the day's trades found:

- ASX: a trading date's rows are those of the newest load covering it (a load replaces its dates). Every blocking
  check on asx_trades must have passed on that load; a failed one, or one that never completed (the run died or is
  still running), holds back the UTC days holding the date's trades (D and D-1). The fix: reload the date.
- Binance: a drained batch that failed a blocking check stays in the table until quarantine_bad_batch takes it out
  (the quality gate sensor launches it); until then the UTC days of its rows are held back. A later drain whose
  checks pass proves nothing about it (its checks judged its own batch); a later evaluation of the same batch that
  passes (the check run again, on a corrected threshold) does clear it, as it would within one run.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from k2_pipelines.defs.asx.assets import asx_trades
from k2_pipelines.defs.asx.checks import asx_trades_quality
from k2_pipelines.defs.binance.checks import binance_trades_quality
from k2_pipelines.defs.quality.evaluations import (
    blocking_keys,
    blocks,
    evaluation,
    failed_batches,
    failure_detail,
    history,
    validated_run,
)
from k2_pipelines.lib.asx.layouts import EXCHANGE as ASX
from k2_pipelines.lib.asx.load import local_midnight_utc
from k2_pipelines.lib.gold.ohlcv import utc_day_range
from k2_pipelines.lib.iceberg.run_rows import rows_written_by_run
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.quality.validations import market_loads
from k2_pipelines.lib.query.plan import plan
from k2_pipelines.lib.recovery.quarantine import quarantined_runs
from k2_pipelines.lib.utils.day_ranges import consecutive_day_ranges


@dataclass(frozen=True)
class Hold:
    day: date  # the UTC day held back
    source: str  # whose trades, e.g. "ASX trading date 2014-03-12"
    run_id: str  # the load or drain run that wrote them
    problems: tuple[str, ...]  # the blocking checks that failed or did not complete
    remedy: str

    def describe(self) -> str:
        return f"{self.day}: {self.source}, written by run {self.run_id}: {'; '.join(self.problems)}. {self.remedy}"


@dataclass
class Gate:
    holds: list[Hold] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # trades whose checks could not be looked up (not held back)

    def held_days(self) -> list[date]:
        return sorted({hold.day for hold in self.holds})

    def key(self, day: date) -> str | None:
        """Names what holds the day back (same holds, same key): the schedule shows each hold once."""
        found = sorted((h.source, h.run_id, h.problems) for h in self.holds if h.day == day)
        return hashlib.sha1(repr(found).encode()).hexdigest()[:16] if found else None


def held_back(catalog: Catalog, instance: dg.DagsterInstance, days: list[date]) -> Gate:
    """Which of the UTC `days` hold trades whose blocking checks did not pass, and why."""
    gate = Gate()
    table = catalog.load_table(TRADES.identifier)
    _asx(table, catalog, instance, days, gate)
    _binance(table, catalog, instance, days, gate)
    return gate


def _asx_dates(table: Table, day: date) -> list[date]:
    """The ASX trading dates (D and D+1: Sydney is ahead) with trades in the UTC day, by file statistics only."""
    start, end = utc_day_range(day)
    found = []
    for trading_date in (day, day + timedelta(days=1)):
        low = max(start, local_midnight_utc(trading_date))
        high = min(end, local_midnight_utc(trading_date + timedelta(days=1)))
        row_filter = And(EqualTo("exchange", ASX),
                         And(GreaterThanOrEqual("timestamp", low.isoformat()), LessThan("timestamp", high.isoformat())))
        snapshot = table.current_snapshot()
        if snapshot and plan(table, snapshot.snapshot_id, row_filter).files:  # manifests read once per process
            found.append(trading_date)
    return found


def _load_run(loads: list[tuple[str, date, date]], instance: dg.DagsterInstance, trading_date: date) -> str | None:
    """The run whose load of the date is in the table: the newest load snapshot covering the date, else (its
    snapshot expired) the run of the newest materialization of that asx_trades partition."""
    for run_id, first, last in loads:
        if first <= trading_date <= last:
            return run_id
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asx_trades.key, asset_partitions=[trading_date.isoformat()]), limit=1).records
    return records[0].run_id if records else None


def _load_problems(instance: dg.DagsterInstance, run_id: str) -> tuple[list[str], str]:
    """What did not pass of the blocking checks on asx_trades for the load of `run_id`, and the remedy's kind
    (failed, running or unchecked). The newest evaluation that judged the load counts; a check planned in the run
    and never evaluated did not complete."""
    keys = blocking_keys(asx_trades_quality)
    failed, unfinished, missing = [], [], []
    for key in keys:
        for record in history(instance, key):
            found = evaluation(record)
            if found is not None and validated_run(record, found) == run_id:
                if blocks(found):
                    failed.append(failure_detail(key, found))
                break
            if found is None and record.run_id == run_id:
                unfinished.append(key.name)
                break
        else:
            missing.append(key.name)
    problems = [f"failed {detail}" for detail in failed]
    if unfinished:
        problems.append(f"did not complete: {', '.join(unfinished)}")
    if len(missing) == len(keys):
        problems.append("no evaluation of its blocking checks on asx_trades is recorded in this Dagster instance")
    elif missing:
        problems.append(f"never evaluated: {', '.join(missing)}")
    run_record = instance.get_run_record_by_id(run_id)
    running = run_record is not None and not run_record.dagster_run.is_finished
    return problems, "failed" if failed else "running" if running else "unchecked"


def _asx(table: Table, catalog: Catalog, instance: dg.DagsterInstance, days: list[date], gate: Gate) -> None:
    loads = list(market_loads(catalog, "trades"))
    verdicts: dict[str, tuple[list[str], str]] = {}  # a load covers many dates: each run is looked up once
    for day in days:
        held: dict[str, list[date]] = {}  # load run -> the day's trading dates it loaded
        for trading_date in _asx_dates(table, day):
            run_id = _load_run(loads, instance, trading_date)
            if run_id is None:
                gate.notes.append(f"{day}: no load snapshot or asx_trades materialization names the run that loaded "
                                  f"ASX trading date {trading_date}; its checks cannot be looked up")
                continue
            if run_id not in verdicts:
                verdicts[run_id] = _load_problems(instance, run_id)
            if verdicts[run_id][0]:
                held.setdefault(run_id, []).append(trading_date)
        for run_id, dates in held.items():
            problems, kind = verdicts[run_id]
            named = ", ".join(map(str, dates))
            remedy = {"failed": f"Fix: reload ASX trading date(s) {named} from corrected files (job asx_load); the "
                                "first build after a load whose checks pass builds the day",
                      "running": f"Wait: run {run_id} is still running; the next build after its checks pass builds "
                                 "the day",
                      "unchecked": f"Fix: reload ASX trading date(s) {named} (job asx_load, which runs the "
                                   "checks)"}[kind]
            gate.holds.append(Hold(day, f"ASX trading date(s) {named}", run_id, tuple(problems), remedy))


def _passed_since(instance: dg.DagsterInstance, key: dg.AssetCheckKey, failure_id: int, run_id: str) -> bool:
    """Whether an evaluation of `key` newer than the failure judged the same batch and did not block."""
    for record in history(instance, key):
        if record.id <= failure_id:
            return False
        found = evaluation(record)
        if found is not None and validated_run(record, found) == run_id and not blocks(found):
            return True
    return False


def _binance(table: Table, catalog: Catalog, instance: dg.DagsterInstance, days: list[date], gate: Gate) -> None:
    failures = failed_batches(instance, blocking_keys(binance_trades_quality))  # drain run -> its failures
    if not failures:
        return
    # the quarantine table names the batches taken out (snapshots saying so may have expired since)
    quarantined = quarantined_runs(catalog, TRADES.identifier)
    wanted = set(days)
    for run_id, failed in failures.items():
        if run_id in quarantined:
            continue
        failed = [f for f in failed if not _passed_since(instance, f[0], f[1], run_id)]
        if not failed:
            continue
        timestamps = rows_written_by_run(table, DRAIN_RUN_ID, run_id, ("timestamp",))["timestamp"]
        counts = pc.value_counts(timestamps.cast(pa.date32())).to_pylist()
        for count in counts:
            if count["values"] not in wanted:
                continue
            gate.holds.append(Hold(
                count["values"], f"Binance batch ({count['counts']:,} trades of the day)", run_id,
                tuple(f"failed {detail}" for _, _, detail in failed),
                f"Fix: the quality gate sensor quarantines the batch (job quarantine_bad_batch, run key "
                f"quarantine:trades:{run_id}); wait for that run, or launch quarantine_bad_batch with table=trades, "
                f"source_run_id={run_id} (docs/runbooks/quality_check_failed.md)"))


def _spans(days: list[date]) -> str:
    """2014-03-10..2014-03-12, 2014-03-15"""
    return ", ".join(f"{first}..{last}" if last > first else str(first) for first, last in consecutive_day_ranges(days))


def held_back_failure(asset: str, days: list[date], gate: Gate) -> dg.Failure:
    """The run's failure: which days, whose trades, which checks, which run, and what to do."""
    held = gate.held_days()
    lines = [f"{asset} held back {len(held)} of the run's {len(days)} UTC day(s) ({_spans(held)}): their trades "
             "include rows whose blocking quality checks did not pass. Nothing was committed for any day of this run."]
    lines += [f"- {hold.describe()}" for hold in gate.holds]
    if len(days) > 1:
        others = [d for d in days if d not in held]
        lines.append("A backfill of a range is one run and fails whole"
                     + (f": backfill the other days ({_spans(others)}) on their own, and the held ones once fixed."
                        if others else "."))
    return dg.Failure(description="\n".join(lines), allow_retries=False, metadata={
        "held_back_days": dg.MetadataValue.json([str(d) for d in held]),
        "holds": dg.MetadataValue.json([{"day": str(h.day), "source": h.source, "run_id": h.run_id,
                                         "problems": list(h.problems), "remedy": h.remedy} for h in gate.holds])})
