"""The process's cap on remote imagery requests in flight.

:func:`~payesh.parallel.io_threads` (``PAYESH_IO_THREADS``) is how many requests for
imagery payesh has in flight at once, whatever reads them: the file checks and openings
(this month's and the next one's, :mod:`payesh.sources.opening`), the tiles fetched ahead
(:mod:`payesh.sources.prefetch`), GDAL's windowed reads, the checksums' downloads and
odc-stac's reads of Landsat and night-light months, several months at once. Each pool of
those keeps up to that many threads, but a request is made only in one of the process's
:func:`request_slot`\\ s: before, the pools' sizes added up (a 6 km flow with 2 I/O
threads had 10 requests in flight at once against the bench's latency server, up to 115
with 64), and lowering the number for a provider that limits concurrent requests did not
bound them. With the cap the 6 km year at 100 ms a request took 14.4 and 15.3 s, against
16.5 s without it (old and new code in turn; 64 and 91 requests at once).

A slot is taken around one attempt of a request (a range fetch's retries wait outside
it), or of a file's check (its checksum download, opening and last block, whose own
retries and GDAL's then wait inside the slot, one request at a time), and never while
waiting for another thread's work, so that slots cannot all be held by threads waiting
for each other; a thread already in a slot does not take a second one.
STAC API searches and LAADS DAAC downloads are not imagery reads: they are not counted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from payesh.parallel import io_threads

__all__ = ["SlottedPool", "request_slot"]

R = TypeVar("R")

_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()
_held = threading.local()


def _forget_slots_after_fork() -> None:
    """A forked child holds none of its parent's slots."""
    global _slots_lock
    _slots.clear()
    _slots_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_slots_after_fork)


def _semaphore(n: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        if n not in _slots:
            _slots[n] = threading.BoundedSemaphore(n)
        return _slots[n]


@contextmanager
def request_slot() -> Iterator[None]:
    """Hold one of the process's :func:`~payesh.parallel.io_threads` slots for remote
    requests while the block runs, waiting for one if all are taken. Within a slot the
    same thread takes no second one (a check that downloads its checksum, say)."""
    if getattr(_held, "slot", False):
        yield
        return
    with _semaphore(io_threads()):
        _held.slot = True
        try:
            yield
        finally:
            _held.slot = False


def _in_slot(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    with request_slot():
        return fn(*args, **kwargs)


class SlottedPool(ThreadPoolExecutor):
    """A thread pool whose every job runs in a :func:`request_slot`: for a library that
    makes one read a job on a pool it is given (odc-stac's ``pool``). Its jobs must not
    wait for other jobs that need a slot."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return super().submit(_in_slot, fn, *args, **kwargs)
