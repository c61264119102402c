"""K2's validations as Dagster asset checks: specs from the check catalogue, results with counts, samples and the
report's path."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from k2_pipelines.lib.quality.checks import ERROR, Check
from k2_pipelines.lib.quality.report import Validation, markdown, save

_SEVERITY = {ERROR: dg.AssetCheckSeverity.ERROR}


def check_specs(asset: str, checks: list[Check]) -> list[dg.AssetCheckSpec]:
    """A failing ERROR check blocks the assets downstream; a failing WARN check is shown and blocks nothing."""
    return [dg.AssetCheckSpec(c.name, asset=asset, description=f"{c.severity}: {c.description}",
                              blocking=c.severity == ERROR) for c in checks]


def check_results(validation: Validation, partition_pages: dict[str, Path] | None = None
                  ) -> Iterator[dg.AssetCheckResult]:
    """One result per check of the validation, after saving its report."""
    page = save(validation)
    shared: dict[str, dg.MetadataValue | str | int] = {
        "report": dg.MetadataValue.path(str(page)), "summary": dg.MetadataValue.md(markdown(validation)),
        "validated_run": validation.run_id, "rows_checked": validation.rows}
    if partition_pages:
        shared["partition_reports"] = dg.MetadataValue.md("\n".join(
            f"- {partition}: `{path}`" for partition, path in partition_pages.items()))
    if validation.notes:
        shared["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in validation.notes))
    for outcome in validation.outcomes:
        metadata = shared | {"failing": outcome.failing, "evaluated": outcome.evaluated,
                             "sample": dg.MetadataValue.json(outcome.sample)}
        if outcome.errors:
            metadata["errors"] = dg.MetadataValue.json(outcome.errors)
        yield dg.AssetCheckResult(
            asset_key=validation.asset, check_name=outcome.check, passed=outcome.passed, metadata=metadata,
            severity=_SEVERITY.get(outcome.severity, dg.AssetCheckSeverity.WARN), description=outcome.description)
