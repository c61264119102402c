"""Trades against their prevailing quotes (trades_with_quotes) equal an independent pandas merge_asof over PyIceberg
scans of the same snapshots: on a drained Binance session whose quotes carry the exchange's time, on an ASX load with
a symbol that has no quotes, and on hand-built tables holding every edge (ties, trades before the first quote, stale
quotes, exchanges, a quote a microsecond after a trade, markouts on a quote's time, time travel); `k2 query taq` and
GET /v1/taq answer the same."""

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from k2_pipelines import query
from k2_pipelines.cli import main
from k2_pipelines.cli.bench.generated import append_micro_batch, generated_quotes, generated_trades
from k2_pipelines.lib.asx.sample import KNOWN_COMPANIES
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.drain.drain import quotes_target, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.tables import QUOTES, TRADES
from k2_pipelines.lib.query import taq, validate
from k2_pipelines.lib.query.formats import plain_rows
from k2_pipelines_tests.helpers import run_asx_load
from k2_pipelines_tests.kafka_helpers import SYMBOLS, drain_all, unique_topics
from k2_pipelines_tests.test_api import api_server
from k2_pipelines_tests.test_asx_load import DAYS
from k2_pipelines_tests.test_query_fuzz import HOSTILE

TRADE_COLUMNS = ["exchange", "symbol", "timestamp", "trade_id", "price", "quantity", "side"]
QUOTE_COLUMNS = ["quote_id", "bid_price", "bid_quantity", "ask_price", "ask_quantity", "mid", "spread"]
T0 = datetime(2025, 3, 3, 10, tzinfo=UTC)


def _scan(catalog, identifier: str, snapshot_id: int | None) -> pa.Table:
    return catalog.load_table(identifier).scan(snapshot_id=snapshot_id).to_arrow()


def _expected(trades: pa.Table, quotes: pa.Table | None, symbols, start: datetime, end: datetime,
              tolerance: timedelta, markouts: dict[str, timedelta]) -> pd.DataFrame:
    """The same join by pandas' merge_asof: the trades in range, each with the newest quote of its symbol and
    exchange at or before it within the tolerance, of several at one time the greatest quote_id."""
    t = trades.to_pandas()
    t = t[t["symbol"].isin(symbols) & (t["timestamp"] >= start) & (t["timestamp"] < end)]
    t = t.sort_values(["timestamp", "trade_id"]).reset_index(drop=True)[TRADE_COLUMNS]
    q = (quotes if quotes is not None else QUOTES.schema().as_arrow().empty_table()).to_pandas()
    q = q.sort_values(["timestamp", "quote_id"]).drop_duplicates(["symbol", "exchange", "timestamp"], keep="last")
    q["mid"] = [(bid + ask) / 2 for bid, ask in zip(q["bid_price"], q["ask_price"])]
    q["spread"] = [ask - bid for bid, ask in zip(q["bid_price"], q["ask_price"])]
    q = q.rename(columns={"timestamp": "quote_timestamp"})[["symbol", "exchange", "quote_timestamp", *QUOTE_COLUMNS]]

    def prevailing(at: pd.Series) -> pd.DataFrame:
        probes = t[["symbol", "exchange"]].assign(at=at)
        return pd.merge_asof(probes, q, left_on="at", right_on="quote_timestamp", by=["symbol", "exchange"],
                             direction="backward", allow_exact_matches=True, tolerance=pd.Timedelta(tolerance))

    now = prevailing(t["timestamp"])
    expected = t.copy()
    for column in ["quote_timestamp", *QUOTE_COLUMNS]:
        expected[column] = now[column].tolist()
    expected["aggressor_by_mid"] = [None if pd.isna(mid) or price == mid else "BUY" if price > mid else "SELL"
                                    for price, mid in zip(expected["price"], expected["mid"])]
    for name, horizon in markouts.items():
        expected[f"mid_after_{name}"] = prevailing(t["timestamp"] + horizon)["mid"].tolist()
    return expected


def _assert_same(got: pa.Table, expected: pd.DataFrame) -> None:
    assert got.column_names == list(expected.columns)
    assert got.num_rows == len(expected)
    for name in got.column_names:
        assert got[name].to_pylist() == [None if pd.isna(value) else value for value in expected[name]], name


def _check(catalog, symbols, start, end, tolerance: str, markouts: list[str], trades_snapshot: int,
           quotes_snapshot: int | None, **as_of) -> pa.Table:
    """trades_with_quotes against the reference over the trades and quotes of the snapshots named (markouts spelled as
    their columns are named)."""
    got = query.trades_with_quotes(symbols, start, end, tolerance, markouts, catalog=catalog, **as_of)
    quotes = _scan(catalog, QUOTES.identifier, quotes_snapshot) if quotes_snapshot is not None else None
    horizons = dict(sorted(((m, _duration(m)) for m in markouts), key=lambda item: item[1]))
    _assert_same(got, _expected(_scan(catalog, TRADES.identifier, trades_snapshot), quotes, symbols,
                                pd.Timestamp(start), pd.Timestamp(end), _duration(tolerance), horizons))
    assert query.result_snapshot(got) == trades_snapshot
    return got


def _duration(text: str) -> timedelta:
    return pd.Timedelta(text).to_pytimedelta()


def _current(catalog, identifier: str) -> int:
    return catalog.load_table(identifier).current_snapshot().snapshot_id


def _exchange_timed(session: Path) -> None:
    """bookTickers with the exchange's event time (E), as Binance's futures streams send them: the generated ones
    carry none, so they would take the replay's receive time, nowhere near the trades."""
    entries = [json.loads(line) for line in session.read_text().splitlines()]
    for entry in entries:
        frame = json.loads(entry["frame"])
        if frame["stream"].endswith("@bookTicker"):
            frame["data"]["E"] = entry["received_at_us"] // 1000  # the session's clock, in ms as trades have it
            entry["frame"] = json.dumps(frame, separators=(",", ":"))
    session.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def test_a_drained_session_equals_merge_asof(kafka_broker, catalog, tmp_path):
    session = tmp_path / "session.jsonl"
    generate_session(session, SYMBOLS, 6_000, seed=3, faults={"duplicates", "out_of_order"})
    _exchange_timed(session)
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(60) == 0
    drain_all(kafka_broker, trades_target(topics.trades))
    drain_all(kafka_broker, quotes_target(topics.quotes), Limits(max_messages=500))  # several quotes snapshots
    trades_now, quotes_now = _current(catalog, TRADES.identifier), _current(catalog, QUOTES.identifier)

    # the data holds what the rules are about: quotes sharing a millisecond, trades on a quote's millisecond
    quotes = _scan(catalog, QUOTES.identifier, quotes_now).to_pandas()
    trades = _scan(catalog, TRADES.identifier, trades_now).to_pandas()
    assert quotes.duplicated(["symbol", "timestamp"]).sum() > 10
    assert trades.merge(quotes, on=["symbol", "timestamp"]).shape[0] > 10
    start, end = trades["timestamp"].min().to_pydatetime(), trades["timestamp"].max().to_pydatetime()
    end += timedelta(microseconds=1)
    current = _check(catalog, SYMBOLS, start, end, "5s", ["1s", "5s", "60s"], trades_now, quotes_now)
    assert current["quote_id"].null_count < current.num_rows
    tight = _check(catalog, SYMBOLS[:2], start, end, "150ms", ["100ms", "1s"], trades_now, quotes_now)
    assert 0 < tight["quote_id"].null_count < tight.num_rows
    _check(catalog, [SYMBOLS[2]], start, end, "60s", [], trades_now, quotes_now)
    # a range inside the session: trades at its edges see the quotes before its start and after its end
    _check(catalog, SYMBOLS, start + (end - start) / 3, start + (end - start) / 2, "5s", ["1s", "30s"], trades_now,
           quotes_now)

    # as of a time between two quotes commits: the current trades with the quotes committed by then
    history = query.snapshots("quotes", catalog=catalog).to_pylist()
    assert len(history) >= 3
    between = history[1]["committed_at"] + (history[2]["committed_at"] - history[1]["committed_at"]) / 2
    older = _check(catalog, SYMBOLS, start, end, "5s", ["1s", "5s", "60s"], trades_now, history[1]["snapshot_id"],
                   as_of=between.isoformat())
    assert older["quote_id"].null_count > current["quote_id"].null_count
    # as of the trades snapshot (committed before any quote): no quotes yet, every quote column null
    before = _check(catalog, SYMBOLS, start, end, "5s", ["1s"], trades_now, None, as_of=trades_now)
    assert before["mid"].null_count == before["mid_after_1s"].null_count == before.num_rows > 0


def test_an_asx_load_with_a_symbol_without_quotes_equals_merge_asof(catalog, landing):
    # MWR's quotes file is left out of the drop: its trades have no quotes at all
    (landing / "quotes" / f"{KNOWN_COMPANIES['MWR'][0]}.csv").unlink()
    run_asx_load(DAYS[0])
    symbols = ["BHP", "MWR", "RIO"]
    day = datetime.fromisoformat(DAYS[0]).replace(tzinfo=UTC)
    start, end = day - timedelta(hours=12), day + timedelta(hours=12)  # the Sydney trading day, in UTC
    got = _check(catalog, symbols, start, end, "2m", ["60s", "600s"], _current(catalog, TRADES.identifier),
                 _current(catalog, QUOTES.identifier))
    rows = got.to_pandas()
    without = rows[rows["symbol"] == "MWR"]
    assert len(without) > 0 and without["quote_id"].isna().all() and without["mid_after_600s"].isna().all()
    assert rows[rows["symbol"] == "BHP"]["quote_id"].notna().sum() > 100
    assert set(rows["aggressor_by_mid"].dropna()) == {"BUY", "SELL"}  # ASX trades have no side: the mid tells


def _with(rows: pa.Table, **columns: list) -> pa.Table:
    for name, values in columns.items():
        rows = rows.set_column(rows.column_names.index(name), name, pa.array(values, rows.schema.field(name).type))
    return rows


def _quote_rows(rows: list[tuple[str, str, float, str, int, int]]) -> pa.Table:
    symbols, exchanges, seconds, ids, bids, asks = zip(*rows)
    return _with(generated_quotes(np.random.default_rng(1), len(rows), T0, 1, 0), symbol=list(symbols),
                 exchange=list(exchanges), timestamp=[T0 + timedelta(seconds=s) for s in seconds], quote_id=list(ids),
                 bid_price=[Decimal(b) for b in bids], ask_price=[Decimal(a) for a in asks])


def _trade_rows(rows: list[tuple[str, str, float, str, str]]) -> pa.Table:
    symbols, exchanges, seconds, ids, prices = zip(*rows)
    return _with(generated_trades(np.random.default_rng(1), len(rows), T0, 1, 0), symbol=list(symbols),
                 exchange=list(exchanges), timestamp=[T0 + timedelta(seconds=s) for s in seconds], trade_id=list(ids),
                 price=[Decimal(p) for p in prices])


QUOTES_FIRST = [
    ("AAA", "X1", 1, "Q-01", 100, 102),
    ("AAA", "X1", 2, "Q-02a", 101, 103),  # three quotes at one microsecond: Q-02c prevails
    ("AAA", "X1", 2, "Q-02c", 105, 107),
    ("AAA", "X1", 2, "Q-02b", 103, 105),
    ("AAA", "X1", 5.000001, "Q-05", 110, 112),  # a microsecond after T-3
    ("AAA", "X1", 10, "Q-10", 120, 122),
    ("AAA", "X2", 4, "Q-X2", 200, 202),  # another exchange
]
QUOTE_LATE = [("AAA", "X1", 7, "Q-07", 130, 132)]  # committed after the trades
TRADES_BUILT = [
    ("AAA", "X1", 0.5, "T-1", "101"),  # before the first quote
    ("AAA", "X1", 2, "T-2", "106"),  # at the quotes' microsecond, at their mid
    ("AAA", "X1", 5, "T-3", "107"),  # Q-05 is in its future; its 5s markout lands on Q-10's time
    ("AAA", "X1", 8, "T-4", "100"),  # Q-05, or once committed Q-07
    ("AAA", "X1", 9.999999, "T-7", "111"),  # a microsecond before Q-10: Q-05, or once committed Q-07
    ("AAA", "X1", 15, "T-5", "121"),  # Q-10 exactly the tolerance old
    ("AAA", "X1", 15.000001, "T-6", "121"),  # Q-10 a microsecond past the tolerance
    ("AAA", "X2", 4.5, "T-8", "203"),  # X2's quote only
    ("BBB", "X1", 3, "T-9", "50"),  # a symbol without quotes
]


@pytest.fixture
def built(catalog) -> tuple[int, int]:
    """The hand-built quotes, trades, then the late quote, in three commits: the first and the trades' snapshots."""
    append_micro_batch(catalog, QUOTES.identifier, _quote_rows(QUOTES_FIRST), {})
    quotes_first = _current(catalog, QUOTES.identifier)
    append_micro_batch(catalog, TRADES.identifier, _trade_rows(TRADES_BUILT), {})
    time.sleep(0.01)  # the late quote's commit is in a later millisecond than the trades'
    append_micro_batch(catalog, QUOTES.identifier, _quote_rows(QUOTE_LATE), {})
    return quotes_first, _current(catalog, TRADES.identifier)


def test_hand_built_edges_time_travel_the_command_and_the_api(catalog, built, capsys, monkeypatch):
    quotes_first, trades_now = built
    start, end, markouts = T0, T0 + timedelta(minutes=1), ["1s", "3s", "5s"]

    got = _check(catalog, ["AAA", "BBB"], start, end, "5s", markouts, trades_now, _current(catalog, QUOTES.identifier))
    rows = {row["trade_id"]: row for row in got.to_pylist()}
    assert [r["trade_id"] for r in got.to_pylist()] == ["T-1", "T-2", "T-9", "T-8", "T-3", "T-4", "T-7", "T-5", "T-6"]
    assert got.column_names[-3:] == ["mid_after_1s", "mid_after_3s", "mid_after_5s"]
    assert rows["T-1"]["quote_id"] is None and rows["T-1"]["mid_after_1s"] == Decimal(101)
    assert (rows["T-2"]["quote_id"], rows["T-2"]["mid"], rows["T-2"]["aggressor_by_mid"]) == ("Q-02c", 106, None)
    assert (rows["T-3"]["quote_id"], rows["T-3"]["aggressor_by_mid"], rows["T-3"]["mid_after_5s"]) == \
        ("Q-02c", "BUY", Decimal(121))
    assert (rows["T-4"]["quote_id"], rows["T-4"]["aggressor_by_mid"]) == ("Q-07", "SELL")
    assert rows["T-7"]["quote_id"] == "Q-07" and rows["T-5"]["quote_id"] == "Q-10"
    assert rows["T-6"]["quote_id"] is None and rows["T-6"]["mid_after_1s"] is None
    assert (rows["T-8"]["quote_id"], rows["T-8"]["spread"]) == ("Q-X2", Decimal(2))
    assert all(rows["T-9"][c] is None for c in ["quote_timestamp", *QUOTE_COLUMNS, "mid_after_5s"])

    # as of the trades snapshot, or a time before the late quote's commit: Q-07 is not there yet
    committed = query.snapshots("trades", catalog=catalog).to_pylist()[-1]["committed_at"]
    for as_of in (trades_now, committed.isoformat()):
        older = _check(catalog, ["AAA"], start, end, "5s", markouts, trades_now, quotes_first, as_of=as_of)
        seen = {r["trade_id"]: r["quote_id"] for r in older.to_pylist()}
        assert seen["T-4"] == seen["T-7"] == "Q-05"
    # a known symbol without trades in the range: no rows, every column
    empty = query.trades_with_quotes("AAA", end, end + timedelta(hours=1), markouts=markouts, catalog=catalog)
    assert empty.num_rows == 0 and empty.schema.remove_metadata() == got.schema.remove_metadata()
    # a tolerance of 0: only a quote at the trade's very microsecond
    exact = query.trades_with_quotes("AAA", start, end, "0s", [], catalog=catalog)
    assert [r["quote_id"] for r in exact.to_pylist() if r["quote_id"]] == ["Q-02c"]
    # read by PyIceberg (delete files, s3://): the same rows
    planned = taq.plan
    with monkeypatch.context() as patch:
        patch.setattr(taq, "plan", lambda *args: replace(planned(*args), pyiceberg_read=True))
        assert query.trades_with_quotes(["AAA", "BBB"], start, end, "5s", markouts, catalog=catalog).equals(got)

    ranged = ["--symbol", "AAA", "--symbol", "BBB", "--start", start.isoformat(), "--end", end.isoformat()]
    assert main(["query", "taq", *ranged, "--markout", "1s", "--markout", "5s", "--markout", "3s",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(plain_rows(got)))
    assert main(["query", "taq", *ranged, "--tolerance", "5 parsecs"]) == 2
    assert "tolerance must be a whole number and a unit" in capsys.readouterr().err

    with api_server({}) as server:
        path = f"/v1/taq?symbol=AAA&symbol=BBB&start={start.isoformat()}&end={end.isoformat()}".replace("+", "%2B")
        answer = server.get(f"{path}&markout=1s&markout=5s&markout=3s")
        assert answer.status == 200 and answer.json()["rows"] == json.loads(json.dumps(plain_rows(got)))
        assert answer.json()["snapshot_id"] == trades_now
        parquet = pq.read_table(pa.BufferReader(server.get(f"{path}&markout=1s&markout=5s&markout=3s&format=parquet")
                                                .body))
        assert parquet.equals(got)
        default = server.get(f"{path}&limit=2").json()
        assert default["row_count"] == 2 and list(default["rows"][0])[-3:] == ["mid_after_1s", "mid_after_5s",
                                                                                "mid_after_60s"]
        bad = server.get(f"{path}&tolerance=2d")
        assert bad.status == 400 and "tolerance must be" in bad.json()["error"]


def test_hostile_arguments_are_clear_errors_and_change_no_table(catalog, built):
    good = {"symbols": ["AAA", "BBB"], "start": T0, "end": T0 + timedelta(minutes=1)}
    reference, before = query.trades_with_quotes(**good, catalog=catalog), query.table_stats(catalog=catalog)
    for hostile in HOSTILE:
        for argument in ("symbols", "start", "end", "tolerance", "markouts", "limit", "as_of"):
            for value in (hostile, [hostile]):
                try:
                    result = query.trades_with_quotes(**{**good, argument: value}, catalog=catalog)
                except query.QueryError as error:
                    assert str(error) and "\x00" not in str(error) and len(str(error)) < 400
                    continue
                # the one hostile value with a meaning: an as-of time far ahead names the current snapshots
                assert (argument, value) == ("as_of", "9999-12-31T23:59:59") and result.equals(reference)
    assert query.table_stats(catalog=catalog).equals(before)


def test_without_a_quotes_table_every_quote_column_is_null(catalog, built):
    with_quotes = query.trades_with_quotes(["AAA", "BBB"], T0, T0 + timedelta(minutes=1), catalog=catalog)
    catalog.drop_table(QUOTES.identifier)
    got = query.trades_with_quotes(["AAA", "BBB"], T0, T0 + timedelta(minutes=1), catalog=catalog)
    assert got.schema == with_quotes.schema and got.select(TRADE_COLUMNS).equals(with_quotes.select(TRADE_COLUMNS))
    assert all(got[name].null_count == got.num_rows > 0 for name in got.column_names[len(TRADE_COLUMNS):])


def test_the_time_limit_is_the_whole_querys(catalog, built, monkeypatch):
    class Stopped:
        def run(self, *args, **kwargs):
            raise query.QueryTimeout("the query took longer than its time limit of 0.001 s")  # what was left

    monkeypatch.setattr(taq, "engine", Stopped)
    with pytest.raises(query.QueryTimeout, match=r"longer than its time limit of 2\.5 s; narrow"):
        query.trades_with_quotes("AAA", T0, T0 + timedelta(minutes=1), time_limit=2.5, catalog=catalog)


@pytest.mark.parametrize("arguments, message", [
    ({"tolerance": "5 parsecs"}, "tolerance must be a whole number and a unit"),
    ({"tolerance": "2d"}, "tolerance must be a whole number and a unit"),
    ({"tolerance": "25h"}, "tolerance must be between 0 and 1 day"),
    ({"tolerance": timedelta(seconds=-1)}, "tolerance must be between 0 and 1 day"),
    ({"tolerance": 5}, "tolerance must be a timedelta or a string"),
    ({"markouts": ["1s", "\uff11s"]}, "a markout must be a whole number and a unit"),  # a fullwidth digit
    ({"markouts": [f"{i}s" for i in range(11)]}, "markouts must be a list of at most 10"),
])
def test_bad_durations_are_clear_errors(arguments, message):
    with pytest.raises(query.QueryError, match=message):
        query.trades_with_quotes("AAA", T0, T0 + timedelta(hours=1), **arguments)


def test_markout_columns_are_named_in_whole_units():
    assert [taq._label(validate.duration(d, "d")) for d in ("1m", "60s", "1500ms", "250us", "0s", "2h")] == \
        ["60s", "60s", "1500ms", "250us", "0s", "7200s"]
