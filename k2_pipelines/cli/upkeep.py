"""`k2 upkeep compact|expire|orphans|prune-runs` runs the upkeep jobs on demand (recorded in the persistent instance,
as a launch from the UI would be)."""

import argparse
from typing import Any

from k2_pipelines.cli.jobs import run_job

JOBS = {"compact": ("compact_tables", "compact"), "expire": ("expire_snapshots", "expire"),
        "orphans": ("remove_orphan_files", "remove_orphans"), "prune-runs": ("prune_runs", "prune")}


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = commands.add_parser("upkeep", help="table upkeep jobs on demand").add_subparsers(dest="action",
                                                                                             required=True)
    for action, help_text in (("compact", "bin-pack small data files (compact_tables)"),
                              ("expire", "expire old snapshots and delete their files (expire_snapshots)"),
                              ("orphans", "delete files no snapshot references (remove_orphan_files)")):
        job = actions.add_parser(action, help=help_text)
        job.add_argument("--tables", help="comma-separated names in market_data (default: all)")
        job.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
        job.set_defaults(run=table_upkeep)
    actions.choices["compact"].add_argument("--target-file-mb", type=int, default=128)
    actions.choices["expire"].add_argument("--older-than-days", type=float, default=7.0)
    actions.choices["expire"].add_argument("--drained-older-than-hours", type=float, default=2.0,
                                           help="for the tables every drain writes (they keep each day's newest "
                                                "snapshot for --older-than-days)")
    actions.choices["orphans"].add_argument("--older-than-hours", type=float, default=72.0,
                                            help="the safety age (never under one hour)")
    prune = actions.add_parser("prune-runs", help="delete old finished drain and upkeep runs from the Dagster "
                               "instance, keeping what the recovery sensors and open incidents need (prune_runs)")
    prune.add_argument("--keep-days", type=float, help="successful runs (default 2)")
    prune.add_argument("--keep-failed-days", type=float, help="failed and canceled runs (default 14)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.set_defaults(run=prune_runs)


def table_upkeep(args: argparse.Namespace) -> int:
    config = {"dry_run": args.dry_run} | ({"tables": args.tables.split(",")} if args.tables else {})
    if args.action == "compact":
        config["target_file_mb"] = args.target_file_mb
    elif args.action == "expire":
        config |= {"older_than_days": args.older_than_days, "drained_older_than_hours": args.drained_older_than_hours}
    else:
        config["older_than_hours"] = args.older_than_hours
    return run_upkeep(args.action, config)


def prune_runs(args: argparse.Namespace) -> int:
    given = {"keep_days": args.keep_days, "keep_failed_days": args.keep_failed_days}
    return run_upkeep("prune-runs", {"dry_run": args.dry_run} | {k: v for k, v in given.items() if v is not None})


def run_upkeep(action: str, config: dict[str, Any]) -> int:
    job_name, op = JOBS[action]
    result = run_job(job_name, {"ops": {op: {"config": config}}})
    if not result.success:
        print(f"{job_name} run {result.run_id}: FAILED (see `k2 dev` for its logs)")
        return 1
    [output] = [e for e in result.all_node_events if e.is_successful_output]
    metadata = output.step_output_data.metadata
    print(f"{job_name} run {result.run_id}" + (" (dry run: nothing changed)" if config.get("dry_run") else ""))
    print(metadata["by_table"].value if "by_table" in metadata else  # prune_runs counts runs, not table files
          ", ".join(f"{key} {value.value:,}" for key, value in metadata.items() if key.startswith(("deleted", "kept"))))
    return 0
