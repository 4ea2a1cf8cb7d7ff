"""NASA Black Marble VNP46A3/A4: tiles over a city (real tile grid), HDF5 layers with
their fill/scale/offset/quality placed on the 15" grid. The HDF5 files are written with
the real layer names and attributes of VNP46A3 (HDF-EOS5 grid ``VIIRS_Grid_DNB_2d``) by
:func:`payesh.synthetic.blackmarble.write_tile`. Downloads and whole runs against a LAADS
server on loopback: ``tests/integration/test_blackmarble_laads.py``."""

from __future__ import annotations

from pathlib import Path

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
    read_tile,
    tile_geobox,
    tiles_over,
)
from payesh.synthetic.blackmarble import uniform_layers, write_tile

GRID = (
    Path(__file__).resolve().parents[3]
    / "shared/realdata/viirs_blackmarble_tile_grid/blackmarbletiles.geojson"
)
# A small city across the 50° E tile boundary (h22v05 | h23v05).
STRADDLE = City(
    name="straddle", title="t", bbox=(49.985, 37.28, 50.015, 37.30), crs="EPSG:32639",
    tile_size=1000,
)  # fmt: skip


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
    west_dn, west_q, west_n = uniform_layers(100)  # 10.0 nW·cm⁻²·sr⁻¹
    east_dn, east_q, east_n = uniform_layers(235)  # 23.5
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
    assert ds.attrs["source_items"] == [f.name.removesuffix(".h5") for f in files]  # item ids

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
