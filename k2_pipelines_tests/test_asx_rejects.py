import pyarrow.compute as pc
import pytest

from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.iceberg.tables import REJECTS, TRADES
from k2_pipelines_tests.helpers import lines_by_date, run_asx_load, scan

DAY = DEFAULT_START.isoformat()
D = DEFAULT_START.strftime("%m/%d/%Y")
GOOD = f"{D},10:00:01.120,36.667,20000,3,X,"

# (bad line, reason): one of each kind of bad row
BAD_LINES = [
    (f"{D},10:00:02.000,abc,100,0,,", "price_not_a_number"),
    (f"{D},10:00:03.000,36.6,1x0,0,,", "quantity_not_a_number"),
    (f"{D},10:00:04.000,-1.5,100,0,,", "price_not_positive"),
    (f"{D},10:00:05.000,0,100,0,,", "price_not_positive"),
    (f"{D},10:00:06.000,36.6,0,0,,", "quantity_not_positive"),
    (f"{D},10:00:07.000,1.123456789,100,0,,", "price_too_many_decimals"),
    (f"{D},10:00:08.000,12345678901.5,100,0,,", "price_out_of_range"),
    (f"{D},10:00:09.000,36.6", "missing_columns"),
    (f"{D},10:00:10.000,36.6,100,0,,,extra", "extra_columns"),
    (f"{DEFAULT_START.strftime('%m')}/32/2014,10:00:11.000,36.6,100,0,,", "bad_date"),
    (f"{D},10:61:00.000,36.6,100,0,,", "bad_time"),
    (f"{D},10:00:12,36.6,100,0,,", "bad_time"),
    (f"{D},10:00:13.000,36.6,100,x3,,", "bad_qualifiers"),
    ("", "empty_line"),
]


def _write(path, lines):
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())


def test_every_kind_of_bad_row_lands_in_rejects_with_its_reason(catalog, landing):
    path = landing / "trades" / "7078.csv"
    good_lines = [GOOD.replace("10:00:01.120", f"10:00:{i:02d}.500") for i in range(30)]
    lines = good_lines[:15] + [line for line, _ in BAD_LINES] + good_lines[15:]
    _write(path, lines)
    result = run_asx_load(DAY)

    rejects = scan(catalog, REJECTS.identifier).filter(
        pc.equal(scan(catalog, REJECTS.identifier)["source"], "asx_trades")
    )
    by_line = {row["line_number"]: row for row in rejects.to_pylist()}
    for offset, (line, reason) in enumerate(BAD_LINES):
        number = 16 + offset
        assert by_line[number]["reason"] == reason, line
        assert by_line[number]["raw_line"] == line
        assert by_line[number]["source_file"] == str(path)
        assert by_line[number]["partition_key"] == DAY
        assert by_line[number]["run_id"] == result.run_id
    assert len(by_line) == len(BAD_LINES)

    # the good neighbours all landed
    trades = scan(catalog, TRADES.identifier)
    bhp = trades.filter(pc.equal(trades["symbol"], "BHP"))
    assert bhp.num_rows == len(good_lines)
    metadata = next(e for e in result.get_asset_materialization_events()
                    if e.asset_key.to_user_string() == "asx_trades")
    counts = metadata.materialization.metadata["rejects_by_reason"].value
    assert sum(counts.values()) == len(BAD_LINES) and counts["price_not_positive"] == 2
    assert metadata.materialization.metadata["rows_rejected"].value == len(BAD_LINES)


def test_rejects_are_replaced_on_reload(catalog, landing):
    _write(landing / "trades" / "7078.csv", [GOOD, BAD_LINES[0][0]])
    run_asx_load(DAY)
    run_asx_load(DAY)
    rejects = scan(catalog, REJECTS.identifier)
    assert rejects.num_rows == 1
    _write(landing / "trades" / "7078.csv", [GOOD])  # fixed at the source
    run_asx_load(DAY)
    assert scan(catalog, REJECTS.identifier).num_rows == 0


def test_bad_date_rows_belong_to_the_day_around_them(catalog, landing):
    days = trading_days(DEFAULT_START, 2)
    second = days[1].strftime("%m/%d/%Y")
    _write(
        landing / "trades" / "7078.csv", [GOOD, f"{second},10:00:00.000,1,1,0,,", "garbage-date,10:00:00.000,1,1,0,,"]
    )
    run_asx_load(DAY)
    assert scan(catalog, REJECTS.identifier).num_rows == 0  # the bad line follows a row of the second day
    run_asx_load(days[1].isoformat())
    assert scan(catalog, REJECTS.identifier)["partition_key"].to_pylist() == [days[1].isoformat()]


def test_unknown_company_rows_are_rejected(catalog, landing):
    _write(landing / "trades" / "9999.csv", [GOOD, GOOD])
    run_asx_load(DAY)
    rejects = scan(catalog, REJECTS.identifier)
    assert rejects["reason"].to_pylist() == ["unknown_company", "unknown_company"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe" + GOOD.encode() + b"\r\n", "no line is UTF-8 text"),
        (b"a,b,c\r\nd,e,f\r\n", "no line has the 7 columns"),
    ],
)
def test_unreadable_file_fails_the_run_and_writes_nothing(catalog, landing, content, message):
    run_asx_load(DAY)
    before = catalog.load_table(TRADES.identifier).metadata_location
    rejects_before = catalog.load_table(REJECTS.identifier).metadata_location
    bad = landing / "trades" / "7181.csv"
    bad.write_bytes(content)
    result = run_asx_load(DAY, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == "asx_trades")
    assert (
        str(bad) in failure.event_specific_data.error.message and message in failure.event_specific_data.error.message
    )
    assert catalog.load_table(TRADES.identifier).metadata_location == before
    assert catalog.load_table(REJECTS.identifier).metadata_location == rejects_before
    assert lines_by_date(landing / "quotes")  # the drop itself is untouched


def test_a_line_that_is_not_utf8_is_rejected_alone(catalog, landing):
    """One bad byte (in a column no rule reads, in a price, in a line of the wrong width, in company info) costs its
    line only: the rest of each file loads."""
    info = landing / "company_info.csv"
    info.write_bytes(info.read_bytes() + b"9998,BAD,Caf\xe9 Ltd,,01/01/2000,\n")
    good = [GOOD.replace("10:00:01.120", f"10:00:{i:02d}.500").encode() for i in range(4)]
    bad = [f"{D},10:00:05.000,36.6,100,0,\xff,".encode("latin-1"), f"{D},10:00:06.000,3\xe96,100,0,,".encode("latin-1"),
           f"{D},10:00:07.000,\xff".encode("latin-1")]
    path = landing / "trades" / "7078.csv"
    path.write_bytes(b"".join(line + b"\r\n" for line in [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3]]))
    run_asx_load(DAY)
    rejects = {(r["source"], r["line_number"]): r for r in scan(catalog, REJECTS.identifier).to_pylist()}
    company_line = len(info.read_bytes().splitlines())
    assert set(rejects) == {("asx_trades", 2), ("asx_trades", 4), ("asx_trades", 6),
                            ("asx_reference_data", company_line)}
    assert {r["reason"] for r in rejects.values()} == {"not_utf8"}
    assert rejects["asx_trades", 2]["detail"] == "byte 0xff at column 36 is not UTF-8"
    assert rejects["asx_trades", 4]["raw_line"] == f"{D},10:00:06.000,3\ufffd6,100,0,,"
    assert rejects["asx_trades", 6]["partition_key"] == DAY
    assert rejects["asx_reference_data", company_line]["raw_line"] == "9998,BAD,Caf\ufffd Ltd,,01/01/2000,"
    trades = scan(catalog, TRADES.identifier)
    assert trades.filter(pc.equal(trades["symbol"], "BHP")).num_rows == len(good)


def test_bad_company_info_lines_are_rejected_and_their_trades_too(catalog, landing):
    info = landing / "company_info.csv"
    lines = info.read_text().splitlines()
    bhp = next(i for i, line in enumerate(lines) if ",BHP," in line)
    lines[bhp] = lines[bhp].replace("01/01/2000", "2000-01-01")
    lines.append("12x,BAD,Bad Ltd,,01/01/2000,")
    info.write_text("\n".join(lines) + "\n")
    run_asx_load(DAY)
    rejects = scan(catalog, REJECTS.identifier).to_pylist()
    reference = {(r["line_number"], r["reason"]) for r in rejects if r["source"] == "asx_reference_data"}
    assert reference == {(bhp + 1, "bad_date"), (len(lines), "bad_company_id")}
    trade_reasons = {r["reason"] for r in rejects if r["source"] == "asx_trades"}
    assert trade_reasons == {"unknown_company"}  # BHP's trades wait for a valid company line, they are not lost
    trade_rejects = [r for r in rejects if r["source"] == "asx_trades"]
    assert len(trade_rejects) + scan(catalog, TRADES.identifier).num_rows == lines_by_date(landing / "trades")[DAY]


def test_quote_rows_are_validated_column_by_column(catalog, landing):
    good = f"{D},10:00:01.120,1.11,1.18,10300,3667"
    bad = [
        (f"{D},10:00:02.000,x,1.18,10,10", "bid_price_not_a_number"),
        (f"{D},10:00:03.000,1.11,0,10,10", "ask_price_not_positive"),
        (f"{D},10:00:04.000,1.11,1.18,-5,10", "bid_quantity_negative"),
        (f"{D},10:00:05.000,1.11,1.18,10,1.000000001", "ask_quantity_too_many_decimals"),
    ]
    zero_size = f"{D},10:00:06.000,1.11,1.18,0,0"  # an empty side of the book is legal
    _write(landing / "quotes" / "7078.csv", [good] + [line for line, _ in bad] + [zero_size])
    run_asx_load(DAY)
    rejects = scan(catalog, REJECTS.identifier)
    quote_rejects = rejects.filter(pc.equal(rejects["source"], "asx_quotes")).to_pylist()
    assert [(r["line_number"], r["reason"]) for r in sorted(quote_rejects, key=lambda r: r["line_number"])] == [
        (i + 2, reason) for i, (_, reason) in enumerate(bad)]
    quotes = scan(catalog, "market_data.quotes")
    assert quotes.filter(pc.equal(quotes["symbol"], "BHP")).num_rows == 2
