"""A drain keeps its place when another engine rewrites K2's table and expires every snapshot K2 wrote (what Spark's
rewrite_data_files or INSERT, then expire_snapshots(retain_last => 1), do), and, if its position is truly gone,
resumes from its group's offsets with an incident, never from offset 0."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyiceberg.table import Table

from k2_pipelines import query
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import DrainResult, DrainTarget, drain_once, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits, TopicReader
from k2_pipelines.lib.iceberg.summary import DRAIN_OFFSETS_PREFIX, DRAIN_STATE_PREFIX
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.quality.thresholds import DEFAULTS
from k2_pipelines.lib.recovery.incidents import RESOLVED, incidents
from k2_pipelines.lib.runs.drain_batch import drain_batch
from k2_pipelines_tests.kafka_helpers import replay_session, table_ids


def _as_another_engine_leaves_it(catalog) -> Table:
    """The table rewritten by a writer that stores no K2 summary, then every other snapshot expired."""
    table = catalog.load_table(TRADES.identifier)
    table.overwrite(table.scan().to_arrow())
    table = catalog.load_table(TRADES.identifier)
    current = table.current_snapshot().snapshot_id
    table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in table.snapshots()
                                                  if s.snapshot_id != current]).commit()
    table = catalog.load_table(TRADES.identifier)
    assert [s.snapshot_id for s in table.snapshots()] == [current]
    summary = table.current_snapshot().summary.additional_properties
    assert not any(key.startswith(DRAIN_OFFSETS_PREFIX) for key in summary)
    return table


@dataclass
class Expired:
    trades: int  # in the topic
    topic: str
    target: DrainTarget
    reader: TopicReader
    first: DrainResult  # the drain before another engine's expiry
    table: Table  # as that expiry left it


@pytest.fixture
def expired(kafka_broker, catalog, tmp_path) -> Iterator[Expired]:
    """A session's first 600 trades drained, then the table rewritten and expired as another engine does."""
    _, counts, topics = replay_session(kafka_broker, tmp_path, 4_000, set())
    target = trades_target(topics.trades)
    reader = reader_for(kafka_broker.bootstrap, target)
    first = drain_once(catalog, reader, target, default_registry(), Limits(max_messages=600))
    yield Expired(counts["trades"], topics.trades, target, reader, first, _as_another_engine_leaves_it(catalog))
    reader.close()


def test_a_drain_keeps_its_place_after_another_engine_expires_every_snapshot_it_wrote(kafka_broker, catalog, expired,
                                                                                       monkeypatch):
    topic, target, reader, first = expired.topic, expired.target, expired.reader, expired.first
    assert stored_checkpoint(expired.table, topic).offsets == first.offsets_to  # from the table's properties
    # fresh reads find the topic and its offsets there too
    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    symbols = query.symbols(catalog=catalog)["symbol"].to_pylist()
    held = query.result_freshness(query.trades(symbols, "2025-11-20", "2025-11-23", fresh="strict", catalog=catalog))
    assert held is not None and held.topic == topic and held.tail_from == first.offsets_to and held.tail_rows

    rest = drain_once(catalog, reader, target, default_registry())
    assert rest.offsets_from == first.offsets_to and not rest.resumed_from_group
    assert rest.duplicates_committed == 0 and rest.messages == expired.trades - first.messages
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == expired.trades


def test_a_position_truly_gone_resumes_from_the_group_with_an_incident_never_from_0(catalog, expired):
    topic, target, reader, first = expired.topic, expired.target, expired.reader, expired.first
    with expired.table.transaction() as transaction:  # and the properties gone too
        transaction.remove_properties(DRAIN_OFFSETS_PREFIX + topic, DRAIN_STATE_PREFIX + topic)
    assert not stored_checkpoint(catalog.load_table(TRADES.identifier), topic).offsets

    rest = drain_batch(catalog, reader, target, default_registry(), Limits(), DEFAULTS)
    assert rest.resumed_from_group == first.offsets_to == rest.offsets_from  # the group's: never 0
    assert rest.messages == expired.trades - first.messages
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == expired.trades
    [incident] = incidents(catalog, kind="drain_position_lost")
    assert incident.status == RESOLVED and incident.subject == TRADES.identifier and topic in incident.detail
    assert stored_checkpoint(catalog.load_table(TRADES.identifier), topic).offsets == rest.offsets_to
