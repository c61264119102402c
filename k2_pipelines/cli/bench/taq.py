"""`k2 bench taq`: trades against their prevailing quotes (trades_with_quotes, markouts 1s, 5s and 60s) over one
generated day of ten symbols, 100,000 trades and 300,000 quotes each, laid out as compaction leaves a day (one sorted
commit per table): one symbol over the day, then all of them."""

import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np

from k2_pipelines.cli.bench.generated import COMPACT_START, append_micro_batch, generated_quotes, generated_trades
from k2_pipelines.cli.bench.query import _percentiles, bench_symbols
from k2_pipelines.cli.bench.throughput import built_in_another_process, peak_rss_mb, pin_cores
from k2_pipelines.lib.iceberg.catalog import load_catalog_at
from k2_pipelines.lib.iceberg.tables import QUOTES, TRADES, ensure_tables
from k2_pipelines.lib.upkeep.compaction import sorted_by_sort_order
from k2_pipelines.query import trades_with_quotes

DAY_SECONDS = 86_400


def build_day(root: Path, symbols: tuple[str, ...], trades: int, quotes: int, seed: int) -> None:
    """`trades` and `quotes` per symbol over one UTC day, each table in one commit sorted as compaction sorts it."""
    catalog = load_catalog_at(root)
    ensure_tables(catalog)
    rng = np.random.default_rng(seed)
    for definition, generate, per_symbol in ((TRADES, generated_trades, trades), (QUOTES, generated_quotes, quotes)):
        rows = generate(rng, per_symbol * len(symbols), COMPACT_START, DAY_SECONDS, 0, symbols)
        table = catalog.load_table(definition.identifier)
        append_micro_batch(catalog, definition.identifier, sorted_by_sort_order(table, rows), {})


def bench_taq(symbol_count: int, trades: int, quotes: int, runs: int, wide_runs: int, seed: int, cores: int) -> int:
    symbols = bench_symbols(symbol_count)
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch) / "state"
        built = built_in_another_process(build_day, root, symbols, trades, quotes, seed)
        pin_cores(cores)
        catalog = load_catalog_at(root)
        start, end = COMPACT_START, COMPACT_START + timedelta(days=1)
        one = _percentiles(lambda symbol: trades_with_quotes(symbol, start, end, catalog=catalog), symbols, runs)
        every = _percentiles(lambda _: trades_with_quotes(symbols, start, end, catalog=catalog), symbols, wide_runs)
        print(f"k2 bench taq --symbols {symbol_count} --trades {trades} --quotes {quotes} --runs {runs} --wide-runs "
              f"{wide_runs} --cores {cores}: one UTC day of {symbol_count} symbols, about {trades:,} trades and "
              f"{quotes:,} quotes each, built in {built:.0f}s; trades_with_quotes, tolerance 5s, markouts 1s, 5s, 60s")
        for name, (first, p50, p95, rows) in (("one symbol", one), (f"{symbol_count} symbols", every)):
            print(f"  {name}: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({rows:,} trades); the first run {first:.0f} ms")
        print(f"peak RSS {peak_rss_mb():,.0f} MB")
    return 0
