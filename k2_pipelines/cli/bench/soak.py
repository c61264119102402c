"""`k2 bench soak`: months of drains in compressed time. A live stream of trades over N symbols goes through the real
local broker and the real drain, one micro-batch per commit, each commit standing for 30 s; the upkeep runs as its
sensors and schedules would at that cadence (the small-files sensor every 10 commits, expiry of the drained tables
every 120 with their retention window counted in commits, the nightly compaction every 2,880). Every report point
prints and records what must stay flat: commit time, metadata sizes, manifests, planning, queries."""

import csv
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from k2_pipelines.cli.kafka import running_broker
from k2_pipelines.defs.upkeep.compaction_sensor import SENSOR_TARGET_FILE_MB, SMALL_FILES_TRIGGER
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.sample import trade_frame
from k2_pipelines.lib.drain.drain import drain_once, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.catalog import load_catalog_at
from k2_pipelines.lib.iceberg.snapshot_files import live_data_files
from k2_pipelines.lib.iceberg.tables import DRAIN_STATE, DRAINED_TABLES, TRADES, ensure_tables
from k2_pipelines.lib.upkeep.compaction import compact_table, most_small_files_in_a_partition
from k2_pipelines.lib.upkeep.expiry import DRAINED_RETENTION_HOURS, expire_snapshots
from k2_pipelines.query import ohlcv, trades

COMMIT_SECONDS = 30  # the lag sensor's cadence: what one commit stands for
SENSOR_EVERY = 300 // COMMIT_SECONDS  # small_files_sensor's interval
EXPIRY_EVERY = 3600 // COMMIT_SECONDS  # expire_drained_tables_hourly
NIGHTLY_EVERY = 86_400 // COMMIT_SECONDS
RETAINED_COMMITS = int(DRAINED_RETENTION_HOURS * 3600) // COMMIT_SECONDS
START = datetime(2026, 1, 5, tzinfo=UTC)
QUERY_RUNS = 20
QUERY_WINDOW = timedelta(hours=4)


class LiveTrades:
    """Binance trade frames over `symbols`, ids rising per symbol, spread over each commit's 30 s."""

    def __init__(self, symbols: list[str], seed: int):
        self.symbols, self.rng = symbols, np.random.default_rng(seed)
        self.next_id = {s: int(self.rng.integers(1_000_000, 5_000_000_000)) for s in symbols}
        self.price = {s: 10 + self.rng.random() * 1000 for s in symbols}
        self.traded: set[str] = set()  # what queries can ask for

    def frames(self, count: int, start: datetime) -> pa.Array:
        start_ms = int(start.timestamp() * 1000)
        times = np.sort(self.rng.integers(start_ms, start_ms + COMMIT_SECONDS * 1000, count)).tolist()
        picked = self.rng.integers(len(self.symbols), size=count).tolist()
        quantities = self.rng.lognormal(-3, 1.5, count).tolist()
        frames = []
        for time_ms, index, quantity in zip(times, picked, quantities):
            symbol = self.symbols[index]
            self.next_id[symbol] += 1
            self.traded.add(symbol)
            frames.append(json.dumps(trade_frame(symbol, self.next_id[symbol], self.price[symbol], quantity, time_ms,
                                                 quantity > 0.05), separators=(",", ":")))
        return pa.array(frames, pa.string())


@dataclass
class Report:
    commit: int
    simulated_hours: float
    commit_p50_ms: float  # one drain: read, decode, dedupe, write, commit (since the previous report)
    commit_p95_ms: float
    trades_metadata_json_kb: float  # the newest metadata.json of market_data.trades
    largest_metadata_json_kb: float  # of any table a drain writes
    trades_metadata_dir_mb: float  # metadata json, manifest lists and manifests of market_data.trades
    largest_metadata_dir_mb: float
    trades_snapshots: int
    trades_manifests: int  # in the current snapshot
    trades_data_files: int
    state_files: int  # market_data.drain_state's, for the topic
    planning_ms: float  # PyIceberg's plan of one symbol's window on a freshly loaded table: what a new process pays
    first_query_ms: float  # (a) below, the first time this process reads the snapshot
    query_latest_1000_p95_ms: float  # the `k2 bench query` shapes over the last QUERY_WINDOW, cycling through symbols
    query_one_symbol_window_p95_ms: float
    query_1m_bars_p95_ms: float


def _metadata_folder(table: Table) -> Path:
    return Path(table.metadata_location.removeprefix("file://")).parent


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _p95_ms(query: Callable[[str], pa.Table], symbols: list[str]) -> float:
    """p95 of QUERY_RUNS runs cycling through symbols, after one run that reads what the process has not yet (the
    new snapshot's manifests and files): `first_query_ms` reports that one."""
    query(symbols[0])
    times = []
    for run in range(QUERY_RUNS):
        started = time.perf_counter()
        query(symbols[run * 7919 % len(symbols)])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 95))


def _measure(catalog: Catalog, commit: int, commit_ms: list[float], symbols: list[str], topic: str) -> Report:
    tables = {d.identifier: catalog.load_table(d.identifier) for d in DRAINED_TABLES}
    main = tables[TRADES.identifier]
    json_kb = {i: Path(t.metadata_location.removeprefix("file://")).stat().st_size / 1024 for i, t in tables.items()}
    folder_mb = {i: _folder_bytes(_metadata_folder(t)) / 2**20 for i, t in tables.items()}
    # the same span of data at every report (today's would grow all day): what history costs shows alone
    end = START + timedelta(seconds=commit * COMMIT_SECONDS)
    start = end - QUERY_WINDOW
    started = time.perf_counter()
    fresh = catalog.load_table(TRADES.identifier)
    list(fresh.scan(row_filter=And(EqualTo("symbol", symbols[0]), And(
        GreaterThanOrEqual("timestamp", start.isoformat()), LessThan("timestamp", end.isoformat())))).plan_files())
    planning_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    trades(symbols[0], start, end, 1000, newest_first=True, catalog=catalog)
    first_query_ms = (time.perf_counter() - started) * 1000
    state = catalog.load_table(DRAIN_STATE.identifier)
    snapshot = main.current_snapshot()
    assert snapshot is not None  # measured after commits
    return Report(
        commit=commit, simulated_hours=round(commit * COMMIT_SECONDS / 3600, 1),
        commit_p50_ms=round(float(np.percentile(commit_ms, 50)), 1),
        commit_p95_ms=round(float(np.percentile(commit_ms, 95)), 1),
        trades_metadata_json_kb=round(json_kb[TRADES.identifier], 1),
        largest_metadata_json_kb=round(max(json_kb.values()), 1),
        trades_metadata_dir_mb=round(folder_mb[TRADES.identifier], 2),
        largest_metadata_dir_mb=round(max(folder_mb.values()), 2),
        trades_snapshots=len(main.snapshots()), trades_manifests=len(snapshot.manifests(main.io)),
        trades_data_files=len(live_data_files(main, snapshot.snapshot_id)),
        state_files=len(list(state.scan(row_filter=EqualTo("topic", topic)).plan_files())),
        planning_ms=round(planning_ms, 1), first_query_ms=round(first_query_ms, 1),
        query_latest_1000_p95_ms=round(_p95_ms(
            lambda s: trades(s, start, end, 1000, newest_first=True, catalog=catalog), symbols), 1),
        query_one_symbol_window_p95_ms=round(_p95_ms(lambda s: trades(s, start, end, 1_000_000, catalog=catalog),
                                                     symbols), 1),
        query_1m_bars_p95_ms=round(_p95_ms(lambda s: ohlcv(s, start, end, "1m", catalog=catalog), symbols), 1),
    )


class CompressedUpkeep:
    """The upkeep sensors and schedules, run after the commits that reach their interval in simulated time."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.committed_at: list[datetime] = []  # wall-clock time of each commit (snapshots carry it)
        self.runs = {"sensor_compactions": 0, "expiries": 0, "snapshots_expired": 0, "nightly_compactions": 0}

    def after_commit(self, commit: int) -> None:
        self.committed_at.append(datetime.now(UTC))
        if commit % SENSOR_EVERY == 0:
            table = self.catalog.load_table(TRADES.identifier)
            snapshot = table.current_snapshot()
            assert snapshot is not None  # called after a commit
            small = most_small_files_in_a_partition(live_data_files(table, snapshot.snapshot_id),
                                                    SENSOR_TARGET_FILE_MB * 2**20)
            if small >= SMALL_FILES_TRIGGER:
                compact_table(self.catalog, TRADES.identifier, SENSOR_TARGET_FILE_MB * 2**20)
                self.runs["sensor_compactions"] += 1
        if commit % EXPIRY_EVERY == 0 and commit > RETAINED_COMMITS:
            cutoff = self.committed_at[commit - RETAINED_COMMITS - 1]  # the window, counted in commits
            for definition in DRAINED_TABLES:
                expired = expire_snapshots(self.catalog, definition.identifier, cutoff)
                self.runs["snapshots_expired"] += len(expired.snapshots_expired)
            self.runs["expiries"] += 1
        if commit % NIGHTLY_EVERY == 0:
            for definition in DRAINED_TABLES:
                compact_table(self.catalog, definition.identifier)
            self.runs["nightly_compactions"] += 1


def _report_points(commits: int) -> list[int]:
    return sorted({commits * k // 10 for k in range(1, 11)} | ({500} if commits >= 1000 else set()))


def _chart(reports: list[Report], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = (("commit time (ms)", ("commit_p50_ms", "commit_p95_ms")),
              ("newest metadata.json (KB)", ("trades_metadata_json_kb", "largest_metadata_json_kb")),
              ("metadata folder (MB)", ("trades_metadata_dir_mb", "largest_metadata_dir_mb")),
              ("files in the current snapshot", ("trades_manifests", "trades_data_files", "state_files")),
              ("planning (ms)", ("planning_ms",)),
              ("query p95 (ms)", ("first_query_ms", "query_latest_1000_p95_ms", "query_one_symbol_window_p95_ms",
                                 "query_1m_bars_p95_ms")))
    figure, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    commits = [r.commit for r in reports]
    for axis, (label, columns) in zip(axes.flat, panels):
        for column in columns:
            axis.plot(commits, [getattr(r, column) for r in reports], marker="o", label=column)
        axis.set_title(label)
        axis.set_xlabel("commits")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def bench_soak(symbol_count: int, commits: int, batch: int, seed: int, out: Path) -> int:
    symbols = [f"S{i:04d}USDT" for i in range(symbol_count)]
    title = f"k2 bench soak --symbols {symbol_count} --commits {commits} --batch {batch}"
    out.mkdir(parents=True, exist_ok=True)
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="k2-soak-") as scratch:
        catalog = load_catalog_at(Path(scratch) / "state")
        ensure_tables(catalog)
        run = uuid.uuid4().hex[:8]
        topics = Topics(f"soak.trades.{run}", f"soak.quotes.{run}", f"soak.dlq.{run}")
        producer = MarketDataProducer(broker.bootstrap, default_registry(), topics)
        target = trades_target(topics.trades)
        reader, registry = reader_for(broker.bootstrap, target), default_registry()
        stream, upkeep = LiveTrades(symbols, seed), CompressedUpkeep(catalog)
        reports, window, points, started = [], [], _report_points(commits), time.perf_counter()
        print(f"{title}: one commit stands for {COMMIT_SECONDS} s; reports at commits {points}", flush=True)
        for commit in range(1, commits + 1):
            simulated = START + timedelta(seconds=(commit - 1) * COMMIT_SECONDS)
            producer.handle_frames(stream.frames(batch, simulated), int(simulated.timestamp() * 1e6))
            if producer.flush(60):
                raise RuntimeError("the broker did not acknowledge a micro-batch within 60 s")
            result = drain_once(catalog, reader, target, registry, Limits(max_messages=batch))
            if result.messages != batch or result.rows_written != batch:
                raise RuntimeError(f"commit {commit} drained {result.messages} messages into {result.rows_written} "
                                   f"rows, not {batch}")
            window.append(result.seconds * 1000)
            upkeep.after_commit(commit)
            if commit in points:
                reports.append(_measure(catalog, commit, window, sorted(stream.traded), topics.trades))
                window = []
                print(", ".join(f"{k} {v}" for k, v in asdict(reports[-1]).items()), flush=True)
        reader.close()
        del producer  # closed before the broker stops: an idle client logs every reconnect it tries
        elapsed = time.perf_counter() - started
    with open(out / "soak.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[f.name for f in fields(Report)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in reports)
    _chart(reports, out / "soak.png", title)
    print(f"{commits:,} commits of {batch:,} trades over {symbol_count:,} symbols "
          f"({commits * COMMIT_SECONDS / 86_400:.1f} simulated days) in {elapsed / 60:.1f} min; upkeep: {upkeep.runs}; "
          f"written {out / 'soak.csv'} and {out / 'soak.png'}")
    return 0
