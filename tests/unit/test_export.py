"""Exports of store layers: tiles CSV, sites GeoJSON/GeoParquet, COG, NetCDF, bad choices."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from pyproj import CRS
from test_store import PROV, make_ntl, make_pixels, make_sites, make_tiles

from payesh import store as st
from payesh.errors import PayeshError
from payesh.export import (
    ExportError,
    export_layer,
    export_sites,
    export_tiles_csv,
)

SITE_COLUMNS = [
    "site_id",
    "first_seen",
    "area_m2",
    "tile",
    "status",
    "permit_id",
    "confidence",
    "geometry",
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store for city ``demo`` with 3 months of every group, written once per module."""
    root = tmp_path_factory.mktemp("store")
    times = pd.date_range("2025-01-01", periods=3, freq="MS")
    groups = {
        "tiles": make_tiles(times),
        "pixels": make_pixels(times),
        "ntl": make_ntl(times),
        "sites": make_sites(),
    }
    st.write_run("demo", groups, store=root, message="run", provenance=PROV)
    return root


def test_tiles_csv(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    out = tmp_path / "tiles.csv"
    export_tiles_csv(ds, out)
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns[:4]) == ["tile", "time", "lon", "lat"]
    assert sorted(df.columns[4:]) == ["load_flag", "ntl_sum", "ntl_trend"]
    assert len(df) == 3 * 12
    assert list(df["time"].unique()) == ["2025-01", "2025-02", "2025-03"]
    assert df.loc[0, "tile"] == "r000c000"
    assert df.loc[0, "ntl_sum"] == ""  # NaN written empty
    assert df.loc[1, "lon"] == pytest.approx(45.01)
    one = tmp_path / "one.csv"
    export_tiles_csv(ds, one, time="2025-02")
    df1 = pd.read_csv(one)
    assert len(df1) == 12 and set(df1["time"]) == {"2025-02"}
    np.testing.assert_allclose(
        df1["ntl_sum"].to_numpy(), ds["ntl_sum"].sel(time="2025-02-01").values.ravel()
    )
    with pytest.raises(ExportError, match="2025-09 is not in the store"):
        export_tiles_csv(ds, one, time="2025-09")


def test_sites_geojson_and_parquet(stored: Path, tmp_path: Path) -> None:
    sites = st.open_sites("demo", store=stored)
    gj = tmp_path / "sites.geojson"
    export_sites(sites, gj)
    doc = json.loads(gj.read_text())
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc  # RFC 7946: always WGS84 lon/lat
    props = doc["features"][0]["properties"]
    assert list(props) == SITE_COLUMNS[:-1]
    assert props["first_seen"] == "2025-02-01"
    assert props["permit_id"] is None
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert 44 < lon < 46 and 38 < lat < 39
    back = gpd.read_file(gj)
    assert list(back.columns) == SITE_COLUMNS
    assert CRS(back.crs) == CRS("EPSG:4326")

    pq = tmp_path / "sites.parquet"
    export_layer(sites, "sites", pq, format="parquet")
    back = gpd.read_parquet(pq)
    assert list(back.columns) == SITE_COLUMNS
    assert CRS(back.crs) == CRS("EPSG:4326")
    assert list(back["site_id"]) == ["s1", "s2"]
    assert back.to_crs(32638).geometry.area.gt(300).all()


@pytest.mark.parametrize(
    ("group", "layer", "bands", "crs"),
    [
        ("tiles", "ntl_sum", 3, "EPSG:32638"),
        ("pixels", "builtup_prob", 3, "EPSG:32638"),
        ("pixels", "first_seen", 1, "EPSG:32638"),
        ("ntl", "radiance", 3, "EPSG:4326"),
    ],
)
def test_cog(stored: Path, tmp_path: Path, group: str, layer: str, bands: int, crs: str) -> None:
    ds = st.open_indicators("demo", store=stored, group=group)
    out = tmp_path / f"{layer}.tif"
    export_layer(ds, layer, out, format="cog")
    with rasterio.open(out) as src:
        assert src.count == bands
        assert CRS(src.crs.to_wkt()) == CRS(crs)
        assert src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.shape == (ds.sizes[ds[layer].dims[-2]], ds.sizes[ds[layer].dims[-1]])
        gt = [float(v) for v in ds["spatial_ref"].attrs["GeoTransform"].split()]
        assert src.transform.to_gdal() == pytest.approx(tuple(gt))
        if bands == 3:
            assert src.descriptions == ("2025-01", "2025-02", "2025-03")
            np.testing.assert_array_equal(src.read(2), ds[layer].isel(time=1).values)


def test_cog_one_month(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    out = tmp_path / "m.tif"
    export_layer(ds, "ntl_sum", out, format="cog", time="2025-03")
    with rasterio.open(out) as src:
        assert src.count == 1 and src.descriptions == ("2025-03",)
        np.testing.assert_array_equal(src.read(1), ds["ntl_sum"].isel(time=2).values)


def test_tile_layer_geojson_parquet(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    gj = tmp_path / "t.geojson"
    export_layer(ds, "tiles", gj, format="geojson", time="2025-01")
    doc = json.loads(gj.read_text())
    assert len(doc["features"]) == 12
    assert doc["features"][0]["properties"]["tile"] == "r000c000"
    pq = tmp_path / "t.parquet"
    export_layer(ds, "ntl_sum", pq, format="parquet")
    back = gpd.read_parquet(pq)
    assert len(back) == 36 and list(back.columns)[-2:] == ["ntl_sum", "geometry"]


def test_netcdf(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    out = tmp_path / "tiles.nc"
    export_layer(ds, "tiles", out, format="netcdf", time="2025-02")
    with xr.open_dataset(out, engine="scipy") as back:
        assert back.sizes["time"] == 1
        assert back["ntl_sum"].attrs["units"] == "nW cm-2 sr-1"
        assert back["ntl_sum"].attrs["grid_mapping"] == "spatial_ref"
        assert CRS.from_wkt(back["spatial_ref"].attrs["crs_wkt"]) == CRS("EPSG:32638")
        assert back.attrs["Conventions"] == "CF-1.10"
        np.testing.assert_allclose(back["ntl_sum"].values, ds["ntl_sum"].isel(time=[1]).values)
    px = st.open_indicators("demo", store=stored, group="pixels")
    export_layer(px, "first_seen", tmp_path / "fs.nc", format="netcdf")
    with xr.open_dataset(tmp_path / "fs.nc", engine="scipy") as back:
        assert np.isnat(back["first_seen"].values[0, 0])


def test_bad_choices(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    with pytest.raises(ExportError, match=r"unknown format 'tiff'; valid choices: cog, netcdf"):
        export_layer(ds, "tiles", tmp_path / "x", format="tiff")
    with pytest.raises(ExportError, match=r"unknown layer 'nope'.*ntl_sum"):
        export_layer(ds, "nope", tmp_path / "x", format="csv")
    with pytest.raises(ExportError, match="does not apply to layer 'tiles'"):
        export_layer(ds, "tiles", tmp_path / "x", format="cog")
    px = st.open_indicators("demo", store=stored, group="pixels")
    with pytest.raises(ExportError, match="valid: cog, netcdf"):
        export_layer(px, "builtup_prob", tmp_path / "x", format="csv")
    with pytest.raises(ExportError, match="unknown format for sites 'csv'"):
        export_sites(make_sites(), tmp_path / "x", format="csv")
    assert issubclass(ExportError, PayeshError)


def test_the_cli_offers_the_formats_export_writes() -> None:
    """``payesh export --format`` lists its choices without importing the exporters (a
    fast ``--help``): they must stay the ones :mod:`payesh.export` writes."""
    from payesh.cli import EXPORT_FORMATS
    from payesh.export import FORMATS

    assert tuple(EXPORT_FORMATS) == tuple(FORMATS)
