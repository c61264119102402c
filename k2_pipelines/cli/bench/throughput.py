"""Throughput benchmarks: `k2 bench asx` (ASX load end to end), `k2 bench dq` (the checks of one trading date),
`k2 bench produce` (Binance replay into Kafka), `k2 bench drain` (Kafka into Iceberg, against a per-message baseline)
and `k2 bench compact` (compaction of a table made by micro-batches, and the scans it speeds up)."""

import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

from k2_pipelines.cli.bench.generated import COMPACT_START, COMPACT_SYMBOLS, append_micro_batch, generated_trades
from k2_pipelines.cli.kafka import running_broker
from k2_pipelines.cli.replay import replay_into_kafka
from k2_pipelines.lib.asx.layouts import TRADES
from k2_pipelines.lib.asx.load import load_market_days
from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.asx.validation import validate_market_load
from k2_pipelines.lib.avro.codec import AvroDecoder
from k2_pipelines.lib.avro.registry import Registry, default_registry
from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.drain.checkpoint import checkpoint_properties
from k2_pipelines.lib.drain.drain import drain, quotes_target, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.catalog import embedded_catalog_properties, load_catalog_at
from k2_pipelines.lib.iceberg.tables import TRADES as TRADES_TABLE
from k2_pipelines.lib.iceberg.tables import ensure_tables
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.upkeep.compaction import compact_table

BENCH_DAYS = 5


def pin_cores(cores: int) -> None:
    """Run on `cores` CPUs only: every thread pool (Arrow, PyIceberg, librdkafka) shares them."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    pa.set_cpu_count(cores)
    pa.set_io_thread_count(cores)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_asx(trades: int, seed: int, cores: int) -> int:
    pin_cores(cores)
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch)
        landing = root / "landing"
        # generated in another process so that this one's peak memory is the load's
        subprocess.run([sys.executable, "-m", "k2_pipelines", "sample", "asx", "--out", str(landing), "--days",
                        str(BENCH_DAYS), "--trades", str(trades), "--quotes-per-trade", "0", "--seed", str(seed)],
                       check=True)
        catalog = load_catalog_at(root / "state")
        ensure_tables(catalog)
        days = trading_days(DEFAULT_START, BENCH_DAYS)
        source_bytes = sum(p.stat().st_size for p in (landing / "trades").glob("*.csv"))
        started = time.perf_counter()
        result = load_market_days(catalog, landing, TRADES, days[0], days[-1], "bench")
        elapsed = time.perf_counter() - started
        peak_mb = peak_rss_mb()
        print(f"k2 bench asx --trades {trades} --cores {cores}: loaded {result.rows_written:,} trades "
              f"({source_bytes / 1e6:,.0f} MB of CSV, {result.rows_rejected} rejected) in {elapsed:.2f}s = "
              f"{result.rows_written / elapsed:,.0f} rows/s; peak RSS {peak_mb:,.0f} MB")
    return 0


def bench_dq(trades: int, seed: int, cores: int) -> int:
    """Data-quality checks of one ASX trading date of `trades` trades, as the asx_trades checks run them."""
    pin_cores(cores)
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch)
        landing = root / "landing"
        subprocess.run([sys.executable, "-m", "k2_pipelines", "sample", "asx", "--out", str(landing), "--days", "1",
                        "--trades", str(trades), "--quotes-per-trade", "0", "--seed", str(seed)], check=True)
        catalog = load_catalog_at(root / "state")
        ensure_tables(catalog)
        day = trading_days(DEFAULT_START, 1)[0]
        # loaded in another process, so that this one's peak memory is the checks'
        loader = multiprocessing.get_context("fork").Process(
            target=load_market_days, args=(catalog, landing, TRADES, day, day, "bench"))
        loader.start()
        loader.join()
        if loader.exitcode:
            raise RuntimeError(f"loading the trading date failed (exit code {loader.exitcode})")
        started = time.perf_counter()
        [validation] = validate_market_load(catalog, TRADES, landing, "bench", day, day, Thresholds(),
                                            datetime.now(UTC))
        elapsed = time.perf_counter() - started
        print(f"k2 bench dq --trades {trades} --cores {cores}: {len(validation.outcomes)} checks on "
              f"{validation.rows:,} rows of {day} in {elapsed:.2f}s ({validation.rows / elapsed:,.0f} rows/s, read and "
              f"checked); peak RSS {peak_rss_mb():,.0f} MB; {validation.verdict}")
    return 0


def bench_produce(frames: int, seed: int, cores: int, faults: str) -> int:
    """Replay throughput: frames/s from a recording to acknowledged in Kafka (the local broker)."""
    # the broker starts before pinning: it is the other side of the wire, not part of the bench
    with running_broker(), tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        pin_cores(cores)
        session = Path(scratch) / "session.jsonl"
        subprocess.run([sys.executable, "-m", "k2_pipelines", "sample", "binance", "--out", str(session),
                        "--frames", str(frames), "--seed", str(seed), "--faults", faults], check=True)
        run = uuid.uuid4().hex[:8]
        topics = Topics(f"bench.trades.{run}", f"bench.quotes.{run}", f"bench.dlq.{run}")
        replayed, elapsed, counts = replay_into_kafka(session, None, topics)
        acknowledged = sum(v for k, v in counts.items() if k.startswith("delivered:"))
        dead_letters = sum(v for k, v in counts.items() if k.startswith("dead_letters:"))
        print(f"k2 bench produce --frames {frames} --cores {cores}{f' --faults {faults}' if faults else ''}: "
              f"{replayed:,} frames ({dead_letters:,} dead letters), {acknowledged:,} acknowledged in {elapsed:.2f}s = "
              f"{replayed / elapsed:,.0f} frames/s; peak RSS {peak_rss_mb():,.0f} MB")
    return 0


def _replay_in_child(session: Path, topics: Topics) -> None:
    """Produce in a child process, so that this process's peak memory is the drain's alone."""
    child = multiprocessing.get_context("fork").Process(target=replay_into_kafka, args=(session, None, topics))
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"replay into Kafka failed (exit code {child.exitcode})")


def _baseline(catalog: Catalog, bootstrap: str, topic: str, registry: Registry, messages: int) -> float:
    """How the platform K2 replaces drained: fastavro per message, one Iceberg append per 1,000 messages."""
    table = catalog.load_table(TRADES_TABLE.identifier)
    schema = table.schema().as_arrow()
    decoder = AvroDecoder(registry)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-baseline-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    rows, done, started = [], 0, time.perf_counter()
    while done < messages:
        for message in consumer.consume(min(1_000, messages - done), timeout=1):
            value = message.value()
            if value is None:
                raise RuntimeError(f"{topic}: a message without a value ({message.error()})")
            rows.append(decoder.decode(value)[1])
            done += 1
            if len(rows) == 1_000 or done == messages:
                table.append(pa.Table.from_pylist(rows, schema=schema))
                rows.clear()
    consumer.close()
    return time.perf_counter() - started


def _read_only(bootstrap: str, topics: list[str], limits: Limits) -> float:
    """Seconds for the drain's reads alone (same consumer settings and batches, nothing decoded or written): the
    drain's ceiling on this machine."""
    started = time.perf_counter()
    for topic in topics:
        reader = reader_for(bootstrap, trades_target(topic), **{"group.id": f"bench-consume-{uuid.uuid4().hex}"})
        offsets: dict[int, int] = {}
        while len(batch := reader.read(offsets, limits)):
            offsets = batch.end
        reader.close()
    return time.perf_counter() - started


def _timed_process(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds from the process's start to its exit, its CPU seconds, and what it printed."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True)
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return elapsed, cpu, done.stdout


def _against_spark(bootstrap: str, topic: str, root: Path, cores: int, max_messages: int) -> str:
    """K2's drain and Spark Structured Streaming each draining the trades topic into a catalog of its own, each as
    a process of its own (on the cores this one is pinned to), timed from process start to exit."""
    catalog_root = root / "k2-process"
    catalog_env = {f"PYICEBERG_CATALOG__K2__{key.upper()}": value
                   for key, value in embedded_catalog_properties(catalog_root).items()}
    drain_seconds, drain_cpu, _ = _timed_process(
        [sys.executable, "-m", "k2_pipelines", "drain", "binance", "--table", "trades", "--topic", topic,
         "--max-messages", str(max_messages), "--until-caught-up"],
        catalog_env | {"K2_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    drain_rows = load_catalog_at(catalog_root).load_table(TRADES_TABLE.identifier).scan().count()
    spark_seconds, spark_process_cpu, printed = _timed_process(
        [sys.executable, "-m", "k2_pipelines.cli.bench.spark_peer", "--bootstrap", bootstrap, "--topic", topic,
         "--root", str(root / "spark-process"), "--cores", str(cores)], {})
    spark = json.loads(printed.strip().splitlines()[-1])
    spark_cpu = spark["jvm_cpu_seconds"] + spark["python_cpu_seconds"]  # the JVM is not this process's child
    drain_rate, spark_rate = drain_rows / drain_seconds, spark["messages"] / spark_seconds
    return (f"from process start, trades only: K2 {drain_rows:,} messages in {drain_seconds:.2f}s = "
            f"{drain_rate:,.0f}/s ({drain_cpu:.1f} CPU s); Spark Structured Streaming (local[{cores}], from_avro, "
            f"availableNow) "
            f"{spark['messages']:,} in {spark_seconds:.2f}s = {spark_rate:,.0f}/s ({spark_cpu:.1f} CPU s, "
            f"{spark_process_cpu:.1f} of them outside the JVM); K2 is {drain_rate / spark_rate:.1f}x Spark's rate "
            f"with {spark_cpu / drain_cpu:.1f}x less CPU")


def bench_drain(frames: int, baseline_messages: int, seed: int, cores: int, max_messages: int,
                peer: str | None = None) -> int:
    """Messages/s from Kafka to committed Iceberg rows (trades and quotes), peak memory, and the baseline's rate."""
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        pin_cores(cores)
        root = Path(scratch)
        session = root / "session.jsonl"
        subprocess.run([sys.executable, "-m", "k2_pipelines", "sample", "binance", "--out", str(session),
                        "--frames", str(frames), "--seed", str(seed)], check=True)
        run = uuid.uuid4().hex[:8]
        topics = Topics(f"bench.trades.{run}", f"bench.quotes.{run}", f"bench.dlq.{run}")
        _replay_in_child(session, topics)
        registry = default_registry()
        catalog = load_catalog_at(root / "state")
        ensure_tables(catalog)
        messages = rows = batches = 0
        started = time.perf_counter()
        for target in (trades_target(topics.trades), quotes_target(topics.quotes)):
            reader = reader_for(broker.bootstrap, target)
            while True:
                result = drain(catalog, reader, target, registry, Limits(max_messages=max_messages))
                messages, rows, batches = messages + result.messages, rows + result.rows_written, batches + 1
                if not result.messages:
                    break
            reader.close()
        elapsed = time.perf_counter() - started
        peak_mb = peak_rss_mb()
        read_seconds = _read_only(broker.bootstrap, [topics.trades, topics.quotes], Limits(max_messages=max_messages))
        baseline_catalog = load_catalog_at(root / "baseline")
        ensure_tables(baseline_catalog)
        baseline_seconds = _baseline(baseline_catalog, broker.bootstrap, topics.trades, registry, baseline_messages)
        print(f"k2 bench drain --frames {frames} --cores {cores} --max-messages {max_messages}: drained "
              f"{messages:,} messages into {rows:,} rows in {batches} batches, {elapsed:.2f}s = "
              f"{messages / elapsed:,.0f} messages/s; peak RSS {peak_mb:,.0f} MB; reading alone (no decode, no "
              f"write): {messages / read_seconds:,.0f} messages/s; baseline (fastavro per message, an append per "
              f"1,000) on {baseline_messages:,} trades: {baseline_seconds:.2f}s = "
              f"{baseline_messages / baseline_seconds:,.0f} messages/s "
              f"(K2 is {messages / elapsed / (baseline_messages / baseline_seconds):.1f}x)")
        if peer == "spark":
            print(f"--peer spark: {_against_spark(broker.bootstrap, topics.trades, root, cores, max_messages)}")
    return 0


def _build_micro_batches(root: Path, batches: int, rows_per_batch: int, days: int, seed: int) -> None:
    catalog = load_catalog_at(root)
    ensure_tables(catalog)
    rng, seconds = np.random.default_rng(seed), days * 86_400 / batches
    for batch in range(batches):
        rows = generated_trades(rng, rows_per_batch, COMPACT_START + timedelta(seconds=batch * seconds), seconds,
                                batch * rows_per_batch)
        offsets = {0: (batch + 1) * rows_per_batch}
        append_micro_batch(catalog, TRADES_TABLE.identifier, rows,
                           checkpoint_properties("bench.trades", offsets, 0, f"bench-{batch}"))


def _median_seconds(query: Callable[[], int], runs: int) -> tuple[float, int]:
    """Median wall time of `runs` runs of query(), and the rows it returned."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = query()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def _scan_times(catalog: Catalog, symbol: str, day: datetime, runs: int) -> dict[str, tuple[float, int]]:
    """One symbol's trades of one day: PyIceberg's scan, and DuckDB over the files PyIceberg plans for it."""
    row_filter = And(EqualTo("symbol", symbol), And(GreaterThanOrEqual("timestamp", day.isoformat()),
                                                      LessThan("timestamp", (day + timedelta(days=1)).isoformat())))

    def pyiceberg_scan() -> int:
        return catalog.load_table(TRADES_TABLE.identifier).scan(row_filter=row_filter).to_arrow().num_rows

    def duckdb_scan() -> int:
        tasks = catalog.load_table(TRADES_TABLE.identifier).scan(row_filter=row_filter).plan_files()
        paths = [task.file.file_path.removeprefix("file://") for task in tasks]
        rows = duckdb.execute("SELECT * FROM read_parquet(?) WHERE symbol = ? AND timestamp >= ? AND timestamp < ?",
                              [paths, symbol, day, day + timedelta(days=1)]).to_arrow_table()
        assert rows is not None  # a SELECT has a result set
        return rows.num_rows

    return {"pyiceberg": _median_seconds(pyiceberg_scan, runs), "duckdb": _median_seconds(duckdb_scan, runs)}


def built_in_another_process(build: Callable[..., None], *args: object) -> float:
    """Run `build(*args)` in a forked process (on every core, so that this one's peak memory is what is measured after
    it); its seconds."""
    builder = multiprocessing.get_context("fork").Process(target=build, args=args)
    started = time.perf_counter()
    builder.start()
    builder.join()
    if builder.exitcode:
        raise RuntimeError(f"building the table failed (exit code {builder.exitcode})")
    return time.perf_counter() - started


def bench_compact(batches: int, rows_per_batch: int, days: int, seed: int, cores: int, runs: int) -> int:
    """A trades table of `batches` drain-sized appends: files, bytes and one-symbol one-day scans before and after
    compaction; compaction's time and peak memory."""
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch) / "state"
        # the table stands for hours of drains: it is not what is measured
        built = built_in_another_process(_build_micro_batches, root, batches, rows_per_batch, days, seed)
        pin_cores(cores)
        catalog = load_catalog_at(root)
        day = COMPACT_START + timedelta(days=days // 2)
        before = _scan_times(catalog, COMPACT_SYMBOLS[0], day, runs)
        started = time.perf_counter()
        result = compact_table(catalog, TRADES_TABLE.identifier)
        elapsed = time.perf_counter() - started
        peak_mb = peak_rss_mb()
        after = _scan_times(catalog, COMPACT_SYMBOLS[0], day, runs)
        if any(before[engine][1] != after[engine][1] for engine in before):
            raise RuntimeError(f"the scans returned other row counts after compaction: {before} vs {after}")
        if result.checksum_before != result.checksum_after:
            raise RuntimeError(f"compaction changed the rows: {result}")
        scans = "; ".join(
            f"{engine} {before[engine][0] * 1000:,.0f} ms -> {after[engine][0] * 1000:,.0f} ms "
            f"({before[engine][0] / after[engine][0]:.1f}x)" for engine in before)
        print(f"k2 bench compact --batches {batches} --rows-per-batch {rows_per_batch} --days {days} --cores {cores}: "
              f"{batches * rows_per_batch:,} trades appended in {batches} micro-batches ({built:.1f}s); files "
              f"{result.files_before:,} -> {result.files_after:,} "
              f"({100 * (1 - result.files_after / result.files_before):.1f}% fewer), "
              f"{result.bytes_before / 1e6:,.1f} MB -> {result.bytes_after / 1e6:,.1f} MB; compaction "
              f"{elapsed:.2f}s ({result.rows:,} rows rewritten, {result.commit_attempts} commit attempt(s), checksum "
              f"{result.checksum_after}); peak RSS {peak_mb:,.0f} MB; one symbol, one day ({before['pyiceberg'][1]:,} "
              f"rows), median of {runs}: {scans}")
    return 0
