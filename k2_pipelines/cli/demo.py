"""`make demo`: the embedded stack end to end, then what it did and where to look."""

from collections import defaultdict
from datetime import date, timedelta

import dagster as dg

from k2_pipelines.cli.asx import run_asx_load
from k2_pipelines.cli.dagster_home import prepare_dagster_home
from k2_pipelines.cli.drain import run_drain_jobs
from k2_pipelines.cli.stream import print_counts, replay_into_kafka
from k2_pipelines.cli.upkeep import run_upkeep
from k2_pipelines.lib.asx.landing import landing_files, trading_dates
from k2_pipelines.lib.asx.sample import DEFAULT_SYMBOLS, generate
from k2_pipelines.lib.asx.summary import rejects_by_reason, rows_by_trading_date
from k2_pipelines.lib.binance.sample import FAULTS, generate_session
from k2_pipelines.lib.catalog import catalog_properties, load_k2_catalog
from k2_pipelines.lib.kafka.broker import Broker
from k2_pipelines.lib.paths import landing_dir, state_dir
from k2_pipelines.lib.table_stats import format_stats, table_stats

DEMO_TRADES = 200_000
DEMO_BAD_ROWS = 12
DEMO_BINANCE_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
DEMO_FRAMES = 50_000


def print_checks(result: dg.ExecuteInProcessResult) -> None:
    """The run's data-quality check results, per asset."""
    by_asset = defaultdict(list)
    for evaluation in result.get_asset_check_evaluations():
        by_asset[evaluation.asset_key.to_user_string()].append(evaluation)
    for asset, evaluations in sorted(by_asset.items()):
        failed = [f"{e.check_name} ({e.severity.value}, {e.metadata['failing'].value:,} failing)"
                  for e in evaluations if not e.passed]
        print(f"     checks of {asset}: {len(evaluations) - len(failed)} of {len(evaluations)} passed"
              + (f"; failed: {', '.join(failed)}" if failed else "")
              + f"\n       report {evaluations[0].metadata['report'].value}")


def run_demo() -> int:
    home = prepare_dagster_home()
    broker = Broker.from_env().start()
    print(f"1. Kafka {broker['bootstrap']} is up (pid {broker['pid']}); log {broker['log']}")

    landing = landing_dir()
    if not (landing / "company_info.csv").exists():
        counts = generate(landing, list(DEFAULT_SYMBOLS), 5, DEMO_TRADES, 2.0, seed=42, bad_rows=DEMO_BAD_ROWS)
        print(f"2. generated an ASX drop in {landing}: {counts['trades']:,} trades ({DEMO_BAD_ROWS} of them bad on "
              f"purpose) and {counts['quotes']:,} quotes")
    else:
        print(f"2. using the ASX drop already in {landing}")

    keys = sorted({key for path in landing_files(landing) if path.parent != landing for key in trading_dates(path)})
    first, last = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
    result = run_asx_load(first, last)
    print(f"3. Dagster run {result.run_id} loaded trading dates {first}..{last}: "
          f"{'succeeded' if result.success else 'FAILED'}; Great Expectations checked what it wrote:")
    print_checks(result)

    session = state_dir() / "landing" / "binance" / "session.jsonl"
    if not session.exists():
        session.parent.mkdir(parents=True, exist_ok=True)
        generate_session(session, list(DEMO_BINANCE_SYMBOLS), DEMO_FRAMES, seed=42, faults=set(FAULTS))
    frames, elapsed, counts = replay_into_kafka(session, speed=None)
    print(f"4. replayed a recorded Binance session ({session}) into Kafka: {frames:,} frames in {elapsed:.1f}s")
    print_counts(counts)
    print("5. drained Kafka into Iceberg with the Dagster drain jobs (exactly once: offsets live in the snapshots):")
    drained = True
    for table in ("trades", "quotes"):
        for run in run_drain_jobs(table):
            drained &= run.success
            for event in run.asset_materializations_for_node(f"binance_{table}"):
                m = event.metadata
                print(f"  run {run.run_id[:8]} binance_{table}: {m['messages'].value:,} messages -> "
                      f"{m['rows_written'].value:,} rows, {m['duplicates_dropped'].value:,} duplicates dropped, "
                      f"{m['dead_letters'].value:,} dead letters, breaks {m['sequence_breaks'].value}, "
                      f"lag after {m['lag_after'].value:,}, {m['duration_seconds'].value:.2f}s")
            print_checks(run)

    print("6. compacted the drained micro-batches (compact_tables, also scheduled nightly):")
    compacted = run_upkeep("compact", {"tables": ["trades", "quotes"]}) == 0

    catalog = load_k2_catalog()
    print("\nIceberg tables (k2 tables):")
    print(format_stats(table_stats(catalog)))
    print("\nASX rows per trading date (partition):")
    by_date = rows_by_trading_date(catalog)
    day = first
    print(f"  {'date':<12}" + "".join(f"{name:>22}" for name in by_date))
    while day <= last:
        print(f"  {day.isoformat():<12}" + "".join(f"{counts.get(day.isoformat(), 0):>22,}" for counts in by_date.values()))
        day += timedelta(days=1)
    print("\nRejected rows (market_data.rejects) by reason:")
    for (source, reason), count in rejects_by_reason(catalog).items() or {("-", "none"): 0}.items():
        print(f"  {source:<20} {reason:<28} {count:>6}")
    print(f"""
Where things are:
  state dir      {state_dir()}   (K2_HOME overrides)
  catalog        {catalog_properties()['uri']}
  warehouse      {catalog_properties().get('warehouse')}
  DAGSTER_HOME   {home}
  landing        {landing}
Next:
  make dev       opens the Dagster UI at http://127.0.0.1:3000 (this run is in its Runs page)
  k2 tables      table stats;  k2 kafka status|stop  the broker
  k2 dq report   the newest data-quality results (--asset A, --partition P, --html for the reports' paths)
  k2 stream binance --symbols BTCUSDT,ETHUSDT   the live stream (needs internet); k2 replay binance FILE
  k2 drain binance --until-caught-up             drain outside Dagster; in `make dev` the lag sensor drains
  k2 upkeep compact|expire|orphans [--dry-run]   table upkeep; k2 incidents  what the recovery sensors did
                                                 (runbooks: docs/runbooks/)
""")
    return 0 if result.success and drained and compacted else 1
