"""Exports open in the tools users have: COGs validate (rio-cogeo) and GDAL reads their
CRS/transform; tile layers become rasters with one pixel per tile; GeoJSON opens in
GDAL (pyogrio) and geopandas; NetCDF opens with xarray and GDAL and carries a CF
``grid_mapping``; the store's own ``spatial_ref`` is read by odc-geo.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import xarray as xr
from affine import Affine
from pyproj import CRS
from rio_cogeo.cogeo import cog_validate
from test_store import PROV, make_ntl, make_pixels, make_sites, make_tiles

from payesh import store as st
from payesh.export import export_layer, export_sites

UTM = "EPSG:32638"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
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


def _gdal_transform(ds: xr.Dataset) -> tuple[float, ...]:
    return tuple(float(v) for v in ds["spatial_ref"].attrs["GeoTransform"].split())


@pytest.mark.parametrize(
    ("group", "layer", "crs"),
    [
        ("tiles", "ntl_sum", UTM),
        ("tiles", "load_flag", UTM),
        ("tiles", "ntl_trend", UTM),
        ("pixels", "builtup_prob", UTM),
        ("pixels", "first_seen", UTM),
        ("ntl", "radiance", "EPSG:4326"),
    ],
)
def test_cog_is_valid_and_georeferenced(
    stored: Path, tmp_path: Path, group: str, layer: str, crs: str
) -> None:
    ds = st.open_indicators("demo", store=stored, group=group)
    out = tmp_path / f"{layer}.tif"
    export_layer(ds, layer, out, format="cog")
    valid, errors, warnings = cog_validate(str(out), strict=True)
    assert valid and not errors and not warnings, (errors, warnings)
    with rasterio.open(out) as src:
        assert CRS(src.crs.to_wkt()) == CRS(crs)
        assert src.transform.to_gdal() == pytest.approx(_gdal_transform(ds))
        assert src.tags()["layer"] == layer


def test_large_cog_has_overviews_and_validates(tmp_path: Path) -> None:
    times = pd.date_range("2025-01-01", periods=1, freq="MS")
    n = 1100  # more than one 512-px block: needs internal tiling and overviews
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"builtup_prob": (("time", "y", "x"), rng.random((1, n, n), dtype="float32"))},
        coords={
            "time": times,
            "y": 4_270_000.0 - (np.arange(n) + 0.5) * 10,
            "x": 500_000.0 + (np.arange(n) + 0.5) * 10,
        },
        attrs={"crs": UTM},
    )
    ds["builtup_prob"].attrs["units"] = "1"
    st.write_run("big", {"pixels": ds}, store=tmp_path / "s", message="m", provenance=PROV)
    back = st.open_indicators("big", store=tmp_path / "s", group="pixels")
    out = tmp_path / "big.tif"
    export_layer(back, "builtup_prob", out, format="cog")
    valid, errors, warnings = cog_validate(str(out), strict=True)
    assert valid and not errors and not warnings, (errors, warnings)
    with rasterio.open(out) as src:
        assert src.overviews(1), "no overviews"
        assert src.block_shapes[0][0] < n  # internally tiled
        assert src.transform == Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_270_000.0)
        np.testing.assert_array_equal(src.read(1), ds["builtup_prob"].values[0])


def test_tile_layer_is_a_raster_one_pixel_per_tile(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    out = tmp_path / "ntl.tif"
    export_layer(ds, "ntl_sum", out, format="cog", time="2025-02")
    with rasterio.open(out) as src:
        assert src.shape == (ds.sizes["tile_y"], ds.sizes["tile_x"])
        assert src.res == (1000.0, 1000.0)  # the tile size, metres
        # the centre of pixel (row, col) is the centre of tile (row, col)
        for row, col in [(0, 0), (2, 3), (1, 2)]:
            x, y = src.xy(row, col)
            assert (x, y) == (float(ds["tile_x"][col]), float(ds["tile_y"][row]))
        band = src.read(1)
    want = ds["ntl_sum"].sel(time="2025-02-01").values
    np.testing.assert_array_equal(band, want)


def test_geojson_opens_in_gdal_and_geopandas(stored: Path, tmp_path: Path) -> None:
    ds = st.open_indicators("demo", store=stored)
    tiles_gj = tmp_path / "tiles.geojson"
    export_layer(ds, "ntl_sum", tiles_gj, format="geojson", time="2025-01")
    info = pyogrio.read_info(tiles_gj)
    assert info["driver"] == "GeoJSON"
    assert info["features"] == 12
    assert CRS(info["crs"]) == CRS("EPSG:4326")
    gdf = gpd.read_file(tiles_gj)
    assert gdf.geometry.is_valid.all()
    centre = gdf.to_crs(UTM).geometry.centroid.iloc[0]
    assert (round(centre.x), round(centre.y)) == (500_500, 4_269_500)

    sites_gj = tmp_path / "sites.geojson"
    export_sites(st.open_sites("demo", store=stored), sites_gj)
    assert pyogrio.read_info(sites_gj)["features"] == 2
    assert list(gpd.read_file(sites_gj)["site_id"]) == ["s1", "s2"]


@pytest.mark.parametrize(
    ("group", "layer", "grid_mapping_name"),
    [
        ("tiles", "ntl_sum", "transverse_mercator"),
        ("pixels", "builtup_prob", "transverse_mercator"),
        ("ntl", "radiance", "latitude_longitude"),
    ],
)
def test_netcdf_carries_cf_grid_mapping(
    stored: Path, tmp_path: Path, group: str, layer: str, grid_mapping_name: str
) -> None:
    ds = st.open_indicators("demo", store=stored, group=group)
    out = tmp_path / f"{layer}.nc"
    export_layer(ds, layer, out, format="netcdf")
    with xr.open_dataset(out, engine="scipy") as nc:
        assert nc[layer].attrs["grid_mapping"] == "spatial_ref"
        gm = nc["spatial_ref"].attrs
        assert gm["grid_mapping_name"] == grid_mapping_name
        assert CRS.from_cf(gm) == CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
        assert nc[layer].attrs["units"] == ds[layer].attrs["units"]
        ydim, xdim = nc[layer].dims[-2:]
        assert nc[xdim].attrs["axis"] == "X" and nc[ydim].attrs["axis"] == "Y"
        np.testing.assert_array_equal(nc[layer].values, ds[layer].values)
    with rasterio.open(f'NETCDF:"{out}":{layer}') as src:  # GDAL's netCDF driver
        assert CRS(src.crs.to_wkt()) == CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
        assert src.transform.to_gdal() == pytest.approx(_gdal_transform(ds))
        assert src.count == ds.sizes["time"]


def test_store_spatial_ref_read_by_odc_geo(stored: Path) -> None:
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

    for group, crs in (("tiles", UTM), ("pixels", UTM), ("ntl", "EPSG:4326")):
        ds = st.open_indicators("demo", store=stored, group=group)
        var = next(v for v in ds.data_vars if ds[v].ndim == 3)
        gbox = ds[var].odc.geobox
        assert gbox is not None, group
        assert CRS(gbox.crs.to_wkt()) == CRS(crs)
        assert gbox.affine.to_gdal() == pytest.approx(_gdal_transform(ds))
