import pyarrow as pa
import pytest
from pyiceberg.exceptions import CommitFailedException

from k2_pipelines.lib.atomic_commit import commit_atomically
from k2_pipelines.lib.tables import REFERENCE_DATA, REJECTS, ensure_tables
from k2_pipelines_tests.helpers import scan


def _reject(reason: str) -> pa.Table:
    return pa.Table.from_pylist(
        [dict(source="test", partition_key=None, source_file="f", line_number=1, raw_line="x", reason=reason, detail=None,
              run_id="r", rejected_at=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py())],
        schema=REJECTS.schema().as_arrow(),
    )


def _reference(symbol: str) -> pa.Table:
    return pa.Table.from_pylist(
        [dict(message_id="m", company_id="1", symbol=symbol, exchange="X", asset_class="equities", company_name="n",
              isin=None, currency=None, listing_date=None, delisting_date=None, is_active=True,
              ingestion_timestamp=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(), vendor_data=None)],
        schema=REFERENCE_DATA.schema().as_arrow(),
    )


def test_two_tables_commit_together(catalog):
    rejects, reference = catalog.load_table(REJECTS.identifier), catalog.load_table(REFERENCE_DATA.identifier)
    t1, t2 = rejects.transaction(), reference.transaction()
    t1.append(_reject("a"))
    t2.append(_reference("AAA"))
    commit_atomically(catalog, [t1, t2])
    assert scan(catalog, REJECTS.identifier).num_rows == 1 and scan(catalog, REFERENCE_DATA.identifier).num_rows == 1


def test_a_conflict_on_one_table_commits_neither(catalog):
    rejects, reference = catalog.load_table(REJECTS.identifier), catalog.load_table(REFERENCE_DATA.identifier)
    t1, t2 = rejects.transaction(), reference.transaction()
    t1.append(_reject("mine"))
    t2.append(_reference("MINE"))
    reference.append(_reference("THEIRS"))  # another writer moves one of the tables meanwhile
    with pytest.raises(CommitFailedException):
        commit_atomically(catalog, [t1, t2])
    assert scan(catalog, REJECTS.identifier).num_rows == 0
    assert scan(catalog, REFERENCE_DATA.identifier)["symbol"].to_pylist() == ["THEIRS"]


def test_tables_are_created_once_with_their_partitioning(catalog):
    again = ensure_tables(catalog)
    trades = again["trades"]
    assert [(f.name, str(f.transform)) for f in trades.spec().fields] == [("timestamp_day", "day"), ("exchange", "identity")]
    assert str(trades.schema().find_field("price").field_type) == "decimal(18, 8)"
    assert str(trades.schema().find_field("timestamp").field_type) == "timestamptz"
    assert len(catalog.list_tables("market_data")) == 4
