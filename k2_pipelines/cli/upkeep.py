"""`k2 upkeep compact|expire|orphans|prune-runs` runs the upkeep jobs on demand (recorded in the persistent instance,
as a launch from the UI would be); `k2 incidents` lists what the recovery sensors found and did."""

import json

import dagster as dg

from k2_pipelines.cli.dagster_home import prepare_dagster_home

JOBS = {"compact": ("compact_tables", "compact"), "expire": ("expire_snapshots", "expire"),
        "orphans": ("remove_orphan_files", "remove_orphans"), "prune-runs": ("prune_runs", "prune")}


def run_upkeep(action: str, config: dict) -> int:
    from k2_pipelines.definitions import defs

    job_name, op = JOBS[action]
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        result = defs().resolve_job_def(job_name).execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {op: {"config": config}}, "loggers": {"console": {"config": {"log_level": "INFO"}}}})
    if not result.success:
        print(f"{job_name} run {result.run_id}: FAILED (see `k2 dev` for its logs)")
        return 1
    [output] = [e for e in result.all_node_events if e.is_successful_output]
    metadata = output.step_output_data.metadata
    print(f"{job_name} run {result.run_id}" + (" (dry run: nothing changed)" if config.get("dry_run") else ""))
    print(metadata["by_table"].value if "by_table" in metadata else  # prune_runs counts runs, not table files
          ", ".join(f"{key} {value.value:,}" for key, value in metadata.items() if key.startswith(("deleted", "kept"))))
    return 0


def list_incidents(status: str | None, as_json: bool) -> int:
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.recovery.incidents import incidents

    found = incidents(load_k2_catalog(), status=status)
    if as_json:
        print(json.dumps([i.as_record() for i in found], indent=2))
        return 0
    for incident in found:
        ttr = f", recovered in {incident.time_to_recovery_seconds:.0f}s" if incident.resolved_at else ""
        print(f"{incident.detected_at:%Y-%m-%d %H:%M:%S} {incident.kind} {incident.status}{ttr}: {incident.subject}\n"
              f"    detected: {incident.detail}\n    action: {incident.action or '-'}\n"
              f"    outcome: {incident.outcome or '-'}\n    runbook: {incident.runbook}")
    print(f"{len(found)} incident(s)")
    return 0
