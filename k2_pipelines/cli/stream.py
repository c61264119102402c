"""`k2 stream binance`: a live exchange stream through normalization into Kafka (`k2 replay` sends recorded frames
through the same producer)."""

import argparse
import contextlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from k2_pipelines.settings import bootstrap_servers

if TYPE_CHECKING:
    from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sources = commands.add_parser("stream", help="a live exchange stream into Kafka").add_subparsers(dest="source",
                                                                                                     required=True)
    live = sources.add_parser("binance", help="Binance trades and best bid/ask (combined stream)")
    live.add_argument("--symbols", default="BTCUSDT,ETHUSDT,BNBUSDT")
    live.add_argument("--endpoint", default="wss://stream.binance.com:9443")
    live.add_argument("--record", help="also append every raw frame, with its receive time, to this JSON-lines file")
    live.add_argument("--metrics-port", type=int, default=9464)
    live.add_argument("--metrics-host", default="127.0.0.1", help="0.0.0.0 for a Prometheus in another container")
    live.add_argument("--silence-seconds", type=float, default=30.0, help="reconnect after this long without a frame")
    live.set_defaults(run=stream_binance)


def local_producer(topics: "Topics | None" = None) -> "MarketDataProducer":
    """A producer to the configured broker with the configured schema registry."""
    from k2_pipelines.lib.avro.registry import default_registry
    from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics

    return MarketDataProducer(bootstrap_servers(), default_registry(), topics or Topics())


def print_counts(counts: Counter[str]) -> None:
    for key, value in sorted(counts.items()):
        print(f"  {key:<48} {value:>10,}")


def stream_binance(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from k2_pipelines.lib.binance.recording import Recorder
    from k2_pipelines.lib.binance.stream import StreamSettings, run_stream
    from k2_pipelines.lib.metrics import StreamCollector, serve_metrics

    settings = StreamSettings(tuple(args.symbols.split(",")), args.endpoint, args.silence_seconds)
    producer = local_producer()
    recorder = Recorder(Path(args.record)) if args.record else None
    state: Counter[str] = Counter()

    def on_frame(frame: str | bytes, received_at_us: int) -> None:
        if recorder:
            recorder.write(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"), received_at_us)
        producer.handle_frame(frame, received_at_us)

    serve_metrics(args.metrics_port, StreamCollector("binance", state, producer), addr=args.metrics_host)
    print(f"streaming {settings.url} into {bootstrap_servers()}; metrics at "
          f"http://{args.metrics_host}:{args.metrics_port}/metrics")

    async def main() -> None:
        task = asyncio.create_task(run_stream(settings, on_frame, state))
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    remaining = producer.flush(60)  # everything in flight is delivered before exit
    if recorder:
        recorder.close()
    print(f"stopped: {state['frames_received']:,} frames, {state['reconnects']} reconnects, {remaining} undelivered")
    print_counts(producer.counts)
    return 0 if remaining == 0 and not producer.counts["produce_errors"] else 1
