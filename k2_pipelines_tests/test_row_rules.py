"""Row rules: one bad row never takes its micro-batch (or its ASX file) down. The write path judges each row by the
blocking checks' own expectations, exactly as Great Expectations does; a row that breaks one is set aside with its
rule and source position, and its neighbours land."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.expressions import EqualTo

from k2_pipelines.definitions import defs
from k2_pipelines.defs.recovery.quality_sensor import quality_gate_sensor
from k2_pipelines.lib.asx.sample import DEFAULT_START
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.iceberg.tables import DEAD_LETTERS, QUOTES, REJECTS, TRADES
from k2_pipelines.lib.quality.checks import market_checks, required_fields
from k2_pipelines.lib.quality.frames import market_rows
from k2_pipelines.lib.quality.rules import broken_rows, row_rules
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.quality.validate import failing_rows
from k2_pipelines_tests.helpers import run_asx_load, scan
from k2_pipelines_tests.kafka_helpers import unique_topics
from k2_pipelines_tests.recovery_helpers import DRAIN_ASSETS, resources, tick

NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)
DECIMAL = pa.decimal128(18, 8)


def _random_rows(kind: str, n: int, rng: np.random.Generator) -> pa.Table:
    """Trades or quotes in their table's schema, some of each breaking a rule: prices and sizes of zero, negative
    or too large, crossed books, unknown sides, times in the future or before a listing."""
    table = TRADES if kind == "trades" else QUOTES
    schema = table.schema().as_arrow()
    symbols = rng.choice(["AAA", "BBB", "CCC"], n)
    times = [NOW + offset for offset in _event_offsets(rng, n)]

    def prices() -> pa.Array:
        values = rng.choice([Decimal("10.5"), Decimal("0"), Decimal("-1"), Decimal("3.25"), Decimal("9999999999.5")],
                            n, p=[0.6, 0.1, 0.1, 0.15, 0.05])
        return pa.array(values.tolist(), DECIMAL)

    columns = {"message_id": [f"m{i}" for i in range(n)], f"{kind[:-1]}_id": [f"id-{i}" for i in range(n)],
               "symbol": symbols.tolist(), "exchange": ["X"] * n, "asset_class": ["crypto"] * n,
               "timestamp": times, "currency": ["USDT"] * n, "ingestion_timestamp": [NOW] * n}
    if kind == "trades":
        columns |= {"price": prices(), "quantity": prices(), "trade_conditions": [[]] * n,
                    "side": rng.choice(["BUY", "SELL", "UNKNOWN", "SIDEWAYS"], n, p=[0.4, 0.4, 0.15, 0.05]).tolist()}
    else:
        columns |= {"bid_price": prices(), "ask_price": prices(), "bid_quantity": prices(), "ask_quantity": prices()}
    return pa.table({f.name: pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
                     for f in schema}, schema=schema)


def _event_offsets(rng: np.random.Generator, n: int) -> list[timedelta]:
    """Event times around the clock: most in the past, some beyond the future tolerance."""
    return [timedelta(seconds=float(s)) for s in rng.choice([-3_600, -10, 100, 299, 301, 7_200], n)]


@pytest.mark.parametrize("kind", ["trades", "quotes"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_write_path_judges_each_row_as_the_great_expectations_check_does(kind, seed):
    rng = np.random.default_rng(seed)
    rows = _random_rows(kind, 2_000, rng)
    listed = pa.table({"exchange": ["X", "X"], "symbol": ["AAA", "BBB"],
                       "listing_date": pa.array([NOW - timedelta(days=1), NOW - timedelta(seconds=5)],
                                                pa.timestamp("us", tz="UTC"))})
    table = TRADES if kind == "trades" else QUOTES
    checks = market_checks(kind, table.schema(), f"{kind[:-1]}_id", Thresholds(), NOW)
    rules = row_rules(checks)
    assert {r.name for r in rules} >= {"required_fields", "not_in_future", "not_before_listing"}
    assert "unique_ids" not in {r.name for r in rules} and "price_jumps" not in {r.name for r in rules}

    broken = broken_rows(rules, rows, listed)
    failing = failing_rows({"rows": market_rows(rows, kind, listed, required_fields(table.schema()))}, rules)
    for rule in rules:  # the rows each rule sets aside are exactly the rows its check fails on
        named_first = {int(p) for p, r in zip(broken.positions, broken.rules) if r == rule.name}
        earlier = {int(p) for p, r in zip(broken.positions, broken.rules)
                   if [x.name for x in rules].index(r) < [x.name for x in rules].index(rule.name)}
        assert named_first == set(failing[rule.name].tolist()) - earlier, rule.name
    assert 0 < len(broken.positions) < rows.num_rows
    assert set(broken.positions.tolist()) == set(np.concatenate(list(failing.values())).tolist())


def _session_with_one_bad_row_of_each(tmp_path, frames: int) -> tuple:
    """A generated session with one crossed quote (the 10th) and one trade an hour in the future (the 10th)."""
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT"], frames, seed=5)
    lines, seen, bad = [], {"trade": 0, "bookTicker": 0}, {}
    for line in session.read_text().splitlines():
        entry = json.loads(line)
        frame = json.loads(entry["frame"])
        kind = "trade" if frame["stream"].endswith("@trade") else "bookTicker"
        seen[kind] += 1
        if seen[kind] == 10 and kind == "bookTicker":
            data = frame["data"]
            data["b"], data["a"] = data["a"], data["b"]  # the bid above the ask
        elif seen[kind] == 10:
            frame["data"]["T"] = frame["data"]["E"] = int((datetime.now(UTC) + timedelta(hours=1)).timestamp()
                                                          * 1000)
            bad["trade"] = frame["data"]["t"]
        lines.append(json.dumps(entry | {"frame": json.dumps(frame, separators=(",", ":"))}))
    session.write_text("\n".join(lines) + "\n")
    return session, bad


def test_one_crossed_quote_and_one_future_trade_leave_their_200k_batches_in_the_table(kafka_broker, catalog,
                                                                                        tmp_path):
    session, bad = _session_with_one_bad_row_of_each(tmp_path, 500_000)
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(120) == 0
    used = resources(kafka_broker, topics)
    with dg.instance_for_test() as instance:
        gate = tick(quality_gate_sensor, instance, used).cursor
        result = dg.materialize(DRAIN_ASSETS, instance=instance, resources=used, run_config={"ops": {
            f"binance_{table}": {"config": {"max_messages": 200_000}} for table in ("trades", "quotes")}})
        assert result.success  # every blocking check passed
        assert not tick(quality_gate_sensor, instance, used, gate).run_requests  # no quarantine needed
        gold = defs().resolve_job_def("build_ohlcv").execute_in_process(partition_key="2025-11-21", instance=instance)
        assert gold.success  # the day's bars are not held back
    for table, rule in (("trades", "not_in_future"), ("quotes", "book_not_crossed")):
        metadata = result.asset_materializations_for_node(f"binance_{table}")[0].metadata
        assert metadata["messages"].value == 200_000 and metadata["rows_written"].value == 199_999
        assert metadata["rows_set_aside_by_rule"].value == {rule: 1}
        [letter] = catalog.load_table(DEAD_LETTERS.identifier).scan(
            row_filter=EqualTo("topic", getattr(topics, table))).to_arrow().to_pylist()
        assert letter["error_class"] == rule and letter["run_id"] == result.run_id
        assert letter["offset"] < metadata["offsets"].value[str(letter["partition"])]["to"]
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()
                       if e.asset_key == dg.AssetKey(f"binance_{table}")}
        assert evaluations[rule].passed and evaluations[rule].metadata["evaluated"].value == 199_999
    trades = scan(catalog, TRADES.identifier)
    assert trades.num_rows == 199_999 and str(bad["trade"]) not in {i.split("-")[-1] for i in trades["trade_id"]
                                                                     .to_pylist()}
    quotes = scan(catalog, QUOTES.identifier)
    assert quotes.num_rows == 199_999 and pc.all(pc.greater_equal(quotes["ask_price"], quotes["bid_price"])).as_py()


def test_an_asx_row_breaking_a_rule_is_a_reject_with_its_rule_and_line_and_its_file_loads(catalog, landing):
    day = DEFAULT_START
    quotes = landing / "quotes" / "7078.csv"
    lines = quotes.read_text().splitlines()
    bid, ask = lines[3].split(",")[2:4]
    lines[3] = ",".join([*lines[3].split(",")[:2], ask, bid, *lines[3].split(",")[4:]])  # crossed
    quotes.write_text("\n".join(lines) + "\n")
    # the company behind 7458.csv is listed from the second trading day: its first day's prints come before it
    info = (landing / "company_info.csv").read_text().splitlines()
    listed_from = day + timedelta(days=1)
    info = [line.replace("01/01/2000", listed_from.strftime("%m/%d/%Y")) if line.startswith("7458,") else line
            for line in info]
    (landing / "company_info.csv").write_text("\n".join(info) + "\n")
    first_day_lines = sum(line.startswith(day.strftime("%m/%d/%Y")) for kind in ("trades", "quotes")
                          for line in (landing / kind / "7458.csv").read_text().splitlines())

    result = run_asx_load(day.isoformat())
    assert result.success  # the checks pass on what landed

    rejects = scan(catalog, REJECTS.identifier).to_pylist()
    crossed = [r for r in rejects if r["reason"] == "book_not_crossed"]
    assert [(r["source_file"], r["line_number"], r["raw_line"]) for r in crossed] == [(str(quotes), 4, lines[3])]
    assert crossed[0]["detail"].startswith("the bid is not above the ask") and f"bid_price={float(ask)}" in \
        crossed[0]["detail"]
    early = [r for r in rejects if r["reason"] == "not_before_listing"]
    assert len(early) == first_day_lines > 0 and {r["partition_key"] for r in early} == {day.isoformat()}
    trades = scan(catalog, TRADES.identifier)
    assert not any(i.startswith("ASX-7458-") for i in trades["trade_id"].to_pylist())
    assert any(i.startswith("ASX-7078-") for i in trades["trade_id"].to_pylist())
    assert date.fromisoformat(early[0]["partition_key"]) < listed_from
