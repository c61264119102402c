"""Per-key rate limits (token buckets) and the request body limit."""

import json
import math
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2_pipelines.api.keys import ApiKey

MAX_BODY_BYTES = 1 << 20  # a POST /v1/query is a few hundred bytes of filters


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `requests_per_second`."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id: (tokens, when counted)
        self._lock = threading.Lock()

    def wait_seconds(self, key: ApiKey) -> float:
        """0 and a request taken from the key's bucket, else how long until the bucket holds one."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key.id, (float(key.burst), now))
            tokens = min(float(key.burst), tokens + (now - then) * key.requests_per_second)
            if tokens >= 1:
                self._buckets[key.id] = (tokens - 1, now)
                return 0.0
            self._buckets[key.id] = (tokens, now)
            return (1 - tokens) / key.requests_per_second


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class BodyLimit:
    """413 for a request body over `limit` bytes: at once by its Content-Length, else as its chunks arrive."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            await _refuse(send, 400, "the Content-Length header is not a number")
            return
        if int(length) > self.limit:
            await _refuse(send, 413, self._too_large)
            return
        received, started, refused = 0, False, False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received <= self.limit:
                return message
            if not refused and not started:
                await _refuse(send, 413, self._too_large)
            refused = True
            # the application stops reading as if the client left (FastAPI turns an exception here into a 400)
            return {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 is the answer
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, tracked)

    @property
    def _too_large(self) -> str:
        return f"the request body is larger than {self.limit:,} bytes"


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
