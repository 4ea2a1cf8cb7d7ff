"""The read path against real servers on loopback: ``rustac serve`` (a STAC API) whose items
point at COGs on an HTTP range server, with faults injected between client and servers.

Nothing of the remote path is mocked: pystac-client talks to the API, GDAL reads the COGs
with range requests, and the results must equal those from the static catalog.
"""

from __future__ import annotations

import math
import shutil
import time
from concurrent.futures import wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import pytest
import xarray as xr
from servers import FaultyServer, flip_one_tile_byte, multihash_sha256

from payesh.city import load_city
from payesh.errors import SourceError
from payesh.grid import aligned_geobox, city_geobox
from payesh.monthly import landsat_month, s2_month
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.sources.checksum import parse_multihash, verify_asset
from payesh.sources.http import RetryPolicy
from payesh.sources.load import load_s2
from payesh.sources.stac import open_catalog

pytestmark = pytest.mark.integration

PERIOD = Period.parse("2025-01", "2025-08")
MONTH = pd.Timestamp("2025-03-01")
FAST = RetryPolicy(attempts=4, backoff=0.05, max_backoff=0.5, read_timeout=5.0, seed=0)
REAL = Path(__file__).resolve().parents[3] / "shared" / "realdata"


@pytest.fixture(scope="module")
def static_plan(tiny_city: Any) -> RunPlan:
    return plan_run(load_city(tiny_city.manifest), str(tiny_city.catalog), PERIOD)


@pytest.fixture(scope="module")
def api_plan(tiny_city: Any, stac_api: str) -> RunPlan:
    return plan_run(load_city(tiny_city.manifest), stac_api, PERIOD)


def ids(plan: RunPlan) -> dict[str, list[str]]:
    return {k: [i.id for i in v] for k, v in plan.items.items()}


def retagged(items: list[pystac.Item], tag: str) -> list[pystac.Item]:
    """Copies whose asset URLs carry a fresh path segment, so GDAL's cache cannot answer."""
    out = []
    for item in items:
        copy = item.clone()
        for asset in copy.assets.values():
            asset.href = asset.href.replace("/api/", f"/{tag}/")
        out.append(copy)
    return out


# --- search --------------------------------------------------------------------------------


def test_plan_through_the_api_finds_the_static_items(
    static_plan: RunPlan, api_plan: RunPlan, stac_api: str
) -> None:
    assert ids(api_plan) == ids(static_plan)
    assert set(ids(api_plan)) == {"s2", "landsat", "viirs"}
    assert api_plan.catalog == stac_api
    href = api_plan.items["s2"][0].assets["red"].href
    assert href.startswith("http://127.0.0.1:") and href.endswith("/B04.tif")


def test_search_pages_through_small_pages(
    static_plan: RunPlan, tiny_city: Any, faulty_api: FaultyServer
) -> None:
    city = load_city(tiny_city.manifest)
    start, stop = PERIOD.datetime_range()
    catalog = open_catalog(faulty_api.url, page_size=7, retry=FAST)
    found = catalog.search(collections=["sentinel-2-l2a"], bbox=city.bbox, start=start, stop=stop)
    assert [i.id for i in found] == ids(static_plan)["s2"]
    pages = [h for h in faulty_api.take_hits() if h.path.startswith("/search")]
    assert len(pages) == math.ceil(len(found) / 7) and all(h.status == 200 for h in pages)


def test_search_survives_throttling_errors_resets_and_cut_bodies(
    static_plan: RunPlan, tiny_city: Any, faulty_api: FaultyServer
) -> None:
    faulty_api.faults.next(2, status=503)
    faulty_api.faults.next(1, status=429, retry_after=0.2)
    faulty_api.faults.next(1, kind="reset")
    faulty_api.faults.next(1, kind="truncate")
    faulty_api.faults.next(1, status=502)
    city = load_city(tiny_city.manifest)
    start, stop = PERIOD.datetime_range()
    patient = RetryPolicy(attempts=8, backoff=0.05, max_backoff=0.5, read_timeout=5.0, seed=0)
    catalog = open_catalog(faulty_api.url, page_size=10, retry=patient)
    assert catalog.collections() == {"sentinel-2-l2a", "landsat-c2-l2", "viirs-ntl-monthly"}
    faulty_api.faults.rate(0.5, seed=1, status=500)
    found = catalog.search(collections=["sentinel-2-l2a"], bbox=city.bbox, start=start, stop=stop)
    assert [i.id for i in found] == ids(static_plan)["s2"]
    seen = [h.status for h in faulty_api.take_hits()]
    assert {503, 429, 502, 500, "reset", "truncate"} <= set(seen)


def test_an_api_failing_forever_is_one_clear_error(
    tiny_city: Any, faulty_api: FaultyServer
) -> None:
    faulty_api.faults.always(status=503)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        open_catalog(faulty_api.url, retry=FAST).collections()
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert faulty_api.url in message and "HTTP 503" in message
    assert "gave up after 4 attempts" in message
    assert len(faulty_api.take_hits()) == 4


# --- reading -------------------------------------------------------------------------------

# rasterio silences NotGeoreferencedWarning around its in-memory warp datasets with
# warnings.catch_warnings(), which is not thread-safe: under Dask's threaded scheduler one
# thread can restore the filters while another is still inside, and the warning escapes
# (seen with 20 m bands, static catalog or not). It says nothing about the data here.
rasterio_thread_race = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@rasterio_thread_race
def test_s2_month_over_http_equals_static(
    tiny_city: Any, static_plan: RunPlan, api_plan: RunPlan, assets: FaultyServer
) -> None:
    gbox = city_geobox(load_city(tiny_city.manifest))
    over_http = s2_month(api_plan.month_items("s2", MONTH), gbox, MONTH).compute()
    hits = assets.take_hits()
    static = s2_month(static_plan.month_items("s2", MONTH), gbox, MONTH).compute()
    xr.testing.assert_identical(over_http, static)
    assert over_http.attrs["source_items"] == static.attrs["source_items"]
    ranged = [h for h in hits if h.range is not None]
    assert ranged and all(h.status == 206 for h in ranged)
    assert all(h.path.endswith(".tif") for h in hits)


@rasterio_thread_race
def test_loads_survive_a_burst_of_503_on_the_asset_server(
    tiny_city: Any, static_plan: RunPlan, api_plan: RunPlan, assets: FaultyServer
) -> None:
    month = pd.Timestamp("2025-05-01")
    gbox = city_geobox(load_city(tiny_city.manifest))
    items = retagged(api_plan.month_items("s2", month), "burst")
    for item in items:  # GDAL's own retries, not the checksum download, must cope
        for asset in item.assets.values():
            asset.extra_fields.pop("file:checksum", None)
    assets.faults.next(3, status=503)
    over_http = s2_month(items, gbox, month).compute()
    static = s2_month(static_plan.month_items("s2", month), gbox, month).compute()
    xr.testing.assert_identical(over_http, static)
    seen = assets.take_hits()
    assert [h.status for h in seen[:3]] == [503, 503, 503]
    assert any(h.status == 206 for h in seen)


@rasterio_thread_race
@pytest.mark.parametrize("io_threads", [1, 6])
def test_remote_reads_keep_io_threads_requests_in_flight_whatever_the_cores(
    io_threads: int,
    tiny_city: Any,
    static_plan: RunPlan,
    api_plan: RunPlan,
    assets: FaultyServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote read mostly waits on the network: with one core, a Sentinel-2 month (the
    aligned reader, its file checks and openings, its tiles fetched ahead) and a Landsat
    month (odc-stac, read now) keep ``PAYESH_IO_THREADS`` requests in flight against a
    server 20 ms away, not one and not more, and give what the static catalog gives."""
    month = pd.Timestamp("2025-06-01")
    city = load_city(tiny_city.manifest)
    monkeypatch.setenv("PAYESH_THREADS", "1")
    monkeypatch.setenv("PAYESH_IO_THREADS", str(io_threads))
    s2 = retagged(api_plan.month_items("s2", month), f"io{io_threads}")
    landsat = retagged(api_plan.month_items("landsat", month), f"io{io_threads}")
    assert len(s2) >= 2 and landsat
    assets.latency_s = 0.02
    over_http = s2_month(s2, city_geobox(city), month)
    most_s2, assets.most_in_flight = assets.most_in_flight, 0
    lst_http = landsat_month(landsat, aligned_geobox(city, 30.0), month)
    most_landsat = assets.most_in_flight
    assets.latency_s = 0.0
    hits = assets.take_hits()
    assert any(h.range is not None and h.status == 206 for h in hits)
    # the pools of checks, fetches and reads share the process's io_threads slots
    assert most_s2 <= io_threads and most_landsat <= io_threads, (most_s2, most_landsat)
    if io_threads > 1:  # several files a month, each opened, checked and read: they fill
        assert most_s2 >= 4 and most_landsat >= 3, (most_s2, most_landsat)
    static = s2_month(static_plan.month_items("s2", month), city_geobox(city), month)
    xr.testing.assert_identical(over_http, static)
    lst_static = landsat_month(
        static_plan.month_items("landsat", month), aligned_geobox(city, 30.0), month
    )
    xr.testing.assert_identical(lst_http.drop_attrs(), lst_static.drop_attrs())
    assert lst_http.attrs["source_items"] == lst_static.attrs["source_items"]


# --- file:checksum --------------------------------------------------------------------------


def test_multihash_of_real_landsat_items_parses() -> None:
    item = pystac.Item.from_file(
        REAL / "stac" / "odc-stac" / "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json"
    )
    sums = [
        a.extra_fields["file:checksum"]
        for a in item.assets.values()
        if a.extra_fields.get("file:checksum")
    ]
    assert sums
    for text in sums:
        code, digest = parse_multihash(text)
        assert (code, len(digest)) == (0x13, 64)  # sha2-512


def test_a_bit_flipped_cog_is_caught_by_its_checksum(
    tiny_city: Any, static_plan: RunPlan, tmp_path: Path
) -> None:
    gbox = city_geobox(load_city(tiny_city.manifest))
    item = static_plan.month_items("s2", MONTH)[0].clone()
    original = Path(item.assets["red"].get_absolute_href() or "")
    good, bad = tmp_path / "good.tif", tmp_path / "bad.tif"
    shutil.copyfile(original, good)
    flip_one_tile_byte(original, bad)
    item.assets["red"].extra_fields["file:checksum"] = multihash_sha256(original)

    item.assets["red"].href = str(good)
    assert load_s2([item], gbox, bands=("red",)).compute()["red"].notnull().any()

    item.assets["red"].href = str(bad)
    with pytest.raises(SourceError) as info:
        load_s2([item], gbox, bands=("red",))
    message = str(info.value)
    assert repr(item.id) in message and "'red'" in message and str(bad) in message
    assert "file:checksum" in message


def test_a_wrong_checksum_over_http_is_caught(api_plan: RunPlan, assets: FaultyServer) -> None:
    item = retagged(api_plan.month_items("s2", MONTH)[:1], "sums")[0]
    assert verify_asset(item, "nir")  # the true checksum passes over HTTP
    code_and_len = item.assets["nir"].extra_fields["file:checksum"][:4]
    item.assets["nir"].extra_fields["file:checksum"] = code_and_len + "00" * 32
    with pytest.raises(
        SourceError, match=r"asset 'nir' \(http://127\.0\.0\.1:\d+/sums/.*B08\.tif\)"
    ):
        verify_asset(item, "nir")
    assert all(h.range is None and h.status == 200 for h in assets.take_hits())


def test_static_catalog_search_is_unchanged(tiny_city: Any, static_plan: RunPlan) -> None:
    catalog = open_catalog(tiny_city.catalog)
    assert not catalog.is_api
    start, stop = PERIOD.datetime_range()
    found = catalog.search(
        collections=["sentinel-2-l2a"],
        bbox=load_city(tiny_city.manifest).bbox,
        start=start,
        stop=stop,
    )
    assert [i.id for i in found] == ids(static_plan)["s2"]
    assert datetime(2025, 1, 1, tzinfo=UTC) <= found[0].datetime  # type: ignore[operator]


# --- the next month's files opened while a month is read --------------------------------------


def test_the_next_months_files_are_opened_while_a_month_is_read(
    tiny_city: Any, static_plan: RunPlan, api_plan: RunPlan, assets: FaultyServer
) -> None:
    """``s2_month(..., ahead=next month's items)``: the next month then reads its tiles
    and nothing else (no HEAD, no header, no checksum download: its files came checked
    and open), and both months equal the static catalog's."""
    from payesh.sources import opening

    first, second = pd.Timestamp("2025-04-01"), pd.Timestamp("2025-05-01")
    city = load_city(tiny_city.manifest)
    gbox = city_geobox(city)
    a = retagged(api_plan.month_items("s2", first), "ahead-a")
    b = retagged(api_plan.month_items("s2", second), "ahead-b")
    assert a and b
    got_a = s2_month(a, gbox, first, ahead=b)
    with opening._ahead_lock:
        started = list(opening._ahead[-1].values())
    assert len(started) == len(b) * 7  # six bands and SCL an item
    wait(started)  # (under load they may outlast month a's reads)
    for future in started:  # and each file's byte order, asked for beside its opening
        grid = future.result()[1]
        assert grid is not None and grid.tiles is not None and grid.tiles.file.remote
        assert grid.tiles.file.little_endian()
    assets.take_hits()
    got_b = s2_month(b, gbox, second)
    hits = assets.take_hits()
    assert hits and all(h.method == "GET" and h.range for h in hits), hits
    assert not any((h.range or "").startswith("bytes=0-") for h in hits)  # no header
    n_files = len(b) * 7  # six bands and SCL an item
    assert len(hits) <= n_files  # tiles only (one a file here), neighbours in one request
    for got, month in ((got_a, first), (got_b, second)):
        static = s2_month(static_plan.month_items("s2", month), gbox, month)
        xr.testing.assert_identical(got, static)


def test_files_opened_ahead_that_failed_or_were_never_read(
    tiny_city: Any, static_plan: RunPlan, api_plan: RunPlan, assets: FaultyServer
) -> None:
    """A month whose files could not be opened ahead (the server was down) opens them
    itself, and gives what the static catalog gives; files opened ahead for a month no
    run read are closed once newer months were opened ahead."""
    from payesh.sources import opening
    from payesh.sources.http import configure_retries

    month = pd.Timestamp("2025-06-01")
    city = load_city(tiny_city.manifest)
    gbox = city_geobox(city)
    items = retagged(api_plan.month_items("s2", month), "ahead-down")
    configure_retries(RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02, seed=0))
    try:
        assets.faults.always(status=503)
        assert opening.open_ahead(items, gbox, bands=("red", "nir")) == len(items) * 3
        with opening._ahead_lock:
            futures = list(opening._ahead[-1].values())
        assert all(f.exception() is not None for f in futures)  # the server was down
        assets.faults.clear()
        got = s2_month(items, gbox, month, bands=("red", "nir"))
    finally:
        configure_retries(None)
    static = s2_month(static_plan.month_items("s2", month), gbox, month, bands=("red", "nir"))
    xr.testing.assert_identical(got, static)

    unread = retagged(api_plan.month_items("s2", month), "ahead-unread")
    assert opening.open_ahead(unread, gbox, bands=("red",)) == len(unread) * 2
    with opening._ahead_lock:
        opened = list(opening._ahead[-1].values())
    grids = [f.result()[1] for f in opened]
    assert all(g is not None and not g.dataset.closed for g in grids)
    later = [
        retagged(api_plan.month_items("s2", month), f"ahead-later{k}")
        for k in range(opening.AHEAD_MONTHS)
    ]
    for items_k in later:  # newer months, opened ahead (and not read)
        opening.open_ahead(items_k, gbox, bands=("red",))
    assert all(g is not None and g.dataset.closed for g in grids)

    def grids_of(items: list[pystac.Item]) -> list[Any]:
        hrefs = {a.href for i in items for a in i.assets.values()}  # (same ids, other hrefs)
        with opening._ahead_lock:
            found = [f for group in opening._ahead for k, f in group.items() if k[3] in hrefs]
        return [f.result()[1] for f in found]

    # a run that stopped before its months: its files closed, another run's left open
    # (the same items at other hrefs)
    first, other = grids_of(later[0]), grids_of(later[1])
    assert len(first) == len(later[0]) * 2 and len(other) == len(later[1]) * 2
    assert opening.close_ahead(later[0]) == len(first)
    assert all(g.dataset.closed for g in first) and not grids_of(later[0])
    assert not any(g.dataset.closed for g in other)
    assert opening.close_ahead(later[1]) == len(other)  # leaves nothing open
    assert all(g.dataset.closed for g in other) and not grids_of(later[1])


def test_a_failed_run_closes_the_files_it_opened_ahead(
    tiny_city: Any, api_plan: RunPlan, assets: FaultyServer
) -> None:
    """``pipeline.files_ahead_closed`` (around a flow's Sentinel-2 months): a run that
    fails after a month opened the next one's files ahead leaves none of them open."""
    from payesh import pipeline
    from payesh.sources import opening

    gbox = city_geobox(load_city(tiny_city.manifest))
    month = pd.Timestamp("2025-06-01")
    items = api_plan.month_items("s2", month)
    with pytest.raises(RuntimeError, match="mid-run"), pipeline.files_ahead_closed(api_plan):
        assert opening.open_ahead(items, gbox, bands=("red",)) == len(items) * 2
        with opening._ahead_lock:
            futures = list(opening._ahead[-1].values())
        grids = [f.result()[1] for f in futures]
        assert not any(g.dataset.closed for g in grids)
        raise RuntimeError("mid-run")
    assert all(g.dataset.closed for g in grids)
    hrefs = {a.href for i in items for a in i.assets.values()}
    with opening._ahead_lock:
        assert not any(k[3] in hrefs for group in opening._ahead for k in group)


def test_a_remote_month_read_in_many_blocks_fetches_each_tile_once(
    tiny_city: Any, static_plan: RunPlan, api_plan: RunPlan, assets: FaultyServer
) -> None:
    """City blocks of 7 px (hundreds of them, the cloud buffer crossing their edges),
    their tiles fetched ahead over HTTP: the same month as the local files in one
    block, and each file's tile fetched once."""
    from payesh.sources import aligned
    from payesh.sources.load import S2_REFLECTANCE, gdal_remote_env

    month = pd.Timestamp("2025-07-01")
    gbox = city_geobox(load_city(tiny_city.manifest))
    keys = {b: b for b in (*S2_REFLECTANCE, "scl")}

    def plans(items: list[pystac.Item], env: dict[str, str] | None) -> Any:
        scale_offset = {i.id: {b: (1e-4, 0.0) for b in S2_REFLECTANCE} for i in items}
        nodata = {i.id: {b: 0.0 for b in S2_REFLECTANCE} for i in items}
        found = aligned.plan_aligned(items, gbox, keys, scale_offset, nodata, env=env)
        assert found is not None
        return found

    kw: dict[str, Any] = {"buffer_px": 2, "threads": 2}
    local = plans(static_plan.month_items("s2", month), None)
    whole = aligned.read_s2_month_aligned(local, gbox, month, S2_REFLECTANCE, **kw)
    aligned.close_plans(local)
    env = gdal_remote_env()
    remote = plans(retagged(api_plan.month_items("s2", month), "many-blocks"), env)
    assert all(
        g.tiles is not None and g.tiles.file.remote for p in remote for g in p.grids.values()
    )
    assets.take_hits()
    many = aligned.read_s2_month_aligned(
        remote, gbox, month, S2_REFLECTANCE, block_px=7, io_threads=8, env=env, **kw
    )
    hits = assets.take_hits()
    aligned.close_plans(remote)
    xr.testing.assert_equal(whole, many)
    tiles = [h for h in hits if h.range and not h.range.startswith("bytes=0-")]
    n_files = len(remote) * len(keys)
    assert 0 < len(tiles) <= n_files, (len(tiles), n_files)  # one tile a file here
    assert len({(h.path, h.range) for h in tiles}) == len(tiles)  # none fetched twice
