"""`k2 dq report`: the newest data-quality results of each asset, in the terminal or as the HTML report's path."""

from k2_pipelines.lib.quality.report import WHOLE_RUN, latest, reports_dir, to_text


def dq_report(asset: str | None, partition: str | None, html: bool) -> int:
    """0 when every validation shown passed (warnings allowed), 1 when one failed, 3 when there is none."""
    found = latest(asset, partition or WHOLE_RUN)
    if not found:
        print(f"no data-quality results for asset {asset or '*'}, partition {partition or WHOLE_RUN} under "
              f"{reports_dir()}: they are written when a K2 asset's checks run (make demo, or materialize in Dagster)")
        return 3
    for validation, page in found:
        print(page if html else to_text(validation, page))
    return 0 if all(validation.passed for validation, _ in found) else 1
