"""Cases 3-5 with real faults: a failed run (broker stopped, unreadable landing file), a reset consumer group, a
micro-batch that fails a blocking check. Each time: the sensor fires, the runbook runs, the data ends consistent and
the incident says what happened."""

import time
from decimal import Decimal

import dagster as dg
from confluent_kafka import Consumer, Producer, TopicPartition
from pyiceberg.expressions import EqualTo, In

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
from k2_pipelines.defs.recovery.runbooks import (
    quarantine_bad_batch,
    quarantine_landing_file,
    realign_consumer_offsets,
    release_quarantined_rows,
)
from k2_pipelines.lib.avro.codec import AvroEncoder
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.normalize import normalize
from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import group_id, trades_target
from k2_pipelines.lib.drain.offset_drift import offset_drift
from k2_pipelines.lib.iceberg.tables import DEAD_LETTERS, QUARANTINE, TRADES
from k2_pipelines.lib.recovery.incidents import OPEN, RESOLVED, incidents
from k2_pipelines.settings import state_dir
from k2_pipelines_tests.kafka_helpers import unique_topics
from k2_pipelines_tests.recovery_helpers import DRAIN_ASSETS, produce, resolve_incident, resources, skipped, tick


def _definitions(used: dict) -> dg.Definitions:
    return dg.Definitions(
        assets=[*DRAIN_ASSETS, asx_reference_data, asx_trades, asx_quotes],
        asset_checks=[asx_trades_quality, asx_quotes_quality],
        jobs=[
            *drain_jobs.values(),
            asx_load_job,
            quarantine_bad_batch,
            quarantine_landing_file,
            realign_consumer_offsets,
        ],
        resources=used | {"asx_landing": AsxLandingResource()},
    )


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
    garbage = bytes(range(128, 256)) * 8  # no line of it is text: a bad line alone would only be rejected
    bad.write_bytes(garbage)
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
    assert kept.read_bytes() == garbage  # the file itself, kept whole


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


def _produce_records(bootstrap: str, topics, records: list[dict]) -> None:
    encoder, producer = AvroEncoder(default_registry(), topics.trades, "trade_v2"), Producer(
        {"bootstrap.servers": bootstrap})
    for value in records:
        producer.produce(topics.trades, encoder.encode(value), b"BTCUSDT")
    assert producer.flush(30) == 0


def _half_with_zero_prices(session, first_id: int) -> list[dict]:
    """Ten trades of BTCUSDT, every second one priced 0 (breaking price_and_quantity_positive)."""
    record = normalize(next(f for _, f in read_recording(session) if '"e":"trade"' in f), 1).record
    return [record | {"trade_id": f"BINANCE-{first_id + i}", "source_sequence": None,
                      "price": Decimal(0) if i % 2 else record["price"]} for i in range(10)]


def test_rows_breaking_a_row_rule_are_dead_letters_and_their_neighbours_land(own_broker, catalog, tmp_path):
    topics = unique_topics()
    produce(own_broker, topics, tmp_path, 600, seed=7)
    used = resources(own_broker, topics)
    drain = _definitions(used).resolve_job_def("drain_binance_trades")
    with dg.instance_for_test() as instance:
        gate = tick(quality_gate_sensor, instance, used).cursor
        assert drain.execute_in_process(instance=instance).success
        good_ids = set(_trade_ids(catalog))
        bad = _half_with_zero_prices(sorted(tmp_path.glob("session-*.jsonl"))[0], 10**12)
        _produce_records(own_broker.bootstrap, topics, bad)
        result = drain.execute_in_process(instance=instance)
        assert result.success  # its checks pass: the zero prices never landed
        assert not tick(quality_gate_sensor, instance, used, gate).run_requests  # nothing to quarantine
        metadata = result.asset_materializations_for_node("binance_trades")[0].metadata
        assert metadata["rows_set_aside_by_rule"].value == {"price_and_quantity_positive": 5}
    assert set(_trade_ids(catalog)) == good_ids | {r["trade_id"] for r in bad[::2]}
    letters = catalog.load_table(DEAD_LETTERS.identifier).scan(row_filter=EqualTo("run_id", result.run_id)).to_arrow()
    assert letters["error_class"].to_pylist() == ["price_and_quantity_positive"] * 5
    assert all("price=0.0" in message for message in letters["error_message"].to_pylist())
    end = stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets
    assert all(letters["offset"][i].as_py() < end[letters["partition"][i].as_py()] for i in range(5))
    assert catalog.load_table(QUARANTINE.identifier).scan().to_arrow().num_rows == 0


def test_rows_a_blocking_check_fails_after_the_write_are_quarantined_alone_and_released_once(
        own_broker, catalog, tmp_path, rows_slip_past_the_rules):
    topics = unique_topics()
    session_counts = produce(own_broker, topics, tmp_path, 600, seed=7)
    used = resources(own_broker, topics)
    defs = _definitions(used)
    drain = defs.resolve_job_def("drain_binance_trades")
    with dg.instance_for_test() as instance:
        gate, runs = tick(quality_gate_sensor, instance, used).cursor, tick(failed_run_sensor, instance, used).cursor
        assert drain.execute_in_process(instance=instance).success
        good_ids = set(_trade_ids(catalog))
        bad = _half_with_zero_prices(sorted(tmp_path.glob("session-*.jsonl"))[0], 10**12)
        _produce_records(own_broker.bootstrap, topics, bad)
        failed = drain.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success  # the rows slipped past the write path; the blocking check failed its run
        assert not tick(failed_run_sensor, instance, used, runs).run_requests  # the quality runbook's case
        [request] = tick(quality_gate_sensor, instance, used, gate).run_requests
        assert request.run_key == f"quarantine:trades:{failed.run_id}"
        offsets = stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets
        assert _launch(defs, instance, request, "quarantine_bad_batch").success

        # only the failing rows left: the batch's good rows stay queryable
        assert set(_trade_ids(catalog)) == good_ids | {r["trade_id"] for r in bad[::2]}
        assert stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets == offsets
        later = [record | {"trade_id": f"BINANCE-{2 * 10**12 + i}"} for i, record in enumerate(bad[:5])]
        _produce_records(own_broker.bootstrap, topics, [r | {"price": bad[0]["price"]} for r in later])
        assert drain.execute_in_process(instance=instance).success  # goes on after the batch, not through it again
        assert set(_trade_ids(catalog)) == good_ids | {r["trade_id"] for r in bad[::2] + later}

        release = {"ops": {"release_from_quarantine": {"config": {"table": "trades",
                                                                   "source_run_id": failed.run_id}}}}
        job = dg.Definitions(jobs=[release_quarantined_rows], resources=used).resolve_job_def(
            "release_quarantined_rows")
        first = job.execute_in_process(run_config=release, instance=instance)
        again = job.execute_in_process(run_config=release, instance=instance)
        assert first.success and again.success
    ids = _trade_ids(catalog)
    assert len(ids) == len(set(ids)) and set(ids) == good_ids | {r["trade_id"] for r in bad + later}
    assert len(good_ids) == session_counts["trades"]
    released = catalog.load_table(TRADES.identifier).scan(row_filter=In("trade_id", [r["trade_id"] for r in bad[1::2]]),
                                                          selected_fields=("price",)).to_arrow()
    assert released["price"].to_pylist() == [Decimal(0)] * 5  # the rows as they were quarantined
    quarantined = catalog.load_table(QUARANTINE.identifier).scan().to_arrow()
    assert sorted(quarantined["record_id"].to_pylist()) == sorted(r["trade_id"] for r in bad[1::2])
    assert set(quarantined["source_run_id"].to_pylist()) == {failed.run_id}
    assert set(quarantined["reason"].to_pylist()) == {"price_and_quantity_positive"}
    assert set(quarantined["released_by_run"].to_pylist()) == {first.run_id}
    quarantine, release_first, release_again = incidents(catalog)
    assert quarantine.kind == "quality_check_failed" and quarantine.status == RESOLVED
    assert "5 rows" in quarantine.outcome and "price_and_quantity_positive" in quarantine.detail
    assert release_first.status == RESOLVED and release_first.outcome.startswith("5 rows back in market_data.trades")
    assert release_again.outcome.startswith("nothing held") and release_again.run_id == again.run_id
