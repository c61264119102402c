"""`k2 replay binance`: recorded frames through the same normalization and producer as the live stream."""

import time
from pathlib import Path

from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.kafka.broker import Broker
from k2_pipelines.lib.schema_registry import default_registry


def replay_binance(path: Path, speed: float | None) -> int:
    broker = Broker.from_env()
    producer = MarketDataProducer(broker.bootstrap, default_registry())
    started = time.perf_counter()
    frames = replay(path, producer.handle_frame, speed)
    producer.flush()
    elapsed = time.perf_counter() - started
    counts = dict(sorted(producer.counts.items()))
    print(f"replayed {frames:,} frames from {path} in {elapsed:.1f}s ({frames / elapsed:,.0f} frames/s) to {broker.bootstrap}")
    for key, value in counts.items():
        print(f"  {key:<48} {value:>10,}")
    return 0 if not producer.counts["produce_errors"] else 1
