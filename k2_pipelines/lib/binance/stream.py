"""The live Binance combined-stream client: one connection for all symbols, reconnects with capped exponential
backoff and jitter, a silent stream counts as broken, and every frame goes to `on_frame` as received."""

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from k2_pipelines.lib.binance.recording import now_us

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "wss://stream.binance.com:9443"


@dataclass(frozen=True)
class StreamSettings:
    symbols: tuple[str, ...]
    endpoint: str = DEFAULT_ENDPOINT
    silence_seconds: float = 30.0  # no frame for this long: reconnect
    backoff_initial: float = 0.5
    backoff_cap: float = 30.0

    @property
    def url(self) -> str:
        streams = "/".join(f"{s.lower()}@{kind}" for s in self.symbols for kind in ("trade", "bookTicker"))
        return f"{self.endpoint.rstrip('/')}/stream?streams={streams}"


def jittered_backoff(initial: float, cap: float) -> Generator[float]:
    """Exponential delays with equal jitter: half the delay fixed, half random."""
    delay = initial
    while True:
        yield delay / 2 + random.uniform(0, delay / 2)
        delay = min(cap, delay * 2)


async def run_stream(settings: StreamSettings, on_frame: Callable[[str | bytes, int], None],
                     state: Counter[str]) -> None:
    """Receive until cancelled. The subscription is in the URL, so every reconnect resubscribes; the server's
    pings are answered by the websockets library, and its 24-hour disconnect is just another reconnect."""
    delays = partial(jittered_backoff, settings.backoff_initial, settings.backoff_cap)
    async for connection in connect(settings.url, reconnect_delays=delays, max_queue=1024, open_timeout=10):
        state["connections"] += 1
        state["connected"] = 1
        try:
            while True:
                frame = await asyncio.wait_for(connection.recv(), timeout=settings.silence_seconds)
                state["frames_received"] += 1
                on_frame(frame, now_us())
        except TimeoutError:
            state["silences"] += 1
            log.warning("no frame for %.0fs: reconnecting", settings.silence_seconds)
            await connection.close()
        except ConnectionClosed as closed:
            log.warning("connection closed (%s): reconnecting", closed)
        finally:
            state["connected"] = 0
        state["reconnects"] += 1
