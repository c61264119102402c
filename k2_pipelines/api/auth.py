"""Who may ask: an API key in X-API-Key with the endpoint's scope, within its rate limit. With no keys configured the
API is open, which the server allows on loopback only (api/server.py)."""

from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from k2_pipelines.api.limits import retry_after

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="a key from `k2 api key`")


class ApiError(Exception):
    """A refusal with its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def authorized(scope: str) -> Callable[[Request, str | None], Awaitable[None]]:
    """A dependency that lets a request through if its key has `scope` and is within its rate limit."""

    async def check(request: Request, presented: str | None = Security(API_KEY_HEADER)) -> None:
        state = request.app.state
        if not state.keys:
            return
        if not presented:
            raise ApiError(401, "this API needs a key in the X-API-Key header", {"WWW-Authenticate": "APIKey"})
        key = state.keys.authenticate(presented)
        if key is None:
            raise ApiError(401, "the API key is not valid", {"WWW-Authenticate": "APIKey"})
        if scope not in key.scopes:
            raise ApiError(403, f"the key {key.id} does not have the scope {scope!r}")
        wait = state.rate_limiter.wait_seconds(key)
        if wait:
            with state.counts.lock:
                state.counts.rate_limited[(key.id,)] += 1
            raise ApiError(429, f"the key {key.id} is over its rate limit of {key.requests_per_second:g} requests/s "
                           f"(burst {key.burst})", {"Retry-After": retry_after(wait)})

    return check
