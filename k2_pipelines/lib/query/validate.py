"""Query inputs checked and normalized before anything is read: every bad value is a QueryError with a clear message."""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)  # before any electronic market data K2 could hold
FUTURE_SLACK = timedelta(days=1)  # exchange clocks and time zones: nothing happened later than a day from now
# a year per query: an interactive query plans and reads the range's files; longer spans are backfill work
MAX_RANGE = timedelta(days=366)
MAX_LIMIT = 1_000_000  # rows returned at once (the result is held in memory, and printed by the CLI)
MAX_SYMBOLS = 100
SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,31}")  # exchange symbols: BTCUSDT, BHP, BRK.B, ES:H25
INTERVALS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
DURATION = re.compile(r"([0-9]{1,9})(us|ms|s|m|h)")  # 500ms, 5s, 1m: a whole number and a unit
DURATION_UNITS = {"us": timedelta(microseconds=1), "ms": timedelta(milliseconds=1), "s": timedelta(seconds=1),
                  "m": timedelta(minutes=1), "h": timedelta(hours=1)}
MAX_DURATION = timedelta(days=1)  # a tolerance or markout; what a query reads grows by it
ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]{0,31}(/[A-Za-z0-9_+\-]{1,32}){0,2}")  # IANA names, never a path
TABLE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # a table of the market_data namespace

# what the query API takes; the checks below refuse other values
Symbols = str | list[str] | tuple[str, ...]
Time = datetime | str  # naive datetimes are UTC
AsOfValue = int | str | datetime | None  # a snapshot id (or its digits), or a time
Position = tuple[Time, str]  # a row's event time and id: where a page ended
MAX_ID_LENGTH = 256


class QueryError(ValueError):
    """A query K2 cannot answer as asked; the message says why."""


class NotFound(QueryError):
    """The query names a table, symbol or snapshot K2 does not have."""


class QueryTimeout(QueryError):
    """The query ran past its time limit and was stopped."""


@dataclass(frozen=True)
class AsOf:
    """A past state of a table: a snapshot id, or the snapshot current at a time."""

    snapshot_id: int | None = None
    at: datetime | None = None


def timestamp(value: object, name: str) -> datetime:
    """An aware UTC datetime from a datetime (naive means UTC) or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise QueryError(f"{name} must be an ISO 8601 time such as 2025-03-03T00:00:00Z, not {_shown(value)}") \
                from None
    if not isinstance(value, datetime):
        raise QueryError(f"{name} must be a datetime or an ISO 8601 string, not {type(value).__name__}")
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is in year 0 in UTC
        raise QueryError(f"{name} ({_shown(value.isoformat())}) is outside the years a time can hold") from None


def time_range(start: object, end: object) -> tuple[datetime, datetime]:
    """[start, end) in UTC, within the years K2 can hold and at most MAX_RANGE long."""
    start, end = timestamp(start, "start"), timestamp(end, "end")
    if end <= start:
        raise QueryError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    if start < EARLIEST:
        raise QueryError(f"start ({start.isoformat()}) is before {EARLIEST.year}: K2 holds no data that old")
    latest = datetime.now(UTC) + FUTURE_SLACK
    if end > latest:
        raise QueryError(f"end ({end.isoformat()}) is in the future (after {latest.isoformat(timespec='seconds')})")
    if end - start > MAX_RANGE:
        raise QueryError(f"the range {start.isoformat()} .. {end.isoformat()} is longer than {MAX_RANGE.days} days; "
                         "query it a year at a time")
    return start, end


def day_bounds(day: object, time_zone: object) -> tuple[datetime, datetime]:
    """[midnight, next midnight) of a calendar day in a time zone, in UTC (23 or 25 hours apart across a DST change)."""
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            raise QueryError(f"the day must be an ISO 8601 date such as 2025-03-03, not {_shown(day)}") from None
    if isinstance(day, datetime) or not isinstance(day, date):
        raise QueryError(f"the day must be a date or an ISO 8601 date string, not {_shown(day)}")
    zone = zone_info(time_zone)
    if day.year == date.max.year:  # its next midnight is past what a datetime holds; time_range refuses it anyway
        raise QueryError(f"the day ({day.isoformat()}) is in the future")
    try:
        return datetime.combine(day, time(), zone).astimezone(UTC), \
            datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    except OverflowError:  # a midnight of year 1 east of UTC is in year 0
        raise QueryError(f"the day ({day.isoformat()}) is before {EARLIEST.year}: K2 holds no data that old") from None


def zone_info(value: object) -> ZoneInfo:
    """An IANA time zone such as UTC or Australia/Sydney."""
    if isinstance(value, str) and ZONE.fullmatch(value):
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones, such as America
            pass
    raise QueryError(f"{_shown(value)} is not an IANA time zone such as UTC or Australia/Sydney")


def symbols(value: object) -> list[str]:
    """One symbol or a list of them, each shaped like an exchange symbol (whether the table has it is checked later)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise QueryError("give at least one symbol")
    if len(names) > MAX_SYMBOLS:
        raise QueryError(f"at most {MAX_SYMBOLS} symbols per query, not {len(names)}")
    for name in names:
        if not isinstance(name, str) or not SYMBOL.fullmatch(name):
            raise QueryError(f"{_shown(name)} is not a symbol (letters, digits and . _ : / -, at most 32 characters)")
    return sorted(set(names))


def limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"limit must be a whole number, not {_shown(value)}")
    if not 1 <= value <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT:,}, not {value:,}")
    return value


def position(value: object) -> tuple[datetime, str]:
    """A row's (event time, id), as a page of rows ended on it."""
    if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[1], str):
        raise QueryError(f"after must be a (time, id) pair, not {_shown(value)}")
    if not 0 < len(value[1]) <= MAX_ID_LENGTH or not value[1].isprintable():
        raise QueryError(f"after's id must be printable and at most {MAX_ID_LENGTH} characters, not {_shown(value[1])}")
    return timestamp(value[0], "after's time"), value[1]


def interval(value: str) -> timedelta:
    if value not in INTERVALS:
        raise QueryError(f"interval must be one of {', '.join(INTERVALS)}, not {_shown(value)}")
    return INTERVALS[value]


def duration(value: object, name: str) -> timedelta:
    """A duration from 0 to a day: a timedelta, or a whole number and a unit (us, ms, s, m, h) such as 500ms or 5s."""
    if isinstance(value, str):
        match = DURATION.fullmatch(value.strip())
        if match is None:
            raise QueryError(f"{name} must be a whole number and a unit (us, ms, s, m, h) such as 500ms or 5s, not "
                             f"{_shown(value)}")
        value = int(match[1]) * DURATION_UNITS[match[2]]
    if not isinstance(value, timedelta):
        raise QueryError(f"{name} must be a timedelta or a string such as 5s, not {type(value).__name__}")
    if not timedelta(0) <= value <= MAX_DURATION:
        raise QueryError(f"{name} must be between 0 and {MAX_DURATION.days} day, not {_shown(str(value))}")
    return value


def table(value: object) -> str:
    if not isinstance(value, str) or not TABLE.fullmatch(value):
        raise QueryError(f"{_shown(value)} is not a table name such as trades, quotes or ohlcv_1m")
    return value


def as_of(value: object) -> AsOf | None:
    """None (the current snapshot), a snapshot id (int or digits), or a time (datetime or ISO 8601)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return AsOf(snapshot_id=value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        return AsOf(snapshot_id=int(value))
    if isinstance(value, (str, datetime)):
        try:
            return AsOf(at=timestamp(value, "as_of"))
        except QueryError:
            raise QueryError(f"as_of must be a snapshot id or an ISO 8601 time, not {_shown(value)}") from None
    raise QueryError(f"as_of must be a snapshot id or an ISO 8601 time, not {type(value).__name__}")


def _shown(value: object) -> str:
    """The value as an error message quotes it: printable and short, whatever it holds."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
