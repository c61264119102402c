"""Fresh reads against a real broker: a snapshot's rows plus the Kafka tail beyond its stored offsets equal, row for
row, a table drained to the same offsets, with drains committing while the queries run, duplicates, repeats of
committed rows and poison in the tail; a bounded tail; Kafka down."""

import http.client
import json
import os
import threading
import time
from datetime import timedelta

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from k2_pipelines import query
from k2_pipelines.cli import main
from k2_pipelines.cli.api import api_process
from k2_pipelines.dev.broker import free_port
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.drain.drain import drain_once, quotes_target, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits, TopicReader
from k2_pipelines.lib.iceberg.catalog import load_catalog_at
from k2_pipelines.lib.iceberg.tables import ensure_tables
from k2_pipelines.lib.query.fresh import Freshness, TailUnavailable, TailWarning, read_tail, result_freshness
from k2_pipelines.settings import LOOPBACK
from k2_pipelines_tests.kafka_helpers import SYMBOLS, replay_session

EVERYTHING = ("2025-11-20", "2025-11-23")
COLUMNS = ["symbol", "exchange", "trade_id", "timestamp", "price", "quantity", "side"]


class _ReaderUntil(TopicReader):
    """A reader that sees the topic end at given offsets: a drain to exactly where a fresh read's tail ended."""

    def __init__(self, reader: TopicReader, until: dict[int, int]):
        super().__init__(reader.consumer, reader.topic)
        self.until = until

    def watermarks(self, timeout: float | None = None) -> dict[int, tuple[int, int]]:
        return {p: (low, min(high, self.until.get(p, high))) for p, (low, high) in super().watermarks(timeout).items()}


class _Reference:
    """A second catalog drained from the topic's start, to the offsets a fresh read reports."""

    def __init__(self, kafka_broker, root, topic: str, target_of=trades_target):
        self.catalog = load_catalog_at(root)
        ensure_tables(self.catalog)
        self.target = target_of(topic)
        self.reader = reader_for(kafka_broker.bootstrap, self.target)

    def drain_to(self, offsets: dict[int, int]) -> None:
        reader = _ReaderUntil(self.reader, offsets)
        while drain_once(self.catalog, reader, self.target, default_registry(), Limits(max_messages=1_500)).messages:
            pass

    def trades(self, symbols: list[str], **options) -> pa.Table:
        return query.trades(symbols, *EVERYTHING, limit=1_000_000, catalog=self.catalog, **options)


def _send_again(kafka_broker, session, topics) -> None:
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(60) == 0


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*(table[c].to_pylist() for c in COLUMNS)))


def _freshness(result: pa.Table) -> Freshness:
    freshness = result_freshness(result)
    assert freshness is not None
    return freshness


@pytest.fixture
def fresh_topic(kafka_broker, catalog, tmp_path, monkeypatch):
    """A session in its topics, its first 1,000 trades drained (a checkpoint to start the tail from)."""
    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    session, _, topics = replay_session(kafka_broker, tmp_path, 8_000, {"duplicates", "out_of_order"})
    reader = reader_for(kafka_broker.bootstrap, trades_target(topics.trades))
    drain_once(catalog, reader, trades_target(topics.trades), default_registry(), Limits(max_messages=1_000))
    reader.close()
    return session, topics


def test_fresh_reads_equal_the_table_drained_to_the_same_offsets_while_drains_commit(kafka_broker, catalog,
                                                                                      fresh_topic, tmp_path):
    session, topics = fresh_topic
    target = trades_target(topics.trades)
    stop, errors = threading.Event(), []

    def drain_meanwhile() -> None:
        reader = reader_for(kafka_broker.bootstrap, target)
        try:
            while not stop.is_set():
                drain_once(catalog, reader, target, default_registry(), Limits(max_messages=700))
        except Exception as error:
            errors.append(error)
        finally:
            reader.close()

    def produce_meanwhile() -> None:
        # the same session again (every id a repeat of a committed row or of one earlier in the tail), and poison
        _send_again(kafka_broker, session, topics)
        raw = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        for value in (b"not avro at all", b"\x00\x00\x0f\x12\x06x", None):
            raw.produce(topics.trades, value, b"BTCUSDT")
        assert raw.flush(30) == 0

    threads = [threading.Thread(target=drain_meanwhile), threading.Thread(target=produce_meanwhile)]
    for thread in threads:
        thread.start()
    results = []
    try:
        for _ in range(8):
            results.append(query.trades(SYMBOLS, *EVERYTHING, limit=1_000_000, fresh=True, catalog=catalog))
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert not errors
    tails = [_freshness(r) for r in results]
    assert len({t.snapshot_id for t in tails}) > 1  # drains committed between the queries
    assert any(t.tail_rows for t in tails) and all(t.complete and t.warning is None for t in tails)

    reference = _Reference(kafka_broker, tmp_path / "reference", topics.trades)
    for result, tail in sorted(zip(results, tails), key=lambda pair: sum(pair[1].tail_to.values())):
        reference.drain_to(tail.tail_to)
        expected = reference.trades(SYMBOLS)
        assert _rows(result) == _rows(expected)  # never a row twice, never one missing
        assert result["trade_id"].to_pylist() == expected["trade_id"].to_pylist()  # and in the same order
        assert tail.tail_rows + tail.table_rows == result.num_rows
        assert tail.tail_from == _stored_offsets(catalog, tail.snapshot_id, topics.trades)
    # bars and newest-first reads take the tail too
    newest = query.trades(SYMBOLS[0], *EVERYTHING, limit=5, newest_first=True, fresh=True, catalog=catalog)
    reference.drain_to(_freshness(newest).tail_to)
    latest = reference.trades(SYMBOLS[:1], newest_first=True)["trade_id"]
    assert newest["trade_id"].to_pylist() == latest[:5].to_pylist()
    bars = query.ohlcv(SYMBOLS, *EVERYTHING, "1m", fresh=True, catalog=catalog)
    reference.drain_to(_freshness(bars).tail_to)
    assert bars.to_pylist() == query.ohlcv(SYMBOLS, *EVERYTHING, "1m", catalog=reference.catalog).to_pylist()
    # bars cut off by the limit: the counts are of the trades in the bars returned
    for limit in (bars.num_rows, bars.num_rows - 1, bars.num_rows // 2):
        few = query.ohlcv(SYMBOLS, *EVERYTHING, "1m", limit=limit, fresh=True, catalog=catalog)
        held = _freshness(few)
        assert few.num_rows == limit and held.tail_rows >= 0 and held.table_rows >= 0
        assert held.tail_rows + held.table_rows == pa.compute.sum(few["trade_count"]).as_py()
    reference.reader.close()


def test_fresh_quotes_equal_the_quotes_drained_to_the_same_offsets(kafka_broker, catalog, fresh_topic, tmp_path):
    _, topics = fresh_topic
    reader = reader_for(kafka_broker.bootstrap, quotes_target(topics.quotes))
    drain_once(catalog, reader, quotes_target(topics.quotes), default_registry(), Limits(max_messages=700))
    reader.close()
    reference = _Reference(kafka_broker, tmp_path / "reference", topics.quotes, quotes_target)
    table = catalog.load_table("market_data.quotes")
    tail = read_tail(catalog, table, "quotes", True)
    reference.drain_to(tail.tail_to)
    expected = reference.catalog.load_table("market_data.quotes").scan().to_arrow()
    span = (pa.compute.min(expected["timestamp"]).as_py(),
            pa.compute.max(expected["timestamp"]).as_py() + timedelta(microseconds=1))
    fresh = query.quotes(SYMBOLS, *span, limit=1_000_000, fresh=True, catalog=catalog)
    assert _freshness(fresh).tail_to == tail.tail_to and _freshness(fresh).tail_rows > 0
    assert fresh["quote_id"].to_pylist() == \
        query.quotes(SYMBOLS, *span, limit=1_000_000, catalog=reference.catalog)["quote_id"].to_pylist()
    reference.reader.close()


def _stored_offsets(catalog, snapshot_id: int, topic: str) -> dict[int, int]:
    """The offsets stored in a snapshot (where its tail must begin)."""
    summary = catalog.load_table("market_data.trades").snapshot_by_id(snapshot_id).summary
    return {int(p): o for p, o in json.loads(summary[f"k2.drain.offsets.{topic}"]).items()}


def test_a_bounded_tail_says_where_it_stopped_and_holds_exactly_that(kafka_broker, catalog, fresh_topic, tmp_path):
    session, topics = fresh_topic
    table = catalog.load_table("market_data.trades")
    tail = read_tail(catalog, table, "trades", True, Limits(max_messages=500))
    assert not tail.complete and tail.messages == 500
    assert sum(tail.tail_to.values()) - sum(tail.tail_from.values()) == 500
    reference = _Reference(kafka_broker, tmp_path / "reference", topics.trades)
    reference.drain_to(tail.tail_to)
    drained = catalog.load_table("market_data.trades").scan().to_arrow()
    assert _rows(pa.concat_tables([drained, tail.rows])) == \
        _rows(reference.catalog.load_table("market_data.trades").scan().to_arrow())
    # the next read of the same snapshot goes on from there, past the session sent again: its copies of the rows
    # read so far are duplicates within the tail, not rows of the table
    _send_again(kafka_broker, session, topics)
    rest = read_tail(catalog, table, "trades", True)
    assert rest.complete and rest.tail_from == tail.tail_from and rest.messages > tail.messages
    reference.drain_to(rest.tail_to)
    assert _rows(pa.concat_tables([drained, rest.rows])) == \
        _rows(reference.catalog.load_table("market_data.trades").scan().to_arrow())
    reference.reader.close()


def test_symbols_only_in_the_tail_are_known_to_fresh_reads(kafka_broker, catalog, fresh_topic):
    table_symbols = set(query.symbols("trades", catalog=catalog)["symbol"].to_pylist())
    tail = read_tail(catalog, catalog.load_table("market_data.trades"), "trades", True)
    only_in_tail = sorted(set(tail.rows["symbol"].to_pylist()) - table_symbols)
    if not only_in_tail:  # the first drained batch held every symbol: a plain read knows them all
        assert table_symbols == set(SYMBOLS)
        return
    with pytest.raises(query.NotFound):
        query.trades(only_in_tail, *EVERYTHING, catalog=catalog)
    assert query.trades(only_in_tail, *EVERYTHING, fresh=True, catalog=catalog).num_rows


def test_fresh_reads_are_of_now_and_not_paged(catalog, fresh_topic):
    with pytest.raises(query.QueryError, match="not with as_of"):
        query.trades(SYMBOLS, *EVERYTHING, as_of="2025-11-21", fresh=True, catalog=catalog)
    with pytest.raises(query.QueryError, match="not paged"):
        query.trades(SYMBOLS, *EVERYTHING, after=("2025-11-21", "x"), fresh=True, catalog=catalog)
    with pytest.raises(query.QueryError, match="fresh is"):
        query.trades(SYMBOLS, *EVERYTHING, fresh="yes", catalog=catalog)  # type: ignore[arg-type]


def test_with_kafka_down_the_table_rows_come_with_a_warning_or_a_strict_error(catalog, fresh_topic, monkeypatch):
    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")  # nothing listens there
    known = query.symbols("trades", catalog=catalog)["symbol"].to_pylist()
    plain = query.trades(known, *EVERYTHING, limit=1_000_000, catalog=catalog)
    with pytest.warns(TailWarning, match="could not be read"):
        fresh = query.trades(known, *EVERYTHING, limit=1_000_000, fresh=True, catalog=catalog)
    assert fresh["trade_id"].to_pylist() == plain["trade_id"].to_pylist()
    freshness = _freshness(fresh)
    assert freshness.warning and not freshness.complete and freshness.tail_rows == 0
    with pytest.raises(TailUnavailable, match="could not be read"):
        query.trades(known, *EVERYTHING, fresh="strict", catalog=catalog)


def test_k2_query_fresh_prints_the_rows_and_says_what_the_tail_held(catalog, fresh_topic, capsys, monkeypatch):
    known = query.symbols("trades", catalog=catalog)["symbol"].to_pylist()
    expected = query.trades(known, *EVERYTHING, limit=1_000_000, fresh=True, catalog=catalog)
    arguments = ["query", "trades", *(f"--symbol={s}" for s in known), "--start", EVERYTHING[0], "--end", EVERYTHING[1],
                 "--limit", "1000000", "--format", "json"]
    assert main([*arguments, "--fresh"]) == 0
    out, err = capsys.readouterr()
    assert [row["trade_id"] for row in json.loads(out)] == expected["trade_id"].to_pylist()
    held = _freshness(expected)
    assert f"{held.tail_rows:,} from {held.topic} offsets" in err and "warning" not in err

    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert main([*arguments, "--fresh"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == held.table_rows
    assert err.startswith("k2 query: warning: ") and "could not be read" in err and "Traceback" not in err
    assert main([*arguments, "--fresh=strict"]) == 2
    assert "could not be read" in capsys.readouterr().err


def test_the_api_serves_fresh_reads_and_503_when_strict_and_kafka_is_down(kafka_broker, catalog, fresh_topic):
    known = query.symbols("trades", catalog=catalog)["symbol"].to_pylist()
    expected = query.trades(known, *EVERYTHING, limit=100_000, fresh=True, catalog=catalog)
    path = f"/v1/trades?{'&'.join(f'symbol={s}' for s in known)}&start={EVERYTHING[0]}&end={EVERYTHING[1]}" \
           "&limit=100000&fresh=true"
    down = {**os.environ, "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    for env, status in ((os.environ.copy(), 200), (down, 503)):
        port = free_port()
        with api_process(port, env):
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
            connection.request("GET", path.replace("fresh=true", "fresh=strict") if status == 503 else path)
            answer = connection.getresponse()
            body = json.loads(answer.read())
            assert answer.status == status, body
            if status == 200:
                assert [row["trade_id"] for row in body["rows"]] == expected["trade_id"].to_pylist()
                assert body["next_cursor"] is None and body["fresh"] == json.loads(answer.getheader("X-K2-Fresh"))
                assert body["fresh"]["tail_rows"] == _freshness(expected).tail_rows > 0
                assert body["limit_reached"] is False
                # a page as long as its limit says so: one page only, and its counts are of its rows
                connection.request("GET", path.replace("limit=100000", "limit=5") + "&newest_first=true")
                answer = connection.getresponse()
                short = json.loads(answer.read())
                assert short["row_count"] == 5 and short["limit_reached"] is True and short["next_cursor"] is None
                assert answer.getheader("X-K2-Limit-Reached") == "true"
                assert short["fresh"]["tail_rows"] + short["fresh"]["table_rows"] == 5
            else:
                assert "could not be read" in body["error"]
