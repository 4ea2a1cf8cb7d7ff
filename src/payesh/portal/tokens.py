"""Portal access tokens: one per municipality (scoped to its city) or an admin token.

Tokens live in one JSON file beside the city stores (``<store_root>/portal-tokens.json``;
the name has a dot, so it can never be a city). Only a salted scrypt hash of each secret
is kept; the token itself is shown once, by ``payesh tokens add``. A token reads
``pyh_<id>_<secret>``: the public ``id`` finds the record, the secret is checked against
its hash.

The rate limiter is a plain in-process token bucket per key.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payesh.errors import PayeshError

__all__ = [
    "TOKENS_FILENAME",
    "RateLimiter",
    "TokenError",
    "TokenRecord",
    "TokenStore",
    "tokens_file",
]

TOKENS_FILENAME = "portal-tokens.json"
_TOKEN_RE = re.compile(r"^pyh_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})$")
_CITY_RE = re.compile(r"^[a-z0-9_-]+$")
# scrypt cost: ~30 ms and 16 MiB per check; verified tokens are cached in memory.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_FORMAT = 1


class TokenError(PayeshError):
    """The token file is invalid, or a token command got bad input."""


def tokens_file(store_root: str | os.PathLike[str], tokens: str | None = None) -> Path:
    """Where the tokens of the stores under ``store_root`` live.

    Parameters
    ----------
    store_root
        The store root (a local directory).
    tokens
        An explicit file (``--tokens`` / ``$PAYESH_TOKENS``); needed for an object-store
        root, where no local file lives with the store.
    """
    if tokens:
        return Path(tokens)
    root = os.fspath(store_root)
    if "://" in root and not root.startswith("file://"):
        raise TokenError(
            f"store {root!r} is not a local directory: name the tokens file with --tokens "
            "or $PAYESH_TOKENS"
        )
    return Path(root.removeprefix("file://")) / TOKENS_FILENAME


@dataclass(frozen=True)
class TokenRecord:
    """One token as stored: never the secret, only its salted hash.

    Attributes
    ----------
    id
        Public id (12 hex digits), shown by ``tokens list`` and used by ``tokens revoke``.
    city
        The city the token may read; None for an admin token (every city).
    created
        ISO 8601 UTC time of creation.
    revoked
        ISO 8601 UTC time of revocation, or None.
    label
        Free text (who holds it).
    salt, hash
        Hex scrypt salt and digest of the secret.
    """

    id: str
    city: str | None
    created: str
    salt: str
    hash: str
    revoked: str | None = None
    label: str = ""

    @property
    def admin(self) -> bool:
        """Whether the token sees every city."""
        return self.city is None

    def may_read(self, city: str) -> bool:
        """Whether this (unrevoked) token may read ``city``."""
        return self.revoked is None and (self.city is None or self.city == city)


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TokenStore:
    """The token file: add, list, revoke, and verify (with a cache of verified tokens).

    Parameters
    ----------
    path
        The JSON file (created by the first :meth:`add`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._verified: dict[str, str] = {}  # sha256(token) -> id, for tokens that passed

    # ------------------------------------------------------------------ file

    def _read(self) -> dict[str, TokenRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise TokenError(f"cannot read the tokens file {self.path}: {err}") from err
        if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
            raise TokenError(f"tokens file {self.path}: expected an object with a 'tokens' list")
        out: dict[str, TokenRecord] = {}
        for i, item in enumerate(raw["tokens"]):
            try:
                rec = TokenRecord(**item)
            except TypeError as err:
                raise TokenError(f"tokens file {self.path}: entry {i} is invalid ({err})") from err
            out[rec.id] = rec
        return out

    def _write(self, records: dict[str, TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = {"format": _FORMAT, "tokens": [asdict(r) for r in records.values()]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)

    @contextmanager
    def _exclusive(self) -> Iterator[dict[str, TokenRecord]]:
        """Read-modify-write under an exclusive lock (commands from two shells)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self._read()
            yield records
            self._write(records)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _current(self) -> dict[str, TokenRecord]:
        """The records, re-read when the file changed (a revocation applies at once)."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp or stamp is None:
                self._records = self._read()
                self._stamp = stamp
                self._verified.clear()
            return self._records

    # ------------------------------------------------------------------ commands

    def add(self, city: str | None, *, label: str = "") -> tuple[TokenRecord, str]:
        """Create a token for ``city`` (None: an admin token).

        Returns
        -------
        (TokenRecord, str)
            The stored record and the token itself (shown once, never stored).
        """
        if city is not None and not _CITY_RE.match(city):
            raise TokenError(f"invalid city name {city!r}: use lowercase letters, digits, _ and -")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._exclusive() as records:
            tid = secrets.token_hex(6)
            while tid in records:
                tid = secrets.token_hex(6)
            rec = TokenRecord(
                id=tid,
                city=city,
                created=_now(),
                salt=salt.hex(),
                hash=_hash(secret, salt).hex(),
                label=label,
            )
            records[tid] = rec
        return rec, f"pyh_{tid}_{secret}"

    def list(self) -> list[TokenRecord]:
        """Every token record (revoked ones too), oldest first."""
        return sorted(self._read().values(), key=lambda r: (r.created, r.id))

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke the token ``token_id``; it is refused from then on."""
        with self._exclusive() as records:
            rec = records.get(token_id)
            if rec is None:
                known = ", ".join(records) or "none"
                raise TokenError(f"no token with id {token_id!r} (ids: {known})")
            if rec.revoked is None:
                rec = TokenRecord(**{**asdict(rec), "revoked": _now()})
                records[token_id] = rec
        return rec

    # ------------------------------------------------------------------ checking

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid, unrevoked ``token``; None otherwise."""
        m = _TOKEN_RE.match(token)
        if m is None:
            return None
        records = self._current()
        rec = records.get(m.group(1))
        if rec is None or rec.revoked is not None:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            if self._verified.get(key) == rec.id:
                return rec
        digest = _hash(m.group(2), bytes.fromhex(rec.salt))
        if not hmac.compare_digest(digest.hex(), rec.hash):
            return None
        with self._lock:
            self._verified[key] = rec.id
        return rec

    @staticmethod
    def token_id(token: str) -> str | None:
        """The public id of a well-formed token (unverified), else None."""
        m = _TOKEN_RE.match(token)
        return m.group(1) if m else None


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts of up to ``burst``.

    Parameters
    ----------
    rate
        Sustained requests per second per key.
    burst
        Bucket size: requests allowed at once after an idle spell.
    clock
        Seconds, monotonic (default :func:`time.monotonic`).
    """

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s bucket.

        Returns
        -------
        float
            0 when allowed; otherwise the seconds to wait before the next request.
        """
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` header value (whole seconds, at least 1) for a wait in seconds."""
        return str(max(1, math.ceil(wait)))


def describe(rec: TokenRecord) -> dict[str, Any]:
    """A record without its salt and hash (for listings and ``/api/me``)."""
    return {
        "id": rec.id,
        "scope": "admin" if rec.admin else rec.city,
        "created": rec.created,
        "revoked": rec.revoked,
        "label": rec.label,
    }
