"""Bad items are skipped and counted, good items of the same month still read.

An item missing an asset or declaring no CRS is left out when the run is planned; a
truncated COG, a file whose CRS is not the one its item declares, and a tile that fails
its ``file:checksum`` are left out when the month is read. Each gets one
``BadItemWarning`` naming the item and the asset; the month's ``attrs["skipped_items"]``
and ``RunPlan.summary()`` count them. An empty search stays one clear ``SourceError``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import pytest
import rasterio
import xarray as xr
from rasterio.windows import Window
from servers import FaultyServer, flip_one_tile_byte, multihash_sha256

from payesh.city import load_city
from payesh.errors import BadItemWarning, SourceError
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.sources.checksum import configure_checksums, verify_asset
from payesh.sources.load import GDAL_LOCAL
from payesh.sources.validate import declared_crs, file_problem

pytestmark = pytest.mark.integration

PERIOD = Period.parse("2025-01", "2025-08")
MONTH = pd.Timestamp("2025-03-01")

# rasterio's NotGeoreferencedWarning races under Dask threads (see test_stac_api.py).
rasterio_thread_race = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def static_plan(tiny_city: Any) -> RunPlan:
    return plan_run(load_city(tiny_city.manifest), str(tiny_city.catalog), PERIOD)


def _messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, BadItemWarning)]


def test_bad_metadata_is_skipped_when_planning(
    tiny_city: Any, static_plan: RunPlan, tmp_path: Path
) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(tiny_city.catalog.parent, root, ignore=shutil.ignore_patterns("*.tif"))
    s2 = static_plan.items["s2"]
    no_nir, no_crs = s2[3].id, s2[7].id
    for path in root.glob("sentinel-2-l2a/*/*.json"):
        item = json.loads(path.read_text())
        if item["id"] == no_nir:
            del item["assets"]["nir"]
        if item["id"] == no_crs:
            for where in (item["properties"], *item["assets"].values()):
                where.pop("proj:epsg", None)
                where.pop("proj:code", None)
        path.write_text(json.dumps(item))
    with pytest.warns(BadItemWarning) as record:
        plan = plan_run(load_city(tiny_city.manifest), str(root / "catalog.json"), PERIOD)
    messages = _messages(record)
    assert len(messages) == 2
    assert any(f"item {no_nir!r} has no asset for band 'nir'" in m for m in messages)
    assert any(f"item {no_crs!r} asset 'blue' declares no CRS" in m for m in messages)
    assert plan.skipped == {"s2": [no_nir, no_crs]}
    assert [i.id for i in plan.items["s2"]] == [i.id for i in s2 if i.id not in (no_nir, no_crs)]
    assert plan.items["landsat"] and plan.items["viirs"]  # the other products untouched
    assert f"s2: {len(s2) - 2} items (2 skipped)" in plan.summary()


def _truncate(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])


@rasterio_thread_race
def test_bad_files_are_skipped_at_read_time_and_counted(
    tiny_city: Any, static_plan: RunPlan, tmp_path: Path
) -> None:
    gbox = city_geobox(load_city(tiny_city.manifest))
    items = [i.clone() for i in static_plan.month_items("s2", MONTH)]
    assert len(items) >= 5
    truncated, corrupt, wrong_crs = items[0], items[2], items[4]

    red = Path(truncated.assets["red"].get_absolute_href() or "")
    truncated.assets["red"].href = str(tmp_path / "cut.tif")
    _truncate(red, tmp_path / "cut.tif")

    scl = Path(corrupt.assets["scl"].get_absolute_href() or "")
    corrupt.assets["scl"].extra_fields["file:checksum"] = multihash_sha256(scl)
    corrupt.assets["scl"].href = str(tmp_path / "flipped.tif")
    flip_one_tile_byte(scl, tmp_path / "flipped.tif")

    epsg = int((declared_crs(wrong_crs, "red") or "").removeprefix("EPSG:"))
    for where in (wrong_crs.properties, *(a.extra_fields for a in wrong_crs.assets.values())):
        if "proj:epsg" in where or "proj:code" in where:
            where["proj:epsg"], where["proj:code"] = epsg + 1, f"EPSG:{epsg + 1}"
    for key in wrong_crs.assets:  # absolute hrefs: the clone has no catalog to resolve against
        wrong_crs.assets[key].href = wrong_crs.assets[key].get_absolute_href() or ""

    with pytest.warns(BadItemWarning) as record:
        month = s2_month(items, gbox, MONTH, bands=("red", "nir")).compute()
    messages = _messages(record)
    assert len(messages) == 3
    assert any(
        f"item {truncated.id!r} asset 'red' ({tmp_path / 'cut.tif'})" in m and "truncated" in m
        for m in messages
    )
    assert any(f"item {corrupt.id!r} asset 'scl'" in m and "file:checksum" in m for m in messages)
    assert any(
        f"item {wrong_crs.id!r} asset 'red'" in m and f"EPSG:{epsg + 1}" in m for m in messages
    )
    bad = [truncated.id, corrupt.id, wrong_crs.id]
    assert month.attrs["skipped_items"] == bad
    # each warning points at the line that asked for the month, not inside payesh
    assert {w.filename for w in record if issubclass(w.category, BadItemWarning)} == {__file__}
    good = [i for i in static_plan.month_items("s2", MONTH) if i.id not in bad]
    assert month.attrs["source_items"] == [i.id for i in good]
    expected = s2_month(good, gbox, MONTH, bands=("red", "nir")).compute()
    assert expected.attrs["skipped_items"] == []
    xr.testing.assert_identical(month.drop_attrs(), expected.drop_attrs())


@pytest.mark.parametrize("left", [0.5, 0.0])
def test_a_local_cog_cut_inside_its_last_block_is_found_without_decoding_it(
    static_plan: RunPlan, tmp_path: Path, left: float
) -> None:
    item = static_plan.month_items("s2", MONTH)[0].clone()
    whole = Path(item.assets["red"].get_absolute_href() or "")
    with rasterio.open(whole) as src:
        (bh, bw), h, w = src.block_shapes[0], src.height, src.width
        r, c = (h - 1) // bh, (w - 1) // bw
        start = int(src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: start + int(size * left)])
    with rasterio.open(cut) as src, pytest.raises(rasterio.errors.RasterioIOError):
        # what the check stands for: the block cannot be decoded
        src.read(1, window=Window(c * bw, r * bh, min(bw, w - c * bw), min(bh, h - r * bh)))

    assert file_problem(item, "red", env=GDAL_LOCAL) is None
    item.assets["red"].href = str(cut)
    problem = file_problem(item, "red", env=GDAL_LOCAL)
    assert problem is not None and "truncated" in problem and str(cut) in problem
    assert f"ends at byte {start + size} but the file has {cut.stat().st_size} bytes" in problem


def test_an_empty_search_is_one_clear_error(tiny_city: Any) -> None:
    with pytest.raises(SourceError, match=r"no sentinel-2-l2a .* items over demo .*2031-01"):
        plan_run(
            load_city(tiny_city.manifest),
            str(tiny_city.catalog),
            Period.parse("2031-01", "2031-02"),
        )


def test_large_files_over_http_are_verified_only_if_configured(
    static_plan: RunPlan, assets: FaultyServer, tiny_city: Any
) -> None:
    item: pystac.Item = static_plan.month_items("s2", MONTH)[0].clone()
    local = Path(item.assets["nir"].get_absolute_href() or "")
    rel = local.relative_to(tiny_city.catalog.parent).as_posix()
    item.assets["nir"].href = f"{assets.url}/size-switch/{rel}"
    item.assets["nir"].extra_fields["file:checksum"] = "1220" + "00" * 32  # wrong on purpose
    size_mib = local.stat().st_size / 2**20
    try:
        configure_checksums(max_http_mib=size_mib / 2)  # the file is "large": not fetched
        assert verify_asset(item, "nir") is False
        assert [h.method for h in assets.take_hits()] == ["HEAD"]
        item.assets["nir"].extra_fields["file:size"] = local.stat().st_size
        assert verify_asset(item, "nir") is False and assets.take_hits() == []
        configure_checksums(max_http_mib=None)  # verify whatever the size
        with pytest.raises(SourceError, match="does not match its file:checksum"):
            verify_asset(item, "nir")
        assert [h.method for h in assets.take_hits()] == ["GET"]
    finally:
        configure_checksums()


def test_an_item_without_a_band_is_warned_about_at_the_callers_line(
    static_plan: RunPlan, tiny_city: Any
) -> None:
    """Metadata checks at read time (an asset missing): the month skips the item with a
    ``BadItemWarning`` whose file and line are the caller's."""
    gbox = city_geobox(load_city(tiny_city.manifest))
    items = [i.clone() for i in static_plan.month_items("s2", MONTH)]
    del items[1].assets["nir"]
    with pytest.warns(BadItemWarning) as record:
        month = s2_month(items, gbox, MONTH, bands=("red", "nir"))
    warned = [w for w in record if issubclass(w.category, BadItemWarning)]
    assert len(warned) == 1
    assert f"item {items[1].id!r} has no asset for band 'nir'" in str(warned[0].message)
    assert {w.filename for w in warned} == {__file__}
    assert items[1].id not in month.attrs["source_items"]
