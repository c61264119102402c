"""A bad micro-batch out of a drained table into quarantine: real broker, real drains, real catalog."""

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from k2_pipelines.cli import main
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import DrainResult, DrainTarget, drain, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.run_rows import run_data_files
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID, SOURCE_RUN_ID
from k2_pipelines.lib.iceberg.tables import QUARANTINE, TRADES, ensure_tables
from k2_pipelines.lib.recovery.quarantine import UnknownRun, held, quarantine_run, release
from k2_pipelines_tests.kafka_helpers import replay_session, stored_state, table_ids

REASON, DETAIL = "price_positive", "3 trades priced at 0"


def _drain(kafka_broker, catalog, target, max_messages: int | None = None):
    reader = reader_for(kafka_broker.bootstrap, target)
    try:
        return drain(catalog, reader, target, default_registry(), Limits(max_messages=max_messages or 10**9))
    finally:
        reader.close()


def _quarantined(catalog) -> list[dict]:
    return catalog.load_table("market_data.quarantine").scan().to_arrow().to_pylist()


@dataclass(frozen=True)
class _Drained:
    session: Path
    counts: dict
    topics: Topics
    target: DrainTarget
    batches: tuple[DrainResult, DrainResult, DrainResult]
    ids_b: set[tuple[str, str]]  # B's (symbol, id), read by time travel


def _three_batches(kafka_broker, catalog, tmp_path) -> _Drained:
    """Batches A, B (the bad one), C of a session drained, with messages left in the topic."""
    session, counts, topics = replay_session(kafka_broker, tmp_path, 4_000, set())
    target = trades_target(topics.trades)
    size = counts["trades"] // 5
    a, b, c = (_drain(kafka_broker, catalog, target, size) for _ in range(3))
    assert a.rows_written and b.rows_written and c.rows_written
    ids_a = set(table_ids(catalog, target, a.snapshot_after))
    ids_b = set(table_ids(catalog, target, b.snapshot_after)) - ids_a
    assert len(ids_b) == b.rows_written
    return _Drained(session, counts, topics, target, (a, b, c), ids_b)


def _assert_quarantine_holds(catalog, target, ids_b, source_run: str, source_snapshot: int, quarantine_run: str):
    held = _quarantined(catalog)
    assert sorted((r["symbol"], r["record_id"]) for r in held) == sorted(ids_b)
    for row in held:
        assert (row["table_name"], row["reason"], row["detail"]) == (target.table.identifier, REASON, DETAIL)
        assert (row["source_run_id"], row["quarantine_run_id"]) == (source_run, quarantine_run)
        assert row["source_snapshot_id"] == source_snapshot
        whole = json.loads(row["row_json"])
        assert (whole["symbol"], whole["trade_id"]) == (row["symbol"], row["record_id"])
        assert datetime.fromisoformat(whole["timestamp"]) == row["event_timestamp"]
        assert Decimal(whole["price"]) > 0 and isinstance(whole["price"], str)


def test_a_bad_batch_moves_to_quarantine_and_the_drain_goes_on(kafka_broker, catalog, tmp_path):
    drained = _three_batches(kafka_broker, catalog, tmp_path)
    counts, target, (_, b, c), ids_b = drained.counts, drained.target, drained.batches, drained.ids_b
    main = catalog.load_table(target.table.identifier)
    before, snapshot_before = stored_state(catalog, target), main.current_snapshot().snapshot_id
    ids_abc = table_ids(catalog, target)

    dry = quarantine_run(catalog, target, b.run_id, REASON, DETAIL, "quarantine-1", dry_run=True)
    assert (dry.rows_quarantined, dry.files_removed, dry.snapshots) == (
        len(ids_b), len(run_data_files(main, DRAIN_RUN_ID, b.run_id)), [b.snapshot_after])
    assert catalog.load_table(target.table.identifier).current_snapshot().snapshot_id == snapshot_before
    assert not _quarantined(catalog)

    result = quarantine_run(catalog, target, b.run_id, REASON, DETAIL, "quarantine-1")
    assert (result.rows_quarantined, result.files_removed, result.rows_by_filter) == (len(ids_b), dry.files_removed, 0)
    assert sorted(table_ids(catalog, target)) == sorted(set(ids_abc) - ids_b)  # exactly A + C
    _assert_quarantine_holds(catalog, target, ids_b, b.run_id, b.snapshot_after, "quarantine-1")

    main = catalog.load_table(target.table.identifier)
    snapshot = main.current_snapshot()
    assert snapshot.snapshot_id == result.snapshot_after and snapshot.parent_snapshot_id == snapshot_before
    assert snapshot.summary.operation.value == "overwrite" and snapshot.summary[SOURCE_RUN_ID] == b.run_id
    assert stored_state(catalog, target) == before
    assert stored_checkpoint(main, target.topic).run_id == "quarantine-1"
    assert result.offsets_kept == before[0] == c.offsets_to
    assert ids_b <= set(table_ids(catalog, target, snapshot_before))  # time travel still shows B

    rest = _drain(kafka_broker, catalog, target)  # the messages after C: not B again, nothing lost
    assert rest.offsets_from == c.offsets_to and rest.duplicates_committed == 0
    assert sum(rest.lag_after.values()) == 0
    ids = table_ids(catalog, target)
    assert len(ids) == len(set(ids)) == counts["trades"] - len(ids_b) and not ids_b & set(ids)

    again = quarantine_run(catalog, target, b.run_id, REASON, DETAIL, "quarantine-2")
    assert (again.rows_quarantined, again.files_removed, again.already_quarantined) == (0, 0, len(ids_b))
    assert "nothing to do" in again.note and again.commit_attempts == 0
    assert again.snapshot_after == catalog.load_table(target.table.identifier).current_snapshot().snapshot_id
    assert len(_quarantined(catalog)) == len(ids_b)


def test_a_batch_compaction_merged_is_deleted_by_id(kafka_broker, catalog, tmp_path):
    drained = _three_batches(kafka_broker, catalog, tmp_path)
    target, b, ids_b = drained.target, drained.batches[1], drained.ids_b
    main = catalog.load_table(target.table.identifier)
    before = stored_state(catalog, target)
    ids_abc = table_ids(catalog, target)
    main.overwrite(main.scan().to_arrow())  # compaction: every batch's rows rewritten into shared files
    main = catalog.load_table(target.table.identifier)
    live = set(main.inspect.data_files().column("file_path").to_pylist())
    assert not live & {f.file_path for f in run_data_files(main, DRAIN_RUN_ID, b.run_id)}

    result = quarantine_run(catalog, target, b.run_id, REASON, DETAIL, "quarantine-1")
    assert (result.rows_quarantined, result.rows_by_filter, result.files_removed) == (len(ids_b), len(ids_b), 0)
    assert "row filter" in result.note
    assert sorted(table_ids(catalog, target)) == sorted(set(ids_abc) - ids_b)
    _assert_quarantine_holds(catalog, target, ids_b, b.run_id, b.snapshot_after, "quarantine-1")
    assert stored_state(catalog, target) == before

    again = quarantine_run(catalog, target, b.run_id, REASON, DETAIL, "quarantine-2")
    assert (again.rows_quarantined, again.already_quarantined) == (0, len(ids_b))
    assert len(_quarantined(catalog)) == len(ids_b)


def test_an_unknown_run_is_a_clear_error(kafka_broker, catalog, tmp_path):
    drained = _three_batches(kafka_broker, catalog, tmp_path)
    target, a = drained.target, drained.batches[0]
    with pytest.raises(UnknownRun, match="no-such-run"):
        quarantine_run(catalog, target, "no-such-run", REASON, None, "quarantine-1")
    with pytest.raises(ValueError, match="run id of its own"):
        quarantine_run(catalog, target, a.run_id, REASON, None, a.run_id)



def test_a_replay_of_a_quarantined_batch_is_not_reingested(kafka_broker, catalog, tmp_path):
    drained = _three_batches(kafka_broker, catalog, tmp_path)
    target, b = drained.target, drained.batches[1]
    quarantine_run(catalog, target, b.run_id, REASON, DETAIL, "quarantine-1")
    _drain(kafka_broker, catalog, target)
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), drained.topics)
    replay(drained.session, producer)  # the whole session again, B's trades among it
    assert producer.flush(60) == 0
    again = _drain(kafka_broker, catalog, target)
    assert again.messages == drained.counts["trades"] and again.rows_written == 0
    assert again.quarantined_repeats == len(drained.ids_b)
    assert again.duplicates_committed == drained.counts["trades"] - len(drained.ids_b)
    assert not drained.ids_b & set(table_ids(catalog, target))


def test_failing_rows_leave_alone_and_a_release_puts_them_back_exactly_once(kafka_broker, catalog, tmp_path,
                                                                          monkeypatch, capsys):
    drained = _three_batches(kafka_broker, catalog, tmp_path)
    _, b, c = drained.batches
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    before = catalog.load_table("market_data.trades").scan().to_arrow().sort_by("trade_id")

    def every_third(rows):
        return pa.array(["price_jumps" if i % 3 == 0 else None for i in range(rows.num_rows)], pa.string())

    result = quarantine_run(catalog, drained.target, b.run_id, REASON, DETAIL, "quarantine-1", pick=every_third)
    picked = {(r["symbol"], r["record_id"]) for r in _quarantined(catalog)}
    assert result.rows_quarantined == len(picked) == -(-b.rows_written // 3) and result.files_removed == 0
    assert picked < drained.ids_b
    assert set(table_ids(catalog, drained.target)) == set(before_ids(before)) - picked  # the rest of B stays
    assert stored_checkpoint(catalog.load_table("market_data.trades"), drained.topics.trades).offsets == \
        c.offsets_to

    assert main(["quarantine", "list", "--table", "trades"]) == 0
    listed = capsys.readouterr().out
    assert f"market_data.trades run {b.run_id}: {len(picked):,} rows failing price_jumps" in listed
    assert main(["quarantine", "release", "--table", "trades", "--run", b.run_id]) == 0
    assert f"{len(picked):,} rows back in market_data.trades" in capsys.readouterr().out
    assert main(["quarantine", "release", "--table", "trades", "--run", b.run_id]) == 0
    assert "nothing held" in capsys.readouterr().out
    main(["quarantine", "list"])
    assert capsys.readouterr().out.strip() == "0 rows held"

    after = catalog.load_table("market_data.trades").scan().to_arrow().sort_by("trade_id")
    assert after.equals(before)  # every row back exactly as it was, none twice
    assert {r["released_by_run"] is not None for r in _quarantined(catalog)} == {True}
    assert stored_checkpoint(catalog.load_table("market_data.trades"), drained.topics.trades).offsets == \
        c.offsets_to
    assert _drain(kafka_broker, catalog, drained.target).duplicates_committed == 0  # the drain goes on from C


def before_ids(rows) -> list[tuple[str, str]]:
    return list(zip(rows["symbol"].to_pylist(), rows["trade_id"].to_pylist()))


def test_a_quarantine_table_of_an_older_k2_takes_the_release_columns_and_its_rows_can_be_released(catalog):
    old_schema = QUARANTINE.schema().select(*[f.name for f in QUARANTINE.schema().fields
                                              if f.name not in ("released_by_run", "released_at")])
    catalog.drop_table(QUARANTINE.identifier)
    old = catalog.create_table(QUARANTINE.identifier, schema=old_schema)
    row = {"message_id": "m", "trade_id": "BINANCE-7", "symbol": "BTCUSDT", "exchange": "BINANCE",
           "asset_class": "crypto", "timestamp": "2025-11-21T00:00:00+00:00", "price": "10.50000000",
           "quantity": "1.00000000", "currency": "USDT", "side": "BUY", "trade_conditions": [],
           "source_sequence": 7, "ingestion_timestamp": "2025-11-21T00:00:01+00:00", "platform_sequence": None,
           "vendor_data": {"venue": "spot"}}
    old.append(pa.Table.from_pylist([{
        "table_name": TRADES.identifier, "record_id": "BINANCE-7", "symbol": "BTCUSDT", "event_timestamp": None,
        "row_json": json.dumps(row), "reason": "side_known", "detail": None, "source_run_id": "run-1",
        "source_snapshot_id": 1, "quarantine_run_id": "q-1", "quarantined_at": datetime(2025, 11, 21, 1)}],
        schema=old_schema.as_arrow()))
    ensure_tables(catalog)
    assert {"released_by_run", "released_at"} <= {f.name for f in catalog.load_table(QUARANTINE.identifier)
                                                  .schema().fields}
    assert held(catalog, TRADES.identifier).num_rows == 1

    released = release(catalog, trades_target("unused"), "run-1", "release-1")
    assert (released.rows_released, released.rows_already_there) == (1, 0)
    [back] = catalog.load_table(TRADES.identifier).scan().to_arrow().to_pylist()
    assert back["price"] == Decimal("10.5") and back["vendor_data"] == [("venue", "spot")]
    assert back["timestamp"] == datetime.fromisoformat(row["timestamp"]) and back["trade_conditions"] == []
    assert held(catalog, TRADES.identifier).num_rows == 0
    assert release(catalog, trades_target("unused"), "run-1", "release-2").commit_attempts == 0
