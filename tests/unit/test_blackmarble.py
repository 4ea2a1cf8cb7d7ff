"""NASA Black Marble VNP46A3/A4: tiles over a city (real tile grid), HDF5 layers with
their fill/scale/offset/quality placed on the 15" grid, and token-authenticated downloads
from a real HTTP server on loopback. The HDF5 files are written here with the real
layer names and attributes of VNP46A3 (HDF-EOS5 grid ``VIIRS_Grid_DNB_2d``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from payesh.city import City
from payesh.errors import SourceError
from payesh.grid import ntl_geobox
from payesh.sources.blackmarble import (
    DATA_FIELDS,
    RESOLUTION_DEG,
    blackmarble_month,
    download_tile,
    earthdata_token,
    laads_directory_url,
    read_tile,
    tile_geobox,
    tiles_over,
)

GRID = (
    Path(__file__).resolve().parents[3]
    / "shared/realdata/viirs_blackmarble_tile_grid/blackmarbletiles.geojson"
)
# A small city across the 50° E tile boundary (h22v05 | h23v05).
STRADDLE = City(
    name="straddle", title="t", bbox=(49.985, 37.28, 50.015, 37.30), crs="EPSG:32639",
    tile_size=1000,
)  # fmt: skip


def write_tile(path: Path, tile: str, dn: np.ndarray, quality: np.ndarray, num: np.ndarray) -> Path:
    """A VNP46A3-like HDF5 file: real group path, layer names and attributes."""
    box = tile_geobox(tile)
    with h5py.File(path, "w") as f:
        fields = f.create_group(DATA_FIELDS)
        rad = fields.create_dataset("NearNadir_Composite_Snow_Free", data=dn, compression="gzip")
        rad.attrs["_FillValue"] = np.array([65535], dtype="uint16")
        rad.attrs["scale_factor"] = np.array([0.1], dtype="float32")
        rad.attrs["add_offset"] = np.array([0.0], dtype="float32")
        rad.attrs["units"] = np.bytes_("nW/(cm2 sr)")
        q = fields.create_dataset(
            "NearNadir_Composite_Snow_Free_Quality", data=quality, compression="gzip"
        )
        q.attrs["_FillValue"] = np.array([255], dtype="uint8")
        n = fields.create_dataset("NearNadir_Composite_Snow_Free_Num", data=num, compression="gzip")
        n.attrs["_FillValue"] = np.array([65535], dtype="uint16")
        half = RESOLUTION_DEG / 2
        fields["lon"] = box.affine.c + half + RESOLUTION_DEG * np.arange(dn.shape[1])
        fields["lat"] = box.affine.f - half - RESOLUTION_DEG * np.arange(dn.shape[0])
        f.attrs["HorizontalTileNumber"] = np.array([int(tile[1:3])], dtype="int32")
        f.attrs["VerticalTileNumber"] = np.array([int(tile[4:6])], dtype="int32")
    return path


def uniform(value: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = (2400, 2400)
    return (
        np.full(shape, value, "uint16"),
        np.zeros(shape, "uint8"),
        np.full(shape, 7, "uint16"),
    )


def test_tiles_over_a_city_from_the_real_grid() -> None:
    khoy = (44.92, 38.52, 45.00, 38.58)
    assert tiles_over(khoy, grid=GRID) == tiles_over(khoy) == ["h22v05"]
    assert tiles_over(STRADDLE.bbox, grid=GRID) == ["h22v05", "h23v05"]
    rng = np.random.default_rng(0)
    for _ in range(20):  # the grid's definition and the published file agree
        w, s = rng.uniform(-179, 170), rng.uniform(-85, 75)
        bbox = (w, s, w + rng.uniform(0.01, 12), s + rng.uniform(0.01, 12))
        assert tiles_over(bbox) == tiles_over(bbox, grid=GRID)
    assert tile_geobox("h22v05").boundingbox == (40.0, 30.0, 50.0, 40.0)
    with pytest.raises(SourceError, match="'h40v05' is not a Black Marble tile"):
        tile_geobox("h40v05")


def test_layers_scaled_masked_and_placed_across_two_tiles(tmp_path: Path) -> None:
    gbox = ntl_geobox(STRADDLE)  # Black Marble's lattice: origin (0, 0)
    west_dn, west_q, west_n = uniform(100)  # 10.0 nW·cm⁻²·sr⁻¹
    east_dn, east_q, east_n = uniform(235)  # 23.5
    # pixels of the city in the west tile (h22v05: lon 40..50, lat 40..30)
    row = round((40.0 - 37.29) / RESOLUTION_DEG)
    col = 2399  # the last column, just west of 50° E
    west_dn[row, col] = 65535  # _FillValue: missing, not dark
    west_q[row + 1, col] = 255  # quality fill: missing even with a value
    west_q[row + 2, col], west_n[row + 2, col] = 2, 0  # gap-filled: kept, flagged
    files = [
        write_tile(tmp_path / "VNP46A3.A2025060.h22v05.002.2025100000000.h5", "h22v05",
                   west_dn, west_q, west_n),
        write_tile(tmp_path / "VNP46A3.A2025060.h23v05.002.2025100000000.h5", "h23v05",
                   east_dn, east_q, east_n),
    ]  # fmt: skip
    ds = blackmarble_month(files, gbox, pd.Timestamp("2025-03-01"))

    # the shape viirs_month gives, on the night-light grid itself
    assert set(ds.data_vars) == {"radiance", "cf_cvg"}
    assert ds["radiance"].dims == ("time", "y", "x") and ds.sizes["time"] == 1
    assert ds["radiance"].dtype == np.float32 and ds["cf_cvg"].dtype == np.uint16
    assert ds.odc.geobox == gbox and ds.odc.geobox.crs.epsg == 4326
    assert ds["radiance"].attrs["units"] == "nW cm-2 sr-1"
    assert ds.attrs["source_items"] == [f.name for f in files]

    rad = ds["radiance"].values[0]
    cvg = ds["cf_cvg"].values[0]
    x = ds["x"].values
    west, east = x < 50.0, x > 50.0
    assert west.any() and east.any()
    # scale_factor from the file: DN 100 -> 10.0, DN 235 -> 23.5
    assert np.nanmax(np.abs(rad[:, east] - 23.5)) < 1e-5
    y_idx = {round(float(v), 6): i for i, v in enumerate(ds["y"].values)}
    lat = [round(40.0 - (row + k + 0.5) * RESOLUTION_DEG, 6) for k in range(3)]
    c = int(np.flatnonzero(west)[-1])  # column of lon 49.998° (the tile's last)
    fill, q255, gap = (y_idx[v] for v in lat)
    assert np.isnan(rad[fill, c]) and cvg[fill, c] == 0
    assert np.isnan(rad[q255, c]) and cvg[q255, c] == 0
    assert rad[gap, c] == pytest.approx(10.0) and cvg[gap, c] == 0
    assert ds.attrs["gap_filled_pixels"] == 1
    others = np.ones_like(rad, dtype=bool)
    others[[fill, q255, gap], c] = False
    assert np.all(np.abs(rad[:, west][others[:, west]] - 10.0) < 1e-5)
    assert (cvg[others] == 7).all()


def test_a_file_without_the_layer_names_it(tmp_path: Path) -> None:
    path = tmp_path / "VNP46A3.A2025060.h22v05.002.x.h5"
    with h5py.File(path, "w") as f:
        f.create_group(DATA_FIELDS)["AllAngle_Composite_Snow_Free"] = np.zeros((4, 4), "uint16")
    with pytest.raises(SourceError, match=r"no 'NearNadir_Composite_Snow_Free'.*AllAngle"):
        read_tile(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(SourceError, match=r"junk\.h5"):
        read_tile(tmp_path / "junk.h5")


# --- downloads ------------------------------------------------------------------------------

TOKEN = "eyJ-test-token"


class LaadsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _LaadsHandler)
        self.root = root
        self.seen: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LaadsHandler(BaseHTTPRequestHandler):
    server: LaadsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.server.seen.append((self.path, auth))
        if auth != f"Bearer {TOKEN}":
            body, status, kind = b'{"error": "unauthorized"}', 401, "application/json"
        elif self.path.endswith(".json"):
            folder = self.server.root / self.path.lstrip("/").removesuffix(".json")
            content = [{"name": p.name, "size": p.stat().st_size} for p in folder.iterdir()]
            body, status, kind = json.dumps({"content": content}).encode(), 200, "application/json"
        else:
            file = self.server.root / self.path.lstrip("/")
            body, status = (file.read_bytes(), 200) if file.is_file() else (b"", 404)
            kind = "application/x-hdf5"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def laads(tmp_path: Path) -> Iterator[LaadsServer]:
    server = LaadsServer(tmp_path / "archive")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_laads_urls() -> None:
    assert laads_directory_url("VNP46A3", date(2025, 3, 17)) == (
        "https://ladsweb.modaps.eosdis.nasa.gov/archive/allData/5200/VNP46A3/2025/060"
    )
    assert laads_directory_url("VNP46A4", date(2024, 7, 1)).endswith("/VNP46A4/2024/001")
    with pytest.raises(SourceError, match="unknown Black Marble product 'VNP46A9'"):
        laads_directory_url("VNP46A9", date(2024, 7, 1))


def test_download_sends_the_earthdata_token(laads: LaadsServer, tmp_path: Path) -> None:
    folder = laads.root / "archive/allData/5200/VNP46A3/2025/060"
    folder.mkdir(parents=True)
    name = "VNP46A3.A2025060.h22v05.002.2025101010101.h5"
    write_tile(folder / name, "h22v05", *uniform(50))
    (folder / "VNP46A3.A2025060.h21v05.002.2025101010101.h5").write_bytes(b"other tile")

    with pytest.raises(SourceError, match="EARTHDATA_TOKEN is not set"):
        earthdata_token({})
    token = earthdata_token({"EARTHDATA_TOKEN": TOKEN})
    got = download_tile(
        "VNP46A3", "h22v05", date(2025, 3, 1), tmp_path / "dl", token=token, base=laads.url
    )
    assert got.name == name and got.read_bytes() == (folder / name).read_bytes()
    assert [a for _, a in laads.seen] == [f"Bearer {TOKEN}"] * 2
    assert float(read_tile(got)["radiance"].max()) == pytest.approx(5.0)

    with pytest.raises(SourceError, match=r"HTTP 401.*check EARTHDATA_TOKEN"):
        download_tile(
            "VNP46A3", "h22v05", date(2025, 3, 1), tmp_path / "x", token="wrong", base=laads.url
        )
    with pytest.raises(SourceError, match=r"no VNP46A3\.A2025060\.h30v05\..*file"):
        download_tile("VNP46A3", "h30v05", date(2025, 3, 1), tmp_path, token=token, base=laads.url)
