"""K2's tables shared with Apache Spark (pyspark 4.0 with Iceberg 1.10's Spark runtime, over the same JDBC catalog):
Spark reads every table as K2 does; Spark's rewrite, insert and expiry between two K2 drains leave K2's queries,
drains (exactly once, from where they were), compaction, expiry and orphan removal working; and Spark reads what K2's
upkeep leaves. On the embedded SQLite catalog and on the production shape (PostgreSQL catalog, S3 warehouse)."""

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from k2_pipelines import query
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.upkeep.jobs import compact_tables
from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import drain_once, quotes_target, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.gold.ohlcv import rebuild_day
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import ALL_TABLES, OHLCV_TABLES, QUOTES, TRADES, ensure_tables
from k2_pipelines.lib.spark.session import catalog_settings, spark_session, started_spark
from k2_pipelines.lib.upkeep.compaction import compact_table, content_checksum
from k2_pipelines.lib.upkeep.expiry import expire_snapshots
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE, remove_orphan_files
from k2_pipelines_tests.helpers import run_asx_load
from k2_pipelines_tests.kafka_helpers import drain_all, replay_session, table_ids

SPARK_INSERTED = 5  # rows Spark inserts into trades between K2's drains
ASX_DAY = trading_days(DEFAULT_START, 1)[0].isoformat()
SESSION_DAY = date(2025, 11, 21)  # the generated Binance session's (lib/binance/sample.py)


@pytest.fixture(scope="module")
def spark() -> Iterator[None]:
    """One Spark driver (a JVM) for the module; each test gets sessions of its own catalog from it."""
    with pytest.MonkeyPatch.context() as patch:
        # the S3 server needs a Content-Length on uploads: the AWS SDK's default checksums stream chunked bodies
        patch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        base = started_spark()
    yield
    base.stop()


def _counts_and_sums(catalog, spark_session_, identifier: str, snapshot_id: int | None = None) -> tuple[tuple, tuple]:
    """(rows, distinct ids, price sum) of a market table, or rows alone of another, as K2 and as Spark read it."""
    table = catalog.load_table(identifier)
    rows = table.scan(snapshot_id=snapshot_id).to_arrow()
    version = f" VERSION AS OF {snapshot_id}" if snapshot_id else ""
    if identifier in (TRADES.identifier, QUOTES.identifier):
        id_column, price = ("trade_id", "price") if identifier == TRADES.identifier else ("quote_id", "bid_price")
        ids = set(zip(rows["symbol"].to_pylist(), rows[id_column].to_pylist()))
        k2 = (rows.num_rows, len(ids), pc.sum(rows[price]).as_py() or Decimal(0))
        [spark_row] = spark_session_.sql(
            f"SELECT count(*), count(DISTINCT symbol, {id_column}), coalesce(sum({price}), 0) "
            f"FROM {identifier}{version}").collect()
        return k2, tuple(spark_row)
    return (rows.num_rows,), tuple(spark_session_.sql(f"SELECT count(*) FROM {identifier}{version}").collect()[0])


def _spark_reads_as_k2_does(catalog, session) -> None:
    for definition in ALL_TABLES:
        k2, spark = _counts_and_sums(catalog, session, definition.identifier)
        assert spark == k2, definition.identifier


def _insert_as_spark_does(session, count: int) -> None:
    """Rows of Spark's own (new trade ids) appended to the Binance trades."""
    columns = [field.name for field in load_k2_catalog().load_table(TRADES.identifier).schema().fields]
    chosen = {"trade_id": "concat('spark-', trade_id)", "message_id": "concat('spark-', message_id)"}
    select = ", ".join(chosen.get(column, column) for column in columns)
    session.sql(f"INSERT INTO {TRADES.identifier} SELECT {select} FROM {TRADES.identifier} "
                f"WHERE exchange = 'BINANCE' ORDER BY trade_id LIMIT {count}").collect()


def _spark_maintains(session, identifier: str) -> None:
    """What a Spark user does to a table: rewrite every data file, then expire all but the newest snapshot."""
    session.sql(f"CALL k2.system.rewrite_data_files(table => '{identifier}', "
                f"options => map('rewrite-all', 'true'))").collect()
    later = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    session.sql(f"CALL k2.system.expire_snapshots(table => '{identifier}', older_than => TIMESTAMP '{later}', "
                f"retain_last => 1)").collect()


def _stray_file(catalog) -> Path | None:
    """A file no snapshot references, old enough for orphan removal (on a local warehouse; None on S3)."""
    location = catalog.load_table(TRADES.identifier).location()
    if not location.startswith("file:"):
        return None
    stray = Path(location.removeprefix("file://")) / "data" / "left-by-a-killed-writer.parquet"
    stray.write_bytes(b"not referenced")
    old = (datetime.now() - 2 * MIN_ORPHAN_AGE).timestamp()
    os.utime(stray, (old, old))
    return stray


def _shared_with_spark(kafka_broker, tmp_path) -> None:
    catalog = load_k2_catalog()
    ensure_tables(catalog)
    _, counts, topics = replay_session(kafka_broker, tmp_path, 3_000, {"gaps", "duplicates"})
    trades, quotes = trades_target(topics.trades), quotes_target(topics.quotes)
    reader = reader_for(kafka_broker.bootstrap, trades)
    first = drain_once(catalog, reader, trades, default_registry(), Limits(max_messages=500))
    quotes_reader = reader_for(kafka_broker.bootstrap, quotes)
    drain_once(catalog, quotes_reader, quotes, default_registry())
    quotes_reader.close()
    first_snapshot = catalog.load_table(TRADES.identifier).current_snapshot().snapshot_id
    # every other table with rows too: an ASX day (trades, quotes, reference data) and the session day's bars
    assert run_asx_load(ASX_DAY).success
    for interval in OHLCV_TABLES:
        rebuild_day(catalog, interval, SESSION_DAY, "test-bars")

    with spark_session(catalog.properties) as session:
        _spark_reads_as_k2_does(catalog, session)
        k2, spark = _counts_and_sums(catalog, session, TRADES.identifier, first_snapshot)  # time travel
        assert spark == k2 and k2[0] == first.rows_written

        # between two K2 drains, Spark inserts, rewrites and expires
        _insert_as_spark_does(session, SPARK_INSERTED)
        _spark_maintains(session, TRADES.identifier)
        table = catalog.load_table(TRADES.identifier)
        paths = table.inspect.files()["file_path"].to_pylist()
        assert len(table.snapshots()) == 1  # every file Spark's: recorded as file:/p on a local warehouse, not file:///p
        assert all(path.startswith("s3://") or not path.startswith("file://") for path in paths)

        # K2's queries read Spark's files; the drain goes on from where it was, exactly once
        symbols = query.symbols(catalog=catalog)["symbol"].to_pylist()
        queried = query.trades([s for s in symbols if s.endswith("USDT")], "2025-11-20", "2025-11-23", catalog=catalog)
        assert queried.num_rows == first.rows_written + SPARK_INSERTED
        rest = drain_once(catalog, reader, trades, default_registry())
        reader.close()
        assert rest.offsets_from == first.offsets_to and not rest.resumed_from_group
        assert rest.messages == counts["trades"] - first.messages and rest.duplicates_committed == 0
        ids = [trade_id for symbol, trade_id in table_ids(catalog, trades) if symbol.endswith("USDT")]
        drained = [trade_id for trade_id in ids if not trade_id.startswith("spark-")]
        assert len(drained) == len(set(drained)) == first.rows_written + rest.rows_written
        assert len(ids) - len(drained) == SPARK_INSERTED

        # K2's own upkeep on the table Spark rewrote: compaction, expiry, orphan removal
        compacted = compact_table(catalog, TRADES.identifier)
        assert compacted.files_rewritten >= 2 and compacted.checksum_before == compacted.checksum_after
        expired = expire_snapshots(catalog, TRADES.identifier, datetime.now(UTC))
        assert expired.snapshots_expired and expired.files_deleted
        stray = _stray_file(catalog)
        if stray is not None:
            removed = remove_orphan_files(catalog, TRADES.identifier, datetime.now(UTC) - MIN_ORPHAN_AGE)
            # only the stray goes: the rest unreferenced are young (checksum files of Spark's files expiry deleted)
            assert removed.deleted == 1 and not stray.exists() and removed.kept_too_young == removed.orphans - 1

    # and Spark reads what K2's upkeep left: in a session of its own, as a Spark job would (a catalog instance on
    # SQLite keeps reading the database as it was when it first read it)
    with spark_session(catalog.properties) as session:
        _spark_reads_as_k2_does(catalog, session)


def test_k2_and_spark_share_the_embedded_catalog(spark, kafka_broker, landing, tmp_path):
    _shared_with_spark(kafka_broker, tmp_path)


def test_k2_and_spark_share_the_production_catalog(spark, production, kafka_broker, landing, tmp_path):
    _shared_with_spark(kafka_broker, tmp_path)


def test_the_compact_job_hands_a_table_to_spark_and_proves_its_rows_unchanged(spark, kafka_broker, catalog, tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 3_000, set())
    trades = trades_target(topics.trades)
    drain_all(kafka_broker, trades, Limits(max_messages=150))  # many small files
    table = catalog.load_table(TRADES.identifier)
    rows, files = table.scan().to_arrow(), len(table.inspect.files())
    checkpoint = stored_checkpoint(table, topics.trades)

    result = compact_tables.execute_in_process(
        run_config={"ops": {"compact": {"config": {"tables": ["trades", "quotes"], "spark_tables": ["trades"]}}}},
        resources={"iceberg": IcebergCatalogResource()})

    assert result.success
    [event] = [e for e in result.all_node_events if e.is_successful_output and e.node_name == "compact"]
    by_spark, by_k2 = event.step_output_data.metadata["results"].value
    assert by_k2["table"] == QUOTES.identifier  # quotes stayed with K2's own compaction
    assert by_spark["files_before"] == files and by_spark["files_after"] < files
    assert by_spark["files_rewritten"] == files and by_spark["rows"] == rows.num_rows == counts["trades"]
    assert by_spark["checksum_before"] == by_spark["checksum_after"] == f"{content_checksum(rows):016x}"
    table = catalog.load_table(TRADES.identifier)
    assert table.snapshot_by_id(by_spark["snapshot_id"]).summary["engine-name"] == "spark"
    compacted = table.scan().to_arrow()
    assert content_checksum(compacted) == content_checksum(rows)
    for path in table.inspect.files()["file_path"].to_pylist():  # each file in the table's sort order
        keys = pq.read_table(table.io.new_input(path).open(), columns=["symbol", "timestamp"])
        assert keys.equals(keys.sort_by([("symbol", "ascending"), ("timestamp", "ascending")]))
    # the drain keeps its place
    assert stored_checkpoint(table, topics.trades).offsets == checkpoint.offsets
    [again] = drain_all(kafka_broker, trades)
    assert again.offsets_from == checkpoint.offsets and not again.messages


def test_spark_is_pointed_at_the_catalog_pyiceberg_is_configured_with():
    embedded = catalog_settings({"type": "sql", "uri": "sqlite:///file:/k2/catalog.db?mode=rw&uri=true&timeout=30",
                                 "warehouse": "file:///k2/warehouse"})
    assert embedded["spark.sql.catalog.k2.uri"] == "jdbc:sqlite:/k2/catalog.db"
    assert embedded["spark.sql.catalog.k2.warehouse"] == "file:///k2/warehouse"
    assert "spark.sql.catalog.k2.io-impl" not in embedded  # Hadoop's file system for a local warehouse
    production = catalog_settings({
        "type": "sql", "uri": "postgresql+psycopg2://k2:s3cr%40t@db.internal:6543/k2_catalog",
        "warehouse": "s3://lake/warehouse", "s3.endpoint": "http://s3.internal:9000", "s3.region": "eu-west-1",
        "s3.access-key-id": "key", "s3.secret-access-key": "secret", "s3.force-virtual-addressing": "false"})
    assert {key.removeprefix("spark.sql.catalog.k2."): value for key, value in production.items()}.items() >= {
        "uri": "jdbc:postgresql://db.internal:6543/k2_catalog", "jdbc.user": "k2", "jdbc.password": "s3cr@t",
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO", "s3.endpoint": "http://s3.internal:9000",
        "client.region": "eu-west-1", "s3.access-key-id": "key", "s3.secret-access-key": "secret",
        "s3.path-style-access": "true", "cache-enabled": "false"}.items()
    with pytest.raises(ValueError, match="SQL catalog"):
        catalog_settings({"type": "rest", "uri": "http://catalog.internal"})
