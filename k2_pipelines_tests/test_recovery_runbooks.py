"""Cases 3-5 with real faults: a failed run (broker stopped, unreadable landing file), a reset consumer group, a
micro-batch that fails a blocking check. Each time: the sensor fires, the runbook runs, the data ends consistent and
the incident says what happened."""

import time
from decimal import Decimal

import dagster as dg
import pyarrow.compute as pc
from confluent_kafka import Consumer, Producer, TopicPartition

from k2_pipelines.defs.asx.assets import asx_quotes, asx_reference_data, asx_trades
from k2_pipelines.defs.asx.checks import asx_quotes_quality, asx_trades_quality
from k2_pipelines.defs.asx.jobs import asx_load_job
from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.recovery import failed_runs
from k2_pipelines.defs.recovery.drift_sensor import offset_drift_sensor
from k2_pipelines.defs.recovery.failed_runs import failed_run_sensor
from k2_pipelines.defs.recovery.quality_sensor import quality_gate_sensor
from k2_pipelines.defs.recovery.runbooks import quarantine_bad_batch, quarantine_landing_file, realign_consumer_offsets
from k2_pipelines.lib.avro_codec import AvroEncoder
from k2_pipelines.lib.binance.normalize import normalize
from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import group_id, trades_target
from k2_pipelines.lib.drain.offset_drift import offset_drift
from k2_pipelines.lib.incidents import NEEDS_HUMAN, OPEN, RESOLVED, incidents
from k2_pipelines.lib.paths import state_dir
from k2_pipelines.lib.schema_registry import default_registry
from k2_pipelines.lib.tables import QUARANTINE, TRADES
from k2_pipelines_tests.kafka_helpers import unique_topics
from k2_pipelines_tests.recovery_helpers import DRAIN_ASSETS, produce, resolve_incident, resources, skipped, tick


def _definitions(used: dict) -> dg.Definitions:
    return dg.Definitions(
        assets=[*DRAIN_ASSETS, asx_reference_data, asx_trades, asx_quotes], asset_checks=[asx_trades_quality, asx_quotes_quality],
        jobs=[*drain_jobs.values(), asx_load_job, quarantine_bad_batch, quarantine_landing_file,
              realign_consumer_offsets],
        resources=used | {"asx_landing": AsxLandingResource()})


def _launch(defs: dg.Definitions, instance, request: dg.RunRequest, job_name: str | None = None):
    """Run what a sensor requested, as the daemon would: its job, config and tags."""
    job = defs.resolve_job_def(request.job_name or job_name)
    return job.execute_in_process(run_config=request.run_config, tags=request.tags, instance=instance,
                                  raise_on_error=False)


def _trade_ids(catalog) -> list[str]:
    return catalog.load_table(TRADES.identifier).scan(selected_fields=("trade_id",)).to_arrow()["trade_id"].to_pylist()


def test_a_drain_failing_while_the_broker_is_down_is_retried_with_backoff(own_broker, catalog, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(failed_runs, "FIRST_BACKOFF_SECONDS", 2)
    topics = unique_topics()
    counts = produce(own_broker, topics, tmp_path, 1_000, seed=5)
    used = resources(own_broker, topics)
    defs = _definitions(used)
    with dg.instance_for_test() as instance:
        cursor = tick(failed_run_sensor, instance, used).cursor  # the sensor runs before the fault
        own_broker.stop()
        try:
            failed = defs.resolve_job_def("drain_binance_trades").execute_in_process(instance=instance,
                                                                                     raise_on_error=False)
            assert not failed.success
            first = tick(failed_run_sensor, instance, used, cursor)
            assert not first.run_requests  # waiting out the backoff
            [opened] = incidents(catalog, status=OPEN)
            assert opened.kind == "run_failed" and opened.subject == failed.run_id
            assert "transient" in opened.detail and opened.action == "retry 1 of 3 after 2s"
        finally:
            own_broker.start()
        time.sleep(2)
        [retry] = tick(failed_run_sensor, instance, used, first.cursor).run_requests
        assert retry.job_name == "drain_binance_trades" and retry.run_key == f"retry:{failed.run_id}"
        retried = _launch(defs, instance, retry)
        assert retried.success
        resolve_incident(instance, retried, used)
    [resolved] = incidents(catalog)
    assert resolved.incident_id == opened.incident_id and resolved.status == RESOLVED
    assert resolved.run_id == retried.run_id
    assert len(_trade_ids(catalog)) == counts["trades"]


def test_an_unreadable_landing_file_is_quarantined_and_its_dates_load_without_it(catalog, landing):
    bad = sorted((landing / "trades").glob("*.csv"))[0]
    bad.write_bytes(bad.read_bytes()[:300] + bytes(range(256)) * 8)  # binary garbage in the middle of the file
    used = {"iceberg": IcebergCatalogResource()}
    defs = _definitions(used | {"binance_kafka": BinanceKafkaResource(), "quality": QualityResource()})
    with dg.instance_for_test() as instance:
        cursor = tick(failed_run_sensor, instance, used).cursor
        failed = defs.resolve_job_def("asx_load").execute_in_process(instance=instance, partition_key="2014-03-10",
                                                                     raise_on_error=False)
        assert not failed.success
        [request] = tick(failed_run_sensor, instance, used, cursor).run_requests
        assert request.job_name == "quarantine_landing_file"
        runbook = _launch(defs, instance, request)
        assert runbook.success
        reloaded = defs.resolve_job_def("asx_load").execute_in_process(instance=instance, partition_key="2014-03-10")
        assert reloaded.success
    [incident] = incidents(catalog)
    assert incident.status == RESOLVED and incident.kind == "run_failed" and "poison_data" in incident.detail
    assert str(bad) in incident.action and not bad.exists()
    [kept] = (state_dir() / "quarantine" / "asx").glob(f"*-{bad.name}")
    assert kept.read_bytes().startswith(b"03/")  # the file itself, kept whole


def test_a_reset_consumer_group_is_realigned_from_iceberg(own_broker, catalog, tmp_path):
    topics = unique_topics()
    produce(own_broker, topics, tmp_path, 1_000, seed=6)
    used = resources(own_broker, topics)
    defs = _definitions(used)
    target = trades_target(topics.trades)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("drain_binance_trades").execute_in_process(instance=instance).success
        stored = stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets
        aligned = tick(offset_drift_sensor, instance, used)
        assert "trades: aligned" in skipped(aligned)

        started = time.monotonic()
        operator = Consumer({"bootstrap.servers": own_broker.bootstrap, "group.id": group_id(target)})
        operator.commit(offsets=[TopicPartition(topics.trades, p, 0) for p in stored], asynchronous=False)  # a reset
        operator.close()
        [request] = tick(offset_drift_sensor, instance, used, aligned.cursor).run_requests
        runbook = _launch(defs, instance, request, "realign_consumer_offsets")
        assert runbook.success
        recovered = time.monotonic() - started
    assert offset_drift(own_broker.bootstrap, target, stored).kind == "aligned"
    [incident] = incidents(catalog)
    assert incident.kind == "offset_drift" and incident.status == RESOLVED and "group_behind" in incident.detail
    assert incident.run_id == runbook.run_id
    print(f"offset drift: reset to realigned in {recovered:.1f}s (one tick and one runbook run)")


def test_a_batch_failing_a_blocking_check_is_quarantined_and_draining_goes_on(own_broker, catalog, tmp_path):
    topics = unique_topics()
    session_counts = produce(own_broker, topics, tmp_path, 600, seed=7)
    used = resources(own_broker, topics)
    defs = _definitions(used)
    drain = defs.resolve_job_def("drain_binance_trades")
    with dg.instance_for_test() as instance:
        gate, runs = tick(quality_gate_sensor, instance, used).cursor, tick(failed_run_sensor, instance, used).cursor
        assert drain.execute_in_process(instance=instance).success
        good_ids = set(_trade_ids(catalog))

        session = sorted(tmp_path.glob("session-*.jsonl"))[0]
        record = normalize(next(f for _, f in read_recording(session) if '"e":"trade"' in f), 1).record
        encoder, producer = AvroEncoder(default_registry(), topics.trades, "trade_v2"), Producer(
            {"bootstrap.servers": own_broker.bootstrap})
        bad = [record | {"trade_id": f"BINANCE-{10**12 + i}", "source_sequence": None,
                         "price": Decimal(0) if i % 2 else record["price"]} for i in range(10)]
        for value in bad:
            producer.produce(topics.trades, encoder.encode(value), b"BTCUSDT")
        assert producer.flush(30) == 0
        failed = drain.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success  # the blocking check failed its run
        assert not tick(failed_run_sensor, instance, used, runs).run_requests  # the quality runbook's case
        [request] = tick(quality_gate_sensor, instance, used, gate).run_requests
        assert request.run_key == f"quarantine:trades:{failed.run_id}"
        offsets = stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets
        runbook = _launch(defs, instance, request, "quarantine_bad_batch")
        assert runbook.success

        assert set(_trade_ids(catalog)) == good_ids  # the table as before the batch
        assert stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets == offsets
        later = [record | {"trade_id": f"BINANCE-{2 * 10**12 + i}", "source_sequence": None} for i in range(5)]
        for value in later:
            producer.produce(topics.trades, encoder.encode(value), b"BTCUSDT")
        assert producer.flush(30) == 0
        assert drain.execute_in_process(instance=instance).success  # goes on after the batch, not through it again
    assert set(_trade_ids(catalog)) == good_ids | {r["trade_id"] for r in later}
    assert len(good_ids) == session_counts["trades"]
    quarantined = catalog.load_table(QUARANTINE.identifier).scan().to_arrow()
    assert sorted(quarantined["record_id"].to_pylist()) == sorted(r["trade_id"] for r in bad)
    assert set(quarantined["source_run_id"].to_pylist()) == {failed.run_id}
    assert pc.all(pc.match_substring(quarantined["reason"], "price_and_quantity_positive")).as_py()
    [incident] = incidents(catalog)
    assert incident.kind == "quality_check_failed" and incident.status == RESOLVED
    assert "10 rows" in incident.outcome and "price_and_quantity_positive" in incident.detail
    assert NEEDS_HUMAN not in {i.status for i in incidents(catalog)}
