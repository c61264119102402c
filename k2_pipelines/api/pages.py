"""A page of query rows and the cursor to the next one. The cursor is opaque to clients: the snapshot the first page
read (every page reads the same one, so pages never skip or repeat a row while drains commit), where the page ended
(time and id, or the next bar's start), and a fingerprint of the query it belongs to."""

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from k2_pipelines.query import Freshness, QueryError, result_freshness, result_snapshot

# a cursor this API gives is about 150 characters; the bound also keeps JSON nesting short of Python's recursion limit
MAX_CURSOR_LENGTH = 1_000


@dataclass(frozen=True)
class Cursor:
    query: str  # fingerprint of the query's parameters
    snapshot: int
    time: str  # ISO 8601: the last row's event time, or the next page's first bar start
    id: str | None  # the last row's id (None for bars)


@dataclass(frozen=True)
class Page:
    rows: pa.Table
    snapshot: int | None
    next_cursor: str | None = None
    fresh: Freshness | None = None  # a fresh read's tail: one page only (the tail moves on)
    limit_reached: bool = False  # a fresh page as long as its limit: there may be more rows than it holds


def fingerprint(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(cursor: Cursor) -> str:
    text = json.dumps([cursor.query, cursor.snapshot, cursor.time, cursor.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(text: str, query: str) -> Cursor:
    """The cursor `text` holds, if this API made it for the query `query`."""
    try:
        if len(text) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        fields = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        cursor = Cursor(*fields)
        valid = (isinstance(cursor.query, str) and isinstance(cursor.snapshot, int) and isinstance(cursor.time, str)
                 and (cursor.id is None or isinstance(cursor.id, str)))
    except (ValueError, TypeError):  # bad base64, JSON, or fields
        valid = False
    if not valid:
        raise QueryError("the cursor is not one this API gave; pass next_cursor from the previous page as it is")
    if cursor.query != query:
        raise QueryError("the cursor belongs to another query: keep the parameters of the page that gave it")
    return cursor


def fetched(limit: int, fresh: bool) -> int:
    """Rows to ask for a page of `limit`: one more, to know whether a next page starts; a fresh read has none."""
    return limit if fresh else limit + 1


def event_page(rows: pa.Table, limit: int, query: str, id_column: str) -> Page:
    """`rows`, queried with fetched(limit): the first `limit` rows, and a cursor after the last of them if there are
    more."""
    snapshot, fresh = result_snapshot(rows), result_freshness(rows)
    if fresh is not None:
        return Page(rows, snapshot, None, fresh, rows.num_rows >= limit)
    if rows.num_rows <= limit or snapshot is None:
        return Page(rows, snapshot)
    last = rows.slice(limit - 1, 1).to_pylist()[0]
    cursor = Cursor(query, snapshot, last["timestamp"].isoformat(), last[id_column])
    return Page(rows.slice(0, limit), snapshot, encode(cursor))


def bar_page(rows: pa.Table, limit: int, query: str) -> Page:
    """`rows` (bars), queried with fetched(limit): whole bar starts only (a bar start's bars never split across
    pages), and a cursor from the first bar start left out."""
    snapshot, fresh = result_snapshot(rows), result_freshness(rows)
    if fresh is not None:
        return Page(rows, snapshot, None, fresh, rows.num_rows >= limit)
    if rows.num_rows <= limit or snapshot is None:
        return Page(rows, snapshot)
    starts = rows["bar_start"]
    boundary = starts[limit].as_py()
    kept = sum(1 for start in starts.slice(0, limit).to_pylist() if start < boundary)
    if kept == 0:
        raise QueryError(f"more than {limit:,} bars start at {boundary.isoformat()}: ask for a larger limit")
    return Page(rows.slice(0, kept), snapshot, encode(Cursor(query, snapshot, boundary.isoformat(), None)))
