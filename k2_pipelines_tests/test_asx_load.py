import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import EqualTo

from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.iceberg.tables import QUOTES, REFERENCE_DATA, TRADES
from k2_pipelines.lib.iceberg.writes import replace_atomically, replacement
from k2_pipelines_tests.conftest import SAMPLE_DAYS, SAMPLE_SYMBOLS
from k2_pipelines_tests.helpers import lines_by_date, run_asx_load, scan

DAYS = [d.isoformat() for d in trading_days(DEFAULT_START, SAMPLE_DAYS)]


def _local_date_list(table: pa.Table) -> list[str]:
    return pc.strftime(
        table["timestamp"].cast(pa.timestamp("us", tz="Australia/Sydney")), format="%Y-%m-%d"
    ).to_pylist()


def _local_dates(table: pa.Table) -> dict[str, int]:
    return dict(Counter(_local_date_list(table)))


def test_backfill_over_several_days_loads_every_line_in_one_run(catalog, landing):
    result = run_asx_load(DAYS[0], DAYS[-1])
    assert result.success
    assert len(result.get_asset_materialization_events()) == 3 * len(DAYS)  # 3 assets x each day, one run

    for kind, identifier in (("trades", TRADES.identifier), ("quotes", QUOTES.identifier)):
        rows = scan(catalog, identifier)
        assert _local_dates(rows) == dict(lines_by_date(landing / kind))
        assert set(rows["symbol"].to_pylist()) == set(SAMPLE_SYMBOLS)
        assert rows["exchange"].unique().to_pylist() == ["ASX"]
    reference = scan(catalog, REFERENCE_DATA.identifier)
    assert sorted(reference["symbol"].to_pylist()) == sorted(SAMPLE_SYMBOLS)
    # one data file per Iceberg partition (UTC day, exchange) and trading date, not one per source file too
    rows = scan(catalog, TRADES.identifier)
    utc_days = pc.strftime(rows["timestamp"], format="%Y-%m-%d").to_pylist()
    groups = set(zip(utc_days, rows["exchange"].to_pylist(), _local_date_list(rows)))
    assert catalog.load_table(TRADES.identifier).inspect.files().num_rows == len(groups)


def test_values_are_converted_exactly(catalog, landing):
    first_line = (landing / "trades" / "7078.csv").read_bytes().split(b"\r\n")[0].decode()
    date, time, price, volume, qualifiers, venue, buyer = first_line.split(",")
    run_asx_load(DAYS[0])
    row = scan(catalog, TRADES.identifier, EqualTo("trade_id", f"ASX-7078-{DAYS[0].replace('-', '')}-1")).to_pylist()[0]
    local = datetime.strptime(f"{date} {time}", "%m/%d/%Y %H:%M:%S.%f")
    assert row["timestamp"] == (local - timedelta(hours=11)).replace(tzinfo=UTC)  # March 2014: AEDT, UTC+11
    assert row["price"] == Decimal(price) and row["quantity"] == Decimal(volume)
    assert row["symbol"] == "BHP" and row["currency"] == "AUD" and row["side"] == "UNKNOWN"
    assert row["trade_conditions"] == [qualifiers]
    assert dict(row["vendor_data"] or []) == {k: v for k, v in (("venue", venue), ("buyer_id", buyer)) if v}


def test_reload_replaces_instead_of_duplicating(catalog, landing):
    run_asx_load(DAYS[0], DAYS[-1])
    before = scan(catalog, TRADES.identifier)
    run_asx_load(DAYS[0], DAYS[-1])
    run_asx_load(DAYS[1])
    after = scan(catalog, TRADES.identifier)
    assert after.num_rows == before.num_rows
    assert pc.count_distinct(after["trade_id"]).as_py() == after.num_rows
    assert set(after["trade_id"].to_pylist()) == set(before["trade_id"].to_pylist())


def test_partition_reload_leaves_other_days_and_exchanges_alone(catalog, landing):
    run_asx_load(DAYS[0], DAYS[-1])
    other = scan(catalog, TRADES.identifier).slice(0, 1).to_pylist()[0] | {
        "exchange": "BINANCE",
        "symbol": "BTCUSDT",
        "trade_id": "BINANCE-1",
        "asset_class": "crypto",
        "currency": "USDT",
        "vendor_data": None,
    }
    binance = replacement(catalog, TRADES.identifier, pa.Table.from_pylist([other]), EqualTo("exchange", "BINANCE"))
    replace_atomically(catalog, [binance], {})
    untouched_day = scan(catalog, TRADES.identifier)
    untouched_ids = set(
        pc.filter(
            untouched_day["trade_id"], pc.match_substring(untouched_day["trade_id"], f"-{DAYS[0].replace('-', '')}-")
        ).to_pylist()
    )

    # the middle day loses half of one company's trades in a new drop: that day is reloaded, and only it
    path = landing / "trades" / "7458.csv"
    middle = datetime.fromisoformat(DAYS[1]).strftime("%m/%d/%Y").encode()
    lines = path.read_bytes().split(b"\r\n")[:-1]
    path.write_bytes(
        b"".join(line + b"\r\n" for i, line in enumerate(lines) if not (line.startswith(middle) and i % 2))
    )
    result = run_asx_load(DAYS[1])
    after = scan(catalog, TRADES.identifier)
    assert _local_dates(after.filter(pc.equal(after["exchange"], "ASX"))) == dict(lines_by_date(landing / "trades"))
    assert after.filter(pc.equal(after["exchange"], "BINANCE"))["trade_id"].to_pylist() == ["BINANCE-1"]
    assert untouched_ids <= set(after["trade_id"].to_pylist())
    trades = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "asx_trades"]
    assert trades[0].materialization.metadata["rows_written"].value == lines_by_date(landing / "trades")[DAYS[1]]


def test_commit_records_run_id_and_source_files(catalog, landing):
    result = run_asx_load(DAYS[0])
    summary = catalog.load_table(TRADES.identifier).current_snapshot().summary.additional_properties
    assert summary["k2.run-id"] == result.run_id
    sources = {entry["path"] for entry in json.loads(summary["k2.source-files"])}
    assert {str(p) for p in (landing / "trades").glob("*.csv")} <= sources


def test_materialization_metadata(catalog, landing):
    result = run_asx_load(DAYS[0])
    trades = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "asx_trades"]
    metadata = trades[0].materialization.metadata
    expected = lines_by_date(landing / "trades")[DAYS[0]]
    assert metadata["rows_written"].value == expected
    assert metadata["dagster/row_count"].value == expected
    assert metadata["rows_rejected"].value == 0
    assert metadata["snapshot_after"].value == catalog.load_table(TRADES.identifier).current_snapshot().snapshot_id
    assert metadata["snapshot_before"].value != metadata["snapshot_after"].value
    assert "price" in [c.name for c in metadata["dagster/column_schema"].schema.columns]


def test_reloading_a_date_drops_its_files_and_rewrites_no_other_rows(catalog, landing):
    import pyarrow.parquet as pq

    run_asx_load(DAYS[0], DAYS[-1])
    before = set(catalog.load_table(TRADES.identifier).inspect.files()["file_path"].to_pylist())
    run_asx_load(DAYS[1])
    after = set(catalog.load_table(TRADES.identifier).inspect.files()["file_path"].to_pylist())
    removed = before - after
    assert removed  # the date's old files are gone...
    for path in removed:  # ...and they held that date's rows only, so nothing else was rewritten
        assert set(_local_date_list(pq.read_table(path.removeprefix("file://")))) == {DAYS[1]}
    assert len(after - before) == len(removed)
