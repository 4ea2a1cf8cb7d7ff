"""``file:checksum`` verification (STAC file extension) before imagery is read.

The file extension gives an asset's checksum as a hex-encoded multihash: a varint
hash-function code, a varint digest length, then the digest — ``1220…`` is SHA2-256,
``1340…`` SHA2-512 (what USGS Landsat items carry). When an item gives one, the bytes
behind the asset's href (a local file or an http(s) URL, downloaded with retries) are
hashed and compared; a mismatch is a :class:`~payesh.errors.SourceError` naming the item,
the asset and the href. Verified ``(href, checksum)`` pairs are remembered for the life
of the process, so an asset read for several months is hashed once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pystac
import requests
from pystac_client.exceptions import APIError
from rasterio.io import MemoryFile

from payesh.errors import SourceError
from payesh.sources.http import (
    RetriesExhausted,
    RetryPolicy,
    SourceUnavailable,
    check_response,
    current_policy,
    with_retries,
)
from payesh.sources.inflight import request_slot

__all__ = [
    "DEFAULT_MAX_HTTP_MIB",
    "ChecksumMismatch",
    "configure_checksums",
    "parse_multihash",
    "readable_href",
    "verify_asset",
    "verify_items",
]

log = logging.getLogger(__name__)

#: multicodec code -> (name, hashlib constructor).
_HASHES: dict[int, tuple[str, Callable[[], Any]]] = {
    0x11: ("sha1", hashlib.sha1),
    0x12: ("sha2-256", hashlib.sha256),
    0x13: ("sha2-512", hashlib.sha512),
    0x14: ("sha3-512", hashlib.sha3_512),
    0x15: ("sha3-384", hashlib.sha3_384),
    0x16: ("sha3-256", hashlib.sha3_256),
    0x17: ("sha3-224", hashlib.sha3_224),
    0x20: ("sha2-384", hashlib.sha384),
    0xD5: ("md5", hashlib.md5),
    0xB220: ("blake2b-256", lambda: hashlib.blake2b(digest_size=32)),
    0xB240: ("blake2b-512", lambda: hashlib.blake2b(digest_size=64)),
}

_CHUNK = 1 << 20


class ChecksumMismatch(SourceError):
    """The bytes read do not match the asset's ``file:checksum``."""


#: Largest file (MiB) downloaded whole over http(s) just to verify its checksum. A
#: 10 m Sentinel-2 band is 100-250 MiB, of which a city reads a few ranges; hashing it
#: would cost more than the run. Local files are always verified.
DEFAULT_MAX_HTTP_MIB: float = 64.0
_max_http_mib: float | None = DEFAULT_MAX_HTTP_MIB


def configure_checksums(
    *,
    max_http_mib: float | None = DEFAULT_MAX_HTTP_MIB,
    read_verified_mib: float = 0.0,
) -> None:
    """Set the size above which files over http(s) are not verified (MiB; process-wide).

    ``None`` verifies every file whatever its size. The size is the asset's
    ``file:size`` when the item gives it, else the server's ``Content-Length`` (HEAD).

    ``read_verified_mib`` > 0 keeps the bytes of files verified over http(s) in memory
    (up to that many MiB in all, least recently verified dropped first) and has the
    readers use them (:func:`readable_href`) instead of fetching ranges again: ranges
    fetched later are not covered by the checksum, and a bit flipped on the way inside
    a DEFLATE tile mostly decodes without error (GDAL stops before the adler32).
    """
    global _max_http_mib, _read_verified_bytes
    if max_http_mib is not None and max_http_mib < 0:
        raise ValueError(f"max_http_mib must be >= 0 or None, not {max_http_mib}")
    if read_verified_mib < 0:
        raise ValueError(f"read_verified_mib must be >= 0, not {read_verified_mib}")
    _max_http_mib = max_http_mib
    _read_verified_bytes = int(read_verified_mib * 2**20)
    with _verified_lock:
        while _kept:
            _kept.popitem(last=False)[1].close()


_read_verified_bytes = 0
_kept: OrderedDict[str, MemoryFile] = OrderedDict()


def readable_href(href: str) -> str:
    """Where to read ``href`` from: its verified bytes in memory when kept (see
    :func:`configure_checksums`), else ``href`` itself."""
    with _verified_lock:
        kept = _kept.get(href)
        return kept.name if kept is not None else href


def _keep(href: str, data: bytes) -> None:
    if not _read_verified_bytes or len(data) > _read_verified_bytes:
        return
    with _verified_lock:
        if href in _kept:
            return
        _kept[href] = MemoryFile(data, ext=Path(urlparse(href).path).suffix or ".tif")
        while sum(len(m.getbuffer()) for m in _kept.values()) > _read_verified_bytes:
            _kept.popitem(last=False)[1].close()


def _remote_size(asset: pystac.Asset, href: str, policy: RetryPolicy) -> int | None:
    declared = asset.extra_fields.get("file:size")
    if isinstance(declared, int):
        return declared

    def once() -> int | None:
        with request_slot():
            resp = requests.head(href, timeout=policy.timeout, allow_redirects=True)
        check_response(resp)
        length = resp.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    return with_retries(once, url=f"HEAD {href}", policy=policy)


_verified: set[tuple[str, str]] = set()
_verified_lock = threading.Lock()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def parse_multihash(text: str) -> tuple[int, bytes]:
    """``(hash function code, digest)`` of a hex multihash such as ``1220…``.

    Raises
    ------
    ValueError
        Not hex, or the declared digest length does not match.
    """
    data = bytes.fromhex(text.strip())
    code, pos = _varint(data, 0)
    length, pos = _varint(data, pos)
    digest = data[pos:]
    if len(digest) != length:
        raise ValueError(f"declares a {length}-byte digest but holds {len(digest)} bytes")
    return code, digest


def _local_path(href: str) -> Path | None:
    parsed = urlparse(href)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme == "file" else href)
    return None


def _digest(href: str, make: Callable[[], Any], policy: RetryPolicy) -> bytes:
    local = _local_path(href)
    if local is not None:
        h = make()
        with local.open("rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        return bytes(h.digest())

    def once() -> bytes:
        h = make()
        kept = bytearray() if _read_verified_bytes else None
        with request_slot(), requests.get(href, stream=True, timeout=policy.timeout) as resp:
            check_response(resp)
            for block in resp.iter_content(_CHUNK):
                h.update(block)
                if kept is not None:
                    kept.extend(block)
        digest = bytes(h.digest())
        if kept is not None:
            _fetched[(href, digest)] = bytes(kept)
        return digest

    return with_retries(once, url=f"GET {href}", policy=policy)


#: Bytes just downloaded for hashing, until verify_asset has compared them.
_fetched: dict[tuple[str, bytes], bytes] = {}


def verify_asset(item: pystac.Item, key: str, *, policy: RetryPolicy | None = None) -> bool:
    """Check the bytes of ``item.assets[key]`` against its ``file:checksum``.

    Over http(s) the download is retried under ``policy`` (default: the process-wide
    :func:`~payesh.sources.retry.current_policy`); a mismatch is reported at once (the
    caller, :func:`payesh.sources.validate.file_problem`, fetches again before it calls
    a file corrupt).

    Returns
    -------
    bool
        ``True`` when a checksum was given and matched, ``False`` when there was none to
        check (or its hash function is one payesh does not know, which is logged).

    Raises
    ------
    SourceError
        The checksum is malformed, the bytes cannot be read, or they do not match.
    """
    asset = item.assets[key]
    expected = asset.extra_fields.get("file:checksum")
    if not expected:
        return False
    policy = policy or current_policy()
    href = asset.get_absolute_href() or asset.href
    where = f"item {item.id!r} asset {key!r} ({href.split('?', 1)[0]})"  # no SAS token
    try:
        code, digest = parse_multihash(str(expected))
    except ValueError as err:
        raise SourceError(f"{where}: file:checksum {expected!r} is not a multihash: {err}") from err
    if code not in _HASHES:
        log.warning("%s: file:checksum uses multihash code 0x%x; not verified", where, code)
        return False
    with _verified_lock:
        if (href, str(expected)) in _verified:
            return True
    name, make = _HASHES[code]
    if _local_path(href) is None and not href.startswith(("http://", "https://")):
        log.warning("%s: cannot fetch %s to verify its file:checksum", where, href)
        return False
    try:
        limit = _max_http_mib
        if limit is not None and _local_path(href) is None:
            size = _remote_size(asset, href, policy)
            if size is not None and size > limit * 2**20:
                log.info(
                    "%s: %.0f MiB over http is above the %g MiB checksum limit; not verified",
                    where,
                    size / 2**20,
                    limit,
                )
                return False
        got = _digest(href, make, policy)
    except RetriesExhausted as err:  # the network, not the file: never a skipped item
        raise SourceUnavailable(
            f"{where}: cannot fetch it to verify its file:checksum: {err}"
        ) from err
    except (OSError, requests.RequestException, APIError) as err:
        raise SourceError(f"{where}: cannot read it to verify its file:checksum: {err}") from err
    if got != digest:
        _fetched.pop((href, got), None)
        raise ChecksumMismatch(
            f"{where} does not match its file:checksum: {name} is {got.hex()[:16]}…, "
            f"the item says {digest.hex()[:16]}… — the file is corrupt or was changed; "
            f"fetch it again or drop the item"
        )
    data = _fetched.pop((href, got), None)
    if data is not None:
        _keep(href, data)
    with _verified_lock:
        _verified.add((href, str(expected)))
    return True


def verify_items(
    items: Sequence[pystac.Item],
    keys: Iterable[str],
    *,
    policy: RetryPolicy | None = None,
) -> int:
    """Verify every ``keys`` asset of ``items`` that has a ``file:checksum``; how many did."""
    wanted = list(keys)
    return sum(verify_asset(item, key, policy=policy) for item in items for key in wanted)
