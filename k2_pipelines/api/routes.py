"""The /v1 endpoints: the query layer's functions (k2_pipelines.query) over HTTP, with its validation and messages.

Each endpoint is a plain function: FastAPI runs it on its thread pool, and DuckDB and PyIceberg's reads release the
GIL, so requests are answered at once (DuckDB's connection pool bounds how many queries run)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from k2_pipelines import query
from k2_pipelines.api.auth import authorized
from k2_pipelines.api.pages import Page, bar_page, decode, event_page, fetched, fingerprint
from k2_pipelines.api.responses import ROWS_CONTENT, ChosenFormat, page_response
from k2_pipelines.lib.query.fresh import Fresh
from k2_pipelines.lib.query.taq import DEFAULT_MARKOUTS, DEFAULT_TOLERANCE, MAX_MARKOUTS
from k2_pipelines.lib.query.validate import INTERVALS, MAX_SYMBOLS

MAX_PAGE = 100_000  # rows per page: more come through the cursor
Kind = Literal["trades", "quotes", "ohlcv"]
BarSource = Literal["trades", "gold"]

router = APIRouter(prefix="/v1", responses={200: {"content": ROWS_CONTENT}, 400: {}, 401: {}, 403: {}, 404: {},
                                            406: {}, 429: {}, 503: {}, 504: {}})
ReadRows = [Depends(authorized("read"))]
ReadTables = [Depends(authorized("tables"))]

SymbolsParam = Annotated[list[str], Query(alias="symbol", min_length=1, max_length=MAX_SYMBOLS,
                                          description="a symbol; repeat for several (BTCUSDT, BHP)")]
StartParam = Annotated[str, Query(description="ISO 8601 time, UTC unless it says otherwise (inclusive)")]
EndParam = Annotated[str, Query(description="ISO 8601 time (exclusive)")]
LimitParam = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page; next_cursor gives the next page")]
AsOfParam = Annotated[str | None, Query(description="a snapshot id (see /v1/snapshots) or an ISO 8601 time")]
CursorParam = Annotated[str | None, Query(description="next_cursor of the previous page (same other parameters)")]
TableParam = Annotated[str, Query(description="trades, quotes, ohlcv_1m, ...")]
FreshValue = Literal["false", "true", "strict"]
FreshParam = Annotated[FreshValue, Query(description="true: with the messages in Kafka not yet drained (one page, no "
                                                     "cursor; X-K2-Fresh says what the tail held); strict: 503 if "
                                                     "Kafka cannot be read, instead of the table's rows only")]


class QueryRequest(BaseModel):
    """A query as filters (never SQL): the same parameters as the GET endpoints."""

    model_config = ConfigDict(extra="forbid")
    kind: Kind
    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS)
    start: str
    end: str
    limit: int = Field(1000, ge=1, le=MAX_PAGE)
    newest_first: bool = Field(False, description="trades and quotes: the latest rows first")
    as_of: str | None = None
    interval: str = Field("1m", description=f"ohlcv: one of {', '.join(INTERVALS)}")
    source: BarSource = Field("trades", description="ohlcv: computed from the trades, or read from the gold table")
    cursor: str | None = None
    fresh: FreshValue = Field("false", description="trades, quotes, ohlcv from trades: with the messages not yet "
                                                   "drained")


def _time_limit(request: Request) -> float:
    limit: float = request.app.state.time_limit
    return limit


def _fresh(value: FreshValue) -> Fresh:
    return "strict" if value == "strict" else value == "true"


def _events(request: Request, kind: Literal["trades", "quotes"], symbols: list[str], start: str, end: str,
            limit: int, newest_first: bool, as_of: str | None, cursor: str | None, fresh: FreshValue = "false") -> Page:
    key = fingerprint({"kind": kind, "symbols": sorted(set(symbols)), "start": start, "end": end,
                       "newest_first": newest_first, "as_of": as_of, "fresh": fresh})
    read = query.trades if kind == "trades" else query.quotes
    id_column = "trade_id" if kind == "trades" else "quote_id"
    position = decode(cursor, key) if cursor else None
    rows = read(symbols, start, end, fetched(limit, fresh != "false"), position.snapshot if position else as_of,
                newest_first, time_limit=_time_limit(request),
                after=(position.time, position.id or "") if position else None, fresh=_fresh(fresh))
    return event_page(rows, limit, key, id_column)


def _bars(request: Request, interval: str, source: BarSource, symbols: list[str], start: str, end: str, limit: int,
          as_of: str | None, cursor: str | None, fresh: FreshValue = "false") -> Page:
    key = fingerprint({"kind": "ohlcv", "interval": interval, "source": source, "symbols": sorted(set(symbols)),
                       "start": start, "end": end, "as_of": as_of, "fresh": fresh})
    position = decode(cursor, key) if cursor else None
    # the next page starts at the first bar start the last one left out (a bar start: never a partial bar)
    ranged = (symbols, position.time if position else start, end, interval, position.snapshot if position else as_of,
              fetched(limit, fresh != "false"))
    if source == "gold":
        if fresh != "false":
            raise query.QueryError("fresh bars are computed with the trades not yet drained: not from gold")
        rows = query.gold_ohlcv(*ranged, time_limit=_time_limit(request))
    else:
        rows = query.ohlcv(*ranged, time_limit=_time_limit(request), fresh=_fresh(fresh))
    return bar_page(rows, limit, key)


def _event_route(kind: Literal["trades", "quotes"], summary: str) -> None:
    """GET /v1/trades and /v1/quotes: the same parameters over their tables."""

    def read_events(request: Request, form: ChosenFormat, symbols: SymbolsParam, start: StartParam, end: EndParam,
                    limit: LimitParam = 1000, newest_first: bool = False, as_of: AsOfParam = None,
                    cursor: CursorParam = None, fresh: FreshParam = "false") -> Response:
        return page_response(request, _events(request, kind, symbols, start, end, limit, newest_first, as_of, cursor,
                                              fresh), form)

    router.add_api_route(f"/{kind}", read_events, methods=["GET"], name=kind, dependencies=ReadRows, summary=summary)


_event_route("trades", "Trades of symbols over a time range")
_event_route("quotes", "Best bid/ask quotes of symbols over a time range")


@router.get("/ohlcv/{interval}", dependencies=ReadRows, summary="OHLCV bars: computed from the trades, or gold")
def ohlcv(request: Request, form: ChosenFormat,
          interval: Annotated[str, Path(description=f"one of {', '.join(INTERVALS)}")],
          symbols: SymbolsParam, start: StartParam, end: EndParam,
          limit: Annotated[int, Query(ge=MAX_SYMBOLS, le=MAX_PAGE, description="bars per page")] = 10_000,
          source: BarSource = "trades", as_of: AsOfParam = None, cursor: CursorParam = None,
          fresh: FreshParam = "false") -> Response:
    return page_response(request, _bars(request, interval, source, symbols, start, end, limit, as_of, cursor, fresh),
                         form)


@router.get("/summary/{symbol}/{day}", dependencies=ReadRows,
            summary="A day's open, high, low, close, VWAP, volume and trade count, per exchange")
def summary(request: Request, form: ChosenFormat, symbol: str,
            day: Annotated[str, Path(description="ISO 8601 date")],
            time_zone: Annotated[str, Query(description="the day's time zone (Australia/Sydney for ASX)")] = "UTC",
            as_of: AsOfParam = None) -> Response:
    rows = query.day_summary(symbol, day, time_zone, as_of, time_limit=_time_limit(request))
    if rows.num_rows == 0:
        raise query.NotFound(f"{symbol} has no trades on {day.strip()} ({time_zone})")
    return page_response(request, Page(rows, query.result_snapshot(rows)), form)


@router.get("/taq", dependencies=ReadRows,
            summary="Trades with the quote prevailing at each, its mid and spread, and markouts (no cursor: a limit)")
def taq(request: Request, form: ChosenFormat, symbols: SymbolsParam, start: StartParam, end: EndParam,
        tolerance: Annotated[str, Query(description="how much older than a trade its quote may be: 500ms, 5s, 1m, "
                                                    "...")] = DEFAULT_TOLERANCE,
        markouts: Annotated[list[str] | None, Query(alias="markout", max_length=MAX_MARKOUTS,
                                                    description="a markout horizon (1s); repeat for several "
                                                                f"(default {', '.join(DEFAULT_MARKOUTS)})")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="trades at most: the narrower the range, the "
                                                                   "fewer are cut off")] = 1000,
        as_of: AsOfParam = None) -> Response:
    rows = query.trades_with_quotes(symbols, start, end, tolerance, DEFAULT_MARKOUTS if markouts is None else markouts,
                                    limit, as_of, time_limit=_time_limit(request))
    return page_response(request, Page(rows, query.result_snapshot(rows)), form)


@router.get("/symbols", dependencies=ReadRows, summary="The symbols a table holds")
def symbols(request: Request, form: ChosenFormat, table: TableParam = "trades", as_of: AsOfParam = None) -> Response:
    return page_response(request, Page(query.symbols(table, as_of), None), form)


@router.get("/stats", dependencies=ReadTables, summary="Rows, files, bytes and current snapshot of every table")
def stats(request: Request, form: ChosenFormat) -> Response:
    return page_response(request, Page(query.table_stats(), None), form)


@router.get("/snapshots", dependencies=ReadTables, summary="A table's snapshots: what as_of can name")
def snapshots(request: Request, form: ChosenFormat, table: TableParam = "trades") -> Response:
    return page_response(request, Page(query.snapshots(table), None), form)


@router.post("/query", dependencies=ReadRows, summary="Trades, quotes or bars from a JSON body of filters")
def post_query(request: Request, form: ChosenFormat, body: Annotated[QueryRequest, Body()]) -> Response:
    parameters: dict[str, Any] = {"symbols": body.symbols, "start": body.start, "end": body.end,
                                  "limit": body.limit, "as_of": body.as_of, "cursor": body.cursor,
                                  "fresh": body.fresh}
    if body.kind == "ohlcv":
        page = _bars(request, body.interval, body.source, **parameters)
    else:
        page = _events(request, body.kind, newest_first=body.newest_first, **parameters)
    return page_response(request, page, form)
