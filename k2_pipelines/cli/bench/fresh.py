"""`k2 bench fresh`: what fresh reads cost and buy, on a broker and catalog of their own.

1. Cost: a generated Binance session in Kafka, all but the last `tail` trades drained; the latest 100 trades of a
   symbol and a day of its 1-minute bars, plain and fresh (right after a drain's commit a fresh query reads, decodes
   and dedupes the whole tail; the next ones only what was produced since).
2. Freshness: a producer sends a trade every 1/rate s on a symbol of its own while a drain runs every `drain_every`
   s (the Dagster cadence's stand-in); a loop asks for the symbol's latest trade, fresh and plain in turn. A trade's
   latency is from just before it was produced to the first answer that holds it."""

import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyiceberg.catalog import Catalog

from k2_pipelines import query
from k2_pipelines.cli.bench.scratch import scratch_k2
from k2_pipelines.cli.replay import replay_into_kafka
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.sample import START_MS, generate_session, trade_frame
from k2_pipelines.lib.drain.drain import DrainTarget, drain_once, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits, TopicReader
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import ensure_tables
from k2_pipelines.settings import bootstrap_servers

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
LIVE_SYMBOL = "LIVEUSDT"
FRAMES_PER_TRADE = 2.6  # generated sessions are about 40% trades


def bench_fresh(tail: int, drained: int, runs: int, seconds: float, rate: float, drain_every: float,
                seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="k2-bench-fresh-") as scratch, scratch_k2(Path(scratch)):
        catalog = load_k2_catalog()
        ensure_tables(catalog)
        session = Path(scratch) / "session.jsonl"
        counts = generate_session(session, SYMBOLS, int((tail + drained) * FRAMES_PER_TRADE), seed)
        replay_into_kafka(session, None)
        target = trades_target(Topics.trades)
        reader = reader_for(bootstrap_servers(), target)
        first = drain_once(catalog, reader, target, default_registry(),
                           Limits(max_messages=counts["trades"] - tail, max_bytes=1 << 30))
        print(f"{first.rows_written:,} trades drained, {counts['trades'] - first.messages:,} in the tail")
        _costs(catalog, runs, lambda: drain_once(catalog, reader, target, default_registry(), Limits(max_messages=1)))
        while drain_once(catalog, reader, target, default_registry()).messages:  # phase 2 starts caught up
            pass
        _freshness(catalog, reader, target, seconds, rate, drain_every)
        reader.close()
    return 0


def _costs(catalog: Catalog, runs: int, drain_one: Callable[[], object]) -> None:
    day = datetime.fromtimestamp(START_MS / 1000, UTC)
    asks = {
        "latest 100 trades": lambda fresh, symbol: query.trades(
            symbol, day, day + timedelta(days=2), limit=100, newest_first=True, fresh=fresh, catalog=catalog),
        "a day of 1-minute bars": lambda fresh, symbol: query.ohlcv(
            symbol, day, day + timedelta(days=1), "1m", fresh=fresh, catalog=catalog),
    }
    for name, ask in asks.items():
        # plain; fresh with the tail read anew (the first fresh query after a drain's commit: one message drained
        # before each); fresh again (the tail read so far is kept: only messages produced since are read)
        for kind in ("plain", "fresh, tail read anew", "fresh, tail kept"):
            ask(kind != "plain", SYMBOLS[0])  # warm: the snapshot's manifests, the consumer's connection
            times = []
            for i in range(runs):
                if kind == "fresh, tail read anew":
                    drain_one()
                started = time.perf_counter()
                result = ask(kind != "plain", SYMBOLS[i % len(SYMBOLS)])
                times.append((time.perf_counter() - started) * 1000)
            held = query.result_freshness(result)
            extra = f" (tail: {held.tail_messages:,} messages, {held.tail_rows:,} of its rows in the result)" \
                if held else ""
            print(f"{name:>22}, {kind:>21}: p50 {statistics.median(times):7.1f} ms, p95 {_p95(times):7.1f} ms over "
                  f"{runs} runs{extra}")


def _freshness(catalog: Catalog, reader: TopicReader, target: DrainTarget, seconds: float, rate: float,
               drain_every: float) -> None:
    linger: dict[str, object] = {"linger.ms": 0}  # each trade on its way at once
    producer = MarketDataProducer(bootstrap_servers(), default_registry(), Topics(), 100_000, **linger)
    produced: dict[str, float] = {}  # trade id -> when it was about to be produced
    stop = threading.Event()

    def produce() -> None:
        trade_id = 1
        while not stop.is_set():
            now = time.time()
            produced[f"BINANCE-{trade_id}"] = now
            producer.handle_frame(json.dumps(trade_frame(LIVE_SYMBOL, trade_id, 100.0, 1.0, int(now * 1000), False)),
                                  int(now * 1_000_000))
            producer.flush(10)
            trade_id += 1
            stop.wait(1 / rate)

    def drain() -> None:
        while not stop.wait(drain_every):
            drain_once(catalog, reader, target, default_registry())

    threads = [threading.Thread(target=produce), threading.Thread(target=drain)]
    for thread in threads:
        thread.start()
    seen: dict[bool, dict[str, float]] = {True: {}, False: {}}
    start, deadline = datetime.now(UTC) - timedelta(hours=1), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for fresh in (True, False):
                try:
                    latest = query.trades(LIVE_SYMBOL, start, datetime.now(UTC) + timedelta(hours=1), limit=1,
                                          newest_first=True, fresh=fresh, catalog=catalog)
                except query.NotFound:  # plain: not drained yet
                    continue
                answered = time.time()
                if latest.num_rows:
                    newest = int(latest["trade_id"][0].as_py().split("-")[1])
                    for number in range(1, newest + 1):
                        seen[fresh].setdefault(f"BINANCE-{number}", answered)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    for fresh in (True, False):
        latencies = [(seen[fresh][i] - produced[i]) * 1000 for i in seen[fresh] if i in produced]
        if latencies:
            print(f"produce -> visible, {'fresh' if fresh else 'plain (drained every ' + f'{drain_every:g} s)'}: "
                  f"p50 {statistics.median(latencies):,.0f} ms, p95 {_p95(latencies):,.0f} ms, "
                  f"max {max(latencies):,.0f} ms over {len(latencies)} trades of {len(produced)} produced")


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]
