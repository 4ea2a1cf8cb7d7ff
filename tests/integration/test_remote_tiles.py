"""Tiles of COGs over HTTP fetched by payesh's range requests and decoded with libdeflate
(:mod:`payesh.sources.cogtiles`), against a real range server on loopback.

Each test serves a real Sentinel-2 band (Zagreb, L2A) written again as providers write
COGs, and checks the values against GDAL's read of the local file: equal for every
window; tiles next to each other in the file fetched by one request; a bit flipped on
the way, a 503, a reset or a body cut short fetched again; a dead server one error
naming the file and the attempts; a file read with requester-pays left to GDAL.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from servers import FaultyServer, serve_directory

from payesh.errors import SourceError
from payesh.sources.cogtiles import TileSource, tile_source
from payesh.sources.http import RetryPolicy, SourceUnavailable, configure_retries, get_range
from payesh.sources.load import gdal_remote_env

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[3] / "shared" / "realdata"
ZAGREB = REAL / "s2_l2a_zagreb_33TWL_mapchete-eo" / "sentinel-2-l2a" / "S2B_33TWL_20230820_0_L2A"
TILE = 256
WHERE = "item 'zagreb' asset 'red'"
#: 1 s timeouts, short backoff: the faults below cost little time
POLICY = RetryPolicy(
    attempts=4, backoff=0.01, max_backoff=0.05, connect_timeout=1.0, read_timeout=1.0, seed=0
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultyServer, Path]]:
    """Zagreb's red band (uint16, 915 px: partial tiles) as a COG of 256 px DEFLATE tiles
    with the predictor, served over HTTP."""
    folder = tmp_path_factory.mktemp("remote-tiles")
    with rasterio.open(ZAGREB / "B04.tif") as src:
        data = src.read(1)
        profile = src.profile | {
            "driver": "COG",
            "compress": "deflate",
            "predictor": 2,
            "blocksize": TILE,
        }
    for key in ("blockxsize", "blockysize", "tiled", "interleave"):
        profile.pop(key, None)
    with rasterio.open(folder / "B04.tif", "w", **profile) as dst:
        dst.write(data, 1)
    with serve_directory(folder) as server:
        yield server, folder / "B04.tif"


@pytest.fixture
def server(served: tuple[FaultyServer, Path]) -> Iterator[FaultyServer]:
    configure_retries(POLICY)
    yield served[0].reset()
    served[0].reset()
    configure_retries(None)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8, thread_name_prefix="test-fetch") as p:
        yield p


_fresh = iter(range(10**6))


def _open_remote(
    server: FaultyServer, pool: Any, keep: int = 1, **env: str
) -> tuple[Any, TileSource | None]:
    """The served file opened as the aligned reader opens it (under a path of its own,
    so that GDAL's cache of another test cannot answer), and its tile source."""
    url = f"{server.url}/t{next(_fresh)}/B04.tif"
    options = gdal_remote_env() | env
    with rasterio.Env(**options):
        src = rasterio.open(url)
    where = f"{WHERE} ({url})"
    return src, tile_source(src, keep=keep, url=url, where=where, env=options, pool=pool)


def _local(path: Path, window: Window) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read(1, window=window))


def test_remote_tiles_equal_gdal_and_neighbours_come_in_one_request(
    served: tuple[FaultyServer, Path], server: FaultyServer, pool: Any
) -> None:
    path = served[1]
    src, tiles = _open_remote(server, pool, keep=16)
    with src:
        assert tiles is not None and tiles.file.remote
        assert tiles.file.little_endian()
        server.take_hits()
        every = tiles.tiles_in(0, 0, src.width, src.height)
        assert len(every) == 16  # 915 px in 256 px tiles: 4 x 4
        asked = tiles.prefetch(every, pool)
        assert asked == tiles.pending_bytes > 0
        assert tiles.prefetch(every, pool) == 0  # on their way already: not asked again
        windows = [
            Window(0, 0, src.width, src.height),
            Window(TILE - 3, TILE - 5, 9, 11),  # four tiles
            Window(src.width - 1, 0, 1, src.height),  # the right column: partial tiles
            Window(100, 700, 815, 215),
        ]
        for win in windows:
            got = tiles.read(int(win.col_off), int(win.row_off), int(win.width), int(win.height))
            assert got is not None
            np.testing.assert_array_equal(got, _local(path, win), err_msg=str(win))
        hits = server.take_hits()
        assert tiles.pending_bytes == 0
    # the 16 tiles follow each other in the file (8 bytes apart), 1.3 MB: one request
    assert all(h.method == "GET" and h.range and h.status == 206 for h in hits), hits
    assert len(hits) == 1, hits


@pytest.mark.parametrize("fault", ["bitflip", "503", "reset", "truncate"])
def test_a_tile_damaged_or_refused_on_the_way_is_fetched_again(
    fault: str, served: tuple[FaultyServer, Path], server: FaultyServer, pool: Any
) -> None:
    """A flipped bit fails libdeflate's checks (GDAL would decode it into wrong pixels);
    a 503, a reset and a body cut short are retried by the policy; every time the read
    gives the file's values."""
    src, tiles = _open_remote(server, pool)
    with src:
        assert tiles is not None
        assert tiles.file.little_endian()  # the byte order's request is done: not faulted
        server.take_hits()
        if fault == "503":
            server.faults.next(1, status=503)
        else:
            server.faults.next(1, kind=fault)
        win = Window(TILE, TILE, TILE, TILE)
        got = tiles.read(TILE, TILE, TILE, TILE)
        hits = server.take_hits()
    assert got is not None
    np.testing.assert_array_equal(got, _local(served[1], win))
    assert [str(h.status) for h in hits] == [fault, "206"], hits
    assert hits[0].range == hits[1].range  # the same tile, asked again


def test_a_dead_server_is_one_error_naming_the_file_and_the_attempts(
    server: FaultyServer, pool: Any
) -> None:
    src, tiles = _open_remote(server, pool)
    with src:
        assert tiles is not None
        assert tiles.file.little_endian()
        server.take_hits()
        server.faults.always(status=503)
        tiles.prefetch([(0, 0)], pool)
        with pytest.raises(SourceUnavailable) as info:
            tiles.read(0, 0, 10, 10)  # the tile fetched ahead: its error comes here
    message = str(info.value)
    assert WHERE in message and "/B04.tif" in message
    assert f"gave up after {POLICY.attempts} attempts" in message and "503" in message
    assert isinstance(info.value, SourceError)
    hits = server.take_hits()
    assert len(hits) == POLICY.attempts and {h.status for h in hits} == {503}


def test_a_tile_damaged_at_the_source_is_an_error_after_the_attempts(
    tmp_path: Path, pool: Any
) -> None:
    """A tile whose stored bytes are damaged fails every fetch the same way: one
    SourceError naming the file and the tile, never wrong pixels."""
    with rasterio.open(ZAGREB / "B04.tif") as src:
        data = src.read(1)
        profile = src.profile | {"driver": "GTiff", "tiled": True, "compress": "deflate"}
    profile |= {"blockxsize": TILE, "blockysize": TILE}
    path = tmp_path / "B04.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset + 40] ^= 0x10
    path.write_bytes(bytes(raw))
    configure_retries(POLICY)
    try:
        with serve_directory(tmp_path) as server:
            src, tiles = _open_remote(server, pool)
            with src:
                assert tiles is not None
                with pytest.raises(
                    SourceError, match=r"tile \(row 1, column 1\) is damaged"
                ) as info:
                    tiles.read(TILE, TILE, 5, 5)
            hits = server.take_hits()
    finally:
        configure_retries(None)
    tile_gets = [h for h in hits if (h.range or "").startswith(f"bytes={offset}-")]
    assert f"fetched {POLICY.attempts} times" in str(info.value) and WHERE in str(info.value)
    assert len(tile_gets) == POLICY.attempts


def test_files_read_with_request_options_are_left_to_gdal(
    server: FaultyServer, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requester-pays, headers, credentials, TLS options: GDAL sends them, payesh's
    requests would not; given to the reader or set in the environment."""
    for option in ({"AWS_REQUEST_PAYER": "requester"}, {"GDAL_HTTP_HEADERS": "X-A: b"}):
        src, tiles = _open_remote(server, pool, **option)
        with src:
            assert tiles is None, option
    src, tiles = _open_remote(server, pool)
    with src:
        assert tiles is not None
    monkeypatch.setenv("GDAL_HTTP_BEARER", "a-token")
    src, tiles = _open_remote(server, pool)
    with src:
        assert tiles is None


def test_a_server_that_ignores_ranges_still_gives_the_bytes_asked_for(
    served: tuple[FaultyServer, Path], server: FaultyServer
) -> None:
    """A server without range support answers 200 with the whole file: the range is
    taken from it (slow, but right), not the file's first bytes."""
    path = served[1]
    data = path.read_bytes()
    start, size = len(data) // 3, 1000
    url = f"{server.url}/t{next(_fresh)}/B04.tif"
    assert get_range(url, start, size) == data[start : start + size]
    server.ignore_ranges = True
    assert get_range(url, start, size) == data[start : start + size]
    hits = server.take_hits()
    assert [h.status for h in hits] == [206, 200]
