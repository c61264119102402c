"""How far a table's drains are behind their topic: what the lag sensor and the fallback schedules look at."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import KafkaException

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.recovery.health import UNREACHABLE


@dataclass(frozen=True)
class Lag:
    table: str
    messages: int | None  # None: the topic's offsets could not be read
    stored: dict[int, int]  # the offsets stored in Iceberg
    note: str
    drained_at: datetime | None = None  # when the snapshot holding them was committed (None: never drained)

    @property
    def run_key(self) -> str:
        """One range of offsets, one drain."""
        return f"{self.table}:{json.dumps(self.stored, sort_keys=True)}"


def lag(stored: dict[int, int], marks: dict[int, tuple[int, int]]) -> int:
    return sum(max(high - stored.get(partition, low), 0) for partition, (low, high) in marks.items())


def table_lag(table: str, iceberg: IcebergCatalogResource, binance_kafka: BinanceKafkaResource) -> Lag:
    target = binance_kafka.target(table)
    try:
        drained = iceberg.catalog().load_table(target.table.identifier)
        checkpoint = stored_checkpoint(drained, target.topic)
    except UNREACHABLE as error:  # the storage health sensor opens the incident
        return Lag(table, None, {}, f"cannot read the offsets stored in {target.table.identifier}: {error}")
    stored, drained_at = checkpoint.offsets, None
    if checkpoint.snapshot_id is not None:
        snapshot = drained.snapshot_by_id(checkpoint.snapshot_id)
        assert snapshot is not None  # the checkpoint was read from one of this table's snapshots
        drained_at = datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC)
    reader = binance_kafka.reader(target)
    try:
        behind = lag(stored, reader.watermarks())
    except KafkaException as error:
        return Lag(table, None, stored, f"cannot read the offsets of {target.topic}: {error}")
    finally:
        reader.close()
    return Lag(table, behind, stored, f"{target.topic}: lag {behind}", drained_at)
