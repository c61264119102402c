"""Serving collectors over HTTP, and fixed families as a collector (for textfiles and pushes)."""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class Families(Collector):
    """Families computed once (one run's metrics), collected as they are."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def registry_of(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


def serve_metrics(port: int, *collectors: Collector, addr: str = "127.0.0.1") -> CollectorRegistry:
    registry = registry_of(*collectors)
    start_http_server(port, addr=addr, registry=registry)
    return registry
