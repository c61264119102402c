"""The `k2` command line."""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from k2_pipelines.cli.query import add_parser as add_query_parser
from k2_pipelines.dev.broker import Broker, BrokerError, fetch_jars
from k2_pipelines.lib.asx.sample import DEFAULT_START, DEFAULT_SYMBOLS
from k2_pipelines.lib.drain.kafka_batch import Limits


def _kafka(args) -> int:
    broker = Broker.from_env(args.port)
    if args.action == "fetch":
        fetch_jars(broker.libs)
        print(f"Kafka broker jars are in {broker.libs}")
    elif args.action == "start":
        status = broker.start()
        print(f"kafka is running at {status['bootstrap']} (pid {status['pid']}); data {status['data_dir']}; log {status['log']}")
    elif args.action == "stop":
        print("kafka stopped" if broker.stop() else "kafka was not running")
    else:
        status = broker.status()
        print(json.dumps(status, indent=2))
        return 0 if status["running"] else 3
    return 0


def _sample_asx(args) -> int:
    from k2_pipelines.lib.asx.sample import generate

    counts = generate(Path(args.out), args.symbols.split(","), args.days, args.trades, args.quotes_per_trade, args.seed,
                      args.start, args.bad_rows)
    print(f"wrote {counts['trades']:,} trades and {counts['quotes']:,} quotes for {counts['symbols']} symbols over "
          f"{counts['days']} trading days to {args.out}")
    return 0


def _sample_binance(args) -> int:
    from k2_pipelines.lib.binance.sample import generate_session

    faults = set(filter(None, args.faults.split(",")))
    counts = generate_session(Path(args.out), args.symbols.split(","), args.frames, args.seed, faults)
    print(f"wrote {counts['frames']:,} frames ({counts['trades']:,} trades, {counts['quotes']:,} quotes) to {args.out}; "
          f"faults: " + ", ".join(f"{k}={counts[k]}" for k in ("gaps", "duplicates", "out_of_order", "malformed", "resets")))
    return 0


def _stream_binance(args) -> int:
    from k2_pipelines.cli.stream import stream_binance
    from k2_pipelines.lib.binance.stream import StreamSettings

    settings = StreamSettings(tuple(args.symbols.split(",")), args.endpoint, args.silence_seconds)
    return stream_binance(settings, Path(args.record) if args.record else None, args.metrics_port,
                          args.metrics_host)


def _replay_binance(args) -> int:
    from k2_pipelines.cli.stream import replay_binance

    return replay_binance(Path(args.file), None if args.max else args.speed)


def _drain_binance(args) -> int:
    from k2_pipelines.cli.drain import drain_binance
    from k2_pipelines.lib.drain.kafka_batch import Limits

    tables = ["trades", "quotes"] if args.table == "all" else [args.table]
    if args.topic and len(tables) > 1:
        raise SystemExit("k2 drain: --topic needs --table trades or --table quotes")
    limits = Limits(args.max_messages, args.max_bytes, args.max_seconds)
    return drain_binance(tables, args.topic, limits, args.until_caught_up)


def _tables(args) -> int:
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.iceberg.stats import format_stats, table_stats
    from k2_pipelines.lib.iceberg.tables import ensure_tables

    catalog = load_k2_catalog()
    ensure_tables(catalog)
    stats = table_stats(catalog)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _asx_load(args) -> int:
    from k2_pipelines.cli.asx import run_asx_load

    end = args.end or args.start
    result = run_asx_load(args.start, end)
    # a ranged run reports each asset once for all its dates (one event per date, same metadata)
    reported = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    for asset, metadata in reported.items():
        print(f"{asset} {args.start}..{end}: {metadata['rows_written'].value:,} rows, "
              f"{metadata['rows_rejected'].value:,} rejected")
    print(f"run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
    return 0 if result.success else 1


def _gold_build(args) -> int:
    from k2_pipelines.cli.gold import report, run_build_ohlcv

    end = args.end or args.start
    result = run_build_ohlcv(args.start, end)
    report(result, args.start, end)
    return 0 if result.success else 1


def _metrics_serve(args) -> int:
    from k2_pipelines.cli.metrics import serve

    return serve(args.host, args.port, args.trades_topic, args.quotes_topic)


def _dq_report(args) -> int:
    from k2_pipelines.cli.dq import dq_report

    return dq_report(args.asset, args.partition, args.html)


def _demo(args) -> int:
    from k2_pipelines.cli.demo import run_demo

    return run_demo()


def _dev(args) -> int:
    import os
    import shutil

    from k2_pipelines.cli.dagster_home import prepare_dagster_home
    from k2_pipelines.settings import CHECKOUT

    home = prepare_dagster_home()
    Broker.from_env().start()
    print(f"DAGSTER_HOME={home}; Dagster UI at http://{args.host}:{args.port}")
    beside_python = Path(sys.executable).parent / "dagster"
    dagster = str(beside_python) if beside_python.exists() else shutil.which("dagster")
    os.chdir(CHECKOUT)
    os.execv(dagster, [dagster, "dev", "-w", "workspace.yaml", "-h", args.host, "-p", str(args.port)])


def _upkeep(args) -> int:
    from k2_pipelines.cli.upkeep import run_upkeep

    config = {"dry_run": args.dry_run} | ({"tables": args.tables.split(",")} if args.tables else {})
    if args.action == "compact":
        config["target_file_mb"] = args.target_file_mb
    elif args.action == "expire":
        config |= {"older_than_days": args.older_than_days, "drained_older_than_hours": args.drained_older_than_hours}
    else:
        config["older_than_hours"] = args.older_than_hours
    return run_upkeep(args.action, config)


def _prune_runs(args) -> int:
    from k2_pipelines.cli.upkeep import run_upkeep

    given = {"keep_days": args.keep_days, "keep_failed_days": args.keep_failed_days}
    return run_upkeep("prune-runs", {"dry_run": args.dry_run} | {k: v for k, v in given.items() if v is not None})


def _quarantine(args) -> int:
    from k2_pipelines.cli.quarantine import list_held, release_rows

    if args.action == "list":
        return list_held(args.table)
    return release_rows(args.table, args.source_run, args.check)


def _incidents(args) -> int:
    from k2_pipelines.cli.upkeep import list_incidents

    return list_incidents(args.status, args.json)


def _bench(args) -> int:
    from k2_pipelines.cli import bench

    if args.target == "produce":
        return bench.bench_produce(args.frames, args.seed, args.cores, args.faults)
    if args.target == "drain":
        return bench.bench_drain(args.frames, args.baseline_messages, args.seed, args.cores, args.max_messages)
    if args.target == "dq":
        return bench.bench_dq(args.trades, args.seed, args.cores)
    if args.target == "compact":
        return bench.bench_compact(args.batches, args.rows_per_batch, args.days, args.seed, args.cores, args.runs)
    if args.target == "query":
        from k2_pipelines.cli.bench_query import bench_query

        return bench_query(args.trades, args.days, args.symbols, args.small_commits, args.runs, args.seed, args.cores)
    if args.target == "recovery":
        from k2_pipelines.cli.bench_recovery import bench_recovery

        return bench_recovery()
    if args.target == "runs":
        from k2_pipelines.cli.bench_runs import bench_runs

        return bench_runs(args.runs, args.batch, args.compiled_bytecode)
    if args.target == "soak":
        from k2_pipelines.cli.bench_soak import bench_soak

        return bench_soak(args.symbols, args.commits, args.batch, args.seed, args.out)
    return bench.bench_asx(args.trades, args.seed, args.cores)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="k2", description="K2 market-data lakehouse pipelines")
    commands = root.add_subparsers(dest="command", required=True)

    kafka = commands.add_parser("kafka", help="the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"], help="fetch: only get the jars (Maven)")
    kafka.add_argument("--port", type=int, help="listener port (default K2_KAFKA_PORT or 9092; the controller uses port+1)")
    kafka.set_defaults(run=_kafka)

    sample = commands.add_parser("sample", help="generate sample data")
    sample_kinds = sample.add_subparsers(dest="kind", required=True)
    asx = sample_kinds.add_parser("asx", help="an ASX landing drop (company_info.csv, trades/, quotes/)")
    asx.add_argument("--out", required=True)
    asx.add_argument("--days", type=int, default=5, help="trading days (weekdays)")
    asx.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS))
    asx.add_argument("--trades", type=int, default=200_000, help="about this many trades in all")
    asx.add_argument("--quotes-per-trade", type=float, default=2.0)
    asx.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help="first trading day (YYYY-MM-DD)")
    asx.add_argument("--seed", type=int, default=42)
    asx.add_argument("--bad-rows", type=int, default=0, help="replace this many trade lines by bad ones (to see rejects)")
    asx.set_defaults(run=_sample_asx)

    binance = sample_kinds.add_parser("binance", help="a recorded Binance session (JSON lines), optionally with faults")
    binance.add_argument("--out", required=True)
    binance.add_argument("--symbols", default="BTCUSDT,ETHUSDT,BNBUSDT")
    binance.add_argument("--frames", type=int, default=100_000)
    binance.add_argument("--faults", default="", help="comma-separated: gaps,duplicates,out_of_order,malformed,resets")
    binance.add_argument("--seed", type=int, default=42)
    binance.set_defaults(run=_sample_binance)

    stream = commands.add_parser("stream", help="a live exchange stream into Kafka")
    stream_sources = stream.add_subparsers(dest="source", required=True)
    live = stream_sources.add_parser("binance", help="Binance trades and best bid/ask (combined stream)")
    live.add_argument("--symbols", default="BTCUSDT,ETHUSDT,BNBUSDT")
    live.add_argument("--endpoint", default="wss://stream.binance.com:9443")
    live.add_argument("--record", help="also append every raw frame, with its receive time, to this JSON-lines file")
    live.add_argument("--metrics-port", type=int, default=9464)
    live.add_argument("--metrics-host", default="127.0.0.1", help="0.0.0.0 for a Prometheus in another container")
    live.add_argument("--silence-seconds", type=float, default=30.0, help="reconnect after this long without a frame")
    live.set_defaults(run=_stream_binance)

    replay = commands.add_parser("replay", help="replay recorded frames through normalization into Kafka")
    replay_sources = replay.add_subparsers(dest="source", required=True)
    replay_binance = replay_sources.add_parser("binance", help="a recording from --record or k2 sample binance")
    replay_binance.add_argument("file")
    pace = replay_binance.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="relative to the recorded pace (default 1.0)")
    pace.add_argument("--max", action="store_true", help="as fast as possible")
    replay_binance.set_defaults(run=_replay_binance)

    drain = commands.add_parser("drain", help="drain Kafka into Iceberg (what the Dagster drain assets run)")
    drain_sources = drain.add_subparsers(dest="source", required=True)
    drain_binance = drain_sources.add_parser("binance", help="Binance trades/quotes topics into market_data tables")
    drain_binance.add_argument("--table", choices=["trades", "quotes", "all"], default="all")
    drain_binance.add_argument("--topic", help="read this topic instead of the default one")
    drain_binance.add_argument("--max-messages", type=int, default=Limits.max_messages)
    drain_binance.add_argument("--max-bytes", type=int, default=Limits.max_bytes)
    drain_binance.add_argument("--max-seconds", type=float, default=Limits.max_seconds)
    drain_binance.add_argument("--until-caught-up", action="store_true", help="drain batch after batch until no lag")
    drain_binance.set_defaults(run=_drain_binance)

    tables = commands.add_parser("tables", help="K2's Iceberg tables: rows, files, bytes, current snapshot")
    tables.add_argument("--json", action="store_true")
    tables.set_defaults(run=_tables)

    asx_load = commands.add_parser("asx", help="ASX batch loads").add_subparsers(dest="action", required=True)
    load = asx_load.add_parser("load", help="load trading dates START..END in one run (a CLI backfill)")
    load.add_argument("--start", type=date.fromisoformat, required=True, help="first trading date (YYYY-MM-DD)")
    load.add_argument("--end", type=date.fromisoformat, help="last trading date (default: --start)")
    load.set_defaults(run=_asx_load)

    gold = commands.add_parser("gold", help="gold OHLCV bars").add_subparsers(dest="action", required=True)
    build = gold.add_parser("build", help="rebuild the bars (1m, 1h, 1d) of UTC days START..END in one run")
    build.add_argument("--start", type=date.fromisoformat, required=True, help="first UTC day (YYYY-MM-DD)")
    build.add_argument("--end", type=date.fromisoformat, help="last UTC day (default: --start)")
    build.set_defaults(run=_gold_build)

    metrics = commands.add_parser("metrics", help="Prometheus metrics").add_subparsers(dest="action", required=True)
    metrics_serve = metrics.add_parser("serve", help="table metrics from Iceberg, consumer lag from Kafka, and the "
                                       "upkeep textfiles, computed on each scrape")
    metrics_serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 for a Prometheus in another container")
    metrics_serve.add_argument("--port", type=int, default=9465)
    metrics_serve.add_argument("--trades-topic", help="the topic drained into market_data.trades (lag)")
    metrics_serve.add_argument("--quotes-topic", help="the topic drained into market_data.quotes (lag)")
    metrics_serve.set_defaults(run=_metrics_serve)

    dq = commands.add_parser("dq", help="data quality").add_subparsers(dest="action", required=True)
    dq_report = dq.add_parser("report", help="the newest check results of each asset (or of one, or one partition)")
    dq_report.add_argument("--asset", help="e.g. asx_trades, binance_trades")
    dq_report.add_argument("--partition", help="an ASX trading date (default: each run's results as a whole)")
    dq_report.add_argument("--html", action="store_true", help="print the HTML reports' paths instead")
    dq_report.set_defaults(run=_dq_report)

    upkeep = commands.add_parser("upkeep", help="table upkeep jobs on demand").add_subparsers(dest="action",
                                                                                            required=True)
    for action, help_text in (("compact", "bin-pack small data files (compact_tables)"),
                              ("expire", "expire old snapshots and delete their files (expire_snapshots)"),
                              ("orphans", "delete files no snapshot references (remove_orphan_files)")):
        job = upkeep.add_parser(action, help=help_text)
        job.add_argument("--tables", help="comma-separated names in market_data (default: all)")
        job.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
        job.set_defaults(run=_upkeep)
    upkeep.choices["compact"].add_argument("--target-file-mb", type=int, default=128)
    upkeep.choices["expire"].add_argument("--older-than-days", type=float, default=7.0)
    upkeep.choices["expire"].add_argument("--drained-older-than-hours", type=float, default=2.0,
                                          help="for the tables every drain writes (they keep each day's newest "
                                               "snapshot for --older-than-days)")
    upkeep.choices["orphans"].add_argument("--older-than-hours", type=float, default=72.0,
                                           help="the safety age (never under one hour)")
    prune = upkeep.add_parser("prune-runs", help="delete old finished drain and upkeep runs from the Dagster instance, "
                              "keeping what the recovery sensors and open incidents need (prune_runs)")
    prune.add_argument("--keep-days", type=float, help="successful runs (default 2)")
    prune.add_argument("--keep-failed-days", type=float, help="failed and canceled runs (default 14)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.set_defaults(run=_prune_runs)

    quarantine = commands.add_parser("quarantine", help="rows a blocking check failed on, held out of their table") \
        .add_subparsers(dest="action", required=True)
    held = quarantine.add_parser("list", help="the rows held, by table, drain run and failed check")
    held.add_argument("--table", choices=("trades", "quotes"))
    held.set_defaults(run=_quarantine)
    release = quarantine.add_parser("release", help="put a run's held rows back into their table once the cause is "
                                                    "fixed (exactly once; recorded as an incident)")
    release.add_argument("--table", choices=("trades", "quotes"), required=True)
    release.add_argument("--run", dest="source_run", required=True, help="the drain run whose rows were quarantined")
    release.add_argument("--check", help="only the rows quarantined for this check")
    release.set_defaults(run=_quarantine)

    incidents = commands.add_parser("incidents", help="what the recovery sensors detected, did, and how it ended")
    incidents.add_argument("--status", choices=["open", "resolved", "needs_human"])
    incidents.add_argument("--json", action="store_true")
    incidents.set_defaults(run=_incidents)

    demo = commands.add_parser("demo", help="start Kafka, generate a drop, load it, print what happened")
    demo.set_defaults(run=_demo)

    add_query_parser(commands)

    dev = commands.add_parser("dev", help="the Dagster UI and daemon (dagster dev) on the embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(run=_dev)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="target", required=True)
    bench_asx = bench.add_parser("asx", help="ASX load rows/s end to end and peak memory")
    bench_asx.add_argument("--trades", type=int, default=5_000_000)
    bench_asx.add_argument("--seed", type=int, default=7)
    bench_asx.add_argument("--cores", type=int, default=1, help="CPU cores the process is pinned to (default 1)")
    bench_asx.set_defaults(run=_bench)
    bench_produce = bench.add_parser("produce", help="Binance replay frames/s into Kafka, acknowledged")
    bench_produce.add_argument("--frames", type=int, default=1_000_000)
    bench_produce.add_argument("--seed", type=int, default=7)
    bench_produce.add_argument("--cores", type=int, default=1, help="CPU cores the process is pinned to (default 1)")
    bench_produce.add_argument("--faults", default="", help="as for `k2 sample binance`: e.g. malformed,duplicates")
    bench_produce.set_defaults(run=_bench)
    bench_drain = bench.add_parser("drain", help="Kafka to committed Iceberg messages/s, peak memory, vs a baseline")
    bench_drain.add_argument("--frames", type=int, default=2_000_000, help="Binance frames produced (trades+quotes)")
    bench_drain.add_argument("--baseline-messages", type=int, default=20_000,
                             help="trades the per-message baseline drains (it is slow)")
    bench_drain.add_argument("--seed", type=int, default=7)
    bench_drain.add_argument("--cores", type=int, default=1, help="CPU cores the process is pinned to (default 1)")
    bench_drain.add_argument("--max-messages", type=int, default=Limits.max_messages, help="messages per batch")
    bench_drain.set_defaults(run=_bench)
    bench_dq = bench.add_parser("dq", help="data-quality checks on one ASX trading date of N trades")
    bench_dq.add_argument("--trades", type=int, default=5_000_000)
    bench_dq.add_argument("--seed", type=int, default=7)
    bench_dq.add_argument("--cores", type=int, default=2, help="CPU cores the process is pinned to (default 2)")
    bench_dq.set_defaults(run=_bench)
    bench_compact = bench.add_parser("compact", help="compaction of a table of drain-sized appends: files, bytes, "
                                     "one-symbol one-day scans before and after, time and peak memory")
    bench_compact.add_argument("--batches", type=int, default=500, help="micro-batches appended (one commit each)")
    bench_compact.add_argument("--rows-per-batch", type=int, default=6_000)
    bench_compact.add_argument("--days", type=int, default=5, help="UTC days (partitions) the batches span")
    bench_compact.add_argument("--seed", type=int, default=7)
    bench_compact.add_argument("--cores", type=int, default=1, help="CPU cores the process is pinned to (default 1)")
    bench_compact.add_argument("--runs", type=int, default=5, help="runs of each scan (the median is reported)")
    bench_compact.set_defaults(run=_bench)
    bench_query = bench.add_parser("query", help="query latency (p50, p95) on a generated trades table, before and "
                                   "after compaction")
    bench_query.add_argument("--trades", type=int, default=10_000_000, help="trades appended in large commits")
    bench_query.add_argument("--days", type=int, default=10, help="UTC days (partitions) they span")
    bench_query.add_argument("--symbols", type=int, default=10)
    bench_query.add_argument("--small-commits", type=int, default=200, help="then drain-sized appends to the last day")
    bench_query.add_argument("--runs", type=int, default=40, help="runs of each query (cycling through the symbols)")
    bench_query.add_argument("--seed", type=int, default=7)
    bench_query.add_argument("--cores", type=int, default=2, help="CPU cores the process is pinned to (default 2)")
    bench_query.set_defaults(run=_bench)
    bench_recovery = bench.add_parser("recovery", help="time to recovery of the Kafka, catalog and offset-drift "
                                      "runbooks under the real Dagster daemon (about 8 minutes)")
    bench_recovery.set_defaults(run=_bench)
    bench_runs = bench.add_parser("runs", help="what a drain run costs Dagster (launch to end, CPU, storage) under "
                                  "dagster dev, and the drain cadence that keeps that under 10%% of one core")
    bench_runs.add_argument("--runs", type=int, default=10)
    bench_runs.add_argument("--batch", type=int, default=1_000, help="messages each run drains")
    bench_runs.add_argument("--compiled-bytecode", action="store_true",
                            help="compile the venv and K2 first (a scratch pycache prefix), as uv --compile-bytecode")
    bench_runs.set_defaults(run=_bench)
    bench_soak = bench.add_parser("soak", help="months of 30-s drains in compressed time, upkeep included: commit "
                                                 "time, metadata, manifests, planning and queries every C/10 commits")
    bench_soak.add_argument("--symbols", type=int, default=2_000)
    bench_soak.add_argument("--commits", type=int, default=10_000)
    bench_soak.add_argument("--batch", type=int, default=1_000, help="trades per commit (one commit stands for 30 s)")
    bench_soak.add_argument("--seed", type=int, default=7)
    bench_soak.add_argument("--out", type=Path, default=Path(".k2/bench/soak"), help="where soak.csv and soak.png go")
    bench_soak.set_defaults(run=_bench)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokerError as error:
        print(f"k2: {error}", file=sys.stderr)
        return 2
