"""Upkeep jobs' metrics: textfiles in Prometheus' format (a node_exporter textfile directory), one per job, which
`k2 metrics serve` exposes too."""

import logging
import time
from pathlib import Path

from prometheus_client import write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from k2_pipelines.lib.metrics import catalogue as m
from k2_pipelines.lib.metrics.exposition import Families, registry_of
from k2_pipelines.settings import settings

log = logging.getLogger(__name__)


def metrics_dir() -> Path:
    """Where batch jobs leave their metrics (K2_METRICS_DIR overrides $K2_HOME/metrics)."""
    return settings().metrics_dir


def write_upkeep_metrics(job: str, sizes: list[tuple[str, dict[str, int], dict[str, int], float]]) -> Path:
    """One upkeep run's metrics, replacing the job's previous ones: per table (table, files by stage, bytes by stage,
    seconds), e.g. stages before/after, or scanned/deleted for orphan removal."""
    families = [
        m.UPKEEP_FILES.family({(job, table, stage): value for table, files, _, _ in sizes
                               for stage, value in files.items()}),
        m.UPKEEP_BYTES.family({(job, table, stage): value for table, _, size, _ in sizes
                               for stage, value in size.items()}),
        m.UPKEEP_DURATION.family({(job, table): seconds for table, _, _, seconds in sizes}),
        m.UPKEEP_LAST_SUCCESS.family({(job,): time.time()}),
    ]
    path = metrics_dir() / f"k2_upkeep_{job}.prom"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry_of(Families(families)))  # written aside and renamed: never half read
    return path


def textfile_families() -> tuple[list[Metric], list[str]]:
    """The families of every textfile in metrics_dir(), one family per name (two jobs write the same metrics), and
    the files that could not be read (write_to_textfile's temporary files are not *.prom)."""
    merged: dict[str, Metric] = {}
    errors = []
    for path in sorted(metrics_dir().glob("*.prom")):
        try:
            families = list(text_string_to_metric_families(path.read_text()))
        except (OSError, ValueError) as error:
            log.warning("metrics textfile %s not exposed: %s", path, error)
            errors.append(str(path))
            continue
        for family in families:
            merged.setdefault(family.name, Metric(family.name, family.documentation, family.type)).samples += (
                family.samples)
    return list(merged.values()), errors
