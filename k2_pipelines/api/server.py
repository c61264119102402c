"""`k2 api serve`: the API under uvicorn, refusing to listen beyond loopback without keys."""

import ipaddress
import logging

import uvicorn

from k2_pipelines.api.app import create_app
from k2_pipelines.api.keys import KeyRing, load_keys
from k2_pipelines.lib.query.engine import use_threads_per_query
from k2_pipelines.settings import settings


class ServeError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def configured_keys() -> KeyRing:
    current = settings()
    return load_keys(current.api_keys_file, current.api_keys)


def serve(host: str, port: int) -> None:
    keys = configured_keys()
    if not keys and not is_loopback(host):
        raise ServeError(f"refusing to serve on {host} without API keys: anyone who reaches it could read every "
                         "table. Create a key with `k2 api key --id NAME` and set K2_API_KEYS_FILE, or serve on "
                         "127.0.0.1")
    app = create_app(keys, settings().api_time_limit_seconds)
    # many requests at once: a query per core beats a query on every core (measured: k2 bench api)
    use_threads_per_query(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"K2 API on http://{host}:{port} (docs: /docs; keys: {'required' if keys else 'none, loopback only'})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
                timeout_graceful_shutdown=5)
