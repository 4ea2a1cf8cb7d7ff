"""``payesh.load_imagery``: masked imagery of the tiny synthetic city, lazily, on its grid."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pandas as pd
import pytest
import xarray as xr
from pyproj import CRS

import payesh
from payesh.city import load_city
from payesh.errors import PayeshError, SourceError
from payesh.grid import aligned_geobox, city_geobox


def _assert_lazy(ds: Any) -> None:
    for name, var in ds.data_vars.items():
        assert isinstance(var.data, da.Array), f"{name} is not Dask-backed"


def test_s2_is_masked_physical_and_on_the_city_grid(tiny_city: Any) -> None:
    ds = payesh.load_imagery(
        tiny_city.manifest, "s2", "2025-03", "2025-03", catalog=tiny_city.catalog,
        bands=["red", "nir"],
    )  # fmt: skip
    _assert_lazy(ds)  # nothing computed yet
    city = load_city(tiny_city.manifest)
    assert ds.odc.geobox == city_geobox(city)
    assert CRS(ds.odc.crs.to_wkt()) == CRS(city.crs)
    assert set(ds.data_vars) == {"red", "nir", "clear", "observed"}
    months = pd.DatetimeIndex(ds["time"].values).to_period("M")
    assert set(months.astype(str)) == {"2025-03"}
    assert ds.attrs["product"] == "s2" and ds.attrs["city"] == city.name
    assert len(ds.attrs["source_items"]) == ds.sizes["time"]
    assert ds["red"].attrs["units"] == "1"

    red, clear = ds["red"].values, ds["clear"].values
    assert np.isnan(red[~clear]).all()  # masked is NaN, never 0
    assert np.isfinite(red[clear]).all()
    assert clear.any() and (~clear).any()  # the scenes have clouds and clear land
    assert (red[clear] > -0.2).all() and (red[clear] < 1.6).all()  # reflectance, not DN


def test_landsat_and_viirs(tiny_city: Any) -> None:
    city = load_city(tiny_city.manifest)
    lst = payesh.load_imagery(city, "landsat", "2025-01", "2025-08", catalog=tiny_city.catalog)
    _assert_lazy(lst)
    assert lst.odc.geobox == aligned_geobox(city, 30)
    assert lst["lst"].attrs["units"] == "degC"
    values, clear = lst["lst"].values, lst["clear"].values
    assert np.isnan(values[~clear]).all()
    assert (values[clear] > -40).all() and (values[clear] < 80).all()  # °C, not K or DN

    ntl = payesh.load_imagery(city, "viirs", "2025-01", "2025-08", catalog=tiny_city.catalog)
    _assert_lazy(ntl)
    assert CRS(ntl.odc.crs.to_wkt()) == CRS("EPSG:4326")
    assert ntl["radiance"].attrs["units"] == "nW cm-2 sr-1"
    rad, cvg = ntl["radiance"].values, ntl["cf_cvg"].values
    assert np.isnan(rad[cvg == 0]).all()  # no cloud-free coverage is missing, not dark
    assert np.isfinite(rad[cvg > 0]).all()


def test_landsat_and_viirs_read_now_equal_their_lazy_read(tiny_city: Any) -> None:
    """A run reads Landsat and VIIRS months into memory (no Dask graph for small scenes):
    the same values, dims and coordinates as the Dask-backed read of the same items."""
    from payesh.period import Period
    from payesh.plan import plan_run
    from payesh.sources.load import load_landsat_lst, load_viirs

    city = load_city(tiny_city.manifest)
    plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-08"))
    checked = 0
    for key, load, gbox in (
        ("landsat", load_landsat_lst, aligned_geobox(city, 30)),
        ("viirs", load_viirs, plan.ntl_grid()),
    ):
        items = [i for m in plan.months for i in plan.month_items(key, m)]
        now = load(items, gbox)
        lazy = load(items, gbox, chunks={})
        _assert_lazy(lazy)
        assert not any(isinstance(v.data, da.Array) for v in now.data_vars.values())
        xr.testing.assert_identical(now, lazy.compute())
        checked += now.sizes["time"]
    assert checked > 0


def test_bad_requests_name_the_value(tiny_city: Any) -> None:
    with pytest.raises(SourceError, match=r"unknown product 'sentinel1'; valid products: s2"):
        payesh.load_imagery(tiny_city.manifest, "sentinel1", "2025-01", "2025-02",
                            catalog=tiny_city.catalog)  # fmt: skip
    with pytest.raises(SourceError, match=r"no sentinel-2-l2a items over .* 2024-01\.\.2024-02"):
        payesh.load_imagery(tiny_city.manifest, "s2", "2024-01", "2024-02",
                            catalog=tiny_city.catalog)  # fmt: skip
    with pytest.raises(PayeshError, match="'2025-1'"):
        payesh.load_imagery(tiny_city.manifest, "s2", "2025-1", "2025-02",
                            catalog=tiny_city.catalog)  # fmt: skip
    missing = tiny_city.catalog.parent / "nope.json"
    with pytest.raises(SourceError, match=r"nope\.json"):
        payesh.load_imagery(tiny_city.manifest, "s2", "2025-01", "2025-02", catalog=missing)
