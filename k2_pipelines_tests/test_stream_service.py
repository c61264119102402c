"""`k2 stream binance` as a user runs it: a process against the local exchange server and the real broker."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.settings import CHECKOUT
from k2_pipelines_tests.binance_server import BinanceServer, Script
from k2_pipelines_tests.conftest import free_port
from k2_pipelines_tests.kafka_helpers import end_offsets


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("k2_")
    }


def test_stream_service_records_serves_metrics_and_flushes_on_sigterm(kafka_broker, tmp_path):
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, ["BTCUSDT", "ETHUSDT"], 2_000, seed=13, faults={"malformed"})
    frames = [frame for _, frame in read_recording(session)]
    metrics_port, record = free_port(), tmp_path / "recorded.jsonl"
    env = os.environ | {"K2_HOME": str(tmp_path / "k2"), "K2_KAFKA_PORT": str(kafka_broker.port)}
    with BinanceServer(Script(frames, disconnect_after={700})) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "k2_pipelines", "stream", "binance", "--symbols", "BTCUSDT,ETHUSDT",
             "--endpoint", server.endpoint, "--record", str(record), "--metrics-port", str(metrics_port)],
            cwd=CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline, metrics = time.monotonic() + 60, {}
            while time.monotonic() < deadline:
                try:
                    metrics = _metrics(metrics_port)
                except OSError:
                    metrics = {}
                if metrics.get('k2_stream_frames_received_total{exchange="binance"}') == len(frames):
                    break
                time.sleep(0.2)
            assert metrics['k2_stream_frames_received_total{exchange="binance"}'] == len(frames)
            assert metrics['k2_stream_reconnects_total{exchange="binance"}'] >= 1
            assert metrics['k2_stream_connected{exchange="binance"}'] == 1
            dead = sum(v for k, v in metrics.items() if k.startswith("k2_stream_dead_letters_total"))
            assert dead == counts["malformed"]
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "0 undelivered" in output
    topics = ("market.crypto.trades.binance", "market.crypto.quotes.binance", "market.crypto.dlq.binance")
    assert [end_offsets(kafka_broker.bootstrap, t) for t in topics] == [counts["trades"], counts["quotes"],
                                                                        counts["malformed"]]
    assert [json.loads(line)["frame"] for line in record.read_text().splitlines()] == frames
    assert json.loads((tmp_path / "k2" / "schema-registry" / "schemas.json").read_text())["subjects"].keys() == {
        "market.crypto.trades.binance-value", "market.crypto.quotes.binance-value"}
