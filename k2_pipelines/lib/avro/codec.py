"""v2 records <-> Confluent wire-format Avro, with schema ids from the registry."""

import io
from functools import lru_cache
from typing import Any

import fastavro
import pyarrow as pa

from k2_pipelines.lib.avro.arrow import encode_records, join
from k2_pipelines.lib.avro.iceberg import load_avro
from k2_pipelines.lib.avro.registry import Registry, frame, unframe


class AvroEncoder:
    """Encodes records of one schemas/*.avsc for one topic (subject `<topic>-value`)."""

    def __init__(self, registry: Registry, topic: str, avro_schema: str) -> None:
        self._schema = load_avro(avro_schema)
        self.schema_id = registry.register(f"{topic}-value", self._schema)
        self._parsed = fastavro.parse_schema(self._schema)

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self._parsed, record)
        return frame(self.schema_id, buffer.getvalue())

    def encode_table(self, records: pa.Table) -> pa.Array:
        """One wire-format value per row (columns named as the schema's fields)."""
        return join(frame(self.schema_id, b""), encode_records(self._schema, records))


class AvroDecoder:
    """Decodes any wire-format value by the schema id in its header."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._parsed = lru_cache(maxsize=64)(lambda schema_id: fastavro.parse_schema(registry.schema(schema_id)))

    def decode(self, value: bytes) -> tuple[int, dict[str, Any]]:
        schema_id, body = unframe(value)
        record = fastavro.schemaless_reader(io.BytesIO(body), self._parsed(schema_id))
        if not isinstance(record, dict):
            raise TypeError(f"schema id {schema_id} is not an Avro record schema")
        return schema_id, record
