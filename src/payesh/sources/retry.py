"""The retry policy for HTTP requests, what counts as a transient failure, and the loop that
retries one: :class:`RetryPolicy`, :func:`with_retries` and their errors.

pystac-client's own retries (a urllib3 ``Retry`` on the session) only cover failures to
connect. A real provider also answers 429 when it throttles, 5xx when it is overloaded,
stalls, and drops connections in the middle of a body. :class:`RetryPolicy` says how
often and how patiently to retry those; :func:`with_retries` applies it to any call
(:class:`~payesh.sources.stac_io.RetryingStacApiIO` to every request pystac-client makes,
:func:`~payesh.sources.http.get_range` to range requests).

Backoff is exponential with "equal jitter": before attempt ``n + 1`` the client waits
``d / 2 + uniform(0, d / 2)`` with ``d = min(max_backoff, backoff * 2 ** (n - 1))``, or
what the server's ``Retry-After`` asks for when that is longer (capped at ``max_backoff``).
After ``attempts`` tries, one :class:`RetriesExhausted` names the URL, the number of
attempts and the last status or error.

The policy used where none is passed is process-wide: :func:`current_policy`, set with
:func:`configure_retries` or, until then, read once from the environment
(:func:`policy_from_env`: ``PAYESH_HTTP_ATTEMPTS``, ``PAYESH_HTTP_BACKOFF_S``,
``PAYESH_HTTP_MAX_BACKOFF_S``, ``PAYESH_HTTP_CONNECT_TIMEOUT_S``,
``PAYESH_HTTP_READ_TIMEOUT_S``). GDAL's own HTTP retries and timeouts for COG reads
follow the same policy (:func:`gdal_http_options`). The policy lives here only:
:mod:`payesh.sources.http` re-exports these names.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from pystac_client.exceptions import APIError

from payesh.errors import SourceError

__all__ = [
    "DEFAULT_POLICY",
    "ENV_VARS",
    "RETRY_EXCEPTIONS",
    "RETRY_STATUSES",
    "RetriesExhausted",
    "RetryPolicy",
    "SourceUnavailable",
    "TransientError",
    "check_response",
    "configure_retries",
    "current_policy",
    "describe_response",
    "gdal_http_options",
    "looks_transient",
    "parse_retry_after",
    "policy_from_env",
    "with_retries",
]

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: throttling and server-side trouble.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: Request-level failures worth retrying: refused/reset connections, timeouts, bodies cut short.
RETRY_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    ConnectionError,
    TimeoutError,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently to talk to a remote server.

    Parameters
    ----------
    attempts
        Tries in all (first one included), >= 1.
    backoff
        Base delay, seconds: the wait before the second try is about ``backoff``, then it
        doubles (with jitter) each time.
    max_backoff
        Longest single wait, seconds; also caps a server's ``Retry-After``.
    connect_timeout, read_timeout
        Seconds to connect, and to wait for the next bytes of a response.
    seed
        Seed of the jitter (``None``: a fresh random generator); tests fix it.
    """

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, not {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0 seconds")
        object.__setattr__(self, "_rng", random.Random(self.seed))

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeout for requests, seconds."""
        return (self.connect_timeout, self.read_timeout)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        d = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
        wait = d / 2 + self._rng.uniform(0, d / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait

    def worst_case_seconds(self) -> float:
        """An upper bound on the time one retried request can take, seconds."""
        waits = sum(min(self.max_backoff, self.backoff * 2**i) for i in range(self.attempts - 1))
        per_try = self.connect_timeout + self.read_timeout
        return waits + self.attempts * per_try


DEFAULT_POLICY = RetryPolicy()

#: Environment variable -> RetryPolicy field, read by :func:`policy_from_env`.
ENV_VARS: Mapping[str, str] = {
    "PAYESH_HTTP_ATTEMPTS": "attempts",
    "PAYESH_HTTP_BACKOFF_S": "backoff",
    "PAYESH_HTTP_MAX_BACKOFF_S": "max_backoff",
    "PAYESH_HTTP_CONNECT_TIMEOUT_S": "connect_timeout",
    "PAYESH_HTTP_READ_TIMEOUT_S": "read_timeout",
}


def policy_from_env(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    """A :class:`RetryPolicy` from ``PAYESH_HTTP_*`` variables (:data:`ENV_VARS`); the
    defaults for those not set.

    Raises
    ------
    ValueError
        A variable that is not a number, or out of range; the message names it.
    """
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    for var, name in ENV_VARS.items():
        text = env.get(var, "").strip()
        if not text:
            continue
        try:
            kwargs[name] = int(text) if name == "attempts" else float(text)
        except ValueError:
            raise ValueError(f"{var}={text!r} is not a number") from None
    try:
        return RetryPolicy(**kwargs)
    except ValueError as err:
        raise ValueError(f"PAYESH_HTTP_* variables: {err}") from err


_current: RetryPolicy | None = None
_current_lock = threading.Lock()


def configure_retries(policy: RetryPolicy | None) -> None:
    """Set the process-wide retry policy (``None``: read the environment again)."""
    global _current
    with _current_lock:
        _current = policy


def current_policy() -> RetryPolicy:
    """The process-wide retry policy: the configured one, else :func:`policy_from_env`."""
    global _current
    with _current_lock:
        if _current is None:
            _current = policy_from_env()
        return _current


def gdal_http_options(policy: RetryPolicy) -> dict[str, str]:
    """GDAL configuration for ``/vsicurl/`` reads under ``policy``.

    GDAL retries 429/5xx answers and some connection errors itself
    (``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``, seconds); its
    ``GDAL_HTTP_TIMEOUT`` bounds a whole request (whole seconds). What GDAL does not retry
    (a body cut short, bytes that do not decode) payesh retries around it, re-opening the
    file: ``CPL_VSIL_CURL_NON_CACHED`` makes GDAL forget a file's cached bytes when it is
    closed, so a re-read really fetches them again.
    """
    return {
        "GDAL_HTTP_MAX_RETRY": str(policy.attempts - 1),
        "GDAL_HTTP_RETRY_DELAY": f"{policy.backoff:g}",
        "GDAL_HTTP_TIMEOUT": str(max(1, math.ceil(policy.read_timeout))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, math.ceil(policy.connect_timeout))),
        # tokenised on ":" by GDAL, so this prefix covers every http(s) URL
        "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/http",
    }


#: What a GDAL/curl error says when the network, not the file, failed.
_TRANSIENT = re.compile(
    r"HTTP (?:response )?code:? ?(?:408|429|5\d\d)|timed out|timeout|reset|refused|"
    r"transfer closed|Empty reply|Recv failure|Send failure|Couldn't connect|"
    r"partial file|Failure when receiving|Connection died",
    re.IGNORECASE,
)


def looks_transient(message: str) -> bool:
    """Whether a GDAL/curl error message is a network failure (vs. a bad file)."""
    return _TRANSIENT.search(message) is not None


class TransientError(Exception):
    """A failure that may go away if the same request is tried again."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SourceUnavailable(SourceError):
    """A server kept failing (errors, timeouts, dropped connections) after every retry:
    the run stops here rather than leave the item out, which would change its output."""


class RetriesExhausted(APIError):
    """Every attempt of a request failed; names the URL, the attempts and the last failure."""

    def __init__(self, url: str, attempts: int, last: str, status: int | None) -> None:
        plural = "s" if attempts != 1 else ""
        super().__init__(f"{url}: gave up after {attempts} attempt{plural}, last: {last}")
        self.url = url
        self.attempts = attempts
        self.last = last
        self.status_code = status


def parse_retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe_response(resp: requests.Response) -> str:
    """``HTTP 503 Service Unavailable: <start of the body>``."""
    body = " ".join(resp.text[:200].split()) if resp.content else ""
    reason = f" {resp.reason}" if resp.reason else ""
    return f"HTTP {resp.status_code}{reason}" + (f": {body}" if body else "")


def check_response(resp: requests.Response) -> requests.Response:
    """``resp`` if it is a success; :class:`TransientError` if worth retrying; else APIError."""
    if 200 <= resp.status_code < 300:
        return resp
    if resp.status_code in RETRY_STATUSES:
        raise TransientError(
            describe_response(resp),
            status=resp.status_code,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )
    err = APIError(f"{resp.url}: {describe_response(resp)}")
    err.status_code = resp.status_code
    raise err


def with_retries(
    call: Callable[[], T],
    *,
    url: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call`` until it succeeds, retrying transient failures under ``policy``.

    ``call`` signals a retryable failure by raising :class:`TransientError` or one of
    the connection/timeout errors of ``requests``; anything else propagates at once.

    Raises
    ------
    RetriesExhausted
        After ``policy.attempts`` failed tries.
    """
    last = "no attempt made"
    status: int | None = None
    for attempt in range(1, policy.attempts + 1):
        retry_after: float | None = None
        try:
            return call()
        except TransientError as err:
            last, status, retry_after = str(err), err.status, err.retry_after
        except RETRY_EXCEPTIONS as err:
            last, status = f"{type(err).__name__}: {err}", None
        if attempt < policy.attempts:
            wait = policy.delay(attempt, retry_after)
            log.info(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                url,
                attempt,
                policy.attempts,
                last,
                wait,
            )
            sleep(wait)
    raise RetriesExhausted(url, policy.attempts, last, status)
