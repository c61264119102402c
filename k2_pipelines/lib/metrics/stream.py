"""The stream service's metrics, exported from the counters the service already keeps (one source of truth)."""

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from k2_pipelines.lib.metrics import catalogue as m

if TYPE_CHECKING:
    from k2_pipelines.lib.binance.producer import MarketDataProducer


class StreamCollector(Collector):
    """Metrics of a stream service: its connection `state` and its producer's `counts`."""

    def __init__(self, exchange: str, state: Counter[str], producer: "MarketDataProducer") -> None:
        self.exchange, self.state, self.producer = exchange, state, producer

    def collect(self) -> Iterator[Metric]:
        exchange = (self.exchange,)
        counts = dict(self.producer.counts)  # a snapshot: the producer keeps counting meanwhile
        produced: dict[tuple[str, ...], int] = {}
        dead: dict[tuple[str, ...], int] = {}
        for key, value in counts.items():
            kind, _, detail = key.partition(":")
            if kind == "delivered":
                produced[(self.exchange, detail)] = value
            elif kind == "dead_letters":
                dead[(self.exchange, detail)] = value
        yield m.STREAM_FRAMES_RECEIVED.family({exchange: self.state["frames_received"]})
        yield m.STREAM_RECONNECTS.family({exchange: self.state["reconnects"]})
        yield m.STREAM_SILENCES.family({exchange: self.state["silences"]})
        yield m.STREAM_PRODUCE_ERRORS.family({exchange: counts.get("produce_errors", 0)})
        yield m.STREAM_BACKPRESSURE_WAITS.family({exchange: counts.get("backpressure_waits", 0)})
        yield m.STREAM_RECORDS_PRODUCED.family(produced)
        yield m.STREAM_DEAD_LETTERS.family(dead)
        yield m.STREAM_IN_FLIGHT.family({exchange: self.producer.in_flight()})
        yield m.STREAM_CONNECTED.family({exchange: self.state["connected"]})
