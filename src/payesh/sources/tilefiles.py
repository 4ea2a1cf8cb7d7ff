"""Where a COG's tile bytes come from, for :mod:`payesh.sources.cogtiles`: a local file
(``pread``) or a file over http(s) (range requests under the process's retry policy,
each in a request slot: :func:`~payesh.sources.http.get_range`).
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, Future

from pystac_client.exceptions import APIError

from payesh.errors import SourceError
from payesh.sources.http import RetriesExhausted, SourceUnavailable, current_policy, get_range

__all__ = ["HttpFile", "LocalFile"]


class LocalFile:
    """A local file's bytes, by ``pread``."""

    remote = False
    attempts = 1

    def __init__(self, path: str) -> None:
        self.label = path

    def read(self, offset: int, size: int) -> bytes:
        fd = os.open(self.label, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def little_endian(self) -> bool:
        with open(self.label, "rb") as f:
            return f.read(2) == b"II"


class HttpFile:
    """A file over http(s), by range requests under the process's retry policy.

    ``where`` names it in errors (``item 'x' asset 'red' (url)``, no query); its byte
    order is asked for on ``pool`` as it is made, beside the first tiles' fetches.
    """

    remote = True

    def __init__(self, url: str, where: str, pool: Executor) -> None:
        self.url, self.label = url, where
        self.attempts = current_policy().attempts
        self._order: Future[bytes] = pool.submit(self.read, 0, 2)

    def read(self, offset: int, size: int) -> bytes:
        try:
            return get_range(self.url, offset, size)
        except RetriesExhausted as err:
            raise SourceUnavailable(f"{self.label}: {err}") from err
        except APIError as err:
            raise SourceError(f"{self.label}: cannot be read: {err}") from err

    def little_endian(self) -> bool:
        return self._order.result() == b"II"
