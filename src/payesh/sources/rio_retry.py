"""Raster reads over HTTP retried around GDAL, for what GDAL does not retry itself.

GDAL retries 429/5xx answers and some connection errors on its own (see
:func:`payesh.sources.retry.gdal_http_options`). A body cut short, a connection reset
in the middle of a body, or bytes that arrive altered and fail to decode (DEFLATE's
adler32, LZW/ZSTD framing) surface as one ``RasterioIOError`` instead. A remote read
is therefore tried again here, up to ``policy.attempts`` times, after the caller has
dropped what it held open (``before_retry``, usually: close the dataset and open it
again, which makes GDAL forget the cached bytes). When every attempt fails the last
error decides what it was: a network failure raises
:class:`~payesh.sources.retry.SourceUnavailable` (the run stops; the item is never
silently left out), anything else a :class:`~payesh.errors.SourceError` that names the
file as unreadable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from payesh.errors import SourceError
from payesh.sources.http import RetryPolicy, SourceUnavailable, current_policy, looks_transient

__all__ = ["RIO_ERRORS", "is_remote", "retry_rio"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What rasterio raises when GDAL cannot fetch or decode a file.
RIO_ERRORS: tuple[type[BaseException], ...] = (RasterioError, CPLE_BaseError, OSError)


#: GDAL's virtual file systems that read over a network (``/vsizip/`` or ``/vsigzip/`` of
#: a local file are not among them; of one of these, they are: ``/vsizip//vsicurl/...``)
_NETWORK_VSI = (
    "/vsicurl",
    "/vsis3",
    "/vsigs",
    "/vsiaz",
    "/vsiadls",
    "/vsioss",
    "/vsiswift",
    "/vsiwebhdfs",
    "/vsihdfs",
)


def is_remote(href: str) -> bool:
    """Whether ``href`` is read over the network: an ``http(s)://`` or ``s3://`` URL, or a
    GDAL path through a network file system (``/vsicurl/``, ``/vsis3/``, …, also inside
    ``/vsizip/``); a local path or a ``/vsizip/`` of a local file is not."""
    if href.startswith(("http://", "https://", "s3://")):
        return True
    return href.startswith("/vsi") and any(fs in href for fs in _NETWORK_VSI)


def retry_rio(
    call: Callable[[], T],
    *,
    where: str,
    policy: RetryPolicy | None = None,
    before_retry: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried up to ``policy.attempts`` times while it raises a rasterio error.

    Parameters
    ----------
    call
        The read (open, window read …) of one remote file.
    where
        What is read, for messages: ``item 'x' asset 'red' (http://…/B04.tif)``.
    policy
        Attempts and backoff (seconds); default the process-wide policy.
    before_retry
        Called before each new attempt (e.g. re-open the dataset).

    Raises
    ------
    SourceUnavailable
        Every attempt failed and the last failure was the network's.
    SourceError
        Every attempt failed and the file itself looks unreadable.
    """
    policy = policy or current_policy()
    last: BaseException | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except RIO_ERRORS as err:
            last = err
        if attempt < policy.attempts:
            wait = policy.delay(attempt)
            log.info(
                "%s: read attempt %d/%d failed (%s); retrying in %.2f s",
                where,
                attempt,
                policy.attempts,
                last,
                wait,
            )
            sleep(wait)
            if before_retry is not None:
                before_retry()
    assert last is not None
    n = policy.attempts
    plural = "s" if n != 1 else ""
    if looks_transient(str(last)):
        raise SourceUnavailable(
            f"{where}: gave up after {n} attempt{plural}, last: {last}"
        ) from last
    raise SourceError(f"{where}: cannot be read ({n} attempt{plural}): {last}") from last
