"""A real single-node Apache Kafka broker (KRaft, broker + controller) on loopback, run from Maven-fetched jars."""

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer

from k2_pipelines.lib.utils.maven import MavenError, copy_dependencies
from k2_pipelines.settings import LOOPBACK, local_broker_address, settings

HERE = Path(__file__).parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
JVM_OPTIONS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


class BrokerError(RuntimeError):
    """The broker cannot be started, with what to do about it."""


@dataclass(frozen=True)
class Broker:
    home: Path  # config, data and logs of this broker
    port: int
    libs: Path

    @classmethod
    def from_env(cls, port: int | None = None) -> "Broker":
        """K2's own broker, as settings (K2_HOME, K2_KAFKA_PORT, K2_KAFKA_LIBS) place it."""
        current = settings()
        return cls(home=current.home / "kafka", port=port or current.kafka_port, libs=current.kafka_libs)

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return local_broker_address(self.port)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The running broker's pid, if the pid file names a live kafka.Kafka process."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"kafka.Kafka" in cmdline else None

    def status(self) -> dict:
        pid = self.pid()
        return {
            "running": pid is not None and _accepts(self.port),
            "pid": pid,
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "log": str(self.log_dir / "server.log"),
        }

    def start(self, timeout: float = 60) -> dict:
        self.home.mkdir(parents=True, exist_ok=True)
        # a second broker on the same data dir takes over its quorum state before failing: one start at a time
        with open(self.home / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start_locked(timeout)

    def _start_locked(self, timeout: float) -> dict:
        if self.pid():
            return self.status()
        java = shutil.which("java")
        if not java:
            raise BrokerError("Java is not installed: Kafka needs Java 17 or newer "
                              "(apt-get install openjdk-17-jre-headless)")
        for port in (self.port, self.controller_port):
            if _accepts(port) or not _can_bind(port):
                raise BrokerError(f"port {port} on {LOOPBACK} is already in use; pick another with --port or "
                                  "K2_KAFKA_PORT")
        fetch_jars(self.libs)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, properties)
        command = [java, *JVM_OPTIONS, *self._logging_options(), "-cp", f"{self.libs}/*", "kafka.Kafka",
                   str(properties)]
        with open(self.log_dir / "stdout.log", "ab") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"the broker exited with code {process.returncode}; "
                                  f"see {self.log_dir / 'server.log'}\n" + _tail(self.log_dir / "server.log"))
            if _accepts(self.port):
                _wait_for_producer_ids(self.bootstrap, deadline)
                return self.status()
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"the broker did not accept connections within {timeout:.0f}s; "
                          f"see {self.log_dir / 'server.log'}")

    def stop(self, timeout: float = 60) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`). False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() == pid:
            time.sleep(0.2)
        if self.pid() == pid:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    # -- files -------------------------------------------------------------------------------------------------
    def _logging_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={self.log_dir}"]

    def _write_properties(self) -> Path:
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        path = self.home / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path

    def _format(self, java: str, properties: Path) -> None:
        # one id in 64 starts with "-", so it goes as --cluster-id=ID (else argparse reads it as an option)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        command = [java, *self._logging_options(), "-cp", f"{self.libs}/*", "kafka.tools.StorageTool",
                   "format", f"--cluster-id={cluster_id}", "-c", str(properties)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.data_dir} failed:\n{done.stdout}{done.stderr}")


def fetch_jars(libs: Path) -> None:
    """The broker's jars, fetched once with Maven from the pom beside this file."""
    if any(libs.glob("kafka_2.13-*.jar")):
        return
    try:
        copy_dependencies(POM, libs, "the Kafka broker jars")
    except MavenError as error:
        raise BrokerError(str(error)) from error


def free_port() -> int:
    """A free port whose neighbour (the controller's) is free too: for a broker of its own (tests, benchmarks)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((LOOPBACK, 0))
            port = first.getsockname()[1]
        if _can_bind(port + 1):
            return port
    raise BrokerError("no free port pair")


def _wait_for_producer_ids(bootstrap: str, deadline: float) -> None:
    """Until the broker gives an idempotent producer its id: a started broker answers the first request with
    COORDINATOR_LOAD_IN_PROGRESS while it fetches a block of ids, which the first K2 producer would log as a retry."""
    assigned: list[bool] = []

    def on_stats(stats: str) -> None:
        assigned.append(json.loads(stats).get("eos", {}).get("idemp_state") == "Assigned")

    # the probe's own retries are the expected ones: it logs nothing
    probe = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "statistics.interval.ms": 100,
                      "stats_cb": on_stats, "log_level": 0})
    while not any(assigned) and time.monotonic() < deadline:
        probe.poll(0.1)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


def _can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
