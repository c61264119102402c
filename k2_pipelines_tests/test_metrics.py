"""K2's metrics: one catalogue every emitter follows, `k2 metrics serve` on real tables and a real broker, and pushes
to a real Pushgateway from real drain and ASX runs."""

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from k2_pipelines.defs.binance.assets import binance_trades
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.dev.broker import free_port
from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.drain.drain import drain_once, quotes_target, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.catalog import load_catalog_at, load_k2_catalog
from k2_pipelines.lib.metrics import StreamCollector, write_upkeep_metrics
from k2_pipelines.lib.metrics.catalogue import CATALOGUE, COUNTER
from k2_pipelines.lib.metrics.tables import SOURCES, TablesCollector
from k2_pipelines.lib.recovery.incidents import Incident, record_incident
from k2_pipelines.settings import CHECKOUT
from k2_pipelines_tests.helpers import run_asx_load
from k2_pipelines_tests.kafka_helpers import drain_all, replay_session, unique_topics

PACKAGE = CHECKOUT / "k2_pipelines"
# k2_ names in the source that are not metrics, and why
NOT_METRICS = {
    "k2_pipelines": "the package",
    "k2_drain": "the drain runs' Pushgateway job",
    "k2_asx": "the ASX loads' Pushgateway job",
    "k2_drain_": "Dagster pools k2_drain_<table>",
    "k2_upkeep_": "textfiles k2_upkeep_<job>.prom",
    "k2_prefix": "an Avro block's key prefix",
}
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"


def samples(families) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, checking that every sample is a catalogue metric with its labels."""
    found = {}
    for family in families:
        for sample in family.samples:
            definition = CATALOGUE.get(sample.name)
            assert definition is not None, f"{sample.name} is not in the catalogue"
            assert family.type == definition.type, (
                f"{sample.name} is a {family.type}, the catalogue says {definition.type}"
            )
            assert set(sample.labels) == set(definition.labels), f"{sample.name} labels {sorted(sample.labels)}"
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, f"{key} twice"
            found[key] = sample.value
    return found


def by_labels(found: dict, name: str) -> dict[tuple, float]:
    return {labels: value for (sample, labels), value in found.items() if sample == name}


def one(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_every_metric_named_in_the_package_is_in_the_catalogue():
    names = Counter()
    for path in PACKAGE.rglob("*.py"):
        names.update(re.findall(r"\bk2_[a-z0-9_]+", path.read_text()))
    unknown = {name for name in names if name not in CATALOGUE and name not in NOT_METRICS}
    assert not unknown, f"metric names used but not in the catalogue: {sorted(unknown)}"
    catalogue_source = (PACKAGE / "lib" / "metrics" / "catalogue.py").read_text()
    for name, definition in CATALOGUE.items():
        assert catalogue_source.count(f'"{name}"') == 1  # defined once
        assert name.startswith("k2_") and (definition.type == COUNTER) == name.endswith("_total")


def test_the_stream_collector_exposes_the_producers_counts(kafka_broker, tmp_path):
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, ["BTCUSDT"], 1_000, seed=5, faults={"malformed"})
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(30) == 0

    found = samples(StreamCollector("binance", Counter(frames_received=counts["frames"], connected=1),
                                    producer).collect())
    assert one(found, "k2_stream_frames_received_total", exchange="binance") == counts["frames"]
    produced = by_labels(found, "k2_stream_records_produced_total")
    assert produced[(("exchange", "binance"), ("topic", topics.trades))] == counts["trades"]
    assert produced[(("exchange", "binance"), ("topic", topics.quotes))] == counts["quotes"]
    assert sum(by_labels(found, "k2_stream_dead_letters_total").values()) == counts["malformed"] > 0
    assert one(found, "k2_stream_in_flight_messages", exchange="binance") == 0


def _garbage(kafka_broker, topic: str, count: int) -> None:
    """Messages no decoder reads: the drain dead-letters them."""
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for n in range(count):
        producer.produce(topic, value=b"not avro %d" % n, partition=0)
    assert producer.flush(30) == 0


def test_the_scrape_reports_tables_lag_dead_letters_gaps_incidents_and_upkeep(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 6_000, {"gaps", "duplicates"})
    _garbage(kafka_broker, topics.trades, 3)
    trades = drain_all(kafka_broker, trades_target(topics.trades))
    reader = reader_for(kafka_broker.bootstrap, quotes_target(topics.quotes))
    first_quotes = drain_once(catalog, reader, quotes_target(topics.quotes), default_registry(), Limits(500))
    detected = datetime.now(UTC)
    record_incident(catalog, Incident("offset_drift", topics.trades, detected, "test", "drift", "docs/runbooks/x.md"))
    record_incident(catalog, Incident("offset_drift", topics.quotes, detected, "test", "drift", "docs/runbooks/x.md")
                    .escalate("none", "refused", "r3"))
    record_incident(catalog, Incident("run_failed", "r1", detected, "test", "failed", "docs/runbooks/y.md")
                    .resolve("retried", "ok", "r2"))
    write_upkeep_metrics("compact_tables", [("market_data.trades", {"before": 9, "after": 2}, {"before": 900}, 1.5)])
    write_upkeep_metrics("expire_snapshots", [("market_data.trades", {"before": 2}, {"before": 800}, 0.5)])
    collector = TablesCollector(load_k2_catalog, kafka_broker.bootstrap,
                                [trades_target(topics.trades), quotes_target(topics.quotes)])

    found = samples(collector.collect())
    rows = catalog.load_table("market_data.trades").scan().to_arrow()
    assert (
        one(found, "k2_table_rows", table="market_data.trades") == rows.num_rows == sum(r.rows_written for r in trades)
    )
    files = len(catalog.load_table("market_data.trades").inspect.files())
    assert one(found, "k2_table_data_files", table="market_data.trades") == files
    assert one(found, "k2_table_small_files", table="market_data.trades") == files  # all far under 96 MB
    assert one(found, "k2_table_bytes", table="market_data.trades") > 0
    newest = pc.max(rows["timestamp"]).as_py()
    expected_age = (datetime.now(UTC) - newest).total_seconds()
    assert abs(one(found, "k2_table_newest_event_age_seconds", table="market_data.trades") - expected_age) < 5
    lag = by_labels(found, "k2_consumer_lag_messages")
    trades_lag = {dict(k)["partition"]: v for k, v in lag.items() if dict(k)["topic"] == topics.trades}
    quotes_lag = {dict(k)["partition"]: v for k, v in lag.items() if dict(k)["topic"] == topics.quotes}
    assert set(trades_lag) == set(quotes_lag) == {"0", "1", "2"} and not any(trades_lag.values())
    assert sum(quotes_lag.values()) == counts["quotes"] - first_quotes.messages > 0
    assert one(found, "k2_dead_letters", topic=topics.trades) == sum(r.dead_letters.total() for r in trades) == 3
    gaps = by_labels(found, "k2_sequence_gaps")
    trade_gaps = {dict(k)["kind"]: v for k, v in gaps.items() if dict(k)["table"] == "market_data.trades"}
    assert trade_gaps.keys() <= {"gap_small", "gap_large"} and sum(trade_gaps.values()) == counts["gaps"] > 0
    assert by_labels(found, "k2_incidents_open") == {  # the resolved run_failed leaves zeros, not vanished series
        (("kind", "offset_drift"), ("status", "open")): 1, (("kind", "offset_drift"), ("status", "needs_human")): 1,
        (("kind", "run_failed"), ("status", "open")): 0, (("kind", "run_failed"), ("status", "needs_human")): 0}
    assert by_labels(found, "k2_upkeep_files") == {
        (("job", "compact_tables"), ("stage", "after"), ("table", "market_data.trades")): 2,
        (("job", "compact_tables"), ("stage", "before"), ("table", "market_data.trades")): 9,
        (("job", "expire_snapshots"), ("stage", "before"), ("table", "market_data.trades")): 2}
    assert set(by_labels(found, "k2_upkeep_last_success_timestamp_seconds")) == {
        (("job", "compact_tables"),), (("job", "expire_snapshots"),)}
    assert by_labels(found, "k2_metrics_scrape_errors") == {(("source", s),): 0 for s in SOURCES}

    # the next scrape sees the next commit (facts are cached per snapshot, not for ever)
    drain_all(kafka_broker, quotes_target(topics.quotes))
    again = samples(collector.collect())
    assert not any(v for k, v in by_labels(again, "k2_consumer_lag_messages").items()
                   if dict(k)["topic"] == topics.quotes)
    assert one(again, "k2_table_rows", table="market_data.quotes") == catalog.load_table(
        "market_data.quotes").scan().count()
    collector.close()
    reader.close()


def test_a_scrape_answers_when_kafka_or_the_catalog_is_down(catalog, tmp_path):
    write_upkeep_metrics("compact_tables", [("market_data.trades", {"after": 1}, {"after": 10}, 0.1)])
    (tmp_path / "k2" / "metrics" / "broken.prom").write_text("this is { not prometheus\n")
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens: the broker is down
    kafka_down = TablesCollector(load_k2_catalog, nowhere, [trades_target("market.crypto.trades.binance")])
    started = time.monotonic()
    found = samples(kafka_down.collect())
    assert time.monotonic() - started < 30
    assert by_labels(found, "k2_metrics_scrape_errors") == {
        (("source", "catalog"),): 0, (("source", "kafka"),): 1, (("source", "textfiles"),): 1}
    assert one(found, "k2_table_rows", table="market_data.trades") == 0 and not by_labels(
        found, "k2_consumer_lag_messages")
    assert one(found, "k2_upkeep_files", job="compact_tables", table="market_data.trades", stage="after") == 1
    kafka_down.close()

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    catalog_down = TablesCollector(lambda: load_catalog_at(blocked / "k2"), nowhere,
                                   [trades_target("market.crypto.trades.binance")])
    found = samples(catalog_down.collect())
    assert one(found, "k2_metrics_scrape_errors", source="catalog") == 1
    assert not by_labels(found, "k2_table_rows") and one(
        found, "k2_upkeep_files", job="compact_tables", table="market_data.trades", stage="after") == 1


def _scrape(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = urllib.request.urlopen(url, timeout=30).read().decode()
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(text) for s in f.samples}
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_k2_metrics_serve_answers_scrapes_over_http(kafka_broker, catalog, tmp_path, monkeypatch):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 2_000, set())
    drain_all(kafka_broker, trades_target(topics.trades))
    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "k2_pipelines", "metrics", "serve", "--port", str(port),
                               "--trades-topic", topics.trades, "--quotes-topic", topics.quotes],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        found = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.terminate()
        server.wait(10)
    assert one(found, "k2_table_rows", table="market_data.trades") == counts["trades"]
    lag = by_labels(found, "k2_consumer_lag_messages")
    assert sum(v for k, v in lag.items() if dict(k)["topic"] == topics.quotes) == counts["quotes"]
    assert sum(v for k, v in lag.items() if dict(k)["topic"] == topics.trades) == 0
    assert not any(v for (name, _), v in found.items() if name == "k2_metrics_scrape_errors")


@pytest.fixture
def pushgateway(tmp_path) -> str:
    """A real Pushgateway (Debian's prometheus-pushgateway) on a free port, persisting to a temporary file."""
    if not Path(PUSHGATEWAY).exists():
        pytest.skip("prometheus-pushgateway is not installed (apt-get install -y prometheus-pushgateway)")
    port = free_port()
    process = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
                                f"--persistence.file={tmp_path / 'pushgateway.db'}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _scrape(f"{url}/metrics", timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _pushed(url: str, job: str, table: str) -> dict[str, float]:
    return {name: value for (name, labels), value in _scrape(f"{url}/metrics").items()
            if dict(labels).get("job") == job and dict(labels).get("table") == table}


def test_drain_and_asx_runs_push_running_totals_to_a_real_pushgateway(kafka_broker, catalog, landing, pushgateway,
                                                                      tmp_path, monkeypatch):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 3_000, {"duplicates"})
    monkeypatch.setenv("K2_PUSHGATEWAY_URL", pushgateway)
    resources = {"iceberg": IcebergCatalogResource(), "quality": QualityResource(),
                 "binance_kafka": BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=topics.trades,
                                                       quotes_topic=topics.quotes)}
    runs = []
    for _ in range(2):  # two runs: the counters add up, the gauges are the last run's
        started = time.time()
        result = dg.materialize([binance_trades], resources=resources,
                                run_config={"ops": {"binance_trades": {"config": {"max_messages": 1_000}}}})
        runs.append(result.asset_materializations_for_node("binance_trades")[0].metadata)
        pushed = _pushed(pushgateway, "k2_drain", "market_data.trades")
        assert pushed["k2_drain_messages_total"] == sum(r["messages"].value for r in runs)
        assert pushed["k2_drain_rows_written_total"] == sum(r["rows_written"].value for r in runs)
        assert pushed["k2_drain_duplicates_total"] == sum(r["duplicates_dropped"].value for r in runs)
        assert pushed["k2_drain_dead_letters_total"] == 0
        assert pushed["k2_drain_duration_seconds"] == pytest.approx(runs[-1]["duration_seconds"].value, abs=0.001)
        assert started <= pushed["k2_drain_last_success_timestamp_seconds"] <= time.time()
    assert runs[0]["messages"].value == 1_000 and pushed["k2_drain_messages_total"] == counts["trades"] > 1_000
    assert counts["duplicates:trades"] and pushed["k2_drain_duplicates_total"]

    day = trading_days(DEFAULT_START, 1)[0].isoformat()
    loaded = run_asx_load(day)
    for asset, table in (("asx_trades", "market_data.trades"), ("asx_reference_data", "market_data.reference_data")):
        metadata = loaded.asset_materializations_for_node(asset)[0].metadata
        pushed = _pushed(pushgateway, "k2_asx", table)
        assert pushed["k2_asx_rows_written_total"] == metadata["rows_written"].value > 0
        assert pushed["k2_asx_rows_rejected_total"] == metadata["rows_rejected"].value
    assert _pushed(pushgateway, "k2_drain", "market_data.trades")["k2_drain_messages_total"] == counts["trades"]


def test_a_failed_push_does_not_fail_the_run(kafka_broker, catalog, tmp_path, monkeypatch, caplog):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 500, set())
    monkeypatch.setenv("K2_PUSHGATEWAY_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    resources = {"iceberg": IcebergCatalogResource(), "quality": QualityResource(),
                 "binance_kafka": BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=topics.trades,
                                                       quotes_topic=topics.quotes)}
    result = dg.materialize([binance_trades], resources=resources)
    assert result.success
    assert (
        result.asset_materializations_for_node("binance_trades")[0].metadata["rows_written"].value == counts["trades"]
    )
    assert any("not pushed" in record.getMessage() for record in caplog.records)
