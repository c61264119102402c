"""K2 in its production shape: the `k2` catalog in PostgreSQL with its warehouse in an S3 server, and the Dagster
instance (docker/dagster.yaml) storing its runs in PostgreSQL. The same code as the embedded defaults, configured
only through pyiceberg's and Dagster's own settings."""

from datetime import UTC, datetime

import yaml
from pyiceberg.catalog.sql import SqlCatalog

from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import QUOTES, TRADES
from k2_pipelines.lib.upkeep.compaction import compact_table
from k2_pipelines.lib.upkeep.expiry import expire_snapshots
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE, remove_orphan_files
from k2_pipelines.lib.upkeep.table_files import TableFiles
from k2_pipelines.settings import CHECKOUT
from k2_pipelines_tests.conftest import SAMPLE_DAYS
from k2_pipelines_tests.helpers import lines_by_date, run_asx_load, scan
from k2_pipelines_tests.kafka_helpers import unique_topics
from k2_pipelines_tests.recovery_helpers import drain_run, produce, resources

DAYS = [d.isoformat() for d in trading_days(DEFAULT_START, SAMPLE_DAYS)]


def _catalog_on_postgres() -> SqlCatalog:
    catalog = load_k2_catalog()
    assert isinstance(catalog, SqlCatalog) and catalog.engine.dialect.name == "postgresql"
    return catalog


def _data_files(catalog, identifier: str) -> set[str]:
    return set(catalog.load_table(identifier).inspect.files()["file_path"].to_pylist())


def test_the_asx_load_runs_on_postgres_and_s3(production, landing):
    assert type(production.instance.run_storage).__name__ == "PostgresRunStorage"

    result = run_asx_load(DAYS[0], DAYS[-1], instance=production.instance)

    assert result.success and production.run_status(result.run_id) == "SUCCESS"
    catalog = _catalog_on_postgres()
    for kind, definition in (("trades", TRADES), ("quotes", QUOTES)):
        rows = scan(catalog, definition.identifier)
        assert rows.num_rows == sum(lines_by_date(landing / kind).values())
        files = _data_files(catalog, definition.identifier)
        assert files and files <= production.objects(f"warehouse/market_data/{definition.name}/data/")
    table = catalog.load_table(TRADES.identifier)
    assert table.metadata_location in production.objects("warehouse/market_data/trades/metadata/")

    # orphan removal lists the table through S3: a stray upload from a killed writer goes, nothing else
    stray = f"{production.bucket}/warehouse/market_data/trades/data/stray.parquet"
    with production.s3.open_output_stream(stray) as out:
        out.write(b"left by a killed writer")
    listed = production.objects("warehouse/market_data/trades/")
    removed = remove_orphan_files(catalog, TRADES.identifier, datetime.now(UTC) - MIN_ORPHAN_AGE)
    assert (removed.files_scanned, removed.orphans, removed.deleted) == (len(listed), 1, 1)  # the S3 clock: old
    assert production.objects("warehouse/market_data/trades/") == listed - {f"s3://{stray}"}
    assert scan(catalog, TRADES.identifier).num_rows == sum(lines_by_date(landing / "trades").values())


def test_drains_commit_exactly_once_on_postgres_and_s3(production, kafka_broker, tmp_path):
    topics = unique_topics()
    drain_resources = resources(kafka_broker, topics)
    first = produce(kafka_broker, topics, tmp_path, 1_500, seed=21)

    result = drain_run(production.instance, drain_resources)

    assert result.success and production.run_status(result.run_id) == "SUCCESS"
    catalog = _catalog_on_postgres()
    assert scan(catalog, TRADES.identifier).num_rows == first["trades"]
    assert scan(catalog, QUOTES.identifier).num_rows == first["quotes"]

    # the offsets committed with the rows (snapshot summaries, in S3) let the next drain take only what is new
    second = produce(kafka_broker, topics, tmp_path, 1_000, seed=22)
    again = drain_run(production.instance, drain_resources)
    assert again.success and production.run_status(again.run_id) == "SUCCESS"
    for definition, kind in ((TRADES, "trades"), (QUOTES, "quotes")):
        assert scan(catalog, definition.identifier).num_rows == first[kind] + second[kind]
        files = _data_files(catalog, definition.identifier)
        assert files <= production.objects(f"warehouse/market_data/{definition.name}/data/")

    # compaction merges the two drains' files through the S3 file system, rows unchanged
    before = scan(catalog, TRADES.identifier).sort_by("trade_id")
    compacted = compact_table(catalog, TRADES.identifier)
    assert compacted.files_after < compacted.files_before
    assert scan(catalog, TRADES.identifier).sort_by("trade_id").equals(before)
    assert _data_files(catalog, TRADES.identifier) <= production.objects("warehouse/market_data/trades/data/")

    # expiry deletes, from S3, the files only the expired snapshots referenced: what is left is what is referenced
    expired = expire_snapshots(catalog, TRADES.identifier, datetime.now(UTC))
    assert expired.snapshots_expired and expired.files_deleted
    table = catalog.load_table(TRADES.identifier)
    referenced = set(TableFiles(table.io).referenced(table.metadata, table.metadata_location))
    assert production.objects("warehouse/market_data/trades/") == referenced
    assert scan(catalog, TRADES.identifier).sort_by("trade_id").equals(before)


def test_the_production_instance_schedules_runs_as_the_embedded_one():
    embedded, production = (yaml.safe_load((CHECKOUT / path).read_text()) for path in ("dagster.yaml",
                                                                                        "docker/dagster.yaml"))
    assert "storage" not in embedded and set(production.pop("storage")) == {"postgres"}
    assert production == embedded  # the same coordinator, tag limits, pools, run monitoring and retries
