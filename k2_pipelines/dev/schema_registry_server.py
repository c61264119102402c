"""A real Confluent-compatible Schema Registry on loopback (AxonOps Schema Registry, Apache-2.0, built from its Go
module pinned in registry/go.mod), so the registry client is tested against the REST API it talks to in production.

It keeps schemas in memory: ids start again from 1 after a restart, which is fine for tests and demos only.
"""

import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

GO_MODULE = Path(__file__).parent / "registry"
PACKAGE = "github.com/axonops/axonops-schema-registry/cmd/schema-registry"


def build(binary: Path) -> Path:
    """`go build` the registry (a few seconds with a warm Go cache, about 30 s cold)."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary), PACKAGE], cwd=GO_MODULE, check=True,
                   env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"})
    return binary


@dataclass
class SchemaRegistryServer:
    binary: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        env = {**os.environ, "SCHEMA_REGISTRY_HOST": "127.0.0.1", "SCHEMA_REGISTRY_PORT": str(self.port),
               "SCHEMA_REGISTRY_STORAGE_TYPE": "memory"}
        self.process = subprocess.Popen([str(self.binary)], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert self.process.stderr is not None  # started with stderr=PIPE
                raise RuntimeError(f"schema registry exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"schema registry not answering on {self.url} after {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
