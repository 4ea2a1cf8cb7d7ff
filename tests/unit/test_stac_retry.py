"""Retry policy and retrying STAC I/O against a real fault-injecting HTTP server (no mocks)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pystac_client.exceptions import APIError

from payesh.sources.http import (
    RetriesExhausted,
    RetryingStacApiIO,
    RetryPolicy,
    parse_retry_after,
)

# the server helpers live beside the integration tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from servers import FaultyServer, serve_directory

FAST = RetryPolicy(attempts=4, backoff=0.02, max_backoff=1.0, read_timeout=2.0, seed=0)
DOC = {"type": "Catalog", "id": "x", "description": "d", "links": [], "stac_version": "1.1.0"}


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyServer]:
    root = tmp_path_factory.mktemp("www")
    (root / "doc.json").write_text(json.dumps(DOC))
    with serve_directory(root) as server:
        yield server


@pytest.fixture
def server(_server: FaultyServer) -> Iterator[FaultyServer]:
    yield _server.reset()
    _server.reset()


def fetch(server: FaultyServer, policy: RetryPolicy = FAST, method: str = "GET") -> dict:
    io = RetryingStacApiIO(policy)
    params = {"limit": 1} if method == "POST" else None
    return json.loads(io.request(f"{server.url}/doc.json", method=method, parameters=params))


def statuses(server: FaultyServer) -> list[int | str]:
    return [h.status for h in server.take_hits()]


# --- the policy ---------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(attempts=8, backoff=1.0, max_backoff=10.0, seed=1)
    for failures, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (7, 10.0)]:
        waits = [policy.delay(failures) for _ in range(200)]
        assert full / 2 <= min(waits) and max(waits) <= full
        assert max(waits) - min(waits) > full / 4  # really jittered
    # Retry-After wins when longer, but never beyond max_backoff
    assert policy.delay(1, retry_after=5.0) >= 5.0
    assert policy.delay(1, retry_after=3600.0) == 10.0
    assert RetryPolicy().worst_case_seconds() <= 6.5 * 60  # 5 tries of <= 70 s, 15 s of waits


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


# --- against the server -------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(server: FaultyServer, status: int) -> None:
    server.faults.next(2, status=status)
    assert fetch(server) == DOC
    assert statuses(server) == [status, status, 200]


def test_post_is_retried_too(server: FaultyServer) -> None:
    server.faults.next(1, status=503)
    assert fetch(server, method="POST") == DOC
    hits = server.take_hits()
    assert [(h.method, h.status) for h in hits] == [("POST", 503), ("POST", 200)]


def test_retry_after_is_respected(server: FaultyServer) -> None:
    server.faults.next(1, status=429, retry_after=0.5)
    t0 = time.monotonic()
    assert fetch(server) == DOC
    assert time.monotonic() - t0 >= 0.5
    assert statuses(server) == [429, 200]


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_dropped_connections_and_cut_bodies_are_retried(server: FaultyServer, kind: str) -> None:
    server.faults.next(2, kind=kind)
    assert fetch(server) == DOC
    assert statuses(server) == [kind, kind, 200]


def test_a_stalled_server_times_out_and_is_retried(server: FaultyServer) -> None:
    server.faults.next(1, kind="stall", seconds=1.0)
    policy = RetryPolicy(attempts=3, backoff=0.01, read_timeout=0.3, seed=0)
    t0 = time.monotonic()
    assert fetch(server, policy) == DOC
    assert time.monotonic() - t0 < 1.0  # did not wait for the stall to end
    assert statuses(server) == ["stall", 200]


def test_client_errors_are_not_retried(server: FaultyServer) -> None:
    io = RetryingStacApiIO(FAST)
    with pytest.raises(APIError) as info:
        io.request(f"{server.url}/missing.json")
    assert info.value.status_code == 404
    assert not isinstance(info.value, RetriesExhausted)
    assert statuses(server) == [404]


def test_persistent_failure_is_one_clear_error_in_bounded_time(server: FaultyServer) -> None:
    server.faults.always(status=503)
    t0 = time.monotonic()
    with pytest.raises(RetriesExhausted) as info:
        fetch(server)
    assert time.monotonic() - t0 < 2.0
    err = info.value
    assert err.attempts == 4 and err.status_code == 503
    assert f"{server.url}/doc.json" in str(err)
    assert "gave up after 4 attempts" in str(err) and "HTTP 503" in str(err)
    assert statuses(server) == [503] * 4


def test_a_seeded_fault_rate_is_survived(server: FaultyServer) -> None:
    server.faults.rate(0.3, seed=7, status=503)
    policy = RetryPolicy(attempts=8, backoff=0.01, max_backoff=0.05, seed=0)
    for _ in range(20):
        assert fetch(server, policy) == DOC
    seen = statuses(server)
    assert seen.count(200) == 20 and seen.count(503) > 0
