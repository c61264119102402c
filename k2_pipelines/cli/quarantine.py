"""`k2 quarantine list` shows the rows the quarantine holds; `k2 quarantine release` runs the runbook job that puts a
batch's quarantined rows back (recorded in the persistent instance and as an incident, as a launch from the UI)."""

import argparse

from k2_pipelines.cli.jobs import run_job

TABLES = ("trades", "quotes")


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = commands.add_parser("quarantine", help="rows a blocking check failed on, held out of their table") \
        .add_subparsers(dest="action", required=True)
    held = actions.add_parser("list", help="the rows held, by table, drain run and failed check")
    held.add_argument("--table", choices=TABLES)
    held.set_defaults(run=list_held)
    release = actions.add_parser("release", help="put a run's held rows back into their table once the cause is "
                                                 "fixed (exactly once; recorded as an incident)")
    release.add_argument("--table", choices=TABLES, required=True)
    release.add_argument("--run", dest="source_run", required=True, help="the drain run whose rows were quarantined")
    release.add_argument("--check", help="only the rows quarantined for this check")
    release.set_defaults(run=release_rows)


def list_held(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.recovery.quarantine import held

    table = args.table
    rows = held(load_k2_catalog(), f"market_data.{table}" if table else None)
    groups = rows.group_by(["table_name", "source_run_id", "reason"]).aggregate(
        [("record_id", "count"), ("quarantined_at", "max")]).sort_by("quarantined_at_max")
    for group in groups.to_pylist():
        print(f"{group['table_name']} run {group['source_run_id']}: {group['record_id_count']:,} rows failing "
              f"{group['reason']}, quarantined {group['quarantined_at_max']:%Y-%m-%d %H:%M:%S} UTC")
    print(f"{rows.num_rows:,} rows held" + (f"; release with: k2 quarantine release --table {table or 'TABLE'} "
                                            "--run RUN_ID [--check CHECK]" if rows.num_rows else ""))
    return 0


def release_rows(args: argparse.Namespace) -> int:
    config = {"table": args.table, "source_run_id": args.source_run, "check": args.check or ""}
    result = run_job("release_quarantined_rows", {"ops": {"release_from_quarantine": {"config": config}}})
    if not result.success:
        print(f"release_quarantined_rows run {result.run_id}: FAILED (see `k2 dev` for its logs)")
        return 1
    [output] = [e for e in result.all_node_events if e.is_successful_output]
    incident = output.step_output_data.metadata["incident"].value
    if not isinstance(incident, dict):
        raise RuntimeError(f"release_quarantined_rows run {result.run_id}: its output holds no incident record")
    print(f"release_quarantined_rows run {result.run_id}: {incident['outcome']} (incident {incident['incident_id']})")
    return 0
