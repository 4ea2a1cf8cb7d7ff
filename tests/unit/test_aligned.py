"""The aligned Sentinel-2 reader gives exactly what the odc-stac path gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox

from payesh.city import load_city
from payesh.errors import SourceError
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.sources import aligned, citygrid, placing
from payesh.sources.load import S2_REFLECTANCE


@pytest.fixture(scope="module")
def plan(tiny_city: Any) -> RunPlan:
    city = load_city(tiny_city.manifest)
    return plan_run(city, str(tiny_city.catalog), Period.parse("2025-02", "2025-03"))


def _odc(items: list[Any], gbox: GeoBox, month: Any) -> xr.Dataset:
    # any Dask chunks select the odc-stac path
    return s2_month(items, gbox, month, chunks={"time": 1}).compute()


def test_same_values_masks_and_counts_as_odc_stac(plan: RunPlan) -> None:
    gbox = city_geobox(plan.city)
    for month in plan.months:
        items = plan.month_items("s2", month)
        assert aligned.s2_month_aligned(items, gbox, month, bands=S2_REFLECTANCE) is not None
        before = aligned.STAGE_SECONDS["read"]
        fast = s2_month(items, gbox, month, threads=2)  # aligned: the demo grid is
        assert aligned.STAGE_SECONDS["read"] > before
        ref = _odc(items, gbox, month)
        xr.testing.assert_identical(fast, ref)
        assert fast.attrs["source_items"] == ref.attrs["source_items"]
        assert int(fast["clear_count"].max()) > 0
        # missing exactly where no observation was clear, never zero-filled
        np.testing.assert_array_equal(np.isnan(fast["red"].values), fast["clear_count"].values == 0)


def test_a_month_whose_items_convert_differently_keeps_float_stacks(
    plan: RunPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items of one month that disagree on the offset (Earth Search marks some as
    having had BOA_ADD_OFFSET removed already) cannot be kept in DN: the month is made
    with float32 stacks, and it is still what the odc-stac path gives."""
    gbox = city_geobox(plan.city)
    month = plan.months[0]
    items = [i.clone() for i in plan.month_items("s2", month)]
    assert len(items) >= 2
    items[0].properties["earthsearch:boa_offset_applied"] = True  # offset 0 for this one
    kept_in_dn: list[bool] = []

    def spy(plans: Any, bands: Any) -> Any:
        found = placing.dn_conversions(plans, bands)
        kept_in_dn.append(found is not None)
        return found

    monkeypatch.setattr(aligned, "dn_conversions", spy)
    fast = s2_month(items, gbox, month, threads=2)
    assert kept_in_dn == [False]
    xr.testing.assert_identical(fast, _odc(items, gbox, month))
    same = s2_month(plan.month_items("s2", month), gbox, month, threads=2)
    assert kept_in_dn == [False, True]
    assert not fast["red"].equals(same["red"])  # the offset changed what was read


def test_block_edges_do_not_change_the_cloud_buffer(plan: RunPlan) -> None:
    """Small blocks (dilation across block edges, rows and columns, through the halo)
    give the same month."""
    gbox = city_geobox(plan.city)
    month = plan.months[0]
    items = plan.month_items("s2", month)
    whole = aligned.s2_month_aligned(items, gbox, month, bands=S2_REFLECTANCE, buffer_px=2)
    assert whole is not None
    scale_offset = {i.id: {b: (1e-4, 0.0) for b in S2_REFLECTANCE} for i in items}
    nodata = {i.id: {b: 0.0 for b in S2_REFLECTANCE} for i in items}
    keys = {b: b for b in (*S2_REFLECTANCE, "scl")}
    plans = aligned.plan_aligned(items, gbox, keys, scale_offset, nodata)
    assert plans is not None
    kw: dict[str, Any] = {"buffer_px": 2, "threads": 2}
    one = aligned.read_s2_month_aligned(plans, gbox, month, S2_REFLECTANCE, block_px=4096, **kw)
    many = aligned.read_s2_month_aligned(plans, gbox, month, S2_REFLECTANCE, block_px=7, **kw)
    aligned.close_plans(plans)
    xr.testing.assert_equal(one, many)
    np.testing.assert_array_equal(one["clear_count"].values, whole["clear_count"].values)


def _open_files() -> set[str]:
    """Paths of the files this process holds open."""
    fds = Path("/proc/self/fd")
    return {str(p.resolve()) for p in fds.iterdir() if p.resolve().is_file()}


def test_planning_closes_what_it_opened_when_one_file_fails(plan: RunPlan, tmp_path: Path) -> None:
    """Each asset is opened as a job of its own: when one cannot be opened, the error
    names it and every file the other jobs opened is closed again."""
    gbox = city_geobox(plan.city)
    items = [i.clone() for i in plan.month_items("s2", plan.months[0])]
    assert len(items) >= 2
    gone = tmp_path / "gone.tif"
    items[-1].assets["red"].href = str(gone)
    keys = {b: b for b in (*S2_REFLECTANCE, "scl")}
    scale_offset = {i.id: {b: (1e-4, 0.0) for b in S2_REFLECTANCE} for i in items}
    nodata = {i.id: {b: 0.0 for b in S2_REFLECTANCE} for i in items}
    before = _open_files()
    with pytest.raises(SourceError, match=f"item '{items[-1].id}' asset 'red'.*gone.tif"):
        aligned.plan_aligned(items, gbox, keys, scale_offset, nodata, threads=4)
    assert _open_files() == before
    plans = aligned.plan_aligned(items[:-1], gbox, keys, scale_offset, nodata, threads=4)
    assert plans is not None
    assert [p.item_id for p in plans] == [i.id for i in items[:-1]]
    assert all(set(p.grids) == set(keys) for p in plans)
    assert len(_open_files() - before) == len(keys) * len(plans)  # open for the reads
    aligned.close_plans(plans)
    assert _open_files() == before


def test_shifted_grid_matches_odc_nearest(plan: RunPlan) -> None:
    """A city grid offset by 3 m from the tiles' lattice: still exact nearest neighbour."""
    gbox = city_geobox(plan.city)
    shifted = GeoBox(gbox.shape, gbox.affine * gbox.affine.translation(0.3, -0.3), gbox.crs)
    month = plan.months[1]
    items = plan.month_items("s2", month)
    assert aligned.s2_month_aligned(items, shifted, month, bands=S2_REFLECTANCE) is not None
    xr.testing.assert_identical(s2_month(items, shifted, month), _odc(items, shifted, month))


def test_other_crs_falls_back_to_odc_stac(plan: RunPlan) -> None:
    gbox = city_geobox(plan.city)
    other = gbox.to_crs("EPSG:32639")
    month = plan.months[0]
    items = plan.month_items("s2", month)
    assert aligned.s2_month_aligned(items, other, month, bands=S2_REFLECTANCE) is None
    via_month = s2_month(items, other, month)  # falls back, no chunks asked for
    assert via_month.sizes["y"] == other.shape[0]
    assert int(via_month["clear_count"].max()) > 0


@pytest.mark.parametrize("repeat", [1, 2])  # 10 m and 20 m bands on the 10 m grid
@pytest.mark.parametrize("edge", [0, 3])  # city pixels outside the raster on each side
def test_window_placing_equals_the_compiled_loop(repeat: int, edge: int) -> None:
    """A time step's first window goes through ``_place_window`` where its rows and
    columns are consecutive (10 m), else ``_place_rows`` (20 m): the values of the general
    loop, NaN at either nodata and saturation, every pixel of the buffer written."""
    rng = np.random.default_rng(repeat + edge)
    win = rng.integers(0, 65536, (40, 30)).astype(np.uint16)
    win[rng.random(win.shape) < 0.1] = 0
    win[2, 2] = 65535
    ri = np.arange(-edge, 40 * repeat - edge) // repeat
    ci = np.arange(-edge, 30 * repeat - edge) // repeat
    ri[ri >= 40 - edge] = -1  # outside at the far side too
    ci[ci >= 30 - edge] = -1
    for nd_item in (np.float32(np.nan), np.float32(77)):
        args = (np.float32(0), nd_item, np.float32(65535), np.float32(1e-4), np.float32(-0.1))
        for physical in (True, False):
            loop = np.full((len(ri), len(ci)), np.nan, dtype="float32")
            fast = np.full_like(loop, 1234.5)  # whatever a buffer held: all overwritten
            placing.place_missing(win, ri, ci, loop, (*args, physical))
            placing.place_first(win, ri, ci, fast, (*args, physical))
            np.testing.assert_array_equal(fast, loop)
            assert np.isnan(loop).any() and not np.isnan(loop).all()


def _grid(step: int, block: int, n: int) -> aligned.AssetGrid:
    """A band whose source pixels are ``step`` city pixels wide, in COG blocks of ``block``."""
    index = np.arange(n) // step
    size = int(index[-1]) + 1
    return aligned.AssetGrid("x.tif", index, index, size, size, block, block, None)


@pytest.mark.parametrize(("block", "per_scene_mb"), [(512, 4.0), (1024, 16.0)])
def test_block_cache_holds_the_blocks_read_again(block: int, per_scene_mb: float) -> None:
    """Earth Search's 1024 px blocks are read in 512 px city blocks: each 10 m block by
    2 x 2 of them, each 20 m block by 4 x 4. City blocks come grouped by the 20 m block
    and, inside, by the 10 m block, so that each block is decoded once while the cache
    holds one block of each band a scene, and SCL's neighbour (every band counted as
    uint16 here, as when the datasets are not at hand): 16 MB; with 512 px blocks, 4 MB."""
    n = 4096
    grids = {b: _grid(1, block, n) for b in ("blue", "green", "red", "nir")}
    grids |= {b: _grid(2, block, n) for b in ("swir16", "swir22", "scl")}
    plan = aligned.ItemPlan("s", np.datetime64("2025-01-01"), grids, {}, {})
    blocks = aligned._blocks([plan], 512)
    assert {c.stop - c.start for _, c in blocks} == {512}
    got = aligned._block_cache_bytes([plan] * 6, blocks)
    assert got == int(6 * per_scene_mb * 2**20 * aligned.CACHE_MARGIN)
    # every COG block's city blocks one after another: the order the cache size assumes
    for step in (1, 2):
        seen: list[tuple[int, int]] = []
        for r, c in blocks:
            key = (r.start // step // block, c.start // step // block)
            if not seen or seen[-1] != key:
                assert key not in seen, f"{step * 10} m block {key} read again later"
                seen.append(key)
        assert len(seen) == (n // step // block) ** 2


@pytest.fixture(scope="module")
def small_tiles(tmp_path_factory: pytest.TempPathFactory) -> RunPlan:
    """A month of a demo city written in 64 px COG blocks (the city spans 4 × 4 tiles of a
    10 m band)."""
    from payesh.synthetic import DemoSpec, generate_city

    out = tmp_path_factory.mktemp("small-tiles")
    spec = DemoSpec(size_km=2.0, start="2025-02", end="2025-02", seed=3, blocksize=64)
    gen = generate_city(out, spec)
    return plan_run(load_city(gen.manifest), str(gen.catalog), Period.parse("2025-02", "2025-02"))


def test_tiles_decoded_by_payesh_or_by_gdal_give_the_same_month(
    small_tiles: RunPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's COGs (DEFLATE, predictor 2) are decoded by payesh
    (:mod:`payesh.sources.cogtiles`), each tile once, with city blocks of several tiles
    or of parts of one and the cloud mask's halo reaching into the next tiles; with every
    tile left to GDAL (as a sparse or damaged tile is) the month is the same."""
    from payesh.sources import cogtiles

    plan = small_tiles
    gbox = city_geobox(plan.city)
    month = plan.months[0]
    items = plan.month_items("s2", month)
    decoded: dict[tuple[str, int, int], int] = {}
    real_decode = cogtiles.TileSource._decode

    def counted(self: cogtiles.TileSource, r: int, c: int) -> Any:
        decoded[(self.path, r, c)] = decoded.get((self.path, r, c), 0) + 1
        return real_decode(self, r, c)

    monkeypatch.setattr(cogtiles.TileSource, "_decode", counted)
    months = {}
    for block_px in (512, 32):  # several tiles a city block; parts of a tile
        months[block_px] = aligned.read_s2_month_aligned(
            _plans(items, gbox),
            gbox,
            month,
            S2_REFLECTANCE,
            buffer_px=2,
            threads=2,
            block_px=block_px,
        )
        files = {path for path, _, _ in decoded}
        assert len(files) == 7 * len(items)  # six bands and SCL of every item
        assert len(decoded) >= 16 * 4 * len(items)  # 4 x 4 tiles a 10 m band
        assert set(decoded.values()) == {1}, "a tile decoded twice"
        decoded.clear()
    xr.testing.assert_identical(months[512], months[32])
    ours = aligned.s2_month_aligned(items, gbox, month, bands=S2_REFLECTANCE, buffer_px=2)
    assert set(decoded.values()) == {1}  # the checked files: SCL keeps its neighbours
    monkeypatch.setattr(cogtiles.TileSource, "_decode", lambda self, r, c: None)  # all GDAL
    by_gdal = aligned.s2_month_aligned(items, gbox, month, bands=S2_REFLECTANCE, buffer_px=2)
    assert ours is not None and by_gdal is not None
    xr.testing.assert_identical(ours, by_gdal)
    assert int(ours["clear_count"].max()) > 0


def _plans(items: list[Any], gbox: GeoBox) -> list[aligned.ItemPlan]:
    """The month's read plans as :func:`aligned.s2_month_aligned` makes them for local
    files (SCL with the halo's tile source)."""
    keys = {b: b for b in (*S2_REFLECTANCE, "scl")}
    plans = []
    for item in items:
        grids = {}
        for band, key in keys.items():
            src = rasterio.open(item.assets[key].get_absolute_href())
            grid = citygrid.grid_of(src, key, gbox, halo=band == "scl")
            assert grid is not None and grid.tiles is not None
            grids[band] = grid
        so = {b: (1e-4, -0.1) for b in S2_REFLECTANCE}
        nd = {b: 0.0 for b in S2_REFLECTANCE}
        plans.append(aligned.ItemPlan(item.id, citygrid.item_time(item), grids, so, nd))
    return plans


def test_close_ahead_matches_signed_hrefs_by_their_file(tmp_path: Path) -> None:
    """Files opened ahead under a signed URL (Planetary Computer's ``?sig=...``) are the
    plan's unsigned items' files: ``close_ahead`` closes them; a file of another href of
    the same item id is left open."""
    import datetime as dt
    from concurrent.futures import Future

    import pystac

    from payesh.sources import opening

    path = tmp_path / "B04.tif"
    profile = {"driver": "GTiff", "width": 4, "height": 4, "count": 1, "dtype": "uint16"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 4, 4), dtype="uint16"))
    item = pystac.Item("S2B_X", None, None, dt.datetime(2025, 6, 1, tzinfo=dt.UTC), {})
    item.add_asset("red", pystac.Asset(f"https://pc.example/{path.name}"))

    def opened(href: str) -> Future[Any]:
        grid = citygrid.AssetGrid(href, np.arange(4), np.arange(4), 4, 4, 4, 4, None)
        object.__setattr__(grid, "dataset", rasterio.open(path))
        future: Future[Any] = Future()
        future.set_result((None, grid))
        return future

    signed = opened(f"https://pc.example/{path.name}?st=2025&sig=abc")
    elsewhere = opened(f"https://mirror.example/{path.name}")
    group = {
        ("S2B_X", "red", "red", signed.result()[1].href): signed,
        ("S2B_X", "red", "red", elsewhere.result()[1].href): elsewhere,
    }
    with opening._ahead_lock:
        opening._ahead.append(group)
    try:
        assert opening.close_ahead([item]) == 1
        assert signed.result()[1].dataset.closed
        assert not elsewhere.result()[1].dataset.closed
        with opening._ahead_lock:
            assert group == {("S2B_X", "red", "red", elsewhere.result()[1].href): elsewhere}
    finally:
        with opening._ahead_lock:
            opening._ahead[:] = [g for g in opening._ahead if g is not group]
        elsewhere.result()[1].dataset.close()
