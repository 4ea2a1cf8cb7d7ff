"""City and tile grids: tiles partition the city exactly; night-light grid is aligned."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from payesh.city import City
from payesh.grid import NTL_RESOLUTION_DEG, aligned_geobox, city_geobox, ntl_geobox, tile_grid


def make_city(lon: float = 44.95, lat: float = 38.55, size: float = 0.05, tile: int = 1000) -> City:
    zone = int((lon + 180) // 6) + 1
    return City(
        name="t",
        title="t",
        bbox=(lon - size / 2, lat - size / 2, lon + size / 2, lat + size / 2),
        crs=f"EPSG:{32600 + zone}",
        resolution=10,
        tile_size=tile,
    )


def test_city_grid_contains_bbox_and_snaps_to_tiles() -> None:
    city = make_city()
    gbox = city_geobox(city)
    left, bottom, right, top = gbox.boundingbox
    for v in (left, bottom, right, top):
        assert v % city.tile_size == 0
    ll = gbox.extent.to_crs("EPSG:4326").boundingbox
    w, s, e, n = city.bbox
    tol = 0.05 * city.tile_size / 80_000  # the snap tolerance, in degrees (generous)
    assert ll.left <= w + tol and ll.right >= e - tol
    assert ll.bottom <= s + tol and ll.top >= n - tol


def test_tile_names_from_north_west() -> None:
    tg = tile_grid(make_city())
    assert tg.names[0, 0] == "r000c000"
    rows, cols = tg.shape
    assert tg.names[rows - 1, cols - 1] == f"r{rows - 1:03d}c{cols - 1:03d}"
    first = tg.tile_geobox(0, 0)
    assert first.boundingbox.top == tg.geobox.boundingbox.top
    assert first.boundingbox.left == tg.geobox.boundingbox.left
    ys, xs = tg.tile_coords()
    assert ys[0] > ys[-1] and xs[0] < xs[-1]


@settings(max_examples=25, deadline=None)
@given(
    lon=st.floats(42.5, 47.5),
    lat=st.floats(30.0, 40.0),
    size=st.floats(0.01, 0.2),
    tile=st.sampled_from([200, 500, 1000, 2000]),
)
def test_tiles_cover_the_city_exactly_once(lon: float, lat: float, size: float, tile: int) -> None:
    city = make_city(lon, lat, size, tile)
    tg = tile_grid(city)
    count = np.zeros(tg.geobox.shape, dtype=int)
    k = tg.tile_pixels
    rows, cols = tg.shape
    for r in range(rows):
        for c in range(cols):
            sub = tg.tile_geobox(r, c)
            assert sub.shape == (k, k)
            count[r * k : (r + 1) * k, c * k : (c + 1) * k] += 1
    assert (count == 1).all()
    total = sum(p.area for _, p in tg.tile_polygons())
    assert math.isclose(total, tg.geobox.extent.area, rel_tol=1e-9)


def test_aligned_grid_nests_in_tiles() -> None:
    city = make_city()
    g30 = aligned_geobox(city, 30)
    per_tile = city.tile_size / abs(g30.resolution.x)
    assert abs(per_tile - round(per_tile)) < 1e-9
    assert g30.boundingbox == city_geobox(city).boundingbox


def test_ntl_grid_is_15_arcsec_aligned_and_covers_city() -> None:
    city = make_city()
    g = ntl_geobox(city)
    assert str(g.crs) == "EPSG:4326"
    assert math.isclose(abs(g.resolution.x), NTL_RESOLUTION_DEG)
    left, _, _, top = g.boundingbox
    assert abs(left / NTL_RESOLUTION_DEG - round(left / NTL_RESOLUTION_DEG)) < 1e-6
    assert abs(top / NTL_RESOLUTION_DEG - round(top / NTL_RESOLUTION_DEG)) < 1e-6
    city_ll = city_geobox(city).extent.to_crs("EPSG:4326")
    assert g.extent.contains(city_ll)
