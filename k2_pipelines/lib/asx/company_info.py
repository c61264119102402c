"""company_info.csv: the companies of a drop, validated line by line (it is small)."""

import csv
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from k2_pipelines.lib.asx.layouts import COMPANY_INFO_COLUMNS
from k2_pipelines.lib.asx.parse import UnreadableFileError, not_utf8

_DATE = re.compile(r"\d\d/\d\d/\d{4}")


@dataclass(frozen=True)
class CompanyRecord:
    company_id: str
    symbol: str
    company_name: str
    isin: str | None
    start_date: date | None
    end_date: date | None


def _date(text: str) -> date | None:
    if not text:
        return None
    if not _DATE.fullmatch(text):
        raise ValueError(text)
    return datetime.strptime(text, "%m/%d/%Y").date()


def _validate(fields: list[str]) -> CompanyRecord | tuple[str, str]:
    """The company a line describes, or (reason, detail) of why it does not."""
    if len(fields) != len(COMPANY_INFO_COLUMNS):
        reason = "missing_columns" if len(fields) < len(COMPANY_INFO_COLUMNS) else "extra_columns"
        return reason, f"{len(fields)} of {len(COMPANY_INFO_COLUMNS)} columns"
    company_id, symbol, name, isin, start, end = (f.strip() for f in fields)
    if not company_id.isdigit():
        return "bad_company_id", f"company_id={company_id!r}"
    if not symbol:
        return "missing_symbol", ""
    try:
        start_date, end_date = _date(start), _date(end)
    except ValueError as error:
        return "bad_date", f"{error.args[0]!r} is not MM/DD/YYYY"
    return CompanyRecord(company_id, symbol, name, isin or None, start_date, end_date)


def read_company_info(path: Path) -> tuple[list[CompanyRecord], list[dict]]:
    """(valid companies, rejects with line number, raw line, reason and detail)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise UnreadableFileError(path, f"cannot be read: {error}") from error
    if not lines or next(csv.reader([lines[0].decode("utf-8", "replace")])) != list(COMPANY_INFO_COLUMNS):
        raise UnreadableFileError(path, f"the header must be {','.join(COMPANY_INFO_COLUMNS)}")
    companies, rejects = [], []
    for number, raw in enumerate(lines[1:], start=2):
        line, problem = raw.decode("utf-8", "replace"), not_utf8(raw)
        outcome = ("not_utf8", problem) if problem else _validate(next(csv.reader([line]), []))
        if isinstance(outcome, CompanyRecord):
            companies.append(outcome)
        else:
            rejects.append(dict(line_number=number, raw_line=line, reason=outcome[0], detail=outcome[1]))
    return companies, rejects
