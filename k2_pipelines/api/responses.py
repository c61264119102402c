"""A page as the client asked for it (`?format=`, else the Accept header): JSON, CSV, Parquet or an Arrow IPC
stream. JSON, CSV and Arrow are streamed a batch at a time; Parquet's footer comes last, so a page is made whole."""

import json
from collections.abc import Iterator
from dataclasses import asdict
from itertools import chain
from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from k2_pipelines.api.pages import Page
from k2_pipelines.lib.query.formats import arrow_stream, csv_rows, json_rows, parquet_file

Format = Literal["json", "csv", "parquet", "arrow"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
ACCEPTED: dict[str, Format] = {
    "application/json": "json", "text/csv": "csv", "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet", "application/vnd.apache.arrow.stream": "arrow",
    "*/*": "json", "application/*": "json", "text/*": "csv",
}
# what OpenAPI says a page of rows can be
ROWS_CONTENT: dict[str, dict[str, object]] = {media: {} for form, media in MEDIA_TYPES.items() if form != "json"}


class NotAcceptable(Exception):
    pass


def chosen_format(request: Request,
                  asked: Annotated[Format | None, Query(alias="format", description="instead of the Accept header")]
                  = None) -> Format:
    """The format `?format=` names, else the best the Accept header takes (a dependency of every /v1 endpoint)."""
    if asked is not None:
        return asked
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return "json"
    ranked: list[tuple[float, int, Format]] = []
    for position, part in enumerate(accept.split(",")):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        quality = next((_quality(p[2:]) for p in parameters if p.startswith("q=")), 1.0)
        if media.lower() in ACCEPTED and quality > 0:
            ranked.append((-quality, position, ACCEPTED[media.lower()]))
    if not ranked:
        raise NotAcceptable(f"no format K2 serves is acceptable ({accept[:100]}); it serves "
                            f"{', '.join(MEDIA_TYPES.values())}")
    return min(ranked)[2]


ChosenFormat = Annotated[Format, Depends(chosen_format)]


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def page_response(request: Request, page: Page, form: Format) -> Response:
    headers = {}
    if page.snapshot is not None:
        headers["X-K2-Snapshot-Id"] = str(page.snapshot)
    if page.fresh is not None:
        headers["X-K2-Fresh"] = json.dumps(asdict(page.fresh), separators=(",", ":"))
        headers["X-K2-Limit-Reached"] = str(page.limit_reached).lower()
    if page.next_cursor is not None:
        headers["X-K2-Next-Cursor"] = page.next_cursor
        if request.method == "GET":
            headers["Link"] = f'<{request.url.include_query_params(cursor=page.next_cursor)}>; rel="next"'
    media = MEDIA_TYPES[form]
    if form == "parquet":
        return Response(parquet_file(page.rows), media_type=media, headers=headers)
    body = _json_page(page) if form == "json" else csv_rows(page.rows) if form == "csv" else arrow_stream(page.rows)
    return StreamingResponse(body, media_type=media, headers=headers)


def _json_page(page: Page) -> Iterator[bytes]:
    head = {"snapshot_id": page.snapshot, "next_cursor": page.next_cursor, "row_count": page.rows.num_rows,
            **({"fresh": asdict(page.fresh), "limit_reached": page.limit_reached} if page.fresh else {})}
    return chain([json.dumps(head)[:-1].encode() + b', "rows": ['], json_rows(page.rows), [b"]}"])
