"""The API's own metrics (names from the catalogue), counted by an ASGI middleware and exposed at GET /metrics."""

import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2_pipelines.lib.metrics import catalogue as m


class ApiCounts(Collector):
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, ...], float] = defaultdict(float)
        self.seconds: defaultdict[tuple[str, ...], float] = defaultdict(float)
        self.rate_limited: defaultdict[tuple[str, ...], float] = defaultdict(float)
        self.in_flight = 0
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            yield m.API_REQUESTS.family(dict(self.requests))
            yield m.API_REQUEST_SECONDS.family(dict(self.seconds))
            yield m.API_RATE_LIMITED.family(dict(self.rate_limited))
            yield m.API_IN_FLIGHT.family({(): self.in_flight})


class Counted:
    """Counts each HTTP request by its route's path template (a bounded label set) and status."""

    def __init__(self, app: ASGIApp, counts: ApiCounts) -> None:
        self.app, self.counts = app, counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.counts.lock:
            self.counts.in_flight += 1
        try:
            await self.app(scope, receive, seen)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            with self.counts.lock:
                self.counts.in_flight -= 1
                self.counts.requests[(endpoint, str(status))] += 1
                self.counts.seconds[(endpoint,)] += time.perf_counter() - started
