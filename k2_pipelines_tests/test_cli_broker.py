"""A benchmark or the demo stops the broker it started, and only that one: a broker left on the port would fail the
next `make demo` under another K2_HOME."""

import pytest

from k2_pipelines.cli.kafka import running_broker
from k2_pipelines.dev.broker import Broker, free_port
from k2_pipelines_tests.conftest import KAFKA_LIBS


def test_a_command_stops_the_broker_it_started_even_when_it_fails_and_leaves_one_already_running(tmp_path) -> None:
    broker = Broker(home=tmp_path / "kafka", port=free_port(), libs=KAFKA_LIBS)
    with pytest.raises(RuntimeError, match="the benchmark failed"), running_broker(broker):
        assert broker.status()["running"]
        raise RuntimeError("the benchmark failed")
    assert broker.pid() is None and not broker.status()["running"]

    broker.start()
    try:
        with running_broker(broker) as used:
            assert used is broker
        assert broker.status()["running"]
    finally:
        broker.stop()
