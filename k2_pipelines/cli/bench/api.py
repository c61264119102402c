"""`k2 bench api`: the HTTP API under concurrent clients, over the `k2 bench query` table (10 million trades, compacted
as small_files_sensor leaves it). A real `k2 api serve` process; clients are threads with a keep-alive connection
each, every request with parameters of its own (symbol and time window vary: no two requests are the same)."""

import http.client
import os
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from k2_pipelines.cli.api import api_process
from k2_pipelines.cli.bench.generated import COMPACT_START
from k2_pipelines.cli.bench.query import bench_symbols, build_trades
from k2_pipelines.cli.bench.throughput import built_in_another_process
from k2_pipelines.dev.broker import free_port
from k2_pipelines.lib.gold.ohlcv import rebuild_day
from k2_pipelines.lib.iceberg.catalog import load_catalog_at
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.upkeep.compaction import compact_table
from k2_pipelines.settings import LOOPBACK

WARM_UP_REQUESTS = 20  # per request kind, untimed: the server's first read of the snapshot's manifests
Mix = list[tuple[Callable[[random.Random], str], str, float]]  # (request maker, kind, weight)


@dataclass(frozen=True)
class Requests:
    """Request paths of each kind, made from a client's random numbers."""

    symbols: tuple[str, ...]
    days: int

    def latest(self, rng: random.Random) -> str:
        """The latest 100 trades of a symbol before a time in the last day."""
        end = self._last_day() + timedelta(seconds=rng.uniform(3_600, 86_400))
        return (f"/v1/trades?symbol={rng.choice(self.symbols)}&start={_iso(end - timedelta(days=1))}&end={_iso(end)}"
                "&limit=100&newest_first=true")

    def bars(self, rng: random.Random) -> str:
        """One day of 1-minute bars of a symbol, computed from its trades, from a minute of some day."""
        start = COMPACT_START + timedelta(minutes=rng.randrange((self.days - 1) * 1_440))
        return f"/v1/ohlcv/1m?symbol={rng.choice(self.symbols)}&start={_iso(start)}&end={_iso(start + timedelta(1))}"

    def gold_bars(self, rng: random.Random) -> str:
        """The same from the gold table market_data.ohlcv_1m."""
        return self.bars(rng) + "&source=gold"

    def hour(self, rng: random.Random) -> str:
        """A page of 1,000 trades of a symbol from an hour of some day."""
        start = COMPACT_START + timedelta(seconds=rng.uniform(0, (self.days - 1) * 86_400))
        return (f"/v1/trades?symbol={rng.choice(self.symbols)}&start={_iso(start)}"
                f"&end={_iso(start + timedelta(hours=1))}&limit=1000")

    def _last_day(self) -> datetime:
        return COMPACT_START + timedelta(days=self.days - 1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # ms, by kind
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(port: int, mix: Mix, seed: int, deadline: float, results: Results, every: float | None = None,
            first_at: float = 0.0) -> None:
    """Requests one after another (closed loop), or one each `every` seconds from `first_at` (open loop: a request's
    latency counts from when it was due, so a server that falls behind is not hidden by clients that wait for it)."""
    rng, connection = random.Random(seed), http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    makers, kinds, weights = zip(*mix)
    due = first_at
    while (now := time.perf_counter()) < deadline:
        if every is not None:
            if due > now:
                time.sleep(due - now)
            started, due = due, due + every
        else:
            started = now
        index = rng.choices(range(len(makers)), weights)[0]
        path, kind = makers[index](rng), kinds[index]
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            connection.close()
            connection, ok = http.client.HTTPConnection(LOOPBACK, port, timeout=60), False
        elapsed = (time.perf_counter() - started) * 1000
        with results.lock:
            results.latencies[kind].append(elapsed)
            if not ok:
                results.errors[kind] += 1
    connection.close()


def _phase(port: int, mix: Mix, clients: int, seconds: float, seed: int, rate: float) -> tuple[Results, float]:
    """The mix for `seconds`: closed loop (rate 0), or `rate` requests/s spread over the clients."""
    results = Results()
    for maker, _, _ in mix:  # warm-up, untimed
        for number in range(WARM_UP_REQUESTS):
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
            connection.request("GET", maker(random.Random(seed + number)))
            connection.getresponse().read()
            connection.close()
    started = time.perf_counter()
    every = clients / rate if rate else None
    threads = [threading.Thread(target=_client, args=(port, mix, seed * 1_000 + n, started + seconds, results, every,
                                                      started + (every or 0) * n / clients))
               for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - started


def _report(name: str, results: Results, elapsed: float) -> list[str]:
    everything = [ms for kind in results.latencies.values() for ms in kind]
    lines = [f"  {name}: {len(everything) / elapsed:,.0f} requests/s, {_percentiles(everything)}, "
             f"{sum(results.errors.values())} errors"]
    if len(results.latencies) > 1:
        lines += [f"    {kind}: {len(times) / elapsed:,.0f} requests/s, {_percentiles(times)}, "
                  f"{results.errors[kind]} errors" for kind, times in results.latencies.items()]
    return lines


def _percentiles(times: list[float]) -> str:
    if len(times) < 2:
        return "too few requests"
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return f"p50 {cuts[49]:.0f} ms, p95 {cuts[94]:.0f} ms, p99 {cuts[98]:.0f} ms"


def _process_stats(pid: int) -> tuple[float, float]:
    """A process's peak RSS (MB) and CPU seconds so far."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return peak_kb / 1024, cpu


def bench_api(clients: int, seconds: float, rows: int, days: int, symbol_count: int, small_commits: int,
              seed: int, rates: list[float]) -> int:
    symbols = bench_symbols(symbol_count)
    requests = Requests(symbols, days)
    mixes: dict[str, Mix] = {
        "latest 100 trades of a symbol": [(requests.latest, "latest", 1.0)],
        "one day of 1-minute bars of a symbol (on the fly)": [(requests.bars, "bars", 1.0)],
        "one day of 1-minute bars of a symbol (gold)": [(requests.gold_bars, "gold bars", 1.0)],
        "mixed: 60% latest 100, 20% a day of bars, 20% an hour's first 1,000 trades": [
            (requests.latest, "latest", 0.6), (requests.bars, "bars", 0.2), (requests.hour, "hour", 0.2)],
    }
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as scratch:
        root = Path(scratch) / "state"
        built = built_in_another_process(build_trades, root, rows, days, symbols, small_commits, seed)
        catalog = load_catalog_at(root)
        compaction = compact_table(catalog, TRADES.identifier)
        for day in range(days):  # the gold bars, as build_ohlcv leaves them
            rebuild_day(catalog, "1m", (COMPACT_START + timedelta(days=day)).date(), "bench")
        port = free_port()
        env = {name: value for name, value in os.environ.items() if not name.startswith("PYICEBERG_CATALOG__")}
        with api_process(port, {**env, "K2_HOME": str(root), "PYICEBERG_HOME": scratch}) as server:
            offered = "".join(f" --rate {rate:g}" for rate in rates)
            print(f"k2 bench api --clients {clients} --seconds {seconds:g}{offered}: "
                  f"{rows + small_commits * 2_000:,} trades ({symbol_count} symbols, {days} days; built in "
                  f"{built:.0f} s, compacted to {compaction.files_after} files); a k2 api serve process, {clients} "
                  f"clients on this machine's {os.cpu_count()} cores, {seconds:g} s per mix")
            cpu_before = _process_stats(server.pid)[1]
            measured = 0.0
            for rate in rates:
                print(f"open loop: {rate:g} requests/s offered:" if rate else
                      "closed loop: each client asks again once answered:")
                for number, (name, mix) in enumerate(mixes.items()):
                    results, elapsed = _phase(port, mix, clients, seconds, seed + number, rate)
                    measured += elapsed
                    print("\n".join(_report(name, results, elapsed)), flush=True)
            peak_mb, cpu_after = _process_stats(server.pid)
            print(f"server: peak RSS {peak_mb:,.0f} MB, {(cpu_after - cpu_before) / measured:.2f} cores busy "
                  "while measured")
    return 0
