"""One cap on remote requests in flight for the whole process (payesh.sources.inflight)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from payesh.sources.inflight import SlottedPool, request_slot


class Gauge:
    """How many callers are inside at once, and the most seen."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def visit(self, seconds: float = 0.03) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1


def test_pools_of_any_size_share_the_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pools of 4 threads each, one cap of 2: never more than 2 inside at once."""
    monkeypatch.setenv("PAYESH_IO_THREADS", "2")
    gauge = Gauge()

    def request() -> None:
        with request_slot():
            gauge.visit()

    with ThreadPoolExecutor(4) as a, ThreadPoolExecutor(4) as b:
        jobs = [pool.submit(request) for pool in (a, b) for _ in range(8)]
        for job in jobs:
            job.result(timeout=30)
    assert gauge.most == 2


def test_a_thread_in_a_slot_takes_no_second_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that downloads its checksum inside its slot: with one slot, no deadlock."""
    monkeypatch.setenv("PAYESH_IO_THREADS", "1")
    done = threading.Event()

    def nested() -> None:
        with request_slot(), request_slot():
            pass
        with request_slot():  # the slot was given back once, on the way out
            done.set()

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set()


def test_slotted_pool_runs_each_job_in_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """odc-stac's pool: 4 threads, but with one slot its reads go one at a time, and the
    results come back in order."""
    monkeypatch.setenv("PAYESH_IO_THREADS", "1")
    gauge = Gauge()

    def read(i: int) -> int:
        gauge.visit(0.01)
        return i * i

    with SlottedPool(4) as pool:
        assert list(pool.map(read, range(8))) == [i * i for i in range(8)]
    assert gauge.most == 1
