"""Spark sessions on K2's catalog: the Spark settings derived from pyiceberg's configuration of `k2`, so that Spark
sees the same tables K2 does (both are Iceberg JDBC catalogs: the same `iceberg_tables` rows, the same warehouse)."""

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from k2_pipelines.lib.iceberg.catalog import CATALOG_NAME
from k2_pipelines.lib.spark.jars import jar_paths

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
CATALOG_PREFIX = f"spark.sql.catalog.{CATALOG_NAME}"
# pyiceberg's S3 settings as Iceberg's S3FileIO names them (same values)
_S3_SETTINGS = {"s3.endpoint": "s3.endpoint", "s3.access-key-id": "s3.access-key-id",
                "s3.secret-access-key": "s3.secret-access-key", "s3.session-token": "s3.session-token",
                "s3.region": "client.region"}


def jdbc_settings(uri: str) -> dict[str, str]:
    """The Iceberg JdbcCatalog settings for a pyiceberg SQL catalog's SQLAlchemy `uri` (SQLite or PostgreSQL)."""
    url = make_url(uri)
    if url.get_backend_name() == "sqlite":
        database = (url.database or "").removeprefix("file:")  # K2's embedded uri is a SQLite URI filename
        if not database or database == ":memory:":
            raise ValueError(f"Spark needs the catalog in a file, not {uri!r}")
        # sqlite-jdbc's busy timeout (ms): Spark waits for a K2 commit's lock as K2 waits for Spark's
        return {"uri": f"jdbc:sqlite:{database}", "jdbc.busy_timeout": "30000"}
    if url.get_backend_name() == "postgresql":
        settings = {"uri": f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}"}
        if url.username:
            settings["jdbc.user"] = url.username
        if url.password:
            settings["jdbc.password"] = str(url.password)
        return settings
    raise ValueError(f"K2 sets Spark up for its SQL catalogs on SQLite or PostgreSQL, not {url.get_backend_name()}")


def catalog_settings(properties: Mapping[str, Any]) -> dict[str, str]:
    """Spark's settings for catalog `k2`, from the pyiceberg properties of K2's catalog (`catalog_properties()`)."""
    if properties.get("type", "sql") != "sql" or "uri" not in properties:
        raise ValueError("K2 sets Spark up for its SQL catalog (pyiceberg type sql with a uri)")
    # no table cache: K2 commits every drain and expires what it replaced, so a cached table goes stale, then unreadable
    settings = {"catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog", **jdbc_settings(str(properties["uri"])),
                "warehouse": str(properties["warehouse"]), "cache-enabled": "false"}
    if settings["warehouse"].startswith(("s3://", "s3a://")):
        settings["io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        settings.update({spark: str(properties[ours]) for ours, spark in _S3_SETTINGS.items() if ours in properties})
        if str(properties.get("s3.force-virtual-addressing", "")).lower() == "false":
            settings["s3.path-style-access"] = "true"
    return {CATALOG_PREFIX: "org.apache.iceberg.spark.SparkCatalog", "spark.sql.defaultCatalog": CATALOG_NAME,
            **{f"{CATALOG_PREFIX}.{key}": value for key, value in settings.items()}}


def session_settings(master: str = "local[1]") -> dict[str, str]:
    """What a Spark session for K2 needs at its start (not per catalog): the jars, Iceberg's SQL extensions (CALL),
    no Hive metastore or web UI, and a quiet driver log."""
    return {
        "spark.master": master,
        "spark.jars": ",".join(map(str, jar_paths())),
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}",
    }


def started_spark(master: str = "local[1]", extra: Mapping[str, str] | None = None) -> "SparkSession":
    """Spark in this process, started with K2's session settings unless it already runs."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession()
    if running is not None:
        return running
    builder = SparkSession.builder.appName("k2")
    for key, value in (session_settings(master) | dict(extra or {})).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@contextmanager
def spark_session(properties: Mapping[str, Any], master: str = "local[1]",
                  extra: Mapping[str, str] | None = None) -> Iterator["SparkSession"]:
    """A Spark session whose catalog `k2` is K2's catalog of `properties`. Spark already running in this process
    (a notebook's, a test module's) is used and left running; otherwise it is started here and stopped after."""
    from pyspark import SparkContext

    started_here = SparkContext._active_spark_context is None
    base = started_spark(master, extra)
    session = base.newSession()  # its own catalogs: two K2 catalogs in one process do not mix
    for key, value in catalog_settings(properties).items():
        session.conf.set(key, value)
    session.sql(f"USE {CATALOG_NAME}")  # the default catalog setting is read when a session starts
    try:
        yield session
    finally:
        if started_here:
            base.stop()
