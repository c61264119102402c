"""`k2 kafka start|stop|status|fetch`: the local broker; and the broker a command needs for its own duration."""

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager

from k2_pipelines.dev.broker import Broker, fetch_jars


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    kafka = commands.add_parser("kafka", help="the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch"], help="fetch: only get the jars (Maven)")
    kafka.add_argument("--port", type=int, help="listener port (default K2_KAFKA_PORT or 9092; the controller uses "
                                                "port+1)")
    kafka.set_defaults(run=run_kafka)


def run_kafka(args: argparse.Namespace) -> int:
    broker = Broker.from_env(args.port)
    if args.action == "fetch":
        fetch_jars(broker.libs)
        print(f"Kafka broker jars are in {broker.libs}")
    elif args.action == "start":
        status = broker.start()
        print(f"kafka is running at {status['bootstrap']} (pid {status['pid']}); data {status['data_dir']}; "
              f"log {status['log']}")
    elif args.action == "stop":
        print("kafka stopped" if broker.stop() else "kafka was not running")
    else:
        status = broker.status()
        print(json.dumps(status, indent=2))
        return 0 if status["running"] else 3
    return 0


@contextmanager
def running_broker(broker: Broker | None = None) -> Iterator[Broker]:
    """The broker (default: the configured one) running while the block runs; stopped after it if it was started
    for it, so that a benchmark or the demo leaves no broker holding the port."""
    broker = broker or Broker.from_env()
    started_here = broker.pid() is None
    broker.start()
    try:
        yield broker
    finally:
        if started_here:
            broker.stop()
