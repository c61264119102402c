"""Benchmarks: `k2 bench asx` (ASX load end to end) and `k2 bench produce` (Binance replay into Kafka)."""

import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

from k2_pipelines.cli.stream import replay_into_kafka
from k2_pipelines.lib.asx.layouts import TRADES
from k2_pipelines.lib.asx.load import load_market_days
from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.catalog import load_catalog_at
from k2_pipelines.lib.kafka.broker import Broker
from k2_pipelines.lib.tables import ensure_tables

BENCH_DAYS = 5


def _pin(cores: int) -> None:
    """Run on `cores` CPUs only: every thread pool (Arrow, PyIceberg, librdkafka) shares them."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    pa.set_cpu_count(cores)
    pa.set_io_thread_count(cores)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_asx(trades: int, seed: int, cores: int) -> int:
    _pin(cores)
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch)
        landing = root / "landing"
        # generated in another process so that this one's peak memory is the load's
        subprocess.run([sys.executable, "-m", "k2_pipelines", "sample", "asx", "--out", str(landing), "--days", str(BENCH_DAYS),
                        "--trades", str(trades), "--quotes-per-trade", "0", "--seed", str(seed)], check=True)
        catalog = load_catalog_at(root / "state")
        ensure_tables(catalog)
        days = trading_days(DEFAULT_START, BENCH_DAYS)
        source_bytes = sum(p.stat().st_size for p in (landing / "trades").glob("*.csv"))
        started = time.perf_counter()
        result = load_market_days(catalog, landing, TRADES, days[0], days[-1], "bench")
        elapsed = time.perf_counter() - started
        peak_mb = _peak_rss_mb()
        print(f"k2 bench asx --trades {trades} --cores {cores}: loaded {result.rows_written:,} trades "
              f"({source_bytes / 1e6:,.0f} MB of CSV, {result.rows_rejected} rejected) in {elapsed:.2f}s = "
              f"{result.rows_written / elapsed:,.0f} rows/s; peak RSS {peak_mb:,.0f} MB")
    return 0


def bench_produce(frames: int, seed: int, cores: int, faults: str) -> int:
    """Replay throughput: frames/s from a recording to acknowledged in Kafka (the local broker)."""
    Broker.from_env().start()  # before pinning: the broker is the other side of the wire, not part of the bench
    _pin(cores)
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
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
              f"{replayed / elapsed:,.0f} frames/s; peak RSS {_peak_rss_mb():,.0f} MB")
    return 0
