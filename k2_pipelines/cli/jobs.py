"""K2's Dagster jobs run from the command line: in this process, recorded in the persistent instance (a DAGSTER_HOME
under the state dir, configured by the repository's dagster.yaml), as a launch from the UI would be."""

import argparse
import os
import shutil
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k2_pipelines.settings import CHECKOUT, dagster_home

if TYPE_CHECKING:
    import dagster as dg

INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def prepare_dagster_home(home: Path | None = None) -> Path:
    """`home` (default: the configured one) with the repository's dagster.yaml, and DAGSTER_HOME naming it."""
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CHECKOUT / "dagster.yaml", home / "dagster.yaml")  # the repository's file is the source of truth
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_job(name: str, run_config: dict[str, Any] | None = None,
            tags: dict[str, str] | None = None) -> "dg.ExecuteInProcessResult":
    """The job's run, failed or not (the caller reports it), with INFO logs on the console."""
    import dagster as dg  # here, not at the top: commands that run no job start without loading Dagster

    from k2_pipelines.definitions import defs

    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        return defs().resolve_job_def(name).execute_in_process(
            instance=instance, raise_on_error=False, tags=tags, run_config=INFO_LOGS | (run_config or {}))


def add_day_range(parser: argparse.ArgumentParser, day: str) -> None:
    """--start and --end (default: --start) of a range of days, `day` naming one (for example "UTC day")."""
    parser.add_argument("--start", type=date.fromisoformat, required=True, help=f"first {day} (YYYY-MM-DD)")
    parser.add_argument("--end", type=date.fromisoformat, help=f"last {day} (default: --start)")


def run_range(name: str, first: date, last: date) -> "dg.ExecuteInProcessResult":
    """The job over its daily partitions first..last in one run (as a backfill launches a range)."""
    from k2_pipelines.defs.asx.sensors import RANGE_END_TAG, RANGE_START_TAG

    return run_job(name, tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()})
