"""prune_runs on a real SQLite instance: which finished runs go (with their logs) and which stay, of real runs whose
ages Dagster's own clock sets."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    ScheduleInstigatorData,
    SensorInstigatorData,
    TickStatus,
)
from dagster._core.test_utils import freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.failed_runs import failed_run_sensor
from k2_pipelines.defs.recovery.orphan_sensor import orphan_cleanup_sensor
from k2_pipelines.defs.tags import INCIDENT_TAG
from k2_pipelines.defs.upkeep import prune_runs as prune_module
from k2_pipelines.defs.upkeep.prune_runs import prune_runs
from k2_pipelines.lib.recovery.incidents import Incident, record_incident

NOW = datetime.now(UTC)


class Outcome(dg.Config):
    fail: bool = False


@dg.op
def say(context: dg.OpExecutionContext, config: Outcome) -> None:
    context.log.info("a drain-sized run")  # something in its compute logs
    if config.fail:
        raise dg.Failure("failed on purpose")


@dg.job
def tiny():
    say()


def _run(instance, days_ago: float, fail: bool = False, tags: dict | None = None) -> str:
    """A real run of `tiny`, finished `days_ago` by Dagster's clock."""
    with freeze_time(NOW - timedelta(days=days_ago)):
        result = tiny.execute_in_process(instance=instance, run_config={"ops": {"say": {"config": {"fail": fail}}}},
                                         tags=tags or {}, raise_on_error=False)
    assert result.success is not fail
    return result.run_id


def _in_flight(instance, days_ago: float) -> str:
    with freeze_time(NOW - timedelta(days=days_ago)):
        return instance.create_run_for_job(tiny, status=dg.DagsterRunStatus.STARTED).run_id


def _store_cursor(instance, sensor: dg.SensorDefinition, cursor: dict) -> None:
    """What the daemon stores after a tick of `sensor`."""
    code = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="k2_pipelines.definitions"))
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(code, "__repository__"), sensor.name)
    instance.add_instigator_state(InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING,
                                                  SensorInstigatorData(cursor=json.dumps(cursor))))


def _store_schedule_state(instance, name: str) -> None:
    code = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="k2_pipelines.definitions"))
    origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(code, "__repository__"), name)
    instance.add_instigator_state(InstigatorState(origin, InstigatorType.SCHEDULE, InstigatorStatus.RUNNING,
                                                  ScheduleInstigatorData(cron_schedule="40 * * * *")))


def _incident(catalog, subject: str, resolved: bool = False) -> str:
    incident = Incident("run_failed", subject, NOW, "test", "a failed run", "docs/runbooks/run_failed.md")
    record_incident(catalog, incident.resolve("retried", "ok", None) if resolved else incident)
    return incident.incident_id


def _prune(instance, **config) -> dict:
    result = prune_runs.execute_in_process(
        instance=instance, resources={"iceberg": IcebergCatalogResource()},
        run_config={"ops": {"prune": {"config": {"jobs": [tiny.name]} | config}}})
    [event] = [e for e in result.all_node_events if e.is_successful_output]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def _logs(instance, run_id: str) -> list[Path]:
    return [Path(instance.event_log_storage.path_for_shard(run_id)),
            Path(instance.compute_log_manager._base_dir) / run_id]


def test_prune_deletes_old_finished_runs_but_keeps_failures_runs_in_flight_and_what_incidents_and_sensors_need(
        catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(prune_module, "_PAGE", 2)  # pages that end on kept and on deleted runs
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        old = _run(instance, 3)
        recent = _run(instance, 1)
        failed = _run(instance, 3, fail=True)
        failed_long_ago = _run(instance, 20, fail=True)
        in_flight = _in_flight(instance, 30)
        for_open_incident = _run(instance, 3, tags={INCIDENT_TAG: _incident(catalog, "the drain")})
        for_resolved_incident = _run(instance, 3, tags={INCIDENT_TAG: _incident(catalog, "the drain", resolved=True)})
        named_by_open_incident = _run(instance, 20, fail=True)
        _incident(catalog, named_by_open_incident)
        pending_orphans = _run(instance, 20, fail=True)
        unread_failure = _run(instance, 17, fail=True)
        _store_cursor(instance, orphan_cleanup_sensor, {"after": (NOW - timedelta(days=18)).timestamp(),
                                                        "pending": [{"run_id": pending_orphans}]})
        _store_cursor(instance, failed_run_sensor, {"after": (NOW - timedelta(days=18)).timestamp(), "pending": []})
        _store_schedule_state(instance, "prune_runs_hourly")  # a daemon's instance holds schedules' states too
        assert all(path.exists() for path in _logs(instance, old))

        planned = _prune(instance, dry_run=True)
        assert len(instance.get_run_ids(dg.RunsFilter(job_name=tiny.name))) == 10  # a dry run deletes nothing
        assert (planned["deleted_succeeded"], planned["deleted_failed_or_canceled"]) == (2, 1)

        done = _prune(instance)
        assert {k: done[k] for k in planned if k.startswith(("deleted", "kept"))} == {
            "deleted_succeeded": 2, "deleted_failed_or_canceled": 1, "kept_for_incidents": 2, "kept_for_sensors": 2}
        kept = set(instance.get_run_ids(dg.RunsFilter(job_name=tiny.name)))
        assert kept == {recent, failed, in_flight, for_open_incident, named_by_open_incident, pending_orphans,
                        unread_failure}
        assert not any(path.exists() for run in (old, for_resolved_incident, failed_long_ago)
                       for path in _logs(instance, run))
        assert all(path.exists() for path in _logs(instance, recent))


def test_tick_retention_is_what_the_instance_reads_in_both_instance_configs(tmp_path):
    repository = Path(__file__).parents[1]
    retention = [yaml.safe_load((repository / path).read_text())["retention"]
                 for path in ("dagster.yaml", "docker/dagster.yaml")]
    assert retention[0] == retention[1]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"retention": retention[0]}))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # what the daemon purges ticks by
        sensors, schedules = (instance.get_tick_retention_settings(kind)
                                for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE))
    # a sensor ticks every 30 s: ~2,900 ticks a day each, kept 1 day when skipped, 3 when successful
    assert (sensors[TickStatus.SKIPPED], sensors[TickStatus.SUCCESS], sensors[TickStatus.FAILURE]) == (1, 3, 14)
    assert (schedules[TickStatus.SKIPPED], schedules[TickStatus.SUCCESS], schedules[TickStatus.FAILURE]) == (1, 7, 14)
