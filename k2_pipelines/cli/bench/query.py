"""`k2 bench query`: the query layer's latency on a generated trades table of 10 million trades or more, built as a
few large appends and then many drain-sized ones, before and after compaction."""

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog

from k2_pipelines.cli.bench.generated import COMPACT_START, append_micro_batch, generated_trades
from k2_pipelines.cli.bench.throughput import built_in_another_process, peak_rss_mb, pin_cores
from k2_pipelines.lib.gold.ohlcv import rebuild_day
from k2_pipelines.lib.iceberg.catalog import load_catalog_at
from k2_pipelines.lib.iceberg.tables import TRADES, ensure_tables
from k2_pipelines.lib.upkeep.compaction import compact_table, sorted_by_sort_order
from k2_pipelines.query import gold_ohlcv, ohlcv, trades

BULK_BATCH_ROWS = 1_000_000  # a commit of the bulk build (few large commits: the build is fast)
SMALL_BATCH_ROWS = 2_000  # a drain's micro-batch


def bench_symbols(count: int) -> tuple[str, ...]:
    return tuple(f"SYM{i:03d}USDT" for i in range(count))


def build_trades(root: Path, rows: int, days: int, symbols: tuple[str, ...], small_commits: int, seed: int) -> None:
    """`rows` trades over `days` UTC days in large commits sorted as compaction leaves them (they stand for history
    already compacted), then `small_commits` micro-batches into the last day, as drains write them."""
    catalog = load_catalog_at(root)
    ensure_tables(catalog)
    rng, batches = np.random.default_rng(seed), -(-rows // BULK_BATCH_ROWS)
    seconds = days * 86_400 / batches
    table = catalog.load_table(TRADES.identifier)
    for batch in range(batches):
        size = min(BULK_BATCH_ROWS, rows - batch * BULK_BATCH_ROWS)
        append_micro_batch(catalog, TRADES.identifier, sorted_by_sort_order(table, generated_trades(
            rng, size, COMPACT_START + timedelta(seconds=batch * seconds), seconds, batch * BULK_BATCH_ROWS, symbols)),
            {})
    last_day, seconds = COMPACT_START + timedelta(days=days - 1), 86_400 / max(small_commits, 1)
    for batch in range(small_commits):
        append_micro_batch(catalog, TRADES.identifier, generated_trades(
            rng, SMALL_BATCH_ROWS, last_day + timedelta(seconds=batch * seconds), seconds,
            rows + batch * SMALL_BATCH_ROWS, symbols), {})


def _percentiles(query: Callable[[str], pa.Table], symbols: tuple[str, ...],
                 runs: int) -> tuple[float, float, float, int]:
    """The first run's time (ms), then p50 and p95 of `runs` more runs, cycling through the symbols; rows of the last
    run."""
    started = time.perf_counter()
    query(symbols[0])
    first = (time.perf_counter() - started) * 1000
    times, rows = [], 0
    for run in range(runs):
        started = time.perf_counter()
        rows = query(symbols[run % len(symbols)]).num_rows
        times.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(times, n=20, method="inclusive")
    return first, cuts[9], cuts[18], rows


def _measure(catalog: Catalog, symbols: tuple[str, ...], days: int, runs: int) -> dict[str, str]:
    day = COMPACT_START + timedelta(days=days - 1)  # the last day: the one the micro-batches went to
    end = day + timedelta(days=1)
    queries = {
        "(a) latest 1,000 trades": lambda s: trades(s, day, end, 1000, newest_first=True, catalog=catalog),
        "(b) one symbol, one day": lambda s: trades(s, day, end, 1_000_000, catalog=catalog),
        "(c) 1m bars on the fly": lambda s: ohlcv(s, day, end, "1m", catalog=catalog),
        "(d) 1m bars from gold": lambda s: gold_ohlcv(s, day, end, "1m", catalog=catalog),
    }
    results = {}
    for name, query in queries.items():
        first, p50, p95, rows = _percentiles(query, symbols, runs)
        results[name] = f"p50 {p50:.1f} ms, p95 {p95:.1f} ms ({rows:,} rows)"
        if len(results) == 1:  # the process had read nothing of this snapshot yet (manifests, metadata)
            results[name] += f"; its first run, the first query of the snapshot: {first:.0f} ms"
    return results


def bench_query(rows: int, days: int, symbol_count: int, small_commits: int, runs: int, seed: int, cores: int) -> int:
    symbols = bench_symbols(symbol_count)
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch) / "state"
        # the table stands for months of drains: it is not what is measured
        built = built_in_another_process(build_trades, root, rows, days, symbols, small_commits, seed)
        pin_cores(cores)
        catalog = load_catalog_at(root)
        rebuild_day(catalog, "1m", (COMPACT_START + timedelta(days=days - 1)).date(), "bench")  # for query (d)
        before = _measure(catalog, symbols, days, runs)
        compaction = compact_table(catalog, TRADES.identifier)
        after = _measure(catalog, symbols, days, runs)
        total = rows + small_commits * SMALL_BATCH_ROWS
        print(f"k2 bench query --trades {rows} --days {days} --symbols {symbol_count} --small-commits {small_commits} "
              f"--runs {runs} --cores {cores}: {total:,} trades ({rows:,} in {-(-rows // BULK_BATCH_ROWS)} commits, "
              f"{small_commits} micro-batches of {SMALL_BATCH_ROWS:,} into the last day) built in {built:.0f}s; "
              f"{symbol_count} symbols, about {total // days // symbol_count:,} trades per symbol and day")
        for label, results, files in (("before compaction", before, compaction.files_before),
                                      ("after compaction", after, compaction.files_after)):
            print(f"{label} ({files:,} data files):")
            for name, result in results.items():
                print(f"  {name}: {result}")
        print(f"peak RSS {peak_rss_mb():,.0f} MB")
    return 0
