"""`k2 api`: serve the HTTP API, and make its keys."""

import argparse
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from k2_pipelines.settings import LOOPBACK

START_TIMEOUT_SECONDS = 60


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    api = commands.add_parser("api", help="the HTTP query API: serve it, make its keys")
    actions = api.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve the API (uvicorn); docs at /docs")
    serve.add_argument("--host", default=LOOPBACK, help="beyond loopback only with keys configured")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=run_serve)
    key = actions.add_parser("key", help="make a key: prints it once, and its entry for the keys file (a hash)")
    key.add_argument("--id", required=True, help="the key's name: letters, digits, _ or -")
    key.add_argument("--scope", action="append", help="read (rows) or tables (stats, snapshots); default both")
    key.set_defaults(run=run_key)


def run_serve(args: argparse.Namespace) -> int:
    from k2_pipelines.api.keys import KeysError
    from k2_pipelines.api.server import ServeError, serve

    try:
        serve(args.host, args.port)
    except (KeysError, ServeError) as error:
        print(f"k2 api serve: {error}", file=sys.stderr)
        return 2
    return 0


@contextmanager
def api_process(port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`k2 api serve --port PORT` in a process of its own (the demo's, a benchmark's), once /health answers; stopped
    after. RuntimeError if it exits or does not answer first."""
    server = subprocess.Popen([sys.executable, "-m", "k2_pipelines", "api", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(port):
            if server.poll() is not None:
                raise RuntimeError(f"k2 api serve exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"k2 api serve did not answer on port {port} within {START_TIMEOUT_SECONDS} s")
            time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def run_key(args: argparse.Namespace) -> int:
    from k2_pipelines.api.keys import SCOPES, KeysError, new_key

    try:
        key, entry = new_key(args.id, args.scope or list(SCOPES))
    except KeysError as error:
        print(f"k2 api key: {error}", file=sys.stderr)
        return 2
    print(f"key (give it to its user; K2 keeps only its hash): {key}")
    print(f'its entry for the keys file ({{"keys": [...]}}, K2_API_KEYS_FILE): {json.dumps(entry)}')
    return 0
