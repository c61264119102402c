"""`k2 quarantine list` shows the rows the quarantine holds; `k2 quarantine release` runs the runbook job that puts a
batch's quarantined rows back (recorded in the persistent instance and as an incident, as a launch from the UI)."""

import dagster as dg

from k2_pipelines.cli.dagster_home import prepare_dagster_home


def list_held(table: str | None) -> int:
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.recovery.quarantine import held

    rows = held(load_k2_catalog(), f"market_data.{table}" if table else None)
    groups = rows.group_by(["table_name", "source_run_id", "reason"]).aggregate(
        [("record_id", "count"), ("quarantined_at", "max")]).sort_by("quarantined_at_max")
    for group in groups.to_pylist():
        print(f"{group['table_name']} run {group['source_run_id']}: {group['record_id_count']:,} rows failing "
              f"{group['reason']}, quarantined {group['quarantined_at_max']:%Y-%m-%d %H:%M:%S} UTC")
    print(f"{rows.num_rows:,} rows held" + (f"; release with: k2 quarantine release --table {table or 'TABLE'} "
                                            "--run RUN_ID [--check CHECK]" if rows.num_rows else ""))
    return 0


def release_rows(table: str, run_id: str, check: str | None) -> int:
    from k2_pipelines.definitions import defs

    prepare_dagster_home()
    config = {"table": table, "source_run_id": run_id, "check": check or ""}
    with dg.DagsterInstance.get() as instance:
        result = defs().resolve_job_def("release_quarantined_rows").execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {"release_from_quarantine": {"config": config}}})
    if not result.success:
        print(f"release_quarantined_rows run {result.run_id}: FAILED (see `k2 dev` for its logs)")
        return 1
    [output] = [e for e in result.all_node_events if e.is_successful_output]
    incident = output.step_output_data.metadata["incident"].value
    print(f"release_quarantined_rows run {result.run_id}: {incident['outcome']} (incident {incident['incident_id']})")
    return 0

