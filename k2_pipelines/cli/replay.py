"""`k2 replay binance`: recorded frames through the same normalization and producer as the live stream."""

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from k2_pipelines.cli.stream import local_producer, print_counts

if TYPE_CHECKING:
    from k2_pipelines.lib.binance.producer import Topics


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sources = commands.add_parser("replay", help="replay recorded frames through normalization into Kafka") \
        .add_subparsers(dest="source", required=True)
    binance = sources.add_parser("binance", help="a recording from --record or k2 sample binance")
    binance.add_argument("file")
    pace = binance.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="relative to the recorded pace (default 1.0)")
    pace.add_argument("--max", action="store_true", help="as fast as possible")
    binance.set_defaults(run=replay_binance)


def replay_into_kafka(path: Path, speed: float | None,
                      topics: "Topics | None" = None) -> tuple[int, float, Counter[str]]:
    """(frames, seconds from the first frame read to the last one acknowledged, producer counts)."""
    from k2_pipelines.lib.binance.recording import replay

    producer = local_producer(topics)
    started = time.perf_counter()
    frames = replay(path, producer, speed)
    producer.flush()
    return frames, time.perf_counter() - started, producer.counts


def replay_binance(args: argparse.Namespace) -> int:
    path = Path(args.file)
    frames, elapsed, counts = replay_into_kafka(path, None if args.max else args.speed)
    print(f"replayed {frames:,} frames from {path} in {elapsed:.1f}s ({frames / elapsed:,.0f} frames/s)")
    print_counts(counts)
    return 0 if not counts["produce_errors"] else 1
