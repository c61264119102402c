"""Every environment variable K2 reads, with its type, default and meaning: read here and nowhere else.

`settings()` gives the typed, frozen values. It reads the environment on each call and caches by the values it read,
so a changed variable (a test's monkeypatch.setenv, the CLI setting DAGSTER_HOME) is seen at once, at the cost of a
dozen dictionary lookups. An empty variable counts as unset. Variables of other tools keep their own names: K2 reads
DAGSTER_HOME only for its default, and pyiceberg reads PYICEBERG_* itself."""

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

CHECKOUT = Path(__file__).resolve().parents[1]
SCHEMAS_DIR = CHECKOUT / "schemas"
LOOPBACK = "127.0.0.1"  # the local broker listens on loopback only


class Variable(NamedTuple):
    name: str
    type: type
    default: str  # what applies when the variable is unset, as a reader would write it
    doc: str


VARIABLES = (
    Variable("K2_HOME", Path, "<checkout>/.k2", "the directory K2 keeps all its state in"),
    Variable("K2_ASX_LANDING", Path, "$K2_HOME/landing/asx", "the folder ASX drops land in, watched by the sensor"),
    Variable("K2_ASX_FIRST_DAY", str, "2014-01-01", "the first ASX partition (a date), read when Dagster loads K2"),
    Variable("K2_KAFKA_BOOTSTRAP_SERVERS", str, "127.0.0.1:$K2_KAFKA_PORT",
             "Kafka's bootstrap.servers for K2's clients (a remote cluster); unset: the local broker"),
    Variable("K2_KAFKA_PORT", int, "9092", "the port of the local broker (`k2 kafka start`); its controller takes +1"),
    Variable("K2_KAFKA_LIBS", Path, "$K2_HOME/kafka/libs", "the local broker's jars, fetched once with Maven"),
    Variable("K2_SPARK_JARS", Path, "$K2_HOME/spark/jars",
             "what Spark needs beside pyspark's own jars for K2's tables (Iceberg, JDBC drivers), fetched with Maven"),
    Variable("K2_SCHEMA_REGISTRY_URL", str, "(the embedded registry)",
             "a Confluent-compatible Schema Registry; unset: schemas in $K2_HOME/schema-registry"),
    Variable("K2_PUSHGATEWAY_URL", str, "(no push)", "the Prometheus Pushgateway drain and ASX runs push metrics to"),
    Variable("K2_METRICS_DIR", Path, "$K2_HOME/metrics", "where upkeep jobs write their Prometheus textfiles"),
    Variable("K2_DRAIN_INTERVAL_SECONDS", int, "300",
             "a table with messages waiting is drained once its newest drain is this old, read when Dagster loads K2"),
    Variable("K2_API_KEYS_FILE", Path, "(no keys)",
             "the HTTP API's keys: a JSON file of key ids, SHA-256 hashes and scopes (`k2 api key`)"),
    Variable("K2_API_KEYS", str, "(no keys)", "the same JSON as K2_API_KEYS_FILE, inline (for a secret store)"),
    Variable("K2_API_TIME_LIMIT_SECONDS", float, "10", "the HTTP API's time limit per query (then 504)"),
    Variable("DAGSTER_HOME", Path, "$K2_HOME/dagster", "Dagster's own variable: its instance directory"),
)


@dataclass(frozen=True)
class Settings:
    home: Path
    asx_landing: Path
    asx_first_day: str
    kafka_bootstrap_servers: str
    kafka_port: int
    kafka_libs: Path
    spark_jars: Path
    schema_registry_url: str | None
    pushgateway_url: str | None
    metrics_dir: Path
    drain_interval_seconds: int
    api_keys_file: Path | None
    api_keys: str | None
    api_time_limit_seconds: float
    dagster_home: Path


def settings() -> Settings:
    # relative paths resolve against the working directory, so it is part of what the values are cached by
    return _settings_of(tuple(os.environ.get(variable.name) or None for variable in VARIABLES), os.getcwd())


@functools.lru_cache(maxsize=16)
def _settings_of(values: tuple[str | None, ...], working_dir: str) -> Settings:
    given = {variable.name: value for variable, value in zip(VARIABLES, values, strict=True)}
    home = Path(given["K2_HOME"] or CHECKOUT / ".k2").resolve()
    kafka_port = int(given["K2_KAFKA_PORT"] or 9092)
    return Settings(
        home=home,
        asx_landing=Path(given["K2_ASX_LANDING"] or home / "landing" / "asx").resolve(),
        asx_first_day=given["K2_ASX_FIRST_DAY"] or "2014-01-01",
        kafka_bootstrap_servers=given["K2_KAFKA_BOOTSTRAP_SERVERS"] or local_broker_address(kafka_port),
        kafka_port=kafka_port,
        kafka_libs=Path(given["K2_KAFKA_LIBS"] or home / "kafka" / "libs"),
        spark_jars=Path(given["K2_SPARK_JARS"] or home / "spark" / "jars"),
        schema_registry_url=given["K2_SCHEMA_REGISTRY_URL"],
        pushgateway_url=given["K2_PUSHGATEWAY_URL"],
        metrics_dir=Path(given["K2_METRICS_DIR"] or home / "metrics"),
        drain_interval_seconds=int(given["K2_DRAIN_INTERVAL_SECONDS"] or 300),
        api_keys_file=Path(given["K2_API_KEYS_FILE"]).resolve() if given["K2_API_KEYS_FILE"] else None,
        api_keys=given["K2_API_KEYS"],
        api_time_limit_seconds=float(given["K2_API_TIME_LIMIT_SECONDS"] or 10),
        dagster_home=Path(given["DAGSTER_HOME"] or home / "dagster").resolve(),
    )


def local_broker_address(port: int) -> str:
    return f"{LOOPBACK}:{port}"


def state_dir() -> Path:
    return settings().home


def landing_dir() -> Path:
    return settings().asx_landing


def dagster_home() -> Path:
    return settings().dagster_home


def bootstrap_servers() -> str:
    """Kafka's bootstrap.servers for K2's clients: a remote cluster's, else the local broker's."""
    return settings().kafka_bootstrap_servers
