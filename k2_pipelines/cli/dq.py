"""`k2 dq report`: the newest data-quality results of each asset, in the terminal or as the HTML report's path."""

import argparse


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = commands.add_parser("dq", help="data quality").add_subparsers(dest="action", required=True)
    report = actions.add_parser("report", help="the newest check results of each asset (or of one, or one partition)")
    report.add_argument("--asset", help="e.g. asx_trades, binance_trades")
    report.add_argument("--partition", help="an ASX trading date (default: each run's results as a whole)")
    report.add_argument("--html", action="store_true", help="print the HTML reports' paths instead")
    report.set_defaults(run=dq_report)


def dq_report(args: argparse.Namespace) -> int:
    """0 when every validation shown passed (warnings allowed), 1 when one failed, 3 when there is none."""
    from k2_pipelines.lib.quality.report import WHOLE_RUN, latest, reports_dir, to_text

    found = latest(args.asset, args.partition or WHOLE_RUN)
    if not found:
        print(f"no data-quality results for asset {args.asset or '*'}, partition {args.partition or WHOLE_RUN} under "
              f"{reports_dir()}: they are written when a K2 asset's checks run (make demo, or materialize in Dagster)")
        return 3
    for validation, page in found:
        print(page if args.html else to_text(validation, page))
    return 0 if all(validation.passed for validation, _ in found) else 1
