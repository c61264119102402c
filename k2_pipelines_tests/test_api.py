"""The HTTP API as a client meets it: a real `k2 api serve` process over drained trades and quotes and gold bars,
every endpoint and format against the query layer, cursor pages while drains commit, keys, scopes, rate limits, the
body and time limits, fuzzing from its OpenAPI schema, and its docs in headless Chromium with no network."""

import csv
import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from k2_pipelines import query
from k2_pipelines.api.keys import new_key
from k2_pipelines.cli.bench.generated import append_micro_batch, generated_trades
from k2_pipelines.dev.broker import free_port
from k2_pipelines.lib.drain.drain import quotes_target, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.gold.ohlcv import rebuild_day
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import TRADES, ensure_tables
from k2_pipelines.lib.query.formats import plain_rows
from k2_pipelines_tests.kafka_helpers import SYMBOLS, drain_all, replay_session
from k2_pipelines_tests.services import _wait_for_port
from k2_pipelines_tests.ui_helpers import chromium_page

EVERYTHING = ("2025-11-20T00:00:00Z", "2025-11-23T00:00:00Z")


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def get(self, path: str, key: str | None = None, **headers: str) -> Answer:
        return self.call("GET", path, None, key, headers)

    def post(self, path: str, body: bytes, key: str | None = None, **headers: str) -> Answer:
        return self.call("POST", path, body, key, {"Content-Type": "application/json", **headers})

    def call(self, method: str, path: str, body: bytes | None, key: str | None, headers: dict[str, str]) -> Answer:
        headers = {name.replace("_", "-"): value for name, value in headers.items()}
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={**headers, **({"X-API-Key": key} if key else {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Answer(response.status, response.read(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})


@contextmanager
def api_server(env: dict[str, str], *args: str) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "k2_pipelines", "api", "serve", "--port", str(port), *args],
                               env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(port, process, "k2 api serve")
        yield Server(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert "Traceback" not in output, output  # no request may have failed inside the server


@pytest.fixture(scope="module")
def home(kafka_broker, tmp_path_factory) -> Iterator[Path]:
    """A K2 home with a session drained into trades (several commits) and quotes, and its gold 1-minute bars."""
    root = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("K2_HOME", str(root / "k2"))
        patch.setenv("PYICEBERG_HOME", str(root))
        patch.delenv("PYICEBERG_CATALOG__K2__URI", raising=False)
        catalog = load_k2_catalog()
        ensure_tables(catalog)
        _, _, topics = replay_session(kafka_broker, root, 6_000, set())
        drain_all(kafka_broker, trades_target(topics.trades), Limits(max_messages=1_000))
        drain_all(kafka_broker, quotes_target(topics.quotes))
        for day in (21, 22):
            rebuild_day(catalog, "1m", datetime(2025, 11, day).date(), "test")
        yield root


@pytest.fixture(scope="module")
def server(home) -> Iterator[Server]:
    with api_server({"K2_HOME": str(home / "k2"), "PYICEBERG_HOME": str(home)}) as running:
        yield running


def _rows_of(table: pa.Table) -> list[dict]:
    return json.loads(json.dumps(plain_rows(table)))


def test_every_endpoint_and_format_answers_what_the_query_layer_does(server):
    symbols = "&".join(f"symbol={s}" for s in SYMBOLS[:2])
    ranged = f"{symbols}&start={EVERYTHING[0]}&end={EVERYTHING[1]}"
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    recent = ((now - timedelta(days=1)).isoformat(), (now + timedelta(hours=1)).isoformat())  # quotes: replay time
    cases = {
        f"/v1/trades?{ranged}&limit=50": query.trades(SYMBOLS[:2], *EVERYTHING, 50),
        f"/v1/trades?{ranged}&limit=50&newest_first=true": query.trades(SYMBOLS[:2], *EVERYTHING, 50,
                                                                         newest_first=True),
        f"/v1/quotes?{symbols}&start={recent[0]}&end={recent[1]}&limit=50": query.quotes(SYMBOLS[:2], *recent, 50),
        f"/v1/ohlcv/1h?{ranged}": query.ohlcv(SYMBOLS[:2], *EVERYTHING, "1h"),
        f"/v1/ohlcv/1m?{ranged}&source=gold": query.gold_ohlcv(SYMBOLS[:2], *EVERYTHING, "1m"),
        "/v1/summary/BTCUSDT/2025-11-21": query.day_summary("BTCUSDT", "2025-11-21"),
        "/v1/symbols?table=quotes": query.symbols("quotes"),
        "/v1/snapshots?table=trades": query.snapshots("trades"),
        "/v1/stats": query.table_stats(),
    }
    for path, expected in cases.items():
        assert expected.num_rows > 0, path
        answer = server.get(path)
        assert answer.status == 200 and answer.headers["content-type"] == "application/json", (path, answer.body)
        assert answer.json()["rows"] == _rows_of(expected), path
        assert answer.json()["row_count"] == expected.num_rows
        # the same rows in every other format, chosen by ?format= or by the Accept header
        separator = "&" if "?" in path else "?"
        assert pq.read_table(io.BytesIO(server.get(f"{path}{separator}format=parquet").body)).equals(expected)
        arrow = server.get(path, Accept="application/vnd.apache.arrow.stream")
        assert pa.ipc.open_stream(arrow.body).read_all().equals(expected.replace_schema_metadata(None)), path
        got_csv = list(csv.DictReader(io.StringIO(server.get(path, Accept="text/csv;q=0.9, image/png;q=0.1")
                                                  .body.decode())))
        assert [row[expected.column_names[0]] for row in got_csv] == \
            [str(row[expected.column_names[0]] if row[expected.column_names[0]] is not None else "")
             for row in _rows_of(expected)], path

    summary = server.get("/v1/summary/BTCUSDT/2025-11-21").json()["rows"][0]
    trades = query.trades("BTCUSDT", "2025-11-21", "2025-11-22", 1_000_000)
    assert summary["trade_count"] == trades.num_rows and summary["open"] == str(trades["price"][0].as_py())
    # POST /v1/query: the same page as its GET
    body = {"kind": "trades", "symbols": SYMBOLS[:2], "start": EVERYTHING[0], "end": EVERYTHING[1], "limit": 50}
    assert server.post("/v1/query", json.dumps(body).encode()).json() == server.get(f"/v1/trades?{ranged}&limit=50") \
        .json()
    assert server.get(f"/v1/trades?{ranged}", Accept="image/png").status == 406


def _all_pages(server: Server, path: str, key: str = "trade_id") -> tuple[list, int]:
    rows, pages, cursor = [], 0, None
    while True:
        answer = server.get(path + (f"&cursor={cursor}" if cursor else ""))
        assert answer.status == 200, answer.body
        page = answer.json()
        rows += [row[key] if isinstance(key, str) else tuple(row[k] for k in key) for row in page["rows"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return rows, pages
        assert answer.headers["x-k2-next-cursor"] == cursor and 'rel="next"' in answer.headers["link"]


def test_pages_follow_the_cursor_through_one_snapshot_while_drains_commit(server):
    ranged = f"symbol={SYMBOLS[0]}&symbol={SYMBOLS[1]}&start={EVERYTHING[0]}&end={EVERYTHING[1]}"
    before = query.trades(SYMBOLS[:2], *EVERYTHING, 1_000_000)
    first = server.get(f"/v1/trades?{ranged}&limit=100").json()
    # a commit lands between the first page and the rest: the pages still read the first page's snapshot
    catalog = load_k2_catalog()
    append_micro_batch(catalog, TRADES.identifier, generated_trades(
        np.random.default_rng(5), 500, datetime(2025, 11, 21, 12, tzinfo=UTC), 3_600, 10**9, (SYMBOLS[0],)), {})
    rest, pages = _all_pages(server, f"/v1/trades?{ranged}&limit=100&cursor={first['next_cursor']}")
    got = [row["trade_id"] for row in first["rows"]] + rest
    assert got == before["trade_id"].to_pylist() and pages == -(-before.num_rows // 100) - 1
    # a query without a cursor reads the new snapshot
    assert server.get(f"/v1/trades?{ranged}&limit=1").json()["snapshot_id"] != first["snapshot_id"]

    newest, _ = _all_pages(server, f"/v1/trades?symbol={SYMBOLS[0]}&start={EVERYTHING[0]}&end={EVERYTHING[1]}"
                                   "&limit=333&newest_first=true")
    assert newest == query.trades(SYMBOLS[0], *EVERYTHING, 1_000_000, newest_first=True)["trade_id"].to_pylist()
    # bars page by POST (GET's pages hold 100 bars at least): a bar start's bars never split across pages
    body, bars, cursor = {"kind": "ohlcv", "symbols": SYMBOLS[:2], "start": EVERYTHING[0], "end": EVERYTHING[1],
                          "limit": 7}, [], None
    while True:
        page = server.post("/v1/query", json.dumps({**body, "cursor": cursor}).encode()).json()
        starts = {row["bar_start"] for row in page["rows"]}
        assert 0 < page["row_count"] <= 7 and not starts & {start for _, start in bars}
        bars += [(row["symbol"], row["bar_start"]) for row in page["rows"]]
        if (cursor := page["next_cursor"]) is None:
            break
    expected = query.ohlcv(SYMBOLS[:2], *EVERYTHING, "1m")
    assert len(bars) > 7
    assert bars == [(row["symbol"], row["bar_start"]) for row in _rows_of(expected)]

    # a cursor is only good for its own query
    other = server.get(f"/v1/trades?symbol={SYMBOLS[2]}&start={EVERYTHING[0]}&end={EVERYTHING[1]}"
                       f"&cursor={first['next_cursor']}")
    assert other.status == 400 and "belongs to another query" in other.json()["error"]
    assert server.get(f"/v1/trades?{ranged}&cursor=bm90IGEgY3Vyc29y").status == 400


@pytest.mark.parametrize("path, status, message", [
    ("/v1/trades?symbol=NOPE&start=2025-11-21&end=2025-11-22", 404, "has no symbol NOPE"),
    ("/v1/trades?symbol=BTCUSDT&start=2025-11-22&end=2025-11-21", 400, "must be after start"),
    ("/v1/trades?symbol=BTCUSDT&start=yesterday&end=2025-11-22", 400, "start must be an ISO 8601 time"),
    ("/v1/trades?symbol=BTCUSDT&start=2025-11-21&end=2025-11-22&as_of=123", 404, "has no snapshot 123"),
    ("/v1/trades?symbol=BTC%27;DROP%20TABLE%20trades&start=2025-11-21&end=2025-11-22", 400, "is not a symbol"),
    ("/v1/trades?symbol=BTCUSDT&start=2025-11-21&end=2025-11-22&limit=0", 422, "greater than or equal to 1"),
    ("/v1/trades?start=2025-11-21&end=2025-11-22", 422, "symbol: Field required"),
    ("/v1/ohlcv/7m?symbol=BTCUSDT&start=2025-11-21&end=2025-11-22", 400, "interval must be one of"),
    ("/v1/ohlcv/1h?symbol=BTCUSDT&start=2025-11-21&end=2025-11-22&source=gold", 404, "no symbol BTCUSDT"),
    ("/v1/summary/BTCUSDT/2025-11-24", 404, "has no trades on 2025-11-24"),
    ("/v1/summary/BTCUSDT/%202025-11-24", 404, "has no trades on 2025-11-24"),
    ("/v1/summary/BTCUSDT/2025-11-21?time_zone=Mars/Olympus", 400, "is not an IANA time zone"),
    ("/v1/snapshots?table=nope", 404, "there is no table market_data.nope"),
    ("/v1/symbols?table=rejects", 400, "market_data.rejects has no symbol column"),
    ("/v1/trades?symbol=BTCUSDT&start=0001-01-01T00:00:00%2B05:00&end=2025-11-22", 400, "outside the years"),
    ("/v1/summary/BTCUSDT/2025-11-21?time_zone=America", 400, "is not an IANA time zone"),
    ("/v1/trades?symbol=BTCUSDT&start=2025-11-21&end=2025-11-22&cursor=" + "W" * 1001, 400, "not one this API gave"),
    ("/v1/nope", 404, "Not Found"),
])
def test_bad_requests_get_the_query_layer_message_never_a_trace(server, path, status, message):
    answer = server.get(path)
    assert answer.status == status and message in answer.json()["error"], answer.body
    assert answer.json()["status"] == status


def test_keys_scopes_rate_limits_and_the_body_and_time_limits(home, tmp_path):
    reader, reader_entry = new_key("reader", ["read"])
    admin, admin_entry = new_key("admin", ["read", "tables"])
    reader_entry.update(requests_per_second=0.01, burst=3)  # slow enough that no request of the test refills it
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [reader_entry, admin_entry]}))
    assert reader not in keys_file.read_text() and admin not in keys_file.read_text()  # only hashes are kept
    env = {"K2_HOME": str(home / "k2"), "PYICEBERG_HOME": str(home), "K2_API_KEYS_FILE": str(keys_file),
           "K2_API_TIME_LIMIT_SECONDS": "0.0001"}
    listed = "/v1/symbols"  # no query of its own: the time limit below does not stop it
    with api_server(env, "--host", "0.0.0.0") as api:  # keys configured: beyond loopback is allowed
        assert api.get(listed).status == 401 and api.get(listed).headers["www-authenticate"] == "APIKey"
        assert api.get(listed, key=reader + "x").status == 401
        assert api.get(listed, key="admin." + reader.partition(".")[2]).status == 401  # another key's secret
        refused = api.get("/v1/stats", key=reader)
        assert refused.status == 403 and "does not have the scope 'tables'" in refused.json()["error"]
        assert api.get("/v1/stats", key=admin).status == 200
        # reader: a burst of 3, then one per 100 s
        assert [api.get(listed, key=reader).status for _ in range(4)] == [200, 200, 200, 429]
        limited = api.get(listed, key=reader)
        assert limited.status == 429 and 1 <= int(limited.headers["retry-after"]) <= 100
        assert "over its rate limit of 0.01 requests/s (burst 3)" in limited.json()["error"]
        assert api.get(listed, key=admin).status == 200  # another key's bucket
        # open without a key: liveness, readiness, metrics and the docs
        assert [api.get(p).status for p in ("/health", "/health/ready", "/metrics", "/docs", "/openapi.json")] == \
            [200] * 5
        assert 'k2_api_rate_limited_total{key="reader"} 2.0' in api.get("/metrics").body.decode()

        # a body over 1 MiB: refused by its Content-Length before it is sent, or as its chunks arrive
        assert _raw_post(api, admin, "Content-Length: 2000000", b"").startswith(b"HTTP/1.1 413 ")
        chunk = b"x" * 65_536
        chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 17  # no last chunk: the server reads all that is sent
        assert _raw_post(api, admin, "Transfer-Encoding: chunked", chunks).startswith(b"HTTP/1.1 413 ")
        # a query that runs past the time limit: bars over a day of 2,000,000 trades
        start = datetime(2025, 3, 3, tzinfo=UTC)
        append_micro_batch(load_k2_catalog(), TRADES.identifier, generated_trades(
            np.random.default_rng(7), 2_000_000, start, 86_400, 0, ("SLOWUSDT",)), {})
        timed_out = api.get(f"/v1/ohlcv/1m?symbol=SLOWUSDT&start={start.date()}&end=2025-03-04", key=admin)
        assert timed_out.status == 504 and "longer than its time limit of 0.0001 s" in timed_out.json()["error"]


def _raw_post(server: Server, key: str, framing: str, body: bytes) -> bytes:
    """The status line and headers of a POST /v1/query sent as raw bytes (urllib would fail to send a body the
    server refuses before reading it)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(f"POST /v1/query HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
                           f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode() + body)
        return connection.recv(65_536)


def test_the_server_refuses_to_listen_beyond_loopback_without_keys(home):
    done = subprocess.run([sys.executable, "-m", "k2_pipelines", "api", "serve", "--host", "0.0.0.0", "--port",
                           str(free_port())], env={**os.environ, "K2_HOME": str(home / "k2")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to serve on 0.0.0.0 without API keys" in done.stderr


def no_server_error_but_strict_freshness(ctx, response, case) -> bool | None:
    """not_a_server_error, but for the 503 of fresh=strict: the test's server has no broker to read a tail from."""
    if response.status_code == 503 and "could not be read" in response.text:
        return True
    return not_a_server_error(ctx, response, case)


def test_fuzzing_every_endpoint_from_its_schema_finds_no_server_error_and_changes_no_table(server):
    tables_before = query.table_stats().to_pylist()
    operations = [result.ok() for result in schemathesis.openapi.from_url(f"{server.url}/openapi.json")
                  .get_all_operations()]
    assert {f"{operation.method.upper()} {operation.path}" for operation in operations} >= {
        "GET /v1/trades", "GET /v1/quotes", "GET /v1/ohlcv/{interval}", "GET /v1/summary/{symbol}/{day}",
        "GET /v1/symbols", "GET /v1/stats", "GET /v1/snapshots", "POST /v1/query", "GET /health", "GET /metrics"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def call(case):
            case.call_and_validate(base_url=server.url, checks=[no_server_error_but_strict_freshness])

        call()
    assert query.table_stats().to_pylist() == tables_before


def test_the_docs_work_offline_in_chromium(server):
    left_loopback = []
    with chromium_page(server.url) as page:
        def route(request_route):
            if request_route.request.url.startswith(server.url):
                request_route.continue_()
            else:
                left_loopback.append(request_route.request.url)
                request_route.abort()
        page.route("**/*", route)
        page.goto("/docs")
        page.wait_for_selector(".opblock-summary-path")
        paths = sorted({element.inner_text().replace("\u200b", "") for element in
                        page.query_selector_all(".opblock-summary-path")})
        page.get_by_role("button", name="Authorize").wait_for()
    assert left_loopback == []
    assert paths == sorted(path for path in server.get("/openapi.json").json()["paths"])
