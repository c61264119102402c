"""`k2 bench ...`: the benchmarks. Each imports what it measures only when it runs (`k2 --help` stays fast); each
stops the broker or servers it started."""

import argparse
from pathlib import Path

from k2_pipelines.lib.drain.kafka_batch import Limits

CORES_HELP = "CPU cores the process is pinned to (default {})"


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    targets = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="target", required=True)
    asx = targets.add_parser("asx", help="ASX load rows/s end to end and peak memory")
    asx.add_argument("--trades", type=int, default=5_000_000)
    asx.add_argument("--seed", type=int, default=7)
    asx.add_argument("--cores", type=int, default=1, help=CORES_HELP.format(1))
    produce = targets.add_parser("produce", help="Binance replay frames/s into Kafka, acknowledged")
    produce.add_argument("--frames", type=int, default=1_000_000)
    produce.add_argument("--seed", type=int, default=7)
    produce.add_argument("--cores", type=int, default=1, help=CORES_HELP.format(1))
    produce.add_argument("--faults", default="", help="as for `k2 sample binance`: e.g. malformed,duplicates")
    drain = targets.add_parser("drain", help="Kafka to committed Iceberg messages/s, peak memory, vs a baseline")
    drain.add_argument("--frames", type=int, default=2_000_000, help="Binance frames produced (trades+quotes)")
    drain.add_argument("--baseline-messages", type=int, default=20_000,
                       help="trades the per-message baseline drains (it is slow)")
    drain.add_argument("--seed", type=int, default=7)
    drain.add_argument("--cores", type=int, default=1, help=CORES_HELP.format(1))
    drain.add_argument("--max-messages", type=int, default=Limits.max_messages, help="messages per batch")
    drain.add_argument("--peer", choices=["spark"], help="also drain the trades topic with this engine and with K2, "
                       "each a process of its own timed from its start, and compare")
    dq = targets.add_parser("dq", help="data-quality checks on one ASX trading date of N trades")
    dq.add_argument("--trades", type=int, default=5_000_000)
    dq.add_argument("--seed", type=int, default=7)
    dq.add_argument("--cores", type=int, default=2, help=CORES_HELP.format(2))
    compact = targets.add_parser("compact", help="compaction of a table of drain-sized appends: files, bytes, "
                                 "one-symbol one-day scans before and after, time and peak memory")
    compact.add_argument("--batches", type=int, default=500, help="micro-batches appended (one commit each)")
    compact.add_argument("--rows-per-batch", type=int, default=6_000)
    compact.add_argument("--days", type=int, default=5, help="UTC days (partitions) the batches span")
    compact.add_argument("--seed", type=int, default=7)
    compact.add_argument("--cores", type=int, default=1, help=CORES_HELP.format(1))
    compact.add_argument("--runs", type=int, default=5, help="runs of each scan (the median is reported)")
    query = targets.add_parser("query", help="query latency (p50, p95) on a generated trades table, before and "
                               "after compaction")
    query.add_argument("--trades", type=int, default=10_000_000, help="trades appended in large commits")
    query.add_argument("--days", type=int, default=10, help="UTC days (partitions) they span")
    query.add_argument("--symbols", type=int, default=10)
    query.add_argument("--small-commits", type=int, default=200, help="then drain-sized appends to the last day")
    query.add_argument("--runs", type=int, default=40, help="runs of each query (cycling through the symbols)")
    query.add_argument("--seed", type=int, default=7)
    query.add_argument("--cores", type=int, default=2, help=CORES_HELP.format(2))
    api = targets.add_parser("api", help="the HTTP API under concurrent clients: requests/s, p50/p95/p99, errors "
                             "per request mix, server RSS (over the `k2 bench query` table, compacted)")
    api.add_argument("--clients", type=int, default=32)
    api.add_argument("--seconds", type=float, default=30, help="per request mix")
    api.add_argument("--trades", type=int, default=10_000_000)
    api.add_argument("--days", type=int, default=10)
    api.add_argument("--symbols", type=int, default=10)
    api.add_argument("--small-commits", type=int, default=200)
    api.add_argument("--seed", type=int, default=7)
    api.add_argument("--rate", type=float, action="append",
                     help="requests/s offered by all clients together (open loop); 0: closed loop, each client asks "
                          "again once answered; repeat for several (default: 0)")
    fresh = targets.add_parser("fresh", help="fresh reads: their cost over plain ones with a large Kafka tail, and "
                               "produce-to-visible latency, fresh against drained")
    fresh.add_argument("--tail", type=int, default=200_000, help="trades left in Kafka beyond the snapshot")
    fresh.add_argument("--drained", type=int, default=200_000, help="trades drained into the table first")
    fresh.add_argument("--runs", type=int, default=20, help="runs of each query, plain and fresh")
    fresh.add_argument("--seconds", type=float, default=30, help="how long trades are produced and looked for")
    fresh.add_argument("--rate", type=float, default=20, help="trades/s produced on the live symbol")
    fresh.add_argument("--drain-every", type=float, default=10, help="seconds between drains meanwhile")
    fresh.add_argument("--seed", type=int, default=7)
    taq = targets.add_parser("taq", help="trades against their prevailing quotes and markouts (trades_with_quotes) "
                             "over one generated day: p50/p95 of one symbol, then of every symbol")
    taq.add_argument("--symbols", type=int, default=10)
    taq.add_argument("--trades", type=int, default=100_000, help="per symbol")
    taq.add_argument("--quotes", type=int, default=300_000, help="per symbol")
    taq.add_argument("--runs", type=int, default=40, help="runs of the one-symbol query (cycling through the symbols)")
    taq.add_argument("--wide-runs", type=int, default=5, help="runs of the every-symbol query")
    taq.add_argument("--seed", type=int, default=7)
    taq.add_argument("--cores", type=int, default=2, help=CORES_HELP.format(2))
    targets.add_parser("recovery", help="time to recovery of the Kafka, catalog and offset-drift runbooks under the "
                       "real Dagster daemon (about 8 minutes)")
    runs = targets.add_parser("runs", help="what a drain run costs Dagster (launch to end, CPU, storage) under "
                              "dagster dev, and the drain cadence that keeps that under 10%% of one core")
    runs.add_argument("--runs", type=int, default=10)
    runs.add_argument("--batch", type=int, default=1_000, help="messages each run drains")
    runs.add_argument("--compiled-bytecode", action="store_true",
                      help="compile the venv and K2 first (a scratch pycache prefix), as uv --compile-bytecode")
    soak = targets.add_parser("soak", help="months of 30-s drains in compressed time, upkeep included: commit "
                                           "time, metadata, manifests, planning and queries every C/10 commits")
    soak.add_argument("--symbols", type=int, default=2_000)
    soak.add_argument("--commits", type=int, default=10_000)
    soak.add_argument("--batch", type=int, default=1_000, help="trades per commit (one commit stands for 30 s)")
    soak.add_argument("--seed", type=int, default=7)
    soak.add_argument("--out", type=Path, default=Path(".k2/bench/soak"), help="where soak.csv and soak.png go")
    for target in targets.choices.values():
        target.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.target in ("asx", "produce", "drain", "dq", "compact"):
        from k2_pipelines.cli.bench import throughput

        if args.target == "asx":
            return throughput.bench_asx(args.trades, args.seed, args.cores)
        if args.target == "produce":
            return throughput.bench_produce(args.frames, args.seed, args.cores, args.faults)
        if args.target == "drain":
            return throughput.bench_drain(args.frames, args.baseline_messages, args.seed, args.cores,
                                          args.max_messages, args.peer)
        if args.target == "dq":
            return throughput.bench_dq(args.trades, args.seed, args.cores)
        return throughput.bench_compact(args.batches, args.rows_per_batch, args.days, args.seed, args.cores,
                                        args.runs)
    if args.target == "query":
        from k2_pipelines.cli.bench.query import bench_query

        return bench_query(args.trades, args.days, args.symbols, args.small_commits, args.runs, args.seed, args.cores)
    if args.target == "api":
        from k2_pipelines.cli.bench.api import bench_api

        return bench_api(args.clients, args.seconds, args.trades, args.days, args.symbols, args.small_commits,
                         args.seed, args.rate or [0.0])
    if args.target == "fresh":
        from k2_pipelines.cli.bench.fresh import bench_fresh

        return bench_fresh(args.tail, args.drained, args.runs, args.seconds, args.rate, args.drain_every, args.seed)
    if args.target == "taq":
        from k2_pipelines.cli.bench.taq import bench_taq

        return bench_taq(args.symbols, args.trades, args.quotes, args.runs, args.wide_runs, args.seed, args.cores)
    if args.target == "recovery":
        from k2_pipelines.cli.bench.recovery import bench_recovery

        return bench_recovery()
    if args.target == "runs":
        from k2_pipelines.cli.bench.runs import bench_runs

        return bench_runs(args.runs, args.batch, args.compiled_bytecode)
    from k2_pipelines.cli.bench.soak import bench_soak

    return bench_soak(args.symbols, args.commits, args.batch, args.seed, args.out)
