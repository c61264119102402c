"""What `k2 metrics serve` exposes, computed on each scrape from the Iceberg catalog and Kafka, plus the upkeep
textfiles. Each scrape reads metadata (snapshot summaries, manifests, partition statistics, watermarks); what
needs more than the summary (small files, newest event time, stored offsets, the small bookkeeping tables) is
computed once per table snapshot. A source that is down leaves its metrics out and counts in k2_metrics_scrape_errors:
the scrape still answers."""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import DrainTarget, reader_for
from k2_pipelines.lib.drain.kafka_batch import TopicReader
from k2_pipelines.lib.iceberg.snapshot_files import live_data_files
from k2_pipelines.lib.iceberg.stats import TableStats, newest_event_time, table_stats
from k2_pipelines.lib.iceberg.tables import DEAD_LETTERS, INCIDENTS, NAMESPACE, QUOTES, SEQUENCE_GAPS, TRADES
from k2_pipelines.lib.metrics import catalogue as m
from k2_pipelines.lib.metrics.upkeep import textfile_families
from k2_pipelines.lib.recovery.incidents import NEEDS_HUMAN, OPEN, incidents
from k2_pipelines.lib.upkeep.compaction import is_small

log = logging.getLogger(__name__)
SOURCES = ("catalog", "kafka", "textfiles")
KAFKA_SECONDS = 2.0  # a scrape waits this long for a broker that does not answer (Prometheus gives up at 10 s)


@dataclass
class SnapshotFacts:
    """What a table's snapshot says beyond its summary (it never changes: cached per snapshot id)."""

    small_files: int = 0
    newest_event_us: float | None = None  # epoch microseconds
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> stored next offset per partition
    counts: dict[tuple[str, ...], int] = field(default_factory=dict)  # a bookkeeping table's rows by its labels


def _small_files(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    return sum(map(is_small, live_data_files(table, snapshot.snapshot_id)))  # manifests read once per process


def _newest_event_us(table: Table) -> float | None:
    """Across the table's exchanges (a partition column of the market event tables)."""
    if table.current_snapshot() is None:
        return None
    partitions = table.inspect.partitions().column("partition").to_pylist()
    newest = [newest_event_time(table, exchange) for exchange in {p["exchange"] for p in partitions}]
    return max((t.timestamp() * 1e6 for t in newest if t is not None), default=None)


def _dead_letters_by_topic(table: Table) -> dict[tuple[str, ...], int]:
    """From partition statistics (the table is partitioned by topic; K2 writes no delete files): no data read."""
    if table.current_snapshot() is None:
        return {}
    counts: Counter[tuple[str, ...]] = Counter()
    for row in table.inspect.partitions().select(["partition", "record_count"]).to_pylist():
        counts[(row["partition"]["topic"],)] += row["record_count"]
    return dict(counts)


def _sequence_gaps(table: Table) -> dict[tuple[str, ...], int]:
    rows = table.scan(selected_fields=("table_name", "kind")).to_arrow()
    grouped = rows.group_by(["table_name", "kind"]).aggregate([([], "count_all")]).to_pylist()
    return {(f"{NAMESPACE}.{r['table_name']}", r["kind"]): r["count_all"] for r in grouped}


def _open_incidents(catalog: Catalog) -> dict[tuple[str, ...], int]:
    """By kind and unresolved status, for every kind ever seen and both statuses, 0 when none: a series that vanishes
    (e.g. when its incident is resolved) cannot be told from a scrape that failed."""
    found = incidents(catalog)
    counts: Counter[tuple[str, ...]] = Counter({(i.kind, status): 0 for i in found for status in (OPEN, NEEDS_HUMAN)})
    counts.update((i.kind, i.status) for i in found if i.status in (OPEN, NEEDS_HUMAN))
    return dict(counts)


class TablesCollector(Collector):
    """The table gauges of the catalogue, consumer lag of the drain `targets`, and the upkeep textfiles."""

    def __init__(self, load_catalog: Callable[[], Catalog], bootstrap: str, targets: list[DrainTarget]):
        self.load_catalog, self.bootstrap, self.targets = load_catalog, bootstrap, targets
        self._catalog: Catalog | None = None
        self._readers: dict[str, TopicReader] = {}  # topic -> reader, kept between scrapes
        self._facts: dict[str, tuple[int | None, SnapshotFacts]] = {}  # table -> (snapshot id, its facts)
        self._lock = threading.Lock()  # the HTTP server scrapes in threads; the consumers are not shared safely

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            errors = Counter({source: 0 for source in SOURCES})
            stats, facts = self._iceberg(errors)
            yield from self._table_families(stats, facts)
            yield m.CONSUMER_LAG.family(self._lag(facts, errors))
            families, unreadable = textfile_families()
            errors["textfiles"] += len(unreadable)
            yield from families
            yield m.SCRAPE_ERRORS.family({(source,): count for source, count in errors.items()})

    def _iceberg(self, errors: Counter[str]) -> tuple[list[TableStats], dict[str, SnapshotFacts]]:
        try:
            self._catalog = self._catalog or self.load_catalog()
            stats = table_stats(self._catalog)
        except Exception as error:  # the catalog is down (database, object store): expose what else there is
            log.warning("metrics: the catalog could not be read: %s", error)
            errors["catalog"] += 1
            return [], {}
        facts = {}
        for s in stats:
            cached = self._facts.get(s["table"])
            if cached and cached[0] == s["snapshot_id"]:
                facts[s["table"]] = cached[1]
                continue
            try:
                facts[s["table"]] = self._snapshot_facts(self._catalog, self._catalog.load_table(s["table"]))
            except Exception as error:  # e.g. a manifest the object store does not serve: the other tables still count
                log.warning("metrics: %s could not be read: %s", s["table"], error)
                errors["catalog"] += 1
                continue
            self._facts[s["table"]] = (s["snapshot_id"], facts[s["table"]])
        return stats, facts

    def _snapshot_facts(self, catalog: Catalog, table: Table) -> SnapshotFacts:
        identifier = ".".join(table.name())
        facts = SnapshotFacts(small_files=_small_files(table))
        if identifier in (TRADES.identifier, QUOTES.identifier):
            facts.newest_event_us = _newest_event_us(table)
        facts.offsets = {t.topic: stored_checkpoint(table, t.topic).offsets for t in self.targets
                         if t.table.identifier == identifier}
        if identifier == DEAD_LETTERS.identifier:
            facts.counts = _dead_letters_by_topic(table)
        elif identifier == SEQUENCE_GAPS.identifier:
            facts.counts = _sequence_gaps(table)
        elif identifier == INCIDENTS.identifier:
            facts.counts = _open_incidents(catalog)
        return facts

    def _table_families(self, stats: list[TableStats], facts: dict[str, SnapshotFacts]) -> Iterator[Metric]:
        now_us = time.time() * 1e6
        yield m.TABLE_ROWS.family({(s["table"],): s["rows"] for s in stats})
        yield m.TABLE_DATA_FILES.family({(s["table"],): s["data_files"] for s in stats})
        yield m.TABLE_BYTES.family({(s["table"],): s["bytes"] for s in stats})
        yield m.TABLE_SMALL_FILES.family({(t,): f.small_files for t, f in facts.items()})
        yield m.TABLE_NEWEST_EVENT_AGE.family({(t,): (now_us - f.newest_event_us) / 1e6 for t, f in facts.items()
                                               if f.newest_event_us is not None})
        for metric, table in ((m.DEAD_LETTERS, DEAD_LETTERS), (m.SEQUENCE_GAPS, SEQUENCE_GAPS),
                              (m.INCIDENTS_OPEN, INCIDENTS)):
            yield metric.family(facts[table.identifier].counts if table.identifier in facts else {})

    def _lag(self, facts: dict[str, SnapshotFacts], errors: Counter[str]) -> dict[tuple[str, ...], int]:
        """High watermark minus the stored offset (a partition the table never drained: from its first offset)."""
        lag: dict[tuple[str, ...], int] = {}
        for target in self.targets:
            stored = (facts[target.table.identifier].offsets.get(target.topic) if target.table.identifier in facts
                      else None)
            if stored is None:  # the catalog could not tell
                continue
            reader = self._readers.get(target.topic) or reader_for(self.bootstrap, target)
            self._readers[target.topic] = reader
            try:
                marks = reader.watermarks(timeout=KAFKA_SECONDS)
            except KafkaException as error:  # Kafka is down: no lag this scrape (and no wait on every topic)
                log.warning("metrics: watermarks of %s could not be read: %s", target.topic, error)
                errors["kafka"] += 1
                break
            for partition, (low, high) in marks.items():
                lag[(target.table.identifier, target.topic, str(partition))] = max(high - stored.get(partition, low), 0)
        return lag
