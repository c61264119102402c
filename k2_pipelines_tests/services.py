"""The production shape's services for tests: a PostgreSQL cluster and an S3 server, each started on a free port.

`scripts/postgres.sh` installs PostgreSQL (Debian's package) and `scripts/s3.sh` builds the S3 server (gofakes3);
these classes only start and stop them, in directories of their own.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from k2_pipelines.dev.broker import free_port
from k2_pipelines.settings import CHECKOUT

S3_SERVER = Path(os.environ.get("K2_BIN") or CHECKOUT / ".k2" / "bin") / "gofakes3"


def _wait_for_port(port: int, process: subprocess.Popen | None, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on port {port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} is not listening on port {port} after {timeout} s")


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run scripts/postgres.sh")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A throwaway cluster on 127.0.0.1:`port`, with one password role; databases are made per test."""

    port: int
    user: str = "k2"
    password: str = "k2-test-only"
    data: Path | None = None

    def _as_owner(self, *command) -> list[str]:
        # initdb and postgres refuse to run as root: as root, run them as Debian's `postgres` user
        return ["runuser", "-u", "postgres", "--", *map(str, command)] if os.geteuid() == 0 else list(map(str, command))

    def start(self) -> None:
        # not under pytest's tmp dirs: those are root-only (0700), and the server runs as `postgres`
        self.data = Path(tempfile.mkdtemp(prefix="k2-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        binaries = _postgres_bin()
        _run(self._as_owner(binaries / "initdb", "-D", self.data / "cluster", "-U", "postgres",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"))
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data}"  # TCP on loopback; the socket in its own dir
        _run(self._as_owner(binaries / "pg_ctl", "-D", self.data / "cluster", "-o", options,
                            "-l", self.data / "server.log", "-w", "start"))
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")

    def psql(self, sql: str, database: str = "postgres") -> str:
        command = self._as_owner(_postgres_bin() / "psql", "-h", self.data, "-p", self.port, "-U", "postgres",
                                 "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)
        return _run(command)

    def create_database(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return name

    def url(self, database: str) -> str:
        """SQLAlchemy's URL with psycopg2, the driver pyiceberg[sql-postgres] installs."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.data is None:
            return
        subprocess.run(self._as_owner(_postgres_bin() / "pg_ctl", "-D", self.data / "cluster", "-m", "fast",
                                      "-w", "stop"), capture_output=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.data = None


@dataclass
class S3Server:
    """gofakes3 on 127.0.0.1:`port`, buckets in memory; path-style addressing, any credentials.

    Its clock is fixed at `clock` (RFC 3339): every object's Last-Modified says that time, so an unreferenced file
    is old enough for orphan removal without waiting (pyarrow's S3 deletes need the memory backend: the fs backend
    cannot store the directory markers pyarrow writes)."""

    log_path: Path
    port: int
    clock: str = "2020-01-01T00:00:00Z"
    process: subprocess.Popen | None = None
    log: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not S3_SERVER.exists():
            raise RuntimeError(f"{S3_SERVER} is missing: run scripts/s3.sh")
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [S3_SERVER, "-host", f"127.0.0.1:{self.port}", "-backend", "memory", "-time", self.clock, "-quiet"],
            stdout=self.log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.process, "the S3 server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
            self.log.close()


def started_postgres() -> Postgres:
    server = Postgres(port=free_port())
    server.start()
    return server


def started_s3(log_path: Path) -> S3Server:
    server = S3Server(log_path=log_path, port=free_port())
    server.start()
    return server
