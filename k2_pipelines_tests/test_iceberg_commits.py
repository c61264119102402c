import pyarrow as pa
import pytest
from pyiceberg.exceptions import CommitFailedException

from k2_pipelines.lib.iceberg.commit import commit_atomically
from k2_pipelines.lib.iceberg.tables import ALL_TABLES, REFERENCE_DATA, REJECTS, TRADES, ensure_tables
from k2_pipelines.lib.iceberg.writes import append_files, write_rows
from k2_pipelines_tests.helpers import scan


def _reject(reason: str, source: str = "test") -> pa.Table:
    return pa.Table.from_pylist(
        [
            dict(
                source=source,
                partition_key=None,
                source_file="f",
                line_number=1,
                raw_line="x",
                reason=reason,
                detail=None,
                run_id="r",
                rejected_at=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
            )
        ],
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
    assert [(f.name, str(f.transform)) for f in trades.spec().fields] == [
        ("timestamp_day", "day"),
        ("exchange", "identity"),
    ]
    assert str(trades.schema().find_field("price").field_type) == "decimal(18, 8)"
    assert str(trades.schema().find_field("timestamp").field_type) == "timestamptz"
    assert sorted(name for _, name in catalog.list_tables("market_data")) == sorted(t.name for t in ALL_TABLES)


def test_racing_loads_neither_lose_nor_duplicate(catalog, landing):
    """Loads of different days (and trades vs quotes) commit to the same tables at once; lost races are re-planned."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import date

    import pyarrow.compute as pc

    from k2_pipelines.lib.asx.layouts import QUOTES as QUOTES_LAYOUT
    from k2_pipelines.lib.asx.layouts import TRADES as TRADES_LAYOUT
    from k2_pipelines.lib.asx.load import load_market_days
    from k2_pipelines.lib.iceberg.tables import QUOTES, TRADES
    from k2_pipelines_tests.helpers import lines_by_date

    days = [date(2014, 3, 10), date(2014, 3, 11), date(2014, 3, 12)]
    jobs = [(layout, day) for layout in (TRADES_LAYOUT, QUOTES_LAYOUT) for day in days] * 2
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: load_market_days(catalog, landing, job[0], job[1], job[1], "race"), jobs))
    assert max(r.commit.attempts for r in results) >= 1
    for identifier, kind in ((TRADES.identifier, "trades"), (QUOTES.identifier, "quotes")):
        rows = scan(catalog, identifier)
        assert rows.num_rows == sum(lines_by_date(landing / kind).values())
        assert pc.count_distinct(rows[f"{kind[:-1]}_id"]).as_py() == rows.num_rows


def test_tables_made_by_an_older_k2_take_the_definitions_properties(catalog):
    trades = catalog.load_table(TRADES.identifier)
    with trades.transaction() as transaction:
        transaction.remove_properties("write.parquet.dict-size-bytes")
    ensure_tables(catalog)
    assert catalog.load_table(TRADES.identifier).properties["write.parquet.dict-size-bytes"] == "65536"


def test_rows_in_chunks_some_empty_are_written_one_file_per_partition(catalog):
    """Tables put together from parts (concatenated, or read from several files) can hold empty chunks."""
    rows = pa.concat_tables([_reject("a").slice(0, 0), _reject("a", "asx"), _reject("b", "binance").slice(0, 0),
                             _reject("b", "binance"), _reject("c", "asx")])
    assert 0 in [batch.num_rows for batch in rows.to_batches()]
    files = write_rows(catalog, REJECTS.identifier, rows)
    transaction = catalog.load_table(REJECTS.identifier).transaction()
    append_files(transaction, files, {})
    transaction.commit_transaction()
    assert sorted(f.partition[0] for f in files) == ["asx", "binance"]
    written = scan(catalog, REJECTS.identifier)
    assert sorted(zip(written["source"].to_pylist(), written["reason"].to_pylist())) == [
        ("asx", "a"), ("asx", "c"), ("binance", "b")]
