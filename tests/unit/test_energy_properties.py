"""Properties of the energy indicators (Hypothesis) and their laziness.

- ``ntl_sum`` is conserved: over random native night-light grids (resolution, origin
  offset), city boxes and tile sizes, the tiles add up to the area share-weighted sum of
  the city's radiance, and a radiance field inside the city gives the same city total
  whatever the tile size.
- ``ntl_anomaly`` z-scores do not change when the radiance is multiplied by a constant.
- Building the whole energy graph from Dask-backed inputs computes nothing.
"""

from __future__ import annotations

import functools
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from dask.callbacks import Callback
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payesh.city import City
from payesh.grid import aligned_geobox, ntl_geobox, tile_grid
from payesh.indicators.anomaly import ntl_anomaly
from payesh.indicators.lst import lst_tile_indicators
from payesh.indicators.nightlights import _pixel_polygons, ntl_tile_indicators, ntl_tile_weights
from payesh.indicators.suspect import load_suspect
from payesh.indicators.trend import ntl_trend

PROPERTY = settings(
    max_examples=15,
    deadline=None,  # the first example pays for imports and a shared machine is slow
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: CI stays reproducible
)


def _city(west: float, south: float, size_deg: float, tile_size: float) -> City:
    return City.model_validate(
        {
            "name": "prop",
            "title": "property test",
            "bbox": (west, south, west + size_deg, south + 0.8 * size_deg),
            "crs": "EPSG:32638",
            "tile_size": tile_size,
        }
    )


def _dataset(gbox: Any, radiance: np.ndarray) -> xr.Dataset:
    """A night-light dataset (time, y, x) on ``gbox`` holding ``radiance`` (nW·cm⁻²·sr⁻¹)."""
    n_t = radiance.shape[0]
    return xr.Dataset(
        {
            "radiance": (("time", "y", "x"), radiance.astype("float32")),
            "cf_cvg": (("time", "y", "x"), np.full(radiance.shape, 3, dtype="uint16")),
        },
        coords={
            "time": pd.date_range("2024-01-01", periods=n_t, freq="MS").values,
            "y": gbox.coords["latitude"].values,
            "x": gbox.coords["longitude"].values,
        },
    )


grids = st.fixed_dictionaries(
    {
        # somewhere in UTM zone 38 (42–48 °E), from the Caspian to the Persian Gulf
        "west": st.floats(43.0, 46.5),
        "south": st.floats(27.0, 41.0),
        "size_deg": st.floats(0.008, 0.03),
        "tile_size": st.sampled_from([200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0]),
        # 15″ (VIIRS, Black Marble), 30″ and 7.5″ native grids
        "res": st.sampled_from([1 / 240, 1 / 120, 1 / 480]),
        # grid corner offset as a share of a pixel (EOG grids are shifted by half a pixel)
        "off_x": st.floats(0.0, 1.0, exclude_max=True),
        "off_y": st.floats(0.0, 1.0, exclude_max=True),
        "seed": st.integers(0, 2**16),
    }
)


@PROPERTY
@given(g=grids)
def test_ntl_sum_conserved_on_random_grids(g: dict[str, Any]) -> None:
    city = _city(g["west"], g["south"], g["size_deg"], g["tile_size"])
    tg = tile_grid(city)
    res = g["res"]
    gbox = ntl_geobox(city, res, origin=(g["off_x"] * res, g["off_y"] * res))
    w = ntl_tile_weights(gbox, tg)
    # independent: the share of each night-light pixel inside the city's tile grid
    pix = _pixel_polygons(gbox, str(tg.geobox.crs))
    extent = tg.geobox.extent.geom
    share = shapely.area(shapely.intersection(pix, extent)) / shapely.area(pix)
    np.testing.assert_allclose(np.asarray(w.sum(axis=0)).ravel(), share, atol=1e-9)
    rng = np.random.default_rng(g["seed"])
    rad = rng.gamma(1.5, 10.0, size=(2, *gbox.shape))
    ds = ntl_tile_indicators(_dataset(gbox, rad), w, tg)
    total = ds["ntl_sum"].astype("float64").sum(("tile_y", "tile_x")).values
    expected = (rad.reshape(2, -1).astype("float32").astype("float64") * share).sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=2e-6)  # float32 outputs
    lit = ds["lit_fraction"].values
    assert ((lit >= 0) & (lit <= 1)).all()
    np.testing.assert_allclose(ds["ntl_valid_fraction"].values, 1.0, atol=1e-6)


@PROPERTY
@given(
    g=grids,
    other_tile=st.sampled_from([200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0]),
)
def test_city_total_independent_of_tile_size(g: dict[str, Any], other_tile: float) -> None:
    cities = [
        _city(g["west"], g["south"], g["size_deg"], size) for size in (g["tile_size"], other_tile)
    ]
    tgs = [tile_grid(c) for c in cities]
    res = g["res"]
    # one native grid reaching beyond both tile grids (tile grids snap outward)
    wide = _city(g["west"] - 0.02, g["south"] - 0.02, g["size_deg"] + 0.04, 1000.0)
    gbox = ntl_geobox(wide, res, origin=(g["off_x"] * res, g["off_y"] * res))
    pix = _pixel_polygons(gbox, str(tgs[0].geobox.crs))
    inside = np.logical_and.reduce([shapely.within(pix, t.geobox.extent.geom) for t in tgs])
    rng = np.random.default_rng(g["seed"])
    rad = np.where(inside.reshape(gbox.shape), rng.uniform(1.0, 60.0, gbox.shape), 0.0)[None]
    totals = []
    for tg in tgs:
        w = ntl_tile_weights(gbox, tg)
        exact = w @ rad[0].ravel()  # float64: conservation to float precision
        assert exact.sum() == pytest.approx(rad.sum(), rel=1e-9)
        ds = ntl_tile_indicators(_dataset(gbox, rad), w, tg)
        totals.append(float(ds["ntl_sum"].astype("float64").sum()))
    assert totals[0] == pytest.approx(totals[1], rel=2e-6)


@functools.cache
def _fixed_grid() -> tuple[Any, Any, Any]:
    city = _city(44.95, 38.54, 0.02, 500.0)
    tg = tile_grid(city)
    gbox = ntl_geobox(city)
    return tg, gbox, ntl_tile_weights(gbox, tg)


@PROPERTY
@given(
    seed=st.integers(0, 2**16),
    n_t=st.integers(6, 40),
    scale=st.floats(1e-3, 1e3),
    p_missing=st.floats(0.0, 0.4),
)
def test_anomaly_invariant_to_scaling_of_radiance(
    seed: int, n_t: int, scale: float, p_missing: float
) -> None:
    tg, gbox, w = _fixed_grid()
    rng = np.random.default_rng(seed)
    season = 1 + 0.3 * np.sin(2 * np.pi * np.arange(n_t) / 12)[:, None, None]
    rad = rng.gamma(2.0, 8.0, size=(1, *gbox.shape)) * season
    rad = rad * rng.lognormal(0, 0.1, size=(n_t, *gbox.shape))
    ds = _dataset(gbox, rad)
    # whole months and single pixels without a clear night (monsoon-like gaps)
    cf = ds["cf_cvg"].values
    cf[rng.random(n_t) < p_missing] = 0
    cf[rng.random(cf.shape) < p_missing / 2] = 0
    zs = []
    for k in (1.0, scale):
        scaled = ds.assign(radiance=ds["radiance"] * np.float32(k))
        tiles = ntl_tile_indicators(scaled, w, tg)
        # abs_floor is in radiance units, the one thing not scale-free: switch it off
        z = ntl_anomaly(tiles["ntl_sum"], valid_fraction=tiles["ntl_valid_fraction"], abs_floor=0.0)
        zs.append(z.values.astype("float64"))
    np.testing.assert_array_equal(np.isnan(zs[0]), np.isnan(zs[1]))
    np.testing.assert_allclose(zs[1], zs[0], rtol=1e-3, atol=1e-3)
    assert np.isfinite(zs[0]).any() or n_t < 8  # something was actually compared


class _CountComputes(Callback):
    """Counts the Dask graphs that start computing while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def _start(self, dsk: Any) -> None:
        self.n += 1


def test_energy_graph_stays_lazy_until_written() -> None:
    tg, gbox, w = _fixed_grid()
    city = _city(44.95, 38.54, 0.02, 500.0)
    n_t = 14
    rng = np.random.default_rng(0)
    ntl = _dataset(gbox, rng.gamma(2.0, 8.0, size=(n_t, *gbox.shape))).chunk({"time": 4})
    lgb = aligned_geobox(city, 30)
    coords = {"time": ntl["time"].values, "y": lgb.coords["y"].values, "x": lgb.coords["x"].values}
    shape = (n_t, *lgb.shape)
    lst = xr.DataArray(
        dsa.from_array(20 + rng.normal(0, 1, shape).astype("float32"), chunks=(4, -1, -1)),
        dims=("time", "y", "x"),
        coords=coords,
    )
    count = xr.DataArray(
        dsa.ones(shape, dtype="int16", chunks=(4, -1, -1)), dims=("time", "y", "x"), coords=coords
    )
    counter = _CountComputes()
    with counter, dask.config.set(scheduler="sync"):
        tiles = ntl_tile_indicators(ntl, w, tg)
        tiles["ntl_anomaly"] = ntl_anomaly(
            tiles["ntl_sum"], valid_fraction=tiles["ntl_valid_fraction"]
        )
        tiles = tiles.merge(ntl_trend(tiles["ntl_sum"]))
        tiles = tiles.merge(lst_tile_indicators(lst, count, tg), compat="override")
        tiles["builtup_fraction"] = xr.full_like(tiles["ntl_sum"], 0.3)
        tiles = tiles.merge(load_suspect(tiles), compat="override")
        assert counter.n == 0, "building the energy indicators computed a Dask graph"
        for name in (
            "ntl_sum",
            "ntl_anomaly",
            "ntl_trend",
            "lst_mean",
            "lst_anomaly",
            "load_suspect",
            "load_suspect_evidence",
        ):
            assert isinstance(tiles[name].data, dsa.Array), f"{name} is not lazy"
        done = tiles.compute()  # what writing does: one compute of the whole graph
        assert counter.n == 1
    assert done["ntl_sum"].shape == (n_t, *tg.shape)
    assert np.isfinite(done["ntl_anomaly"].values[-1]).all()
