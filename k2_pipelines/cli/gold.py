"""`k2 gold build`: rebuild the OHLCV bars of a range of UTC days in one build_ohlcv run (a CLI backfill), recorded
in the persistent instance (where the gate finds the trades' check results)."""

import argparse
from datetime import date
from typing import TYPE_CHECKING

from k2_pipelines.cli.jobs import add_day_range, run_range

if TYPE_CHECKING:
    import dagster as dg


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = commands.add_parser("gold", help="gold OHLCV bars").add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="rebuild the bars (1m, 1h, 1d) of UTC days START..END in one run")
    add_day_range(build, "UTC day")
    build.set_defaults(run=gold_build)


def gold_build(args: argparse.Namespace) -> int:
    end = args.end or args.start
    result = run_range("build_ohlcv", args.start, end)
    report(result, args.start, end)
    return 0 if result.success else 1


def report(result: "dg.ExecuteInProcessResult", first: date, last: date) -> None:
    # a ranged run reports each asset once for all its days (one event per day, same metadata)
    reported = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    for asset, metadata in sorted(reported.items()):
        print(f"  {asset} {first}..{last}: {metadata['trades_read'].value:,} trades -> {metadata['bars'].value:,} bars")
    for failure in (e for e in result.all_events if e.is_step_failure):
        error = failure.step_failure_data.error
        if error is None:
            raise RuntimeError(f"step {failure.step_key} of run {result.run_id} failed without a recorded error")
        print(f"  {failure.step_key} FAILED: {error.message.strip()}")
    print(f"  run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")

