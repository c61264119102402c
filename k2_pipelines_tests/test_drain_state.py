"""The drains' per-symbol state in market_data.drain_state: O(changes) per commit, bounded files, the old form
carried forward."""

import json
import os
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from pyiceberg.expressions import EqualTo

from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.drain.checkpoint import MAX_STATE_FILES, stored_checkpoint
from k2_pipelines.lib.drain.drain import drain_once, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.commit import commit_atomically
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID, DRAIN_STATE_PREFIX
from k2_pipelines.lib.iceberg.tables import DRAIN_STATE, DRAINED_TABLES
from k2_pipelines.lib.iceberg.writes import append_files
from k2_pipelines.lib.upkeep.expiry import expire_snapshots
from k2_pipelines.lib.upkeep.table_files import TableFiles
from k2_pipelines_tests.kafka_helpers import drain_all, replay_session, stored_state, table_ids


def _state_files(catalog, topic: str) -> int:
    return len(list(catalog.load_table(DRAIN_STATE.identifier).scan(row_filter=EqualTo("topic", topic)).plan_files()))


def _assert_state_is_what_the_rows_say(catalog, target) -> None:
    """Per symbol the highest sequence (with its time) and id of the rows landed (Binance's ids are its sequences)."""
    rows = catalog.load_table(target.table.identifier).scan(
        selected_fields=("symbol", "source_sequence", "timestamp")).to_arrow().to_pylist()
    highest = {}
    for row in rows:
        time_us = (row["timestamp"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        highest[row["symbol"]] = max(highest.get(row["symbol"], (0, 0)), (row["source_sequence"], time_us))
    _, sequences, ceilings = stored_state(catalog, target)
    assert sequences == highest
    assert ceilings == {symbol: sequence for symbol, (sequence, _) in highest.items()}


def test_summaries_hold_offsets_and_state_files_stay_bounded(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 20_000, {"gaps", "out_of_order"})
    target = trades_target(topics.trades)
    batched = drain_all(kafka_broker, target, Limits(max_messages=200))
    assert len(batched) > 2 * MAX_STATE_FILES  # enough commits to rewrite the state at least twice
    main = catalog.load_table(target.table.identifier)
    drain_keys = {key for s in main.snapshots() for key in s.summary.additional_properties if key.startswith("k2.")}
    assert drain_keys == {f"k2.drain.offsets.{topics.trades}", DRAIN_STATE_PREFIX + topics.trades, DRAIN_RUN_ID}
    assert _state_files(catalog, topics.trades) <= MAX_STATE_FILES
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"]

    _assert_state_is_what_the_rows_say(catalog, target)


def test_a_checkpoint_of_the_old_form_is_read_and_carried_forward(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 20_000, set())
    target = trades_target(topics.trades)
    reader = reader_for(kafka_broker.bootstrap, target)
    first = drain_once(catalog, reader, target, default_registry(), Limits(max_messages=5_000))
    reader.close()
    offsets, sequences, ceilings = stored_state(catalog, target)
    sequences_only_there = {"OLDUSDT": (41, 1_600_000_000_000_000)}

    # what K2 wrote before the state table: the whole state as JSON in the summary, and no state table rows
    state = catalog.load_table(DRAIN_STATE.identifier).transaction()
    state.delete(EqualTo("topic", topics.trades))
    main = catalog.load_table(target.table.identifier).transaction()
    append_files(main, [], {
        f"k2.drain.offsets.{topics.trades}": json.dumps({str(p): o for p, o in offsets.items()}),
        f"k2.drain.sequences.{topics.trades}": json.dumps({s: list(v) for s, v in
                                                          (sequences | sequences_only_there).items()}),
        f"k2.drain.id-ceilings.{topics.trades}": json.dumps(ceilings | {"OLDUSDT": 41}),
        DRAIN_RUN_ID: "before-the-state-table"})
    commit_atomically(catalog, [main, state])
    legacy = stored_checkpoint(catalog.load_table(target.table.identifier), target.topic)
    assert legacy.legacy_state is not None and not legacy.number and legacy.offsets == offsets

    rest = drain_all(kafka_broker, target, Limits(max_messages=5_000))
    assert rest[0].offsets_from == first.offsets_to and rest[0].duplicates_committed == 0
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"]
    carried = stored_checkpoint(catalog.load_table(target.table.identifier), target.topic)
    assert carried.legacy_state is None and carried.number > 0
    _, sequences_after, ceilings_after = stored_state(catalog, target)
    assert sequences_after["OLDUSDT"] == sequences_only_there["OLDUSDT"] and ceilings_after["OLDUSDT"] == 41
    assert all(ceilings_after[s] >= c for s, c in ceilings.items())


def _metadata_files(table) -> list[str]:
    folder = urlparse(table.metadata_location).path.rsplit("/", 1)[0]
    return [name for name in os.listdir(folder) if name.endswith(".metadata.json")]


def test_drains_resume_after_any_expiry_and_metadata_stays_bounded(kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 20_000, {"gaps", "out_of_order"})
    target = trades_target(topics.trades)
    reader, drains = reader_for(kafka_broker.bootstrap, target), 0
    while messages := drain_once(catalog, reader, target, default_registry(), Limits(max_messages=130)).messages:
        drains += 1
        if drains == 1:
            held, held_rows = catalog.load_table(target.table.identifier), messages  # as a long query holds it
        if drains == 40:  # 39 commits later its metadata json is gone, and it reads all the same
            assert not os.path.exists(urlparse(held.metadata_location).path)
            assert held.scan().to_arrow().num_rows == held_rows
        if drains > 40 and drains % 5 == 0:  # everything expiry may take, from every table a drain writes
            for definition in DRAINED_TABLES:
                expire_snapshots(catalog, definition.identifier, datetime.now(UTC) + timedelta(minutes=5))
    reader.close()
    assert drains > 50
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"]
    _assert_state_is_what_the_rows_say(catalog, target)
    for definition in DRAINED_TABLES:
        table = catalog.load_table(definition.identifier)
        previous_max = int(table.properties["write.metadata.previous-versions-max"])
        assert len(table.metadata.metadata_log) <= previous_max
        assert len(_metadata_files(table)) <= previous_max + 1  # the log and the current file, nothing older
        assert all(os.path.exists(urlparse(path).path) for path in TableFiles(table.io).referenced(
            table.metadata, table.metadata_location))
        manifests = table.current_snapshot().manifests(table.io) if table.current_snapshot() else []
        assert len(manifests) <= int(table.properties["commit.manifest.min-count-to-merge"])
