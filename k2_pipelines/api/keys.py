"""API keys: `<id>.<secret>`, stored as the SHA-256 of the whole key (a key is 256 random bits, so a fast hash is
safe: there is no password to guess), found by id and compared in constant time.

The keys file (K2_API_KEYS_FILE) or K2_API_KEYS holds JSON:
{"keys": [{"id": "research", "sha256": "<hex>", "scopes": ["read"], "requests_per_second": 50, "burst": 100}]}"""

import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCOPES = {"read": "rows: trades, quotes, bars, summaries, symbols and POST /v1/query",
          "tables": "the tables' statistics and snapshots"}
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REQUESTS_PER_SECOND = 50.0
BURST = 100


class KeysError(ValueError):
    """The keys configuration cannot be read; the message says where and why."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    scopes: frozenset[str]
    requests_per_second: float = REQUESTS_PER_SECOND
    burst: int = BURST


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(key_id: str, scopes: list[str]) -> tuple[str, dict[str, Any]]:
    """A new key, and its entry for the keys file (which holds only the hash)."""
    if not KEY_ID.fullmatch(key_id):
        raise KeysError(f"a key id is 1 to 64 letters, digits, _ or -, not {key_id!r}")
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise KeysError(f"scopes are some of {', '.join(SCOPES)}, not {', '.join(sorted(unknown)) or 'none'}")
    key = f"{key_id}.{secrets.token_urlsafe(32)}"
    return key, {"id": key_id, "sha256": digest(key), "scopes": sorted(set(scopes)),
                 "requests_per_second": REQUESTS_PER_SECOND, "burst": BURST}


class KeyRing:
    """The configured keys by id; empty: the API is open (served on loopback only)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_id = {key.id: key for key in keys}

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def authenticate(self, presented: str) -> ApiKey | None:
        """The key `presented` is, or None."""
        key_id, dot, _ = presented.partition(".")
        # an unknown id is compared against a hash too, so that timing tells nothing
        key = self._by_id.get(key_id) if dot else None
        expected = key.sha256 if key else "0" * 64
        matches = hmac.compare_digest(digest(presented), expected)
        return key if matches and key else None


def load_keys(keys_file: Path | None, keys_json: str | None) -> KeyRing:
    keys: list[ApiKey] = []
    if keys_file is not None:
        try:
            keys += _parsed(keys_file.read_text(), str(keys_file))
        except OSError as error:
            raise KeysError(f"cannot read the keys file {keys_file}: {error.strerror}") from None
    if keys_json:
        keys += _parsed(keys_json, "K2_API_KEYS")
    ids = [key.id for key in keys]
    if len(ids) != len(set(ids)):
        raise KeysError(f"key ids must be unique: {', '.join(sorted({i for i in ids if ids.count(i) > 1}))}")
    return KeyRing(keys)


def _parsed(text: str, where: str) -> list[ApiKey]:
    try:
        entries = json.loads(text)["keys"]
        return [_key(entry) for entry in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise KeysError(f"{where} is not {{\"keys\": [{{\"id\", \"sha256\", \"scopes\", ...}}]}} "
                        f"({type(error).__name__}: {error})") from None


def _key(entry: dict[str, Any]) -> ApiKey:
    key = ApiKey(id=entry["id"], sha256=entry["sha256"].lower(), scopes=frozenset(entry["scopes"]),
                 requests_per_second=float(entry.get("requests_per_second", REQUESTS_PER_SECOND)),
                 burst=int(entry.get("burst", BURST)))
    if not isinstance(key.id, str) or not KEY_ID.fullmatch(key.id):
        raise ValueError(f"bad key id {key.id!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", key.sha256):
        raise ValueError(f"key {key.id}: sha256 must be 64 hex digits")
    if not key.scopes <= set(SCOPES):
        raise ValueError(f"key {key.id}: unknown scopes {', '.join(sorted(key.scopes - set(SCOPES)))}")
    if not math.isfinite(key.requests_per_second) or key.requests_per_second <= 0 or key.burst < 1:
        raise ValueError(f"key {key.id}: requests_per_second and burst must be positive numbers")
    return key
