"""`k2 asx load`: run the asx_load job over a range of trading dates (a CLI backfill), recorded in the persistent
instance."""

import argparse

from k2_pipelines.cli.jobs import add_day_range, run_range


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = commands.add_parser("asx", help="ASX batch loads").add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="load trading dates START..END in one run (a CLI backfill)")
    add_day_range(load, "trading date")
    load.set_defaults(run=asx_load)


def asx_load(args: argparse.Namespace) -> int:
    end = args.end or args.start
    result = run_range("asx_load", args.start, end)
    # a ranged run reports each asset once for all its dates (one event per date, same metadata)
    reported = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    for asset, metadata in reported.items():
        print(f"{asset} {args.start}..{end}: {metadata['rows_written'].value:,} rows, "
              f"{metadata['rows_rejected'].value:,} rejected")
    print(f"run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
    return 0 if result.success else 1
