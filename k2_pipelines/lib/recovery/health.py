"""Can K2 reach what it depends on? Each probe returns None when healthy, else why not (for an incident)."""

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pyiceberg.exceptions import NoSuchTableError
from sqlalchemy.exc import SQLAlchemyError

from k2_pipelines.lib.iceberg.catalog import CatalogUnavailable, load_k2_catalog
from k2_pipelines.lib.iceberg.tables import NAMESPACE, TRADES

PROBE_SECONDS = 5
# what an unreachable dependency raises (a run failing with one of these is worth a retry)
UNREACHABLE = (OSError, SQLAlchemyError, CatalogUnavailable, KafkaException)


def kafka_problem(bootstrap: str) -> str | None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": PROBE_SECONDS * 1000})
    try:
        admin.list_topics(timeout=PROBE_SECONDS)
    except KafkaException as error:
        return f"Kafka at {bootstrap} is unreachable: {error.args[0].str() if error.args else error}"
    return None


def catalog_problem() -> str | None:
    try:
        load_k2_catalog().list_tables(NAMESPACE)  # the catalog's database only, not the warehouse
    except UNREACHABLE as error:
        return f"the Iceberg catalog is unreachable: {type(error).__name__}: {error}"
    return None


def object_store_problem() -> str | None:
    """Loads the trades table, which reads its metadata file: the warehouse answers, or it does not."""
    try:
        load_k2_catalog().load_table(TRADES.identifier)
    except OSError as error:
        return f"the warehouse is unreachable: {type(error).__name__}: {error}"
    except (*UNREACHABLE, NoSuchTableError):
        return None  # the catalog's own probe reports that
    return None
