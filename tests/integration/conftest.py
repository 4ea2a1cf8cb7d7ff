"""Fixtures that start real servers on loopback (torn down at the end of the session).

Index
-----
asset_server (session)
    A :class:`servers.FaultyServer` serving ``tiny_city``'s catalog folder over HTTP with
    byte ranges; ``asset_server.faults`` injects 5xx/429/stalls/resets/truncations.
assets
    ``asset_server`` for one test: faults cleared and request log emptied around it.
stac_api (session)
    ``rustac serve`` (in-memory STAC API) holding ``tiny_city``'s items, their asset hrefs
    rewritten to URLs on ``asset_server`` (with ``file:checksum``); its root URL.
faulty_api
    A fault-injecting reverse proxy (started once per session) in front of ``stac_api``,
    its links rewritten to the proxy; faults cleared and request log emptied per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from servers import FaultyServer, serve_directory, serve_proxy, start_rustac, write_api_items


@pytest.fixture(scope="session")
def asset_server(tiny_city: Any) -> Iterator[FaultyServer]:
    with serve_directory(tiny_city.catalog.parent) as server:
        yield server


@pytest.fixture
def assets(asset_server: FaultyServer) -> Iterator[FaultyServer]:
    """``asset_server`` with no faults scheduled and an empty request log, before and after."""
    yield asset_server.reset()
    asset_server.reset()


@pytest.fixture(scope="session")
def stac_api(
    tiny_city: Any, asset_server: FaultyServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("stac-api")
    hrefs = write_api_items(tiny_city.catalog, folder, asset_server.url + "/api")
    with start_rustac(hrefs, log_file=folder / "rustac.log") as url:
        yield url


@pytest.fixture(scope="session")
def _faulty_api_server(stac_api: str) -> Iterator[FaultyServer]:
    with serve_proxy(stac_api) as proxy:
        yield proxy


@pytest.fixture
def faulty_api(_faulty_api_server: FaultyServer) -> Iterator[FaultyServer]:
    yield _faulty_api_server.reset()
    _faulty_api_server.reset()
