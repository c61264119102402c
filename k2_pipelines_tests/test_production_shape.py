"""K2 in its production shape: the `k2` catalog in PostgreSQL with its warehouse in an S3 server, and the Dagster
instance (docker/dagster.yaml) storing its runs in PostgreSQL. The same code as the embedded defaults, configured
only through pyiceberg's and Dagster's own settings."""

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import pyarrow.fs as pafs
import pytest
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
from k2_pipelines_tests.services import Postgres, S3Server, started_postgres, started_s3

DAYS = [d.isoformat() for d in trading_days(DEFAULT_START, SAMPLE_DAYS)]
S3_KEYS = {"access-key-id": "k2-test", "secret-access-key": "k2-test-secret", "region": "us-east-1"}


@pytest.fixture(scope="module")
def postgres() -> Postgres:
    server = started_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    server = started_s3(tmp_path_factory.mktemp("s3") / "server.log")
    yield server
    server.stop()


@dataclass
class Production:
    instance: dg.DagsterInstance
    postgres: Postgres
    dagster_db: str
    s3: pafs.S3FileSystem
    bucket: str

    def objects(self, prefix: str) -> set[str]:
        """Every object under s3://bucket/prefix, as the S3 server lists it."""
        listing = self.s3.get_file_info(pafs.FileSelector(f"{self.bucket}/{prefix}", recursive=True))
        return {f"s3://{info.path}" for info in listing if info.type == pafs.FileType.File}

    def run_status(self, run_id: str) -> str:
        """The run's status as the Dagster tables in PostgreSQL hold it (not through the instance's cache)."""
        return self.postgres.psql(f"SELECT status FROM runs WHERE run_id = '{run_id}'", self.dagster_db).strip()


@pytest.fixture
def production(k2_home, postgres, s3, monkeypatch) -> Production:
    name = f"k2_{uuid.uuid4().hex[:10]}"  # a catalog, an instance and a bucket of the test's own
    catalog_db, dagster_db = postgres.create_database(f"{name}_catalog"), postgres.create_database(f"{name}_dagster")
    bucket = name.replace("_", "-")
    # gofakes3 needs a Content-Length on uploads; the AWS SDK's default streaming checksums send chunked bodies
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    s3_client = pafs.S3FileSystem(endpoint_override=s3.endpoint, scheme="http", access_key=S3_KEYS["access-key-id"],
                                  secret_key=S3_KEYS["secret-access-key"], region=S3_KEYS["region"],
                                  allow_bucket_creation=True)
    s3_client.create_dir(bucket)
    settings = {"TYPE": "sql", "URI": postgres.url(catalog_db), "WAREHOUSE": f"s3://{bucket}/warehouse",
                "S3__ENDPOINT": s3.endpoint, "S3__FORCE_VIRTUAL_ADDRESSING": "false",
                **{f"S3__{key.upper().replace('-', '_')}": value for key, value in S3_KEYS.items()}}
    for key, value in settings.items():
        monkeypatch.setenv(f"PYICEBERG_CATALOG__K2__{key}", value)

    home = k2_home / "dagster"
    home.mkdir()
    shutil.copyfile(CHECKOUT / "docker" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for key, value in {"HOST": "127.0.0.1", "PORT": str(postgres.port), "USER": postgres.user,
                       "PASSWORD": postgres.password, "DB": dagster_db}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    with dg.DagsterInstance.get() as instance:
        yield Production(instance, postgres, dagster_db, s3_client, bucket)


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
