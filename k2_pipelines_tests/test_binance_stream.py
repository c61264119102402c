import asyncio
import contextlib
from collections import Counter

from k2_pipelines.lib.avro.registry import EmbeddedRegistry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.binance.stream import StreamSettings, run_stream
from k2_pipelines_tests.binance_server import BinanceServer, Script
from k2_pipelines_tests.kafka_helpers import consume_all, unique_topics

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _stream_until(settings: StreamSettings, on_frame, state: Counter, done, timeout: float) -> None:
    """Run the client until done() or the timeout, then cancel it as SIGTERM would."""

    async def main() -> None:
        task = asyncio.create_task(run_stream(settings, on_frame, state))
        deadline = asyncio.get_running_loop().time() + timeout
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_disconnects_silence_and_server_close_lose_nothing_and_resubscribe(kafka_broker, tmp_path):
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, list(SYMBOLS), 3_000, seed=21, faults={"malformed"})
    frames = [frame for _, frame in read_recording(session)]
    script = Script(frames, disconnect_after={500, 1_700}, silence_after={1_200}, close_after={2_400})
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, EmbeddedRegistry(tmp_path / "registry.json"), topics)
    state = Counter()
    received = []

    def on_frame(frame, received_at_us):
        received.append(frame)
        producer.handle_frame(frame, received_at_us)

    with BinanceServer(script) as server:
        settings = StreamSettings(SYMBOLS, server.endpoint, silence_seconds=1.0, backoff_initial=0.05, backoff_cap=0.5)
        _stream_until(settings, on_frame, state, lambda: state["frames_received"] >= len(frames), timeout=60)
        subscriptions = server.subscriptions
    assert producer.flush(60) == 0
    assert producer.counts[f"delivered:{topics.dead_letters}"] == counts["malformed"]

    assert received == frames  # every frame, once, in order, across two drops, a silence and a server close
    assert state["silences"] == 1 and state["reconnects"] >= 4
    expected = sorted(f"{s.lower()}@{kind}" for s in SYMBOLS for kind in ("trade", "bookTicker"))
    assert len(subscriptions) == state["connections"] >= 5
    assert all(sorted(streams) == expected for streams in subscriptions)  # every reconnect resubscribes
    assert len(consume_all(kafka_broker.bootstrap, topics.trades, counts["trades"])) == counts["trades"]
    assert len(consume_all(kafka_broker.bootstrap, topics.quotes, counts["quotes"])) == counts["quotes"]
    assert len(consume_all(kafka_broker.bootstrap, topics.dead_letters, counts["malformed"])) == counts["malformed"]


def test_server_pings_are_answered_and_the_connection_stays_up(tmp_path):
    session = tmp_path / "session.jsonl"
    generate_session(session, list(SYMBOLS), 50, seed=2)
    frames = [frame for _, frame in read_recording(session)]
    state = Counter()
    # the server pings every 0.1 s and drops clients that do not pong within 0.5 s; the client waits 2 s of
    # silence after the last frame, so it must have kept the connection alive through ~20 pings
    with BinanceServer(Script(frames, ping_interval=0.1)) as server:
        settings = StreamSettings(SYMBOLS, server.endpoint, silence_seconds=30)
        _stream_until(settings, lambda frame, at: None, state, lambda: False, timeout=2.5)
    assert state["frames_received"] == len(frames)
    assert state["connections"] == 1 and state["reconnects"] == 0
