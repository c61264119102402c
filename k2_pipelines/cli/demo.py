"""`k2 demo` (`make demo`): the embedded stack end to end, then what it did and where to look."""

import argparse
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from textwrap import indent
from time import perf_counter
from typing import TYPE_CHECKING, Any

from k2_pipelines.cli.gold import report
from k2_pipelines.cli.jobs import prepare_dagster_home, run_job, run_range
from k2_pipelines.cli.kafka import running_broker
from k2_pipelines.cli.replay import replay_into_kafka
from k2_pipelines.cli.stream import print_counts
from k2_pipelines.cli.upkeep import run_upkeep
from k2_pipelines.lib.asx.landing import landing_files, trading_dates
from k2_pipelines.lib.asx.sample import DEFAULT_SYMBOLS, generate
from k2_pipelines.lib.binance.sample import FAULTS, generate_session
from k2_pipelines.settings import landing_dir, state_dir

if TYPE_CHECKING:
    import dagster as dg
    from pyiceberg.catalog import Catalog

DEMO_TRADES = 200_000
DEMO_BAD_ROWS = 12
DEMO_BINANCE_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
DEMO_FRAMES = 50_000


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    demo = commands.add_parser("demo", help="start Kafka, generate a drop, load it, print what happened")
    demo.set_defaults(run=run_demo)


def print_checks(result: "dg.ExecuteInProcessResult") -> None:
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


def run_demo(args: argparse.Namespace) -> int:
    """Every step in the persistent instance and state dir; the broker, if the demo started it, stopped after."""
    with running_broker() as broker:
        return _demo_steps(broker.status())


def _demo_steps(broker: dict[str, Any]) -> int:
    from k2_pipelines.lib.asx.summary import rejects_by_reason, rows_by_trading_date
    from k2_pipelines.lib.iceberg.catalog import catalog_properties, load_k2_catalog
    from k2_pipelines.lib.iceberg.stats import format_stats, table_stats

    home = prepare_dagster_home()
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
    result = run_range("asx_load", first, last)
    print(f"3. Dagster run {result.run_id} loaded trading dates {first}..{last}: "
          f"{'succeeded' if result.success else 'FAILED'}; Great Expectations checked what it wrote:")
    print_checks(result)

    session = state_dir() / "landing" / "binance" / "session.jsonl"
    if not session.exists():
        session.parent.mkdir(parents=True, exist_ok=True)
        generate_session(session, list(DEMO_BINANCE_SYMBOLS), DEMO_FRAMES, seed=42, faults=set(FAULTS))
    frames, elapsed, produced = replay_into_kafka(session, speed=None)
    print(f"4. replayed a recorded Binance session ({session}) into Kafka: {frames:,} frames in {elapsed:.1f}s")
    print_counts(produced)
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
    print("7. built the gold OHLCV bars of every UTC day with trades (build_ohlcv, also hourly for yesterday and "
          "today):")
    built, ranges = True, trade_day_ranges(catalog)
    for first_day, last_day in ranges:
        bars_run = run_range("build_ohlcv", first_day, last_day)
        report(bars_run, first_day, last_day)
        built &= bars_run.success
    print("8. queried them (k2_pipelines.query; the same as `k2 query`):")
    show_queries(catalog, DEMO_BINANCE_SYMBOLS[0], ranges[-1][1])  # the Binance session's day: the newest

    served = show_api(DEMO_BINANCE_SYMBOLS[0], ranges[-1][1])

    print("\nIceberg tables (k2 tables):")
    print(format_stats(table_stats(catalog)))
    print("\nASX rows per trading date (partition):")
    by_date = rows_by_trading_date(catalog)
    day = first
    print(f"  {'date':<12}" + "".join(f"{name:>22}" for name in by_date))
    while day <= last:
        print(f"  {day.isoformat():<12}"
              + "".join(f"{counts.get(day.isoformat(), 0):>22,}" for counts in by_date.values()))
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
  k2 tables      table stats;  k2 kafka start|status|stop  the broker (the demo stops the one it started)
  k2 dq report   the newest data-quality results (--asset A, --partition P, --html for the reports' paths)
  k2 stream binance --symbols BTCUSDT,ETHUSDT   the live stream (needs internet); k2 replay binance FILE
  k2 drain binance --until-caught-up             drain outside Dagster; in `make dev` the lag sensor drains
  k2 query trades|quotes|ohlcv --symbol S --start T --end T [--as-of SNAPSHOT|TIME] [--format csv|json|parquet]
  k2 api serve   the same over HTTP (docs at http://127.0.0.1:8000/docs), then the curl of step 9
  k2 gold build --start D [--end D]              rebuild the bars of UTC days (a backfill of build_ohlcv)
  k2 upkeep compact|expire|orphans [--dry-run]   table upkeep; k2 incidents  what the recovery sensors did
                                                 (runbooks: docs/runbooks/)
""")
    return 0 if result.success and drained and compacted and built and served else 1


def show_queries(catalog: "Catalog", symbol: str, day: date) -> None:
    """The symbol's latest trades of the UTC day and its hour bars, with how long each query took."""
    from k2_pipelines.cli.query import as_text
    from k2_pipelines.query import gold_ohlcv, trades

    start = datetime.combine(day, time(), UTC)
    end = start + timedelta(days=1)
    queries = {
        f"latest 3 {symbol} trades of {day}": lambda: trades(symbol, start, end, 3, newest_first=True, catalog=catalog)
        .select(["trade_id", "timestamp", "price", "quantity", "side"]),
        f"first 3 {symbol} hour bars of {day} (market_data.ohlcv_1h)": lambda: gold_ohlcv(
            symbol, start, end, "1h", limit=3, catalog=catalog)
        .select(["bar_start", "open", "high", "low", "close", "volume", "trade_count"]),
    }
    for label, query in queries.items():
        started = perf_counter()
        rows = query()
        print(f"  {label} ({(perf_counter() - started) * 1000:.0f} ms):")
        print(indent(as_text(rows), "    "))


def show_api(symbol: str, day: date) -> bool:
    """A `k2 api serve` of its own, asked what step 8 asked by the curl the demo prints; stopped again."""
    import socket
    import urllib.error
    import urllib.request

    from k2_pipelines.cli.api import api_process
    from k2_pipelines.dev.broker import free_port
    from k2_pipelines.settings import LOOPBACK

    with socket.socket() as probe:  # the default port, so the curl printed is the one a user runs later
        port = 8000 if probe.connect_ex((LOOPBACK, 8000)) else free_port()
    url = f"http://{LOOPBACK}:{port}/v1/trades?symbol={symbol}&start={day}&end={day + timedelta(days=1)}" \
          "&limit=3&newest_first=true&format=csv"
    try:
        with api_process(port), urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode()
    except urllib.error.HTTPError as error:
        print(f"9. the HTTP API answered {error.code}: {error.read().decode()[:300]}")
        return False
    except (RuntimeError, OSError) as error:
        print(f"9. the HTTP API did not answer ({error}; try `k2 api serve`)")
        return False
    print(f"9. served them over HTTP (k2 api serve, started and stopped here): curl -s '{url}'")
    print(indent(body.rstrip(), "    "))
    return True


def run_drain_jobs(table: str) -> list["dg.ExecuteInProcessResult"]:
    """The table's Dagster drain job, run after run, until the topic is drained."""
    runs = []
    while True:
        runs.append(run_job(f"drain_binance_{table}"))
        metadata = runs[-1].asset_materializations_for_node(f"binance_{table}")
        if not runs[-1].success or not metadata or not metadata[0].metadata["lag_after"].value:
            return runs


def trade_day_ranges(catalog: "Catalog") -> list[tuple[date, date]]:
    """The runs of consecutive UTC days that hold trades (from the timestamps: for the demo's small tables)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from k2_pipelines.lib.iceberg.tables import TRADES
    from k2_pipelines.lib.utils.day_ranges import consecutive_day_ranges

    times = catalog.load_table(TRADES.identifier).scan(selected_fields=("timestamp",)).to_arrow()["timestamp"]
    return consecutive_day_ranges(pc.unique(times.cast(pa.date32())).to_pylist())
