"""company_info.csv: the companies of a drop, validated line by line (it is small)."""

import csv
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from k2_pipelines.lib.asx.layouts import COMPANY_INFO_COLUMNS
from k2_pipelines.lib.asx.parse import UnreadableFileError

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


def read_company_info(path: Path) -> tuple[list[CompanyRecord], list[dict]]:
    """(valid companies, rejects with line number, raw line, reason and detail)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableFileError(f"{path}: cannot be read: {error}") from error
    if not lines or next(csv.reader([lines[0]])) != list(COMPANY_INFO_COLUMNS):
        raise UnreadableFileError(f"{path}: the header must be {','.join(COMPANY_INFO_COLUMNS)}")
    companies, rejects = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])

        def reject(reason: str, detail: str = "") -> None:
            rejects.append(dict(line_number=number, raw_line=line, reason=reason, detail=detail))

        if len(fields) != len(COMPANY_INFO_COLUMNS):
            reject("missing_columns" if len(fields) < len(COMPANY_INFO_COLUMNS) else "extra_columns",
                   f"{len(fields)} of {len(COMPANY_INFO_COLUMNS)} columns")
            continue
        company_id, symbol, name, isin, start, end = (f.strip() for f in fields)
        if not company_id.isdigit():
            reject("bad_company_id", f"company_id={company_id!r}")
            continue
        if not symbol:
            reject("missing_symbol")
            continue
        try:
            start_date, end_date = _date(start), _date(end)
        except ValueError as error:
            reject("bad_date", f"{error.args[0]!r} is not MM/DD/YYYY")
            continue
        companies.append(CompanyRecord(company_id, symbol, name, isin or None, start_date, end_date))
    return companies, rejects
