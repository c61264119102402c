"""`k2 bench recovery`: time to recovery of the runbooks for a stopped broker (case 1), a catalog moved away
(case 2) and a reset consumer group (case 4), with the real Dagster daemon running K2's sensors at their intervals.

A scratch K2_HOME, a broker of its own and `dagster-daemon run` on the project's workspace; the faults are real (the
broker process stopped, the SQLite catalog renamed, the group's offsets committed back to 0).
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, TopicPartition

from k2_pipelines.cli.bench.scratch import scratch_k2
from k2_pipelines.dev.broker import Broker
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import group_id, trades_target
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.recovery.incidents import RESOLVED, Incident, incidents
from k2_pipelines.settings import CHECKOUT

OUTAGE_SECONDS = 60  # long enough for the health sensor (every 30 s) to see it
WAIT_SECONDS = 300
Found = TypeVar("Found")


def _wait_for(what: str, condition: Callable[[], Found | None], timeout: float = WAIT_SECONDS) -> Found:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except Exception:
            found = None
        if found:
            return found
        time.sleep(1)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")


def _incident(kind: str, status: str | None = None) -> Incident | None:
    found = [i for i in incidents(load_k2_catalog(), kind=kind) if status is None or i.status == status]
    return found[-1] if found else None


def _produce(broker: Broker, scratch: Path, frames: int, seed: int) -> None:
    session = scratch / f"session-{seed}.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT"], frames, seed=seed)
    producer = MarketDataProducer(broker.bootstrap, default_registry(), Topics())
    replay(session, producer)
    producer.flush(60)


def _drained(offsets_before: int = 0) -> bool:
    stored = stored_checkpoint(load_k2_catalog().load_table(TRADES.identifier), Topics.trades).offsets
    return sum(stored.values()) > offsets_before


def _outage(name: str, kind: str, stop: Callable, start: Callable, broker: Broker, scratch: Path, seed: int) -> dict:
    stopped = time.time()
    stop()
    time.sleep(OUTAGE_SECONDS)  # the incident is not readable before the catalog is back (case 2)
    start()
    back = time.time()
    _produce(broker, scratch, 2_000, seed)  # what the feed delivers after the outage
    resolved = _wait_for(f"the {kind} incident resolved", lambda: _incident(kind, RESOLVED))
    if resolved.resolved_at is None:
        raise RuntimeError(f"incident {resolved.incident_id} is resolved without a resolution time")
    return {"case": name, "detected_after": resolved.detected_at.timestamp() - stopped,
            "recovered_after_back": resolved.resolved_at.timestamp() - back,
            "time_to_recovery": resolved.time_to_recovery_seconds}


def _reset_group(broker: Broker) -> dict:
    target = trades_target(Topics.trades)
    stored = stored_checkpoint(load_k2_catalog().load_table(TRADES.identifier), Topics.trades).offsets
    operator = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group_id(target)})
    reset = time.time()
    operator.commit(offsets=[TopicPartition(target.topic, p, 0) for p in stored], asynchronous=False)
    operator.close()
    resolved = _wait_for("the offset drift incident resolved", lambda: _incident("offset_drift", RESOLVED))
    if resolved.resolved_at is None:
        raise RuntimeError(f"incident {resolved.incident_id} is resolved without a resolution time")
    return {"case": "4 consumer group reset", "detected_after": resolved.detected_at.timestamp() - reset,
            "recovered_after_back": resolved.resolved_at.timestamp() - reset,
            "time_to_recovery": resolved.time_to_recovery_seconds}


def bench_recovery() -> int:
    with tempfile.TemporaryDirectory(prefix="k2-bench-recovery-") as scratch_dir:
        scratch = Path(scratch_dir)
        with scratch_k2(scratch) as broker:
            daemon_log = (scratch / "daemon.log").open("w")
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(CHECKOUT / "workspace.yaml")],
                cwd=CHECKOUT, env=os.environ.copy(), stdout=daemon_log, stderr=subprocess.STDOUT,
                start_new_session=True)
            catalog_file = scratch / "k2" / "catalog.db"
            try:
                _produce(broker, scratch, 4_000, 1)
                _wait_for("the first drain through the lag sensor", _drained)
                results = [
                    _outage("1 Kafka broker stopped", "kafka_broker_down", broker.stop, broker.start, broker, scratch,
                            2),
                    _outage("2 SQLite catalog moved away", "catalog_unreachable",
                            lambda: catalog_file.rename(scratch / "catalog.away"),
                            lambda: (scratch / "catalog.away").rename(catalog_file), broker, scratch, 3),
                    _reset_group(broker),
                ]
            finally:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(60)
    print(f"k2 bench recovery ({datetime.now(UTC):%Y-%m-%d}; dagster-daemon, sensors at their intervals; "
          f"outages of {OUTAGE_SECONDS}s)")
    print("| case | detected after (s) | recovered after the fault ended (s) | incident's time to recovery (s) |")
    print("| --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['case']} | {r['detected_after']:.0f} | {r['recovered_after_back']:.0f} | "
              f"{r['time_to_recovery']:.0f} |")
    return 0
