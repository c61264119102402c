"""A local WebSocket server that speaks Binance's combined-stream protocol, with scripted faults."""

import asyncio
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import serve


@dataclass
class Script:
    frames: list[str]
    disconnect_after: set[int] = field(default_factory=set)  # abort the TCP connection after sending frame i
    silence_after: set[int] = field(default_factory=set)  # stop sending (until the client gives up) after frame i
    close_after: set[int] = field(default_factory=set)  # close cleanly after frame i, as Binance does every 24 h
    ping_interval: float = 0.2  # the server pings; a client that does not answer is dropped


class BinanceServer:
    """Each connection continues where the last one stopped, so a client that reconnects gets every frame."""

    def __init__(self, script: Script):
        self.script = script
        self.cursor = 0
        self.subscriptions: list[list[str]] = []
        self._connections: set = set()
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handler(self, connection) -> None:
        self._connections.add(connection)
        query = parse_qs(urlparse(connection.request.path).query)
        self.subscriptions.append(query.get("streams", [""])[0].split("/"))
        while self.cursor < len(self.script.frames):
            index = self.cursor
            await connection.send(self.script.frames[index])
            self.cursor += 1
            if index in self.script.disconnect_after:
                while connection.transport.get_write_buffer_size():  # what was sent reaches the client...
                    await asyncio.sleep(0.01)
                connection.transport.abort()  # ...then the connection drops with no close handshake
                return
            if index in self.script.close_after:
                await connection.close(code=1001, reason="24h session limit")
                return
            if index in self.script.silence_after:
                await connection.wait_closed()
                return
        await connection.wait_closed()

    async def _start(self) -> None:
        self._server = await serve(self._handler, "127.0.0.1", 0, ping_interval=self.script.ping_interval,
                                   ping_timeout=self.script.ping_interval * 5)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> "BinanceServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            for connection in self._connections:  # clients may be gone without a close handshake
                connection.transport.abort()
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def endpoint(self) -> str:
        return f"ws://127.0.0.1:{self.port}"
