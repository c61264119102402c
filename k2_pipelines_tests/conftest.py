import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.fs as pafs
import pytest

from k2_pipelines.dev.broker import Broker, free_port
from k2_pipelines.lib.asx.sample import generate
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import ensure_tables
from k2_pipelines.settings import CHECKOUT, settings
from k2_pipelines_tests.services import Postgres, S3Server, started_postgres, started_s3

SAMPLE_SYMBOLS = ["BHP", "RIO", "MWR"]
SAMPLE_DAYS = 3
SAMPLE_TRADES = 6_000
KAFKA_LIBS = Broker.from_env().libs  # where `make test` fetched the jars, before any test changes K2_HOME
SPARK_JARS = settings().spark_jars  # likewise


def _running_broker(tmp_path_factory, name: str):
    broker = Broker(home=tmp_path_factory.mktemp(name), port=free_port(), libs=KAFKA_LIBS)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> Broker:
    """One real broker for the whole session; tests use unique topics."""
    yield from _running_broker(tmp_path_factory, "kafka")


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory) -> Broker:
    """A broker that a module's tests may stop and start without disturbing the session's."""
    yield from _running_broker(tmp_path_factory, "kafka-own")


@pytest.fixture
def k2_home(tmp_path, monkeypatch) -> Path:
    """A fresh state dir (catalog, warehouse, landing) for one test."""
    monkeypatch.setenv("K2_HOME", str(tmp_path / "k2"))
    monkeypatch.setenv("K2_SPARK_JARS", str(SPARK_JARS))
    monkeypatch.setenv("K2_ASX_LANDING", str(tmp_path / "landing"))
    monkeypatch.delenv("PYICEBERG_CATALOG__K2__URI", raising=False)
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))  # no user .pyiceberg.yaml
    return tmp_path


@pytest.fixture
def catalog(k2_home):
    catalog = load_k2_catalog()
    ensure_tables(catalog)
    return catalog


@pytest.fixture
def landing(k2_home) -> Path:
    path = k2_home / "landing"
    generate(path, SAMPLE_SYMBOLS, SAMPLE_DAYS, SAMPLE_TRADES, 1.5, seed=11)
    return path


@pytest.fixture
def rows_slip_past_the_rules(monkeypatch):
    """The write paths' row rules let every row through, as a rule with a bug would: what lands is then left to the
    blocking checks (which stop what is downstream, and the quality gate quarantines the rows they fail on)."""
    from k2_pipelines.lib.asx import load
    from k2_pipelines.lib.drain import drain

    monkeypatch.setattr(drain, "write_rules", lambda *args: [])
    monkeypatch.setattr(load, "row_rules", lambda checks: [])


# K2 in its production shape: the `k2` catalog in PostgreSQL with its warehouse in an S3 server, and the Dagster
# instance (docker/dagster.yaml) storing its runs in PostgreSQL
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
