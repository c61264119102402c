"""`k2 api`: serve the HTTP API, and make its keys."""

import argparse
import json
import sys

from k2_pipelines.settings import LOOPBACK


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
