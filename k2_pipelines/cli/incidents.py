"""`k2 incidents`: what the recovery sensors detected, did, and how it ended."""

import argparse
import json


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    incidents = commands.add_parser("incidents", help="what the recovery sensors detected, did, and how it ended")
    incidents.add_argument("--status", choices=["open", "resolved", "needs_human"])
    incidents.add_argument("--json", action="store_true")
    incidents.set_defaults(run=list_incidents)


def list_incidents(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.recovery.incidents import incidents

    found = incidents(load_k2_catalog(), status=args.status)
    if args.json:
        print(json.dumps([i.as_record() for i in found], indent=2))
        return 0
    for incident in found:
        ttr = f", recovered in {incident.time_to_recovery_seconds:.0f}s" if incident.resolved_at else ""
        print(f"{incident.detected_at:%Y-%m-%d %H:%M:%S} {incident.kind} {incident.status}{ttr}: {incident.subject}\n"
              f"    detected: {incident.detail}\n    action: {incident.action or '-'}\n"
              f"    outcome: {incident.outcome or '-'}\n    runbook: {incident.runbook}")
    print(f"{len(found)} incident(s)")
    return 0
