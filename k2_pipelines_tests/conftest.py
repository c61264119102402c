from pathlib import Path

import pytest

from k2_pipelines.dev.broker import Broker, free_port
from k2_pipelines.lib.asx.sample import generate
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import ensure_tables
from k2_pipelines.settings import settings

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
