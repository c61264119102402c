"""Every K2 metric, defined once: name, type, help and label names. Alerts, dashboards and code use these names;
code builds its metric families from here (never from a literal name), and a test checks it."""

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class MetricDef:
    name: str  # as exposed: counters end in _total
    type: str
    help: str
    labels: tuple[str, ...]

    def family(self, values: Mapping[tuple[str, ...], float] | None = None) -> Metric:
        """A family of this metric, with one sample per label values (in the order of `labels`)."""
        family = (CounterMetricFamily if self.type == COUNTER else GaugeMetricFamily)(self.name, self.help,
                                                                                    labels=self.labels)
        for label_values, value in (values or {}).items():
            if len(label_values) != len(self.labels):
                raise ValueError(f"{self.name} takes labels {self.labels}, not {label_values}")
            family.add_metric(list(label_values), value)  # counters: no _created sample (push-add would store it)
        return family


def _define(name: str, type_: str, help_: str, *labels: str) -> MetricDef:
    if not name.startswith("k2_") or (type_ == COUNTER) != name.endswith("_total"):
        raise ValueError(f"{name}: K2 metrics start with k2_, and only counters (all of them) end in _total")
    return MetricDef(name, type_, help_, labels)


# the stream service (k2 stream binance, :9464)
STREAM_FRAMES_RECEIVED = _define("k2_stream_frames_received_total", COUNTER, "Frames received from the exchange",
                                 "exchange")
STREAM_RECONNECTS = _define("k2_stream_reconnects_total", COUNTER, "Reconnections to the exchange", "exchange")
STREAM_SILENCES = _define("k2_stream_silences_total", COUNTER, "Reconnections because the stream went silent",
                          "exchange")
STREAM_PRODUCE_ERRORS = _define("k2_stream_produce_errors_total", COUNTER, "Messages Kafka failed to accept",
                                "exchange")
STREAM_BACKPRESSURE_WAITS = _define("k2_stream_backpressure_waits_total", COUNTER,
                                    "Waits for room in the full producer buffer", "exchange")
STREAM_RECORDS_PRODUCED = _define("k2_stream_records_produced_total", COUNTER, "Records acknowledged by Kafka",
                                  "exchange", "topic")
STREAM_DEAD_LETTERS = _define("k2_stream_dead_letters_total", COUNTER, "Frames sent to the dead-letter topic",
                              "exchange", "reason")
STREAM_IN_FLIGHT = _define("k2_stream_in_flight_messages", GAUGE, "Messages produced but not yet acknowledged",
                           "exchange")
STREAM_CONNECTED = _define("k2_stream_connected", GAUGE, "1 while connected to the exchange", "exchange")

# pushed by each drain run (Pushgateway job k2_drain, grouping key table): counters are running totals
DRAIN_MESSAGES = _define("k2_drain_messages_total", COUNTER, "Kafka messages drained", "table")
DRAIN_ROWS_WRITTEN = _define("k2_drain_rows_written_total", COUNTER, "Rows drains committed to the table", "table")
DRAIN_DEAD_LETTERS = _define("k2_drain_dead_letters_total", COUNTER, "Messages drains sent to dead_letters", "table")
DRAIN_DUPLICATES = _define("k2_drain_duplicates_total", COUNTER,
                           "Duplicate messages drains dropped (within a batch or already committed)", "table")
DRAIN_DURATION = _define("k2_drain_duration_seconds", GAUGE, "How long the last drain run took", "table")
DRAIN_LAST_SUCCESS = _define("k2_drain_last_success_timestamp_seconds", GAUGE, "When a drain last succeeded",
                             "table")

# pushed by each ASX load run (job k2_asx, grouping key table): running totals
ASX_ROWS_WRITTEN = _define("k2_asx_rows_written_total", COUNTER, "Rows ASX loads committed", "table")
ASX_ROWS_REJECTED = _define("k2_asx_rows_rejected_total", COUNTER, "Rows ASX loads rejected to market_data.rejects",
                            "table")

# k2 metrics serve (:9465), computed from Iceberg and Kafka on each scrape
TABLE_ROWS = _define("k2_table_rows", GAUGE, "Rows in the table's current snapshot", "table")
TABLE_DATA_FILES = _define("k2_table_data_files", GAUGE, "Data files in the table's current snapshot", "table")
TABLE_BYTES = _define("k2_table_bytes", GAUGE, "Bytes of the table's data files", "table")
TABLE_SMALL_FILES = _define("k2_table_small_files", GAUGE,
                            "Data files under 75% of the 128 MB compaction target: the compaction backlog", "table")
TABLE_NEWEST_EVENT_AGE = _define("k2_table_newest_event_age_seconds", GAUGE,
                                 "Age of the newest event time in the table (from file statistics)", "table")
CONSUMER_LAG = _define("k2_consumer_lag_messages", GAUGE,
                       "Messages of a topic partition past the offsets the table stores", "table", "topic", "partition")
DEAD_LETTERS = _define("k2_dead_letters", GAUGE, "Rows in market_data.dead_letters", "topic")
SEQUENCE_GAPS = _define("k2_sequence_gaps", GAUGE, "Rows in market_data.sequence_gaps", "table", "kind")
INCIDENTS_OPEN = _define("k2_incidents_open", GAUGE, "Incidents not resolved, by status: open or needs_human",
                          "kind", "status")
SCRAPE_ERRORS = _define("k2_metrics_scrape_errors", GAUGE,
                        "Sources the last scrape could not read (catalog, kafka, textfiles): their metrics are missing",
                        "source")

# upkeep jobs (textfiles in $K2_HOME/metrics, re-exposed by k2 metrics serve)
UPKEEP_FILES = _define("k2_upkeep_files", GAUGE, "Files of a table an upkeep job counted, by stage",
                       "job", "table", "stage")
UPKEEP_BYTES = _define("k2_upkeep_bytes", GAUGE, "Bytes of a table's files an upkeep job counted, by stage",
                       "job", "table", "stage")
UPKEEP_DURATION = _define("k2_upkeep_duration_seconds", GAUGE, "How long an upkeep job took on a table",
                          "job", "table")
UPKEEP_LAST_SUCCESS = _define("k2_upkeep_last_success_timestamp_seconds", GAUGE, "When an upkeep job last succeeded",
                              "job")

# the HTTP API (k2 api serve, GET /metrics); endpoint is the route's path template
API_REQUESTS = _define("k2_api_requests_total", COUNTER, "HTTP API requests answered, by route and status",
                       "endpoint", "status")
API_REQUEST_SECONDS = _define("k2_api_request_seconds_total", COUNTER,
                              "Seconds spent answering HTTP API requests (over k2_api_requests_total: the mean)",
                              "endpoint")
API_RATE_LIMITED = _define("k2_api_rate_limited_total", COUNTER, "HTTP API requests refused by a key's rate limit",
                           "key")
API_IN_FLIGHT = _define("k2_api_in_flight_requests", GAUGE, "HTTP API requests being answered")

CATALOGUE: dict[str, MetricDef] = {m.name: m for m in globals().values() if isinstance(m, MetricDef)}
