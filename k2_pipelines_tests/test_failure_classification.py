"""How the failed-run runbook reads a failure: from the chain of causes Dagster records, as it records them."""

import sys

import dagster as dg
from confluent_kafka import KafkaError, KafkaException
from dagster._core.errors import DagsterAssetCheckFailedError
from dagster._utils.error import serializable_error_info_from_exc_info
from sqlalchemy import create_engine, text

from k2_pipelines.defs.recovery.failures import BUG, POISON, QUALITY, TRANSIENT, classify
from k2_pipelines.lib.asx.company_info import read_company_info


def _recorded(action):
    """The error info Dagster keeps of what `action` raised, wrapped as the step boundary wraps user errors."""
    try:
        try:
            action()
        except Exception as error:
            raise dg.Failure(description=str(error)) from error
    except dg.Failure:
        return serializable_error_info_from_exc_info(sys.exc_info())
    raise AssertionError("nothing raised")


def _unreadable(tmp_path):
    path = tmp_path / "company_info.csv"
    path.write_bytes(b"\xff\xfe not a header")
    return lambda: read_company_info(path)


def _missing_database(tmp_path):
    database = tmp_path / "missing" / "catalog.db"
    return lambda: create_engine(f"sqlite:///file:{database}?mode=rw&uri=true").connect().execute(text("select 1"))


def _kafka_down():
    raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure"))


def _blocking_check_failed():
    raise DagsterAssetCheckFailedError("Blocking check 'unique_ids' for asset 'binance_trades' failed")


def test_each_kind_of_failure_is_read_from_its_causes(tmp_path):
    assert classify([("drain", _recorded(_kafka_down), {})]).kind == TRANSIENT
    assert classify([("drain", _recorded(_missing_database(tmp_path)), {})]).kind == TRANSIENT  # OperationalError
    poison = classify([("asx_reference_data", _recorded(_unreadable(tmp_path)), {"source_file": "x"})])
    assert poison.kind == POISON and "UnreadableFileError" in poison.error  # the file and why, not only the codec
    assert "company_info.csv: the header must be" in poison.error
    assert poison.metadata == {"source_file": "x"}
    assert classify([("drain", _recorded(lambda: {}["missing"]), {})]).kind == BUG
    assert classify([]).kind == BUG  # no recorded error is not a reason to retry


def test_the_most_specific_reading_wins_over_the_errors_it_caused():
    kafka, bug = _recorded(_kafka_down), _recorded(lambda: int("x", base=99))
    assert classify([("a", kafka, {}), ("b", bug, {})]).kind == BUG  # a bug is not retried away
    quality = _recorded(_blocking_check_failed)
    assert classify([("a", kafka, {}), ("check", quality, {})]).kind == QUALITY
