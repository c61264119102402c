"""The API application: the /v1 routes, health, metrics, offline OpenAPI docs, and every error as JSON
({"error": message, "status": code}), never a stack trace."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2_pipelines.api import routes
from k2_pipelines.api.auth import ApiError
from k2_pipelines.api.keys import SCOPES, KeyRing
from k2_pipelines.api.limits import BodyLimit, RateLimiter
from k2_pipelines.api.metrics import ApiCounts, Counted
from k2_pipelines.api.responses import NotAcceptable
from k2_pipelines.lib.iceberg.tables import NAMESPACE
from k2_pipelines.lib.query.api import default_catalog
from k2_pipelines.lib.query.engine import CONNECTIONS
from k2_pipelines.query import NotFound, QueryError, QueryTimeout, TailUnavailable

READY_TIMEOUT_SECONDS = 5.0
QUERY_THREADS = CONNECTIONS
log = logging.getLogger("k2.api")


def create_app(keys: KeyRing, time_limit: float) -> FastAPI:
    scopes = "; ".join(f"`{name}`: {meaning}" for name, meaning in SCOPES.items())
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # queries run on the thread pool; more of them at once than DuckDB has connections only adds GIL contention
        # (measured, k2 bench api: 70 requests/s with FastAPI's default 40 threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = QUERY_THREADS
        yield

    app = FastAPIOffline(
        title="K2 market data API", version="1", lifespan=lifespan,
        description="Trades, quotes and OHLCV bars from K2's Iceberg tables, now or as of a snapshot. Pages of rows "
                    "as JSON, CSV, Parquet or an Arrow IPC stream (`?format=` or Accept); large results page on with "
                    f"`next_cursor`. Keys in `X-API-Key`, by scope: {scopes}.",
        redoc_url=None)
    app.state.keys, app.state.time_limit = keys, time_limit
    app.state.rate_limiter, app.state.counts = RateLimiter(), ApiCounts()
    ready_threads = anyio.CapacityLimiter(2)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(app.state.counts)
    app.include_router(routes.router)
    _errors_as_json(app)

    @app.get("/health", summary="Liveness: the server answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", summary="Readiness: the catalog is reachable (503 if not)")
    async def ready() -> JSONResponse:
        problem = f"no answer within {READY_TIMEOUT_SECONDS:g} s"
        with anyio.move_on_after(READY_TIMEOUT_SECONDS):
            # threads of its own: answered while every query thread is busy
            problem = await anyio.to_thread.run_sync(_catalog_problem, abandon_on_cancel=True, limiter=ready_threads)
        if problem:
            return JSONResponse({"ready": False, "catalog": problem}, status_code=503)
        return JSONResponse({"ready": True, "catalog": "reachable"})

    @app.get("/metrics", summary="Prometheus metrics of this server", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit)
    app.add_middleware(Counted, counts=app.state.counts)  # the outermost: it counts the body limit's 413s too
    return app


def _catalog_problem() -> str:
    try:
        default_catalog().list_tables(NAMESPACE)
        return ""
    except Exception as error:  # whatever the catalog's driver raises: the readiness answer says it
        return f"{type(error).__name__}: {error}"[:500]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _errors_as_json(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def refused(_: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.message, error.headers)

    @app.exception_handler(QueryError)
    async def bad_query(_: Request, error: QueryError) -> JSONResponse:
        status = 504 if isinstance(error, QueryTimeout) else 404 if isinstance(error, NotFound) \
            else 503 if isinstance(error, TailUnavailable) else 400
        return _error(status, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:  # unknown paths, methods
        return _error(error.status_code, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(NotAcceptable)
    async def not_acceptable(_: Request, error: NotAcceptable) -> JSONResponse:
        return _error(406, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": problems[:2000], "status": 422}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
        return _error(500, "the server failed to answer; its log has the details")
