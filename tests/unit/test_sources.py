"""Reading real imagery: scale/offset from items, masks, native grids (shared/realdata)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from payesh.city import City
from payesh.errors import SourceError
from payesh.grid import ntl_geobox
from payesh.masking import QA_PIXEL_MASKED_BITS, landsat_clear, mask_s2, scl_clear
from payesh.monthly import s2_month, viirs_month
from payesh.plan import native_origin
from payesh.sources.load import load_s2
from payesh.sources.profiles import product_for_collection
from payesh.sources.stac import open_catalog

REAL = Path(__file__).resolve().parents[3] / "shared" / "realdata"
ZAGREB = REAL / "s2_l2a_zagreb_33TWL_mapchete-eo" / "sentinel-2-l2a"
MUMBAI = REAL / "viirs_monthly_mumbai_2012-2015" / "stac" / "catalog.json"
LANDSAT = REAL / "landsat8_c2l2_fullscene_512px_stactools"
# A 12 km window around Zagreb (EPSG:32633), on the 120 m grid of the downsampled files.
ZAGREB_BOX = GeoBox.from_bbox((570000, 5068000, 582000, 5080000), crs="EPSG:32633", resolution=120)


def zagreb_items() -> list[pystac.Item]:
    return [pystac.Item.from_file(p) for p in sorted(ZAGREB.glob("*/*.json"))]


def test_s2_reflectance_uses_item_scale_and_boa_flag() -> None:
    items = zagreb_items()
    assert all(i.properties["earthsearch:boa_offset_applied"] for i in items)
    ds = load_s2(items, ZAGREB_BOX, bands=("red", "nir")).compute()
    clear = scl_clear(ds["scl"])
    red = ds["red"].where(clear & (ds["scl"] == 4))  # SCL 4 = vegetation
    nir = ds["nir"].where(clear & (ds["scl"] == 4))
    # Earth Search already removed BOA_ADD_OFFSET from these DNs: applying the declared
    # -0.1 again would make vegetation's red reflectance negative.
    assert float(red.median()) > 0.01
    ndvi = (nir - red) / (nir + red)
    assert 0.5 < float(ndvi.median()) < 0.95
    # DN 0 is nodata, never reflectance 0
    raw = rasterio.open(ZAGREB / items[1].id / "B04.tif")
    assert raw.nodata == 0


def test_s2_offset_applies_when_provider_did_not(tmp_path: Path) -> None:
    item = zagreb_items()[2]
    item.properties["earthsearch:boa_offset_applied"] = False
    for key in ("red", "scl"):
        item.assets[key].href = str(ZAGREB / item.id / Path(item.assets[key].href).name)
    with_offset = load_s2([item], ZAGREB_BOX, bands=("red",)).compute()
    without = load_s2(zagreb_items()[2:3], ZAGREB_BOX, bands=("red",)).compute()
    diff = (without["red"] - with_offset["red"]).values
    assert np.nanmax(np.abs(diff - 0.1)) < 1e-6


def test_monthly_composite_counts_clear_observations() -> None:
    items = zagreb_items()
    comp = s2_month(items, ZAGREB_BOX, pd.Timestamp("2023-08-01"), bands=("red", "nir")).compute()
    assert comp.sizes["time"] == 1
    assert int(comp["clear_count"].max()) <= len(items)
    assert int(comp["clear_count"].max()) >= 3  # three of the five dates are clear
    # where nothing was clear, the composite is missing, never zero
    none_clear = (comp["clear_count"] == 0).values
    assert np.isnan(comp["red"].values[none_clear]).all()
    assert not np.isnan(comp["red"].values[~none_clear]).any()


def test_scl_buffer_only_adds_masked_pixels() -> None:
    items = zagreb_items()
    ds = load_s2(items, ZAGREB_BOX, bands=("red",), chunks={"x": 50, "y": 50})
    plain = scl_clear(ds["scl"]).compute()
    buffered = scl_clear(ds["scl"], buffer_px=2).compute()
    assert bool((plain | ~buffered).all())  # masks never un-mask
    assert int((plain & ~buffered).sum()) > 0  # and the buffer grew the clouds
    masked = mask_s2(ds, ("red",), buffer_px=2).compute()
    assert np.isnan(masked["red"].values[~buffered.values]).all()


def test_landsat_qa_pixel_bits_from_real_scene() -> None:
    import xarray as xr

    with rasterio.open(next(LANDSAT.glob("*QA_PIXEL.TIF"))) as src:
        qa = src.read(1)
    clear = landsat_clear(xr.DataArray(qa)).values
    bits = sum(1 << b for b in QA_PIXEL_MASKED_BITS)
    assert bool(clear[qa == 21824].all())  # USGS "clear" value
    assert not bool(clear[qa == 22280].any())  # cloud
    assert not bool(clear[qa == 1].any())  # fill
    assert (clear == ((qa & bits) == 0)).all()
    assert 0.05 < clear.mean() < 0.5  # the scene is 81 % cloudy


def mumbai_city() -> City:
    return City(
        name="mumbai",
        title="Mumbai",
        bbox=(72.80, 18.90, 72.95, 19.20),
        crs="EPSG:32643",
        tile_size=2000,
    )


def test_viirs_on_native_grid_without_resampling() -> None:
    cat = open_catalog(MUMBAI)
    start = datetime(2013, 7, 1, tzinfo=UTC)
    stop = datetime(2013, 8, 1, tzinfo=UTC)
    items = cat.search(
        collections=["viirs-ntl-monthly"], bbox=mumbai_city().bbox, start=start, stop=stop
    )
    assert [i.id for i in items] == ["VNL_npp_201307_mumbai"]
    origin = native_origin(items[0], "radiance")
    gbox = ntl_geobox(mumbai_city(), origin=origin)
    ds = viirs_month(items, gbox, pd.Timestamp("2013-07-01")).compute()
    with rasterio.open(items[0].assets["cf_cvg"].get_absolute_href()) as src:
        window = src.window(*gbox.boundingbox)
        cvg = src.read(1, window=window.round_offsets().round_lengths())
    assert ds["cf_cvg"].shape[1:] == cvg.shape
    assert (ds["cf_cvg"].values[0] == cvg).all()  # same pixels, nothing resampled
    # July is monsoon: pixels with no cloud-free observation are missing, not dark
    assert (cvg == 0).any()
    assert np.isnan(ds["radiance"].values[0][cvg == 0]).all()
    assert not np.isnan(ds["radiance"].values[0][cvg > 0]).any()


def test_missing_catalog_and_unknown_collection(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_catalog(tmp_path / "nope" / "catalog.json")
    with pytest.raises(SourceError, match="unknown collection 'sentinel-1-grd'"):
        product_for_collection("sentinel-1-grd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cat = open_catalog(MUMBAI)
        assert cat.collections() == {"viirs-ntl-monthly"}
