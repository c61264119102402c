"""Batch runs push their metrics to a Pushgateway (when K2_PUSHGATEWAY_URL is set): a drain run as job k2_drain, an
ASX load as job k2_asx, each grouped by table.

A Pushgateway keeps the last value pushed, not a sum: pushing a run's own count as a counter would make it jump up
and down. So the counters are running totals: the gateway's current total for the group (read back first) plus the
run's counts, pushed with push-add (POST: replaces these metrics in the group, keeps the others). The read and the
push hold a file lock in metrics_dir(), so that runs on one host (ASX loads of two dates may overlap) lose no
counts; runs elsewhere are serialized per table by the drain pool, not for ASX loads. A gateway
restarted without persistence starts again from zero: a counter reset, which rate() and increase() allow for.
Gauges (duration, last success) are the last run's. A failed push is logged, never fails the run."""

import fcntl
import logging
import time
import urllib.request

from prometheus_client import pushadd_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from k2_pipelines.lib.asx.load import LoadResult
from k2_pipelines.lib.drain.drain import DrainResult
from k2_pipelines.lib.metrics import catalogue as m
from k2_pipelines.lib.metrics.catalogue import MetricDef
from k2_pipelines.lib.metrics.exposition import Families, registry_of
from k2_pipelines.lib.metrics.upkeep import metrics_dir
from k2_pipelines.settings import settings

log = logging.getLogger(__name__)
DRAIN_JOB, ASX_JOB = "k2_drain", "k2_asx"
TIMEOUT_SECONDS = 5.0


def _gateway_url() -> str | None:
    url = (settings().pushgateway_url or "").rstrip("/")  # e.g. http://localhost:9091 or localhost:9091
    return (url if "://" in url else f"http://{url}") if url else None


def pushed_totals(url: str, job: str, table: str) -> dict[str, float]:
    """The group's current values on the gateway, by sample name."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=TIMEOUT_SECONDS) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.labels.get("job") == job and sample.labels.get("table") == table}


def push_run(job: str, table: str, counts: dict[MetricDef, float], gauges: dict[MetricDef, float]) -> bool:
    """Add a run's `counts` to the group's counters and set its `gauges`; False (and a warning) if not pushed."""
    url = _gateway_url()
    if url is None:
        return False
    try:
        lock = metrics_dir() / ".push.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # released when closed
            totals = pushed_totals(url, job, table)
            families = [metric.family({(table,): totals.get(metric.name, 0) + count})
                        for metric, count in counts.items()]
            families += [metric.family({(table,): value}) for metric, value in gauges.items()]
            pushadd_to_gateway(url, job, registry_of(Families(families)), grouping_key={"table": table},
                               timeout=TIMEOUT_SECONDS)
    except Exception as error:  # the gateway is down, slow or refuses: the run's data is committed all the same
        log.warning("metrics of %s %s not pushed to %s: %s", job, table, url, error)
        return False
    return True


def push_drain(result: DrainResult) -> bool:
    return push_run(DRAIN_JOB, result.table, {
        m.DRAIN_MESSAGES: result.messages,
        m.DRAIN_ROWS_WRITTEN: result.rows_written,
        m.DRAIN_DEAD_LETTERS: sum(result.dead_letters.values()),
        m.DRAIN_DUPLICATES: result.duplicates_in_batch + result.duplicates_committed,
    }, {m.DRAIN_DURATION: result.seconds, m.DRAIN_LAST_SUCCESS: time.time()})


def push_asx(result: LoadResult) -> bool:
    return push_run(ASX_JOB, result.table, {m.ASX_ROWS_WRITTEN: result.rows_written,
                                            m.ASX_ROWS_REJECTED: result.rows_rejected}, {})
