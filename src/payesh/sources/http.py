"""HTTP range requests with the retry policy, and the names of HTTP's retry machinery.

:func:`get_range` fetches bytes of a remote file (a COG's tiles) on a per-thread
``requests`` session that keeps its connections alive, inside a request slot
(:func:`~payesh.sources.inflight.request_slot`), retried under the process-wide policy.

The policy, the transient-error classification, the exceptions and :func:`with_retries`
live in :mod:`payesh.sources.retry`; pystac-client's IO with retries
(:class:`RetryingStacApiIO`) in :mod:`payesh.sources.stac_io`. Both are re-exported here,
so ``from payesh.sources.http import ...`` keeps working for every name it offered.
"""

from __future__ import annotations

import threading

import requests
import urllib3

from payesh.sources.inflight import request_slot
from payesh.sources.retry import (
    DEFAULT_POLICY,
    ENV_VARS,
    RETRY_EXCEPTIONS,
    RETRY_STATUSES,
    RetriesExhausted,
    RetryPolicy,
    SourceUnavailable,
    TransientError,
    check_response,
    configure_retries,
    current_policy,
    describe_response,
    gdal_http_options,
    looks_transient,
    parse_retry_after,
    policy_from_env,
    with_retries,
)
from payesh.sources.stac_io import RetryingStacApiIO

__all__ = [
    "DEFAULT_POLICY",
    "ENV_VARS",
    "RETRY_EXCEPTIONS",
    "RETRY_STATUSES",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryingStacApiIO",
    "SourceUnavailable",
    "TransientError",
    "check_response",
    "configure_retries",
    "current_policy",
    "describe_response",
    "gdal_http_options",
    "get_range",
    "looks_transient",
    "parse_retry_after",
    "policy_from_env",
    "with_retries",
]

_sessions = threading.local()


def _session() -> requests.Session:
    """This thread's session: its connections are kept alive between requests."""
    session: requests.Session | None = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
    return session


def get_range(url: str, start: int, size: int, *, policy: RetryPolicy | None = None) -> bytes:
    """Bytes ``start`` to ``start + size - 1`` of ``url`` (one range request), retried
    under ``policy`` (default :func:`current_policy`) like any other request; a body of
    another length (cut short) is retried too. A server that ignores ``Range`` (200) is
    answered from its whole body. Each thread keeps its own connections.

    Raises
    ------
    RetriesExhausted
        Every attempt failed; its message names the URL without its query (which may
        hold a signature).
    pystac_client.exceptions.APIError
        The server refused the request (4xx other than 408/429).
    """
    policy = policy or current_policy()
    end = start + size - 1

    def once() -> bytes:
        headers = {"Range": f"bytes={start}-{end}"}
        with (
            request_slot(),
            _session().get(url, headers=headers, timeout=policy.timeout, stream=True) as resp,
        ):
            if not 200 <= resp.status_code < 300:
                check_response(resp)  # reads the (short) error body
            try:
                # the body in one read: requests' ``.content`` reads 10 kB at a time, 0.6
                # CPU-s of a 24 km month's 200 MB in the interpreter
                data = resp.raw.read(decode_content=True)
            except urllib3.exceptions.HTTPError as err:  # cut short, reset, timed out
                raise TransientError(f"{type(err).__name__}: {err}") from err
        if resp.status_code == 200:  # Range ignored: the whole file came
            data = data[start : end + 1]
        if len(data) != size:
            raise TransientError(f"{len(data)} bytes instead of the {size} asked for")
        return data

    where = f"GET {url.split('?', 1)[0]} bytes {start}-{end}"
    return with_retries(once, url=where, policy=policy)
