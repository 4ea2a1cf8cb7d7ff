"""Reading while writing: one process commits versions, another reads them meanwhile.

A writer process commits versions 2..N (N = 6 locally, 4 on S3) of a city store
(version ``k`` is recognisable everywhere: every value of every group is ``k`` plus a
fixed pattern, and the root and group attributes say ``k``). Meanwhile this process opens the store over and over — the
latest snapshot, and the versions listed by ``history`` — and checks that every read is
exactly one committed version: never an error, never values or attributes of two
versions mixed, and the latest version never goes backwards. Once locally (the writer
holds the city lock; readers take none) and once on S3 (moto on loopback).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pyproj import CRS

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability.figures import scale
from s3server import MotoS3, moto_s3

from payesh import store as st

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration

CITY = "demo"
TIMES = pd.date_range("2025-01-01", periods=2, freq="MS")
N_PIX = 64  # 64 x 64 float32 per month: chunks big enough to be stored as chunk objects
UTM = CRS("EPSG:32638").to_wkt()


def versioned_groups(k: int) -> dict[str, xr.Dataset]:
    """The tiles and pixels of version ``k``: ``k`` + a fixed fraction in every cell."""
    pattern = (np.arange(len(TIMES) * N_PIX * N_PIX) % 997 / 1000.0).reshape(
        len(TIMES), N_PIX, N_PIX
    )
    pixels = xr.Dataset(
        {"builtup_prob": (("time", "y", "x"), (k + pattern).astype("float32"), {"units": "1"})},
        coords={
            "time": TIMES,
            "y": 4_270_000.0 - (np.arange(N_PIX) + 0.5) * 10,
            "x": 500_000.0 + (np.arange(N_PIX) + 0.5) * 10,
            "spatial_ref": xr.DataArray(0, attrs={"crs_wkt": UTM}),
        },
        attrs={"pixels_version": k},
    )
    ny, nx = 3, 4
    tiles = xr.Dataset(
        {
            "ntl_sum": (
                ("time", "tile_y", "tile_x"),
                k + pattern[:, :ny, :nx],
                {"units": "nW cm-2 sr-1"},
            )
        },
        coords={
            "time": TIMES,
            "tile_y": 4_270_000.0 - (np.arange(ny) + 0.5) * 320,
            "tile_x": 500_000.0 + (np.arange(nx) + 0.5) * 320,
        },
        attrs={"crs": "EPSG:32638", "tiles_version": k},
    )
    return {"tiles": tiles, "pixels": pixels}


def write_version(store: str, k: int) -> str:
    return st.write_run(
        CITY,
        versioned_groups(k),
        store=store,
        message=f"v{k}",
        provenance={"code_version": "test", "version": k},
    )


def writer_main(store: str, first: int, last: int) -> None:
    """The writer process: commit versions ``first..last``, one line per commit."""
    for k in range(first, last + 1):
        snap = write_version(store, k)
        print(k, snap, flush=True)
        time.sleep(0.2)  # let the reader see this version as the latest at least once


def read_version(store: str, version: str | None = None) -> int:
    """Read tiles and pixels of one snapshot and return the version they hold.

    Fails if the groups, their attributes and the root attributes disagree, or if any
    value differs from what that version wrote.
    """
    tiles = st.open_indicators(CITY, store=store, version=version)
    snap = tiles.attrs["snapshot_id"]
    assert version is None or snap == version
    # the second group pinned to the snapshot the first was read from
    pixels = st.open_indicators(CITY, store=store, group="pixels", version=snap)
    k = int(tiles.attrs["version"])
    seen = {
        "root": k,
        "root via pixels": int(pixels.attrs["version"]),
        "tiles group": int(tiles.attrs["tiles_version"]),
        "pixels group": int(pixels.attrs["pixels_version"]),
    }
    assert set(seen.values()) == {k}, seen
    want = versioned_groups(k)
    np.testing.assert_array_equal(tiles["ntl_sum"].values, want["tiles"]["ntl_sum"].values)
    np.testing.assert_array_equal(
        pixels["builtup_prob"].values, want["pixels"]["builtup_prob"].values
    )
    return k


def _read_while_writing(store: str, env: dict[str, str], versions: int, log: Path) -> None:
    write_version(store, 1)  # the store exists before the reader starts
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        f"from test_store_readers import writer_main; writer_main({store!r}, 2, {versions})"
    )
    with log.open("w+") as out:
        writer = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=out, env=env)
        latest_seen: list[int] = []
        checked: dict[str, int] = {}  # snapshot id -> version read from it
        try:
            while writer.poll() is None:
                latest_seen.append(read_version(store))
                # one listed version per round (oldest unchecked first), while writing goes on
                for entry in reversed(st.history(CITY, store=store)):
                    if entry["snapshot_id"] not in checked:
                        sid = entry["snapshot_id"]
                        checked[sid] = read_version(store, sid)
                        assert entry["message"] == f"v{checked[sid]}"
                        break
                time.sleep(0.1)  # leave the writer (and the S3 server) the CPU
        finally:
            if writer.poll() is None:
                writer.kill()
            writer.wait(60)
            out.seek(0)
            output = out.read()
    assert writer.returncode == 0, output

    # the latest snapshot never went backwards, and reads interleaved with commits
    assert latest_seen == sorted(latest_seen), latest_seen
    assert len(set(latest_seen)) >= 2, f"reads did not overlap the commits: {latest_seen}"
    hist = st.history(CITY, store=store)
    assert [h["message"] for h in hist] == [f"v{k}" for k in range(versions, 0, -1)]
    for entry in hist:  # every version, after the fact, is exactly what was committed
        k = checked.get(entry["snapshot_id"]) or read_version(store, entry["snapshot_id"])
        assert entry["message"] == f"v{k}"
        assert entry["metadata"]["provenance"]["version"] == k
    assert read_version(store) == versions
    from reliability.figures import record  # the reliability page's figures

    node = os.environ["PYTEST_CURRENT_TEST"].split(" ")[0]
    record(
        "concurrency",
        node,
        commits_under_readers=versions - 1,
        latest_reads=len(latest_seen),
        versions_read_back=len(hist),
        mixed_reads=0,
        data_lost=0,
    )


def test_reading_while_writing_local(tmp_path: Path) -> None:
    _read_while_writing(
        str(tmp_path / "store"),
        dict(os.environ),
        versions=scale(6, 30),
        log=tmp_path / "writer.log",
    )
    # the pixels were stored as chunk objects, not inlined in manifests: a torn read of
    # chunks would have been possible, and was not seen
    assert any((tmp_path / "store" / CITY / "chunks").iterdir())


@pytest.fixture(scope="module")
def s3_server() -> Iterator[MotoS3]:
    with moto_s3() as server:
        yield server


def test_reading_while_writing_s3(
    s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    env: dict[str, Any] = dict(os.environ)
    _read_while_writing(
        f"s3://{s3_server.bucket}/readers", env, versions=scale(4, 15), log=tmp_path / "writer.log"
    )
