"""Cases 1 and 2: Kafka, the catalog or the warehouse goes down for real, then comes back."""

import json
import shutil

import dagster as dg
import pytest

from k2_pipelines.defs.binance.sensors import binance_lag_sensor
from k2_pipelines.defs.recovery.health_sensors import kafka_health_sensor, storage_health_sensor
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.recovery.incidents import OPEN, RESOLVED, incidents
from k2_pipelines_tests.kafka_helpers import unique_topics
from k2_pipelines_tests.recovery_helpers import drain_run, produce, resolve_incident, resources, skipped, tick


def test_a_stopped_broker_opens_an_incident_skips_drains_and_a_catch_up_closes_it(own_broker, catalog, tmp_path):
    topics = unique_topics()
    first = produce(own_broker, topics, tmp_path, 2_000, seed=1)
    used = resources(own_broker, topics)
    with dg.instance_for_test() as instance:
        assert drain_run(instance, used).success
        assert skipped(tick(kafka_health_sensor, instance, used)) == "healthy"

        own_broker.stop()
        down = tick(kafka_health_sensor, instance, used)
        assert not down.run_requests and "unreachable" in skipped(down)
        [opened] = incidents(catalog, status=OPEN)
        assert opened.kind == "kafka_broker_down" and opened.subject == own_broker.bootstrap
        still_down = tick(kafka_health_sensor, instance, used, down.cursor)
        assert incidents(catalog) == [opened]  # one incident per outage, not one per tick
        lag = tick(binance_lag_sensor, instance, used)
        assert "cannot read the offsets" in skipped(lag)  # no storm of failing drains

        own_broker.start()
        second = produce(own_broker, topics, tmp_path, 1_000, seed=2)
        back = tick(kafka_health_sensor, instance, used, still_down.cursor)
        [request] = back.run_requests
        assert request.job_name in (None, "catch_up_after_outage") and request.run_key == opened.incident_id
        catch_up = drain_run(instance, used, request.tags)
        assert catch_up.success
        metadata = catch_up.asset_materializations_for_node("binance_trades")[0].metadata
        assert metadata["incident"].value == opened.incident_id and metadata["lag_after"].value == 0

        resolve_incident(instance, catch_up, used)
        [resolved] = incidents(catalog)
        assert resolved.incident_id == opened.incident_id and resolved.status == RESOLVED
        assert resolved.run_id == catch_up.run_id and resolved.time_to_recovery_seconds > 0
        assert "binance_trades: messages" in resolved.outcome
        assert skipped(tick(kafka_health_sensor, instance, used, back.cursor)) == "healthy"

    rows = catalog.load_table(TRADES.identifier).scan().to_arrow()
    assert rows.num_rows == first["trades"] + second["trades"]  # nothing lost, nothing twice
    assert len(set(rows.column("message_id").to_pylist())) == rows.num_rows


@pytest.mark.parametrize("moved, kind", [("catalog.db", "catalog_unreachable"),
                                         ("warehouse", "object_store_unreachable")])
def test_a_catalog_or_warehouse_moved_away_is_an_incident_recorded_once_it_is_back(own_broker, catalog, k2_home,
                                                                                   tmp_path, moved, kind):
    topics = unique_topics()
    first = produce(own_broker, topics, tmp_path, 1_000, seed=3)
    used = resources(own_broker, topics)
    state = k2_home / "k2"
    with dg.instance_for_test() as instance:
        assert drain_run(instance, used).success
        (state / moved).rename(tmp_path / "away")

        down = tick(storage_health_sensor, instance, used)
        assert "unreachable" in skipped(down) and json.loads(down.cursor)["recorded"] is False
        assert "cannot read the offsets" in skipped(tick(binance_lag_sensor, instance, used))
        assert not drain_run(instance, used).success  # a drain launched anyway fails and writes nothing

        second = produce(own_broker, topics, tmp_path, 1_000, seed=4)
        shutil.rmtree(state / moved, ignore_errors=True)  # what K2 made meanwhile (an empty warehouse folder)
        (tmp_path / "away").rename(state / moved)
        back = tick(storage_health_sensor, instance, used, down.cursor)
        [request] = back.run_requests
        [opened] = incidents(catalog, status=OPEN)
        assert opened.kind == kind and opened.incident_id == request.run_key
        catch_up = drain_run(instance, used, request.tags)
        assert catch_up.success
        resolve_incident(instance, catch_up, used)
        [resolved] = incidents(catalog)
        assert resolved.status == RESOLVED and resolved.resolved_at > opened.detected_at

    rows = load_k2_catalog().load_table(TRADES.identifier).scan().to_arrow()
    assert rows.num_rows == first["trades"] + second["trades"]
    assert len(set(rows.column("message_id").to_pylist())) == rows.num_rows
