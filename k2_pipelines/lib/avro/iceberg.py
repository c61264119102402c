"""Iceberg schemas derived from the Avro schemas in schemas/ (the one source of truth for field lists)."""

import json
from functools import cache
from pathlib import Path
from typing import Any

from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DecimalType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

from k2_pipelines.settings import SCHEMAS_DIR

_PRIMITIVES: dict[str, IcebergType] = {
    "string": StringType(),
    "long": LongType(),
    "int": IntegerType(),
    "boolean": BooleanType(),
    "double": DoubleType(),
    "bytes": BinaryType(),
    "enum": StringType(),  # Iceberg has no enum type
}


class _FieldIds:
    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


def _convert(avro_type: Any, ids: _FieldIds) -> IcebergType:
    if isinstance(avro_type, str):
        return _PRIMITIVES[avro_type]
    logical = avro_type.get("logicalType")
    if logical == "decimal":
        return DecimalType(avro_type["precision"], avro_type["scale"])
    if logical == "timestamp-micros":
        return TimestamptzType()  # Avro timestamp-micros is an instant (UTC)
    kind = avro_type["type"]
    if kind == "array":
        element_id = ids.next()
        return ListType(element_id, _convert(avro_type["items"], ids), element_required=True)
    if kind == "map":
        key_id, value_id = ids.next(), ids.next()
        return MapType(key_id, StringType(), value_id, _convert(avro_type["values"], ids), value_required=True)
    return _PRIMITIVES[kind]


def iceberg_schema(avro_record: dict[str, Any]) -> Schema:
    ids = _FieldIds()
    fields: list[NestedField] = []
    for field in avro_record["fields"]:
        field_type = field["type"]
        nullable = isinstance(field_type, list)
        if nullable:
            non_null = [t for t in field_type if t != "null"]
            if len(non_null) != 1:
                raise ValueError(f"field {field['name']}: only [null, T] unions are supported")
            field_type = non_null[0]
        field_id = ids.next()
        fields.append(
            NestedField(field_id, field["name"], _convert(field_type, ids), required=not nullable, doc=field.get("doc"))
        )
    return Schema(*fields)


@cache
def load_avro(name: str) -> dict[str, Any]:
    """The parsed Avro schema `schemas/<name>.avsc`."""
    return json.loads(Path(SCHEMAS_DIR, f"{name}.avsc").read_text())
