"""The query layer over real drained and generated tables: results equal an independent PyIceberg + pandas reading,
time travel, the connection pool under concurrent use, the time limit, and the `k2 query` command."""

import csv
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from k2_pipelines import query
from k2_pipelines.cli import main
from k2_pipelines.cli.bench.generated import append_micro_batch, generated_trades
from k2_pipelines.lib.drain.drain import quotes_target, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.commit import commit_atomically, new_transaction
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.iceberg.writes import append_files, write_rows
from k2_pipelines.lib.query.engine import Engine
from k2_pipelines.lib.query.plan import local_path, plan, range_filter, source
from k2_pipelines_tests.kafka_helpers import SYMBOLS, drain_all, replay_session

EVERYTHING = (datetime(2025, 11, 20, tzinfo=UTC), datetime(2025, 11, 23, tzinfo=UTC))


@pytest.fixture
def drained(kafka_broker, catalog, tmp_path):
    """A session drained into trades and quotes in several commits (snapshots to travel back to)."""
    _, _, topics = replay_session(kafka_broker, tmp_path, 6_000, set())
    drain_all(kafka_broker, trades_target(topics.trades), Limits(max_messages=1_000))
    drain_all(kafka_broker, quotes_target(topics.quotes))
    return catalog


def _scan(catalog, name: str, snapshot_id=None) -> pd.DataFrame:
    return catalog.load_table(f"market_data.{name}").scan(snapshot_id=snapshot_id).to_arrow().to_pandas()


def _expected_events(rows: pd.DataFrame, symbols, id_column: str, newest_first=False, limit=None) -> list[str]:
    chosen = rows[rows["symbol"].isin(symbols)].sort_values(["timestamp", id_column], ascending=not newest_first)
    return chosen[id_column].tolist()[:limit]


def test_trades_and_quotes_equal_an_independent_scan(drained):
    trades, quotes = _scan(drained, "trades"), _scan(drained, "quotes")
    for symbols in ([SYMBOLS[0]], SYMBOLS[:2], SYMBOLS):
        got = query.trades(symbols, *EVERYTHING, limit=1_000_000, catalog=drained)
        assert got["trade_id"].to_pylist() == _expected_events(trades, symbols, "trade_id")
        assert got.num_rows == trades["symbol"].isin(symbols).sum() > 0
        # quotes carry their receive time (the replay's), so their own span
        got = query.quotes(symbols, *_span(quotes), limit=1_000_000, catalog=drained)
        assert got["quote_id"].to_pylist() == _expected_events(quotes, symbols, "quote_id")

    # every column as written, and the time range: start inclusive, end exclusive
    first = trades.sort_values(["timestamp", "trade_id"]).iloc[0]
    start, end = first["timestamp"].to_pydatetime(), first["timestamp"].to_pydatetime() + timedelta(minutes=1)
    got = query.trades(first["symbol"], start, end, catalog=drained).to_pandas()
    window = trades[
        (trades["symbol"] == first["symbol"]) & (trades["timestamp"] >= start) & (trades["timestamp"] < end)
    ]
    expected = window.sort_values(["timestamp", "trade_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["trade_id", "timestamp", "price", "quantity", "side"]],
                                  expected[["trade_id", "timestamp", "price", "quantity", "side"]], check_dtype=False)
    last = expected["timestamp"].iloc[-1].to_pydatetime()
    assert query.trades(first["symbol"], start, last, catalog=drained).num_rows == (window["timestamp"] < last).sum()

    # limits and ordering: the first N, and the latest N newest first, across symbols
    assert query.trades(SYMBOLS, *EVERYTHING, limit=7, catalog=drained)["trade_id"].to_pylist() == \
        _expected_events(trades, SYMBOLS, "trade_id", limit=7)
    latest = query.trades(SYMBOLS[1], *EVERYTHING, limit=25, newest_first=True, catalog=drained)
    assert latest["trade_id"].to_pylist() == _expected_events(trades, [SYMBOLS[1]], "trade_id", True, 25)
    # a known symbol with nothing in the range: an empty result with the columns, not an error
    empty = query.trades(SYMBOLS[0], datetime(2024, 1, 1), datetime(2024, 1, 2), catalog=drained)
    assert empty.num_rows == 0 and "trade_id" in empty.column_names

    assert query.symbols(catalog=drained)["symbol"].to_pylist() == sorted(set(trades["symbol"]))
    assert query.symbols("quotes", catalog=drained)["symbol"].to_pylist() == sorted(set(quotes["symbol"]))


def _span(rows: pd.DataFrame) -> tuple[datetime, datetime]:
    return rows["timestamp"].min().to_pydatetime(), rows["timestamp"].max().to_pydatetime() + timedelta(seconds=1)


def _expected_bars(trades: pd.DataFrame, symbols, width: str) -> pd.DataFrame:
    rows = trades[trades["symbol"].isin(symbols)].sort_values(["timestamp", "trade_id"]).copy()
    rows["bar_start"] = rows["timestamp"].dt.floor(width)
    rows["notional"] = [float(p) * float(q) for p, q in zip(rows["price"], rows["quantity"])]
    groups = rows.groupby(["exchange", "symbol", "bar_start"], sort=False)
    bars = groups.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                      volume=("quantity", "sum"), notional=("notional", "sum"), trade_count=("price", "size"),
                      first_trade_at=("timestamp", "min"), last_trade_at=("timestamp", "max")).reset_index()
    bars["vwap"] = bars["notional"] / bars["volume"].astype(float)
    return bars.sort_values(["bar_start", "symbol", "exchange"]).reset_index(drop=True)


def _assert_bars_equal(got: pa.Table, expected: pd.DataFrame) -> None:
    frame = got.to_pandas()
    assert len(frame) == len(expected) > 0
    exact = ["exchange", "symbol", "bar_start", "open", "high", "low", "close", "volume", "trade_count",
             "first_trade_at", "last_trade_at"]
    pd.testing.assert_frame_equal(frame[exact], expected[exact], check_dtype=False)
    np.testing.assert_allclose(frame["vwap"], expected["vwap"], rtol=1e-12)


def test_bars_on_the_fly_equal_an_independent_computation(drained):
    trades = _scan(drained, "trades")
    for interval, width in (("1m", "1min"), ("5m", "5min"), ("1h", "1h"), ("1d", "1D")):
        got = query.ohlcv(SYMBOLS[:2], *EVERYTHING, interval=interval, catalog=drained)
        _assert_bars_equal(got, _expected_bars(trades, SYMBOLS[:2], width))
    assert query.ohlcv(SYMBOLS, *EVERYTHING, limit=3, catalog=drained).num_rows == 3


def test_gold_bars_read_back_as_the_bars_on_the_fly(drained):
    from k2_pipelines.lib.gold.ohlcv import rebuild_day

    day = EVERYTHING[0] + timedelta(days=1)  # the session's day
    for interval in ("1m", "1h"):
        rebuild_day(drained, interval, day.date(), "test")
        gold = query.gold_ohlcv(SYMBOLS, day, day + timedelta(days=1), interval, catalog=drained)
        _assert_bars_equal(gold, _expected_bars(_scan(drained, "trades"), SYMBOLS, interval.replace("m", "min")))
    with pytest.raises(query.QueryError, match="no gold table for interval '5m'"):
        query.gold_ohlcv(SYMBOLS, day, day + timedelta(days=1), "5m", catalog=drained)


def test_time_travel_returns_the_rows_of_an_older_snapshot(drained):
    history = query.snapshots("trades", catalog=drained).to_pylist()
    assert len(history) >= 3 and history[-1]["current"] and [s["current"] for s in history].count(True) == 1
    older = history[1]
    rows = _scan(drained, "trades", older["snapshot_id"])
    assert 0 < len(rows) == older["total_records"] < len(_scan(drained, "trades"))
    by_id = query.trades(SYMBOLS, *EVERYTHING, limit=1_000_000, as_of=older["snapshot_id"], catalog=drained)
    assert by_id["trade_id"].to_pylist() == _expected_events(rows, SYMBOLS, "trade_id")
    # a time between that snapshot and the next names it; so does its id as a string (the CLI's form)
    between = older["committed_at"] + (history[2]["committed_at"] - older["committed_at"]) / 2
    for as_of in (between.isoformat(), str(older["snapshot_id"])):
        again = query.trades(SYMBOLS, *EVERYTHING, limit=1_000_000, as_of=as_of, catalog=drained)
        assert again["trade_id"].to_pylist() == by_id["trade_id"].to_pylist()
    bars = query.ohlcv(SYMBOLS, *EVERYTHING, "1h", as_of=older["snapshot_id"], catalog=drained)
    assert sum(bars["trade_count"].to_pylist()) == len(rows)
    assert query.symbols(as_of=older["snapshot_id"], catalog=drained)["symbol"].to_pylist() == \
        sorted(set(rows["symbol"]))

    with pytest.raises(query.QueryError, match="had no snapshot yet"):
        query.trades(SYMBOLS, *EVERYTHING, as_of="2020-01-01T00:00:00Z", catalog=drained)
    with pytest.raises(query.QueryError, match="has no snapshot 12345"):
        query.trades(SYMBOLS, *EVERYTHING, as_of=12345, catalog=drained)


def test_the_pyiceberg_read_gives_the_rows_duckdb_reads(drained):
    """The path for delete files and s3:// warehouses: PyIceberg reads, the same SQL runs over its Arrow table."""
    table = drained.load_table(TRADES.identifier)
    planned = plan(table, table.current_snapshot().snapshot_id, range_filter("timestamp", SYMBOLS, *EVERYTHING))
    assert planned.files and not planned.pyiceberg_read
    columns = Engine(1).run("SELECT * FROM {source} LIMIT 1", {}, source(planned), 30).column_names
    assert columns == [f.name for f in table.schema().fields]  # no hive columns from the partition folders
    sql = "SELECT symbol, count(*) AS n, sum(price) AS total FROM {source} GROUP BY symbol ORDER BY symbol"
    from_files = Engine(1).run(sql, {}, source(planned), 30)
    from_pyiceberg = source(replace(planned, pyiceberg_read=True))
    assert isinstance(from_pyiceberg, pa.Table)
    assert Engine(1).run(sql, {}, from_pyiceberg, 30).equals(from_files)


def _generated(catalog, days: int, rows_per_day: int) -> tuple[datetime, datetime]:
    start, rng = datetime(2025, 3, 3, tzinfo=UTC), np.random.default_rng(5)
    for day in range(days):
        append_micro_batch(catalog, TRADES.identifier, generated_trades(
            rng, rows_per_day, start + timedelta(days=day), 86_400, day * rows_per_day), {})
    return start, start + timedelta(days=days)


def test_rows_come_in_event_order_whatever_the_files_and_a_commit_is_seen_at_once(catalog):
    """Files written out of time order and ties in event time still give rows ordered by (time, id), as pandas
    orders them; a query right after a commit sees it (tables and manifests are cached in the process)."""
    start, rng = datetime(2025, 3, 3, tzinfo=UTC), np.random.default_rng(11)
    later = generated_trades(rng, 3_000, start + timedelta(hours=1), 3_600, 0)
    earlier = generated_trades(rng, 3_000, start, 7_200, 3_000)  # overlaps the later batch's hour
    ties = generated_trades(rng, 20, start + timedelta(minutes=90), 0.000001, 6_000)  # one instant
    ids = [f"BINANCE-{i}" for i in (9, 10, 8, 100, 11, 7, 99, 1, 2, 3, 30, 31, 32, 33, 4, 5, 6, 60, 61, 62)]
    ties = ties.set_column(ties.column_names.index("trade_id"), "trade_id", pa.array(ids))  # compared as strings
    end = start + timedelta(days=1)
    seen = pd.DataFrame()
    for batch in (later, earlier, ties):
        append_micro_batch(catalog, TRADES.identifier, batch, {})
        seen = pd.concat([seen, batch.to_pandas()])
        symbols = sorted(set(seen["symbol"]))
        assert query.trades(symbols, start, end, limit=1_000_000, catalog=catalog)["trade_id"].to_pylist() == \
            _expected_events(seen, symbols, "trade_id")
        assert query.trades(symbols[0], start, end, limit=10, newest_first=True, catalog=catalog)[
            "trade_id"].to_pylist() == _expected_events(seen, [symbols[0]], "trade_id", True, 10)

    table = catalog.load_table(TRADES.identifier)
    snapshots = [s.snapshot_id for s in table.snapshots()]
    for chosen, window in (([symbols[0]], (start, start + timedelta(minutes=30))),
                           (symbols, (end, end + timedelta(days=1))),
                           (symbols[:2], (start + timedelta(minutes=61), start + timedelta(minutes=91)))):
        for snapshot in snapshots:  # the same files as PyIceberg's own planning, at every snapshot
            row_filter = range_filter("timestamp", chosen, *window)
            assert set(plan(table, snapshot, row_filter).files) == {
                task.file.file_path.removeprefix("file://")
                for task in table.scan(row_filter=row_filter, snapshot_id=snapshot).plan_files()}


def test_concurrent_queries_share_the_pool(catalog):
    start, _ = _generated(catalog, 2, 100_000)
    symbols = query.symbols(catalog=catalog)["symbol"].to_pylist()
    calls = [(s, start + timedelta(hours=h)) for s in symbols for h in range(0, 48, 6)]

    def run(call):
        symbol, at = call
        return (query.trades(symbol, at, at + timedelta(hours=6), limit=50, newest_first=True, catalog=catalog),
                query.ohlcv(symbol, at, at + timedelta(hours=6), "5m", catalog=catalog))

    alone = [run(call) for call in calls]
    threads_seen = set()

    def tracked(call):
        threads_seen.add(threading.get_ident())
        return run(call)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(tracked, calls))
    assert len(threads_seen) > 1
    for (trades_alone, bars_alone), (trades_together, bars_together) in zip(alone, together):
        assert trades_together.equals(trades_alone) and bars_together.equals(bars_alone)
        assert trades_alone.num_rows == 50 and bars_alone.num_rows == 72


def test_a_query_past_its_time_limit_is_stopped_with_a_clear_error(catalog):
    start, end = _generated(catalog, 3, 1_000_000)
    symbols = query.symbols(catalog=catalog)["symbol"].to_pylist()
    with pytest.raises(query.QueryError, match=r"longer than its time limit of 0\.005 s"):
        query.ohlcv(symbols, start, end, "1m", time_limit=0.005, catalog=catalog)
    with pytest.raises(query.QueryError, match=r"longer than its time limit of 0\.005 s"):  # a streamed result too
        query.trades(symbols, start, end, limit=1_000_000, time_limit=0.005, catalog=catalog)
    # the pool's connections answer the next queries
    bars = query.ohlcv(symbols[0], start, start + timedelta(hours=1), "1m", catalog=catalog)
    assert bars.num_rows == 60


def test_query_command_formats(drained, tmp_path, capsys):
    expected = query.trades(SYMBOLS[:2], *EVERYTHING, limit=40, catalog=drained)
    ranged = ["trades", "--symbol", SYMBOLS[0], "--symbol", SYMBOLS[1], "--start", EVERYTHING[0].isoformat(),
              "--end", EVERYTHING[1].isoformat(), "--limit", "40"]

    assert main(["query", *ranged, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trade_id"] for r in rows] == expected["trade_id"].to_pylist()
    assert [Decimal(r["price"]) for r in rows] == expected["price"].to_pylist()
    assert datetime.fromisoformat(rows[0]["timestamp"]) == expected["timestamp"][0].as_py()

    assert main(["query", *ranged, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["trade_id"] for r in rows] == expected["trade_id"].to_pylist()

    out = tmp_path / "trades.parquet"
    assert main(["query", *ranged, "--format", "parquet", "--out", str(out)]) == 0
    assert pq.read_table(out).equals(expected)

    assert main(["query", *ranged]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["message_id", "trade_id"] and table[-1] == "(40 rows)"
    assert expected["trade_id"][0].as_py() in table[2]

    assert main(["query", "ohlcv", *ranged[1:], "--interval", "1h", "--format", "json"]) == 0
    bars = json.loads(capsys.readouterr().out)
    assert bars == json.loads(json.dumps([{k: str(v) if isinstance(v, Decimal) else
                                           v.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(v, datetime) else v
                                           for k, v in row.items()}
                                          for row in query.ohlcv(SYMBOLS[:2], *EVERYTHING, "1h").to_pylist()]))

    assert main(["query", "symbols", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["symbol", *sorted(SYMBOLS)]
    assert main(["query", "snapshots", "--table", "trades", "--format", "json"]) == 0
    assert [s["snapshot_id"] for s in json.loads(capsys.readouterr().out)] == \
        query.snapshots("trades")["snapshot_id"].to_pylist()


@pytest.mark.parametrize("argv, message", [
    (["trades", "--symbol", "NOPE", "--start", "2025-11-21", "--end", "2025-11-22"], "has no symbol NOPE now"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2025-11-22", "--end", "2025-11-21"], "must be after start"),
    (["trades", "--symbol", "BTCUSDT", "--start", "1970-01-01", "--end", "1970-01-02"], "before 1990"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2024-01-01", "--end", "2025-11-22"], "longer than 366 days"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2025-11-21", "--end", "2999-01-01"], "is in the future"),
    (["trades", "--symbol", "BTCUSDT", "--start", "yesterday", "--end", "2025-11-22"], "start must be an ISO 8601"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2025-11-21", "--end", "2025-11-22", "--limit", "-5"],
     "limit must be between 1 and"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2025-11-21", "--end", "2025-11-22", "--limit", "10000000000"],
     "limit must be between 1 and"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2025-11-21", "--end", "2025-11-22", "--as-of", "last tuesday"],
     "as_of must be a snapshot id or an ISO 8601 time"),
    (["ohlcv", "--symbol", "BTCUSDT", "--start", "2025-11-21", "--end", "2025-11-22", "--interval", "7m"],
     "interval must be one of 1m, 5m, 1h, 1d"),
    (["trades", "--symbol", "BTCUSDT", "--start", "2025-11-21", "--end", "2025-11-22", "--format", "parquet"],
     "--format parquet needs --out"),
    (["snapshots", "--table", "nothing_here"], "there is no table market_data.nothing_here"),
])
def test_bad_input_is_one_clear_line_and_exit_2(catalog, capsys, argv, message):
    _generated(catalog, 1, 1_000)
    assert main(["query", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("k2 query: ") and message in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and not captured.out


def test_an_empty_table_has_no_symbols(catalog):
    assert query.symbols(catalog=catalog).num_rows == 0
    with pytest.raises(query.QueryError, match=r"market_data\.trades has no symbol BTCUSDT now"):
        query.trades("BTCUSDT", *EVERYTHING, catalog=catalog)
    assert pc.sum(query.table_stats(catalog=catalog)["rows"]).as_py() == 0


@pytest.mark.parametrize("form", ["file:{path}", "file://{path}", "{path}"])  # Spark's, PyIceberg's, bare
def test_data_files_recorded_in_any_local_form_are_read(catalog, form):
    start = datetime(2025, 3, 3, tzinfo=UTC)
    rows = generated_trades(np.random.default_rng(5), 3_000, start, 3_600, 1)
    files = write_rows(catalog, TRADES.identifier, rows)
    for data_file in files:  # recorded as that writer records paths (field 1 of Iceberg's data_file struct)
        data_file[1] = form.format(path=local_path(data_file.file_path))
    transaction = new_transaction(catalog.load_table(TRADES.identifier))
    append_files(transaction, files, {})
    commit_atomically(catalog, [transaction])
    names = sorted(set(rows["symbol"].to_pylist()))
    assert query.symbols(catalog=catalog)["symbol"].to_pylist() == names
    got = query.trades(names, start, start + timedelta(hours=1), limit=1_000_000, catalog=catalog)
    expected = rows.sort_by([("timestamp", "ascending"), ("trade_id", "ascending")])
    assert got["trade_id"].to_pylist() == expected["trade_id"].to_pylist()
    bars = query.ohlcv(names, start, start + timedelta(hours=1), "1h", catalog=catalog)
    assert pc.sum(bars["trade_count"]).as_py() == rows.num_rows
