"""`k2 asx load`: run the asx_load job over a range of trading dates, recorded in the persistent instance."""

from datetime import date

import dagster as dg

from k2_pipelines.cli.dagster_home import prepare_dagster_home
from k2_pipelines.defs.asx.sensors import RANGE_END_TAG, RANGE_START_TAG


def run_asx_load(first: date, last: date) -> dg.ExecuteInProcessResult:
    from k2_pipelines.definitions import defs

    prepare_dagster_home()
    job = defs().resolve_job_def("asx_load")
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
