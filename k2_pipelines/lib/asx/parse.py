"""Vectorized parsing and validation of ASX landing files into v2 rows plus rejects with their reasons.

Every line of a file ends up either as a v2 row or as a reject (line number, raw line, reason): nothing is dropped.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv

from k2_pipelines.lib.asx.fixed_width import parse_dates, parse_times
from k2_pipelines.lib.asx.layouts import CURRENCY, EXCHANGE, TIMEZONE, CsvLayout, NumericColumn

MICROS_PER_DAY = 86_400_000_000
DECIMAL = pa.decimal128(18, 8)
# at most 10 integer digits and 8 decimals: exactly what decimal(18,8) holds
_VALID_NUMBER = re.compile(r"\d{1,10}(\.\d{1,8})?")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_QUALIFIERS = r"^\d*$"


class UnreadableFileError(Exception):
    """A landing file that cannot be read at all; nothing from it may be written."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True)
class Company:
    company_id: str
    symbol: str


@dataclass
class ParsedFile:
    path: Path
    # v2 columns without message_id and ingestion_timestamp (set by the load); None: unknown company
    rows: pa.Table | None
    rejects: list[dict]  # line_number, raw_line, reason, detail, trading_day
    trading_days: np.ndarray  # days since epoch of each row in `rows`


def _read_strings(path: Path, data: bytes, columns: tuple[str, ...]) -> tuple[pa.Table, list[csv.InvalidRow]]:
    wrong_width: list[csv.InvalidRow] = []

    def keep_aside(row: csv.InvalidRow) -> str:
        wrong_width.append(row)
        return "skip"

    try:
        table = csv.read_csv(
            pa.BufferReader(data),
            # row numbers of bad lines are only known when parsing in one thread
            read_options=csv.ReadOptions(column_names=list(columns), use_threads=False, block_size=64 << 20),
            parse_options=csv.ParseOptions(invalid_row_handler=keep_aside, ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=False,
                quoted_strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as error:
        raise UnreadableFileError(path, f"cannot be read as an ASX CSV file: {error}") from error
    if table.num_rows == 0 and wrong_width:
        counts = sorted({row.actual_columns for row in wrong_width})
        raise UnreadableFileError(
            path, f"no line has the {len(columns)} columns of {','.join(columns)} (lines have {counts} columns)"
        )
    return table, wrong_width


def not_utf8(line: bytes) -> str | None:
    """What makes `line` not UTF-8, or None when it is."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"byte 0x{line[error.start]:02x} at column {error.start + 1} is not UTF-8"
    return None


def _utf8_lines(path: Path, data: bytes) -> tuple[bytes, dict[int, str]]:
    """`data` with each byte that is not UTF-8 replaced (U+FFFD), so that one bad byte costs its line alone, and
    what is wrong with each line that held one, by line number."""
    if data.isascii() or not_utf8(data) is None:  # isascii: no copy of a large file in the usual case
        return data, {}
    lines = data.split(b"\n")
    problems = {number: problem for number, line in enumerate(lines, start=1) if (problem := not_utf8(line))}
    if len(problems) == sum(1 for line in lines if line.strip()):
        raise UnreadableFileError(path, "no line is UTF-8 text")
    return data.decode("utf-8", "replace").encode(), problems


def _line_starts(data: bytes) -> np.ndarray:
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return np.concatenate(([0], newlines + 1))


def raw_lines(data: bytes, line_numbers: list[int]) -> list[str]:
    starts = _line_starts(data)
    lines = []
    for number in line_numbers:
        end = starts[number] if number < len(starts) else len(data)
        lines.append(data[starts[number - 1] : end].rstrip(b"\r\n").decode("utf-8", "replace"))
    return lines


def _classify_number(column: NumericColumn, value: str) -> tuple[str, str]:
    name = column.target
    detail = f"{column.source}={value!r}"
    if not _NUMBER.fullmatch(value):
        return f"{name}_not_a_number", detail
    if "." in value and len(value.split(".")[1]) > 8:
        return f"{name}_too_many_decimals", detail
    if len(value.lstrip("-").split(".")[0].lstrip("0")) > 10:
        return f"{name}_out_of_range", detail
    return f"{name}_{'negative' if column.allow_zero else 'not_positive'}", detail


def classify(layout: CsvLayout, values: dict[str, str], date_ok: bool, time_ok: bool) -> tuple[str, str]:
    """The first reason a parsed row is bad, and the offending value."""
    if not any(values.values()):
        return "empty_line", ""
    if not date_ok:
        return "bad_date", f"Date={values['Date']!r}"
    if not time_ok:
        return "bad_time", f"Time={values['Time']!r}"
    for column in layout.numeric:
        value = values[column.source]
        valid = _VALID_NUMBER.fullmatch(value)
        if not valid or (not column.allow_zero and float(value) == 0):
            return _classify_number(column, value)
    return "bad_qualifiers", f"Qualifiers={values.get('Qualifiers')!r}"


def attribute_days(days: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Give rows without a valid date the trading day of the nearest row before them (else after them)."""
    if known.all() or not known.any():
        return days
    positions = np.where(known, np.arange(len(days)), -1)
    np.maximum.accumulate(positions, out=positions)
    first_known = np.argmax(known)
    positions[positions < 0] = first_known
    return days[positions]


def _decimal(strings: pa.Array, valid: np.ndarray) -> pa.Array:
    """decimal(18,8) of the valid strings, 0 elsewhere (a string if_else costs more than all of this)."""
    if valid.all():
        return pc.cast(strings, DECIMAL)
    parsed = pa.concat_arrays([pc.cast(strings.filter(pa.array(valid)), DECIMAL), pa.array([0], DECIMAL)])
    return parsed.take(pa.array(np.where(valid, np.cumsum(valid) - 1, len(parsed) - 1)))


def repeated(value: str, n: int) -> pa.Array:
    """`value` n times, built directly as string buffers."""
    encoded = value.encode()
    offsets = np.arange(0, len(encoded) * (n + 1), len(encoded), dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(encoded * n))


def _vendor_data(table: pa.Table, layout: CsvLayout) -> pa.Array:
    """map<string,string> of the exchange-specific fields a row has (venue, buyer_id); null when it has none."""
    sources = [(source, key) for source, key in (("Venue", "venue"), ("BuyerID", "buyer_id"))
               if source in layout.columns]
    n = table.num_rows
    if not sources:
        return pa.nulls(n, pa.map_(pa.string(), pa.string()))
    values = [table[source].combine_chunks() for source, _ in sources]
    present = np.column_stack([pc.not_equal(v, "").to_numpy(zero_copy_only=False) for v in values])
    flat_index = (np.arange(len(sources)) * n + np.arange(n)[:, None])[present]  # row-major over (row, key)
    key_index = np.broadcast_to(np.arange(len(sources)), present.shape)[present]
    offsets = np.concatenate(([0], np.cumsum(present.sum(axis=1)))).astype(np.int32)
    items = pa.concat_arrays(values).take(pa.array(flat_index))
    keys = pa.array([key for _, key in sources]).take(pa.array(key_index))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, items, mask=pa.array(~present.any(axis=1)))


def _trade_conditions(qualifiers: pa.Array) -> pa.Array:
    present = pc.not_equal(qualifiers, "")
    offsets = np.concatenate(([0], np.cumsum(present.to_numpy(zero_copy_only=False)))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), qualifiers.filter(present))


def _v2_columns(
    layout: CsvLayout, company: Company, table: pa.Table, decimals: dict[str, pa.Array], line_numbers: np.ndarray,
    days: np.ndarray, micros: np.ndarray,
) -> dict[str, pa.Array]:
    n = table.num_rows
    local = pa.array(days * MICROS_PER_DAY + micros, pa.timestamp("us"))
    utc = pc.assume_timezone(local, timezone=TIMEZONE, ambiguous="earliest", nonexistent="earliest").cast(
        pa.timestamp("us", tz="UTC")
    )
    distinct_days, day_index = np.unique(days, return_inverse=True)
    prefixes = [f"{EXCHANGE}-{company.company_id}-{d.strftime('%Y%m%d')}"
                for d in distinct_days.astype("datetime64[D]").tolist()]
    ids = pc.binary_join_element_wise(pa.array(prefixes).take(day_index), pa.array(line_numbers).cast(pa.string()), "-")
    columns = {
        layout.id_field: ids,
        "symbol": repeated(company.symbol, n),
        "exchange": repeated(EXCHANGE, n),
        "asset_class": repeated("equities", n),
        "timestamp": utc,
    }
    columns.update(decimals)
    columns["currency"] = repeated(CURRENCY, n)
    if layout.kind == "trades":
        columns["side"] = repeated("UNKNOWN", n)  # ASX prints carry no aggressor side
        columns["trade_conditions"] = _trade_conditions(table["Qualifiers"].combine_chunks())
    columns["vendor_data"] = _vendor_data(table, layout)
    return columns


def parse_market_file(
    path: Path, layout: CsvLayout, company: Company | None, first_day: int, last_day: int
) -> ParsedFile:
    """Rows and rejects of `path` whose trading day (days since epoch, local) is within [first_day, last_day]."""
    data = path.read_bytes()
    readable, undecodable = _utf8_lines(path, data)
    table, wrong_width = _read_strings(path, readable, layout.columns)
    n = table.num_rows
    wrong_lines = np.array([row.number for row in wrong_width], dtype=np.int64)
    parsed_line = np.ones(n + len(wrong_width), dtype=bool)
    parsed_line[wrong_lines - 1] = False
    line_numbers = np.flatnonzero(parsed_line) + 1

    date_ok, days = parse_dates(table["Date"].combine_chunks())
    time_ok, micros = parse_times(table["Time"].combine_chunks())
    ok = date_ok & time_ok
    decimals = {}
    for column in layout.numeric:
        strings = table[column.source].combine_chunks()
        valid = pc.match_substring_regex(strings, f"^{_VALID_NUMBER.pattern}$").to_numpy(zero_copy_only=False)
        decimals[column.target] = _decimal(strings, valid)
        bound = pc.greater_equal if column.allow_zero else pc.greater
        valid &= bound(decimals[column.target], pa.scalar(0, DECIMAL)).to_numpy(zero_copy_only=False)
        ok &= valid
    if "Qualifiers" in layout.columns:
        ok &= pc.match_substring_regex(table["Qualifiers"], _QUALIFIERS).to_numpy(zero_copy_only=False)
    if undecodable:
        ok &= ~np.isin(line_numbers, list(undecodable))
    if company is None:
        ok[:] = False

    row_days = attribute_days(days, date_ok)
    in_range = (row_days >= first_day) & (row_days <= last_day)
    good = ok & in_range
    if good.all():
        good_table, good_decimals = table, decimals
    else:
        good_mask = pa.array(good)
        good_table = table.filter(good_mask)
        good_decimals = {name: values.filter(good_mask) for name, values in decimals.items()}
    rows = (pa.table(_v2_columns(layout, company, good_table, good_decimals, line_numbers[good], days[good],
                                 micros[good]))
            if company else None)

    rejects = []
    bad = np.flatnonzero(~ok & in_range)
    if len(bad):
        bad_values = table.take(pa.array(bad)).to_pylist()
        raw = raw_lines(data, line_numbers[bad].tolist())
        for position, values, raw_line in zip(bad.tolist(), bad_values, raw):
            if int(line_numbers[position]) in undecodable:
                reason, detail = "not_utf8", undecodable[int(line_numbers[position])]
            elif company is None:
                reason, detail = "unknown_company", f"{path.stem} is not in company_info.csv"
            else:
                reason, detail = classify(layout, values, bool(date_ok[position]), bool(time_ok[position]))
            rejects.append(dict(line_number=int(line_numbers[position]), raw_line=raw_line, reason=reason,
                                detail=detail, trading_day=int(row_days[position])))
    if len(wrong_lines):
        preceding = np.clip(np.searchsorted(line_numbers, wrong_lines) - 1, 0, None)
        wrong_days = row_days[preceding]  # _read_strings guarantees n > 0 here
        for row, day in zip(wrong_width, wrong_days.tolist()):
            if first_day <= day <= last_day:
                reason = "missing_columns" if row.actual_columns < len(layout.columns) else "extra_columns"
                detail = f"{row.actual_columns} of {len(layout.columns)} columns"
                if row.number in undecodable:
                    reason, detail = "not_utf8", undecodable[row.number]
                rejects.append(dict(line_number=row.number, raw_line=row.text, reason=reason, detail=detail,
                                    trading_day=day))
    return ParsedFile(path=path, rows=rows, rejects=rejects, trading_days=days[good])
