"""Schema ids for the Confluent wire format: a Confluent-compatible Schema Registry when K2_SCHEMA_REGISTRY_URL is
set, otherwise an embedded registry persisted under the state dir (same ids across processes and restarts)."""

import fcntl
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from k2_pipelines.settings import settings

MAGIC = 0
HEADER = struct.Struct(">bI")  # magic byte, schema id
T = TypeVar("T")


class Registry(Protocol):
    def register(self, subject: str, schema: dict[str, Any]) -> int: ...
    def schema(self, schema_id: int) -> dict[str, Any]: ...  # KeyError for an unknown id


class EmbeddedRegistry:
    """Ids in one JSON file, updated under a file lock; an identical schema always gets the same id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _locked_update(self, change: Callable[[dict[str, Any]], T]) -> T:
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(self.path.read_text()) if self.path.exists() else {"schemas": {}, "subjects": {}}
            result = change(state)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            tmp.replace(self.path)
            return result

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))

        def change(state: dict[str, Any]) -> int:
            schema_id = next((int(i) for i, text in state["schemas"].items() if text == canonical), None)
            if schema_id is None:
                schema_id = max(map(int, state["schemas"]), default=0) + 1
                state["schemas"][str(schema_id)] = canonical
            versions = state["subjects"].setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

        return self._locked_update(change)

    def schema(self, schema_id: int) -> dict[str, Any]:
        schemas = json.loads(self.path.read_text())["schemas"] if self.path.exists() else {}
        if str(schema_id) not in schemas:
            raise KeyError(f"schema id {schema_id} is not in {self.path}")
        return json.loads(schemas[str(schema_id)])


class RegistryUnavailable(RuntimeError):
    """The Schema Registry did not answer, or answered with an error other than an unknown schema id."""


class ConfluentRegistry:
    def __init__(self, url: str, timeout: float | None = None) -> None:
        self.url = url
        self.client = SchemaRegistryClient({"url": url, **({"timeout": timeout} if timeout else {})})

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return self.client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))

    def schema(self, schema_id: int) -> dict[str, Any]:
        try:
            schema_text = self.client.get_schema(schema_id).schema_str
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                raise KeyError(f"schema id {schema_id} is not in the registry at {self.url}") from None
            raise RegistryUnavailable(f"the registry at {self.url}: {error}") from error
        except Exception as error:  # the HTTP client's own (confluent-kafka vendors httpx): refused, timed out, ...
            raise RegistryUnavailable(f"the registry at {self.url}: {error}") from error
        if schema_text is None:
            raise ValueError(f"schema id {schema_id} has no schema text in the registry at {self.url}")
        return json.loads(schema_text)


def default_registry(timeout: float | None = None) -> Registry:
    """K2's registry (`timeout`: seconds a Confluent one may take to answer; none by default)."""
    current = settings()
    if current.schema_registry_url:
        return ConfluentRegistry(current.schema_registry_url, timeout)
    return EmbeddedRegistry(current.home / "schema-registry" / "schemas.json")


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def unframe(value: bytes) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent wire-format value; ValueError if it is not one."""
    if len(value) < HEADER.size or value[0] != MAGIC:
        raise ValueError("not Confluent wire format (magic byte 0 + 4-byte schema id)")
    return HEADER.unpack_from(value)[1], value[HEADER.size :]
