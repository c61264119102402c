"""`k2 bench asx`: ASX load throughput end to end (parse, validate, write, commit) and peak memory."""

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from k2_pipelines.lib.asx.layouts import TRADES
from k2_pipelines.lib.asx.load import load_market_days
from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.catalog import load_catalog_at
from k2_pipelines.lib.tables import ensure_tables

BENCH_DAYS = 5


def bench_asx(trades: int, seed: int, cores: int) -> int:
    # pinned, so that PyIceberg's writer threads share the same cores as Arrow's pools
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    pa.set_cpu_count(cores)
    pa.set_io_thread_count(cores)
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
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"k2 bench asx --trades {trades} --cores {cores}: loaded {result.rows_written:,} trades "
              f"({source_bytes / 1e6:,.0f} MB of CSV, {result.rows_rejected} rejected) in {elapsed:.2f}s = "
              f"{result.rows_written / elapsed:,.0f} rows/s; peak RSS {peak_mb:,.0f} MB")
    return 0
