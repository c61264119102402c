"""K2's Prometheus metrics, exported from the counters the services already keep (one source of truth)."""

import os
from collections import Counter
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from k2_pipelines.lib.paths import state_dir


class StreamCollector(Collector):
    """Metrics of a stream service: its connection `state` and its producer's `counts`."""

    def __init__(self, exchange: str, state: Counter, producer):
        self.exchange, self.state, self.producer = exchange, state, producer

    def collect(self):
        labels = ["exchange"]
        simple = [
            ("k2_stream_frames_received", "Frames received from the exchange", self.state["frames_received"]),
            ("k2_stream_reconnects", "Reconnections to the exchange", self.state["reconnects"]),
            ("k2_stream_silences", "Reconnections because the stream went silent", self.state["silences"]),
            ("k2_stream_produce_errors", "Messages Kafka failed to accept", self.producer.counts["produce_errors"]),
            ("k2_stream_backpressure_waits", "Waits for room in the full producer buffer",
             self.producer.counts["backpressure_waits"]),
        ]
        for name, doc, value in simple:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric([self.exchange], value)
            yield family
        produced = CounterMetricFamily("k2_stream_records_produced", "Records acknowledged by Kafka",
                                       labels=["exchange", "topic"])
        dead = CounterMetricFamily("k2_stream_dead_letters", "Frames sent to the dead-letter topic",
                                   labels=["exchange", "reason"])
        for key, value in list(self.producer.counts.items()):  # a snapshot: the producer keeps counting meanwhile
            kind, _, detail = key.partition(":")
            if kind == "delivered":
                produced.add_metric([self.exchange, detail], value)
            elif kind == "dead_letters":
                dead.add_metric([self.exchange, detail], value)
        yield produced
        yield dead
        for name, doc, value in (
            ("k2_stream_in_flight_messages", "Messages produced but not yet acknowledged", self.producer.in_flight()),
            ("k2_stream_connected", "1 while connected to the exchange", self.state["connected"]),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            gauge.add_metric([self.exchange], value)
            yield gauge


def serve_metrics(port: int, *collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return registry


def metrics_dir() -> Path:
    """Where batch jobs leave their metrics, in Prometheus' text format (a node_exporter textfile directory)."""
    return Path(os.environ.get("K2_METRICS_DIR") or state_dir() / "metrics")


def write_upkeep_metrics(job: str, sizes: list[tuple[str, dict[str, int], dict[str, int], float]]) -> Path:
    """One upkeep run's metrics, replacing the job's previous ones: per table (table, files by stage, bytes by stage,
    seconds), e.g. stages before/after, or scanned/deleted for orphan removal."""
    registry = CollectorRegistry()
    files = Gauge("k2_upkeep_files", "Files of a table an upkeep job counted, by stage", ["job", "table", "stage"],
                  registry=registry)
    size = Gauge("k2_upkeep_bytes", "Bytes of a table's files an upkeep job counted, by stage",
                 ["job", "table", "stage"], registry=registry)
    seconds = Gauge("k2_upkeep_duration_seconds", "How long an upkeep job took on a table", ["job", "table"],
                    registry=registry)
    finished = Gauge("k2_upkeep_last_success_timestamp_seconds", "When an upkeep job last succeeded", ["job"],
                     registry=registry)
    for table, file_counts, byte_counts, duration in sizes:
        for stage, value in file_counts.items():
            files.labels(job, table, stage).set(value)
        for stage, value in byte_counts.items():
            size.labels(job, table, stage).set(value)
        seconds.labels(job, table).set(duration)
    finished.labels(job).set_to_current_time()
    path = metrics_dir() / f"k2_upkeep_{job}.prom"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # written aside and renamed: a scrape never reads half a file
    return path
