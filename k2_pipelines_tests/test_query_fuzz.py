"""Hostile strings in every argument of every query: a QueryError or a correct result, and the tables unchanged."""

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from k2_pipelines import query
from k2_pipelines.cli import main
from k2_pipelines.cli.bench.generated import append_micro_batch, generated_trades
from k2_pipelines.lib.iceberg.tables import TRADES

START = datetime(2025, 3, 3, tzinfo=UTC)
END = START + timedelta(days=1)
HOSTILE = [
    "'", "\"", "''", "'; DROP TABLE trades; --", "BTCUSDT' OR '1'='1", "BTCUSDT\"; DELETE FROM trades; --",
    "$files", "$symbol_0", "?", "{source}", "{}", "%s", "') UNION SELECT * FROM read_csv('/etc/passwd') --",
    "read_parquet('/etc/passwd')", "market_data.trades", "../../etc/passwd", "trades; ATTACH 'x.db'", "\\",
    "BTC\x00USDT", "\x00", "\n", "\r\n--", "BTCÜSDT", "比特币", "🚀", "\u202e", "ＢＴＣＵＳＤＴ", "x" * 100_000, "",  # noqa: RUF001 (lookalike letters on purpose)
    " ", "NULL", "None", "-1", "0", "1e309", "NaN", "9" * 40, "2025-03-03T00:00:00Z'; DROP TABLE trades; --",
    "2025-13-45", "0000-00-00", "9999-12-31T23:59:59", "1m'; --", "ohlcv_1m; DROP", "trades\x00",
]


@pytest.fixture
def filled(catalog):
    append_micro_batch(catalog, TRADES.identifier, generated_trades(
        np.random.default_rng(3), 20_000, START, 86_400, 0, ("BTCUSDT", "ETHUSDT")), {})
    return catalog


def _state(catalog) -> dict:
    """Each table's current snapshot and rows: what an injected statement would change."""
    return {row["table"]: (row["snapshot_id"], row["rows"], row["data_files"])
            for row in query.table_stats(catalog=catalog).to_pylist()}


def _calls(catalog, hostile):
    """Every argument of every function in turn, with the others good."""
    good = {"symbols": "BTCUSDT", "start": START, "end": END}
    for name in ("trades", "quotes", "ohlcv", "gold_ohlcv"):
        function = getattr(query, name)
        for argument in ("symbols", "start", "end"):
            yield function, {**good, argument: hostile}
            yield function, {**good, argument: [hostile]}
        yield function, {**good, "symbols": ["BTCUSDT", hostile]}
        yield function, {**good, "limit": hostile}
        yield function, {**good, "as_of": hostile}
        if name in ("ohlcv", "gold_ohlcv"):
            yield function, {**good, "interval": hostile}
    yield query.symbols, {"table": hostile}
    yield query.symbols, {"as_of": hostile}
    yield query.snapshots, {"table": hostile}


def test_hostile_arguments_are_errors_or_correct_results(filled):
    before = _state(filled)
    reference = query.trades("BTCUSDT", START, END, limit=1_000_000, catalog=filled)
    assert reference.num_rows > 0
    answered = 0
    for hostile in HOSTILE:
        for function, arguments in _calls(filled, hostile):
            try:
                result = function(**arguments, catalog=filled)
            except query.QueryError as error:
                assert str(error) and "\x00" not in str(error) and len(str(error)) < 400
                continue
            # the one hostile value with a meaning: an as-of time far ahead names the current snapshot
            answered += 1
            assert arguments.pop("as_of") == hostile == "9999-12-31T23:59:59"
            assert result.equals(function(**arguments, catalog=filled))
    assert _state(filled) == before
    # the table still answers as before
    assert query.trades("BTCUSDT", START, END, limit=1_000_000, catalog=filled).equals(reference)
    assert answered == 3  # trades, ohlcv and symbols as of the year 9999


def test_hostile_command_lines_exit_2_with_one_line(filled, capsys):
    rng = random.Random(7)
    before = _state(filled)
    for hostile in HOSTILE:
        if "\x00" in hostile:  # a command line cannot carry a NUL
            continue
        argv = ["query", "trades", "--symbol", "BTCUSDT", "--start", START.isoformat(), "--end", END.isoformat()]
        position = rng.choice([3, 5, 7])
        argv[position] = hostile
        argv += rng.choice([[], ["--as-of", hostile], ["--limit", "5"]])
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 2, (argv[:8], captured)
        assert captured.err.startswith("k2 query: ") and "Traceback" not in captured.err
    assert _state(filled) == before
