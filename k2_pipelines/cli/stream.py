"""`k2 stream binance` and `k2 replay binance`: live or recorded frames through the same normalization and
producer."""

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.recording import Recorder, replay
from k2_pipelines.lib.binance.stream import StreamSettings, run_stream
from k2_pipelines.lib.metrics import StreamCollector, serve_metrics
from k2_pipelines.settings import bootstrap_servers


def local_producer(topics: Topics | None = None) -> MarketDataProducer:
    """A producer to the configured broker with the configured schema registry."""
    return MarketDataProducer(bootstrap_servers(), default_registry(), topics or Topics())


def replay_into_kafka(path: Path, speed: float | None, topics: Topics | None = None) -> tuple[int, float, Counter]:
    """(frames, seconds from the first frame read to the last one acknowledged, producer counts)."""
    producer = local_producer(topics)
    started = time.perf_counter()
    frames = replay(path, producer, speed)
    producer.flush()
    return frames, time.perf_counter() - started, producer.counts


def print_counts(counts: Counter) -> None:
    for key, value in sorted(counts.items()):
        print(f"  {key:<48} {value:>10,}")


def replay_binance(path: Path, speed: float | None) -> int:
    frames, elapsed, counts = replay_into_kafka(path, speed)
    print(f"replayed {frames:,} frames from {path} in {elapsed:.1f}s ({frames / elapsed:,.0f} frames/s)")
    print_counts(counts)
    return 0 if not counts["produce_errors"] else 1


def stream_binance(settings: StreamSettings, record: Path | None, metrics_port: int,
                   metrics_host: str = "127.0.0.1") -> int:
    producer = local_producer()
    recorder = Recorder(record) if record else None
    state: Counter = Counter()

    def on_frame(frame: str, received_at_us: int) -> None:
        if recorder:
            recorder.write(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"), received_at_us)
        producer.handle_frame(frame, received_at_us)

    serve_metrics(metrics_port, StreamCollector("binance", state, producer), addr=metrics_host)
    print(f"streaming {settings.url} into {bootstrap_servers()}; metrics at http://{metrics_host}:{metrics_port}/metrics")

    async def main() -> None:
        task = asyncio.create_task(run_stream(settings, on_frame, state))
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    remaining = producer.flush(60)  # everything in flight is delivered before exit
    if recorder:
        recorder.close()
    print(f"stopped: {state['frames_received']:,} frames, {state['reconnects']} reconnects, {remaining} undelivered")
    print_counts(producer.counts)
    return 0 if remaining == 0 and not producer.counts["produce_errors"] else 1
