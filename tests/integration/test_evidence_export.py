"""Each site's evidence (before/after chip, probability curve) exported with the sites (#6).

Uses the session's ``monitored_tiny_city`` (its run exported to ``<store>/exports``), so
no run of its own: the store's ``pixels/true_colour``, the run's export and
``payesh export CITY sites`` are checked against each other and against the imagery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image

from payesh.city import load_city
from payesh.cli import main
from payesh.evidence import EVIDENCE_COLUMNS, TRUE_COLOUR, true_colour
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.store import open_indicators, open_sites


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype="float64")


def test_run_export_has_a_chip_and_curve_per_site(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
) -> None:
    gen, store, result = monitored_tiny_city
    out = Path(result["exports"]["sites"]).parent
    assert result["exports"]["evidence"] == str(out / "evidence")
    sites = gpd.read_file(result["exports"]["sites"])
    assert len(sites) and sites["site_id"].is_unique
    assert list(sites.columns[-3:]) == [*EVIDENCE_COLUMNS, "geometry"]
    assert sorted(p.name for p in (out / "evidence").iterdir()) == sorted(
        f"{sid}-{kind}.png" for sid in sites["site_id"] for kind in ("chip", "curve")
    )
    for _, s in sites.iterrows():
        assert s["evidence_chip"] == f"evidence/{s['site_id']}-chip.png"
        assert _png(out / s["evidence_curve"]).std() > 5  # a curve was drawn

    # a site built during the period: its ground changed, and so do the chip's halves
    city = load_city(gen.manifest)
    pixels = open_indicators(city.name, store=str(store), group="pixels")
    months = pd.DatetimeIndex(pixels["time"].values)
    stored = open_sites(city.name, store=str(store)).set_index("site_id")
    new = sites[pd.to_datetime(sites["first_seen"]) > months[1]]
    assert len(new), "the tiny city has sites built during the period"
    s = new.iloc[0]
    geom = stored.loc[s["site_id"], "geometry"]
    x0, y0, x1, y1 = geom.bounds
    win = pixels[TRUE_COLOUR].sel(x=slice(x0, x1), y=slice(y1, y0)).compute()
    xx, yy = np.meshgrid(win["x"].values, win["y"].values)
    inside = shapely.contains_xy(geom, xx, yy)
    rgb = win.transpose("time", "y", "x", "band").values.astype("float64")[:, inside]
    assert np.abs(rgb[0] - rgb[-1]).mean() > 10  # grey levels, of 255
    chip = _png(out / s["evidence_chip"])
    h, w, _ = chip.shape
    left, right = chip[h // 8 : -h // 8, : w // 2], chip[h // 8 : -h // 8, w // 2 :]
    assert np.abs(left - right).mean() > 3


def test_stored_true_colour_is_the_composites_true_colour(
    tiny_city: Any, monitored_tiny_city: tuple[Any, Path, dict[str, Any]]
) -> None:
    _, store, _ = monitored_tiny_city
    city = load_city(tiny_city.manifest)
    pixels = open_indicators(city.name, store=str(store), group="pixels")
    tc = pixels[TRUE_COLOUR]
    assert tc.dtype == np.uint8 and tc.dims == ("time", "band", "y", "x")
    assert list(tc["band"].values) == ["red", "green", "blue"]
    assert tc.attrs["units"] == "1" and tc.attrs["grid_mapping"] == "spatial_ref"
    assert "crs_wkt" in pixels["spatial_ref"].attrs
    plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-06", "2025-06"))
    month = plan.months[0]
    comp = s2_month(plan.month_items("s2", month), city_geobox(city), month).compute()
    want = true_colour(*(comp[b].values[0] for b in ("red", "green", "blue")))
    got = tc.sel(time=month).transpose("y", "x", "band").values
    np.testing.assert_array_equal(got, want)


def test_cli_export_sites_writes_the_same_evidence(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], tmp_path: Path
) -> None:
    gen, store, result = monitored_tiny_city
    run_out = Path(result["exports"]["sites"]).parent
    out = tmp_path / "inspector" / "sites.parquet"
    args = ["export", str(gen.manifest), "sites", "--format", "parquet", "-o", str(out)]
    assert main([*args, "--store", str(store)]) == 0
    sites = gpd.read_parquet(out)
    assert list(sites.columns[-3:]) == [*EVIDENCE_COLUMNS, "geometry"]
    run_sites = gpd.read_file(result["exports"]["sites"])
    assert sorted(sites["evidence_chip"]) == sorted(run_sites["evidence_chip"])
    for rel in [*sites["evidence_chip"], *sites["evidence_curve"]]:
        np.testing.assert_array_equal(_png(out.parent / rel), _png(run_out / rel))


def test_true_colour_of_a_month_exports_as_an_rgb_cog(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], tmp_path: Path
) -> None:
    import rasterio
    from rasterio.enums import ColorInterp

    gen, store, _ = monitored_tiny_city
    city = load_city(gen.manifest)
    out = tmp_path / "rgb.tif"
    args = ["export", str(gen.manifest), TRUE_COLOUR, "--format", "cog", "-o", str(out)]
    assert main([*args, "--time", "2025-07", "--store", str(store)]) == 0
    with rasterio.open(out) as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (3, "uint8", 32638)
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.descriptions == ("red", "green", "blue")
        got = src.read()
    pixels = open_indicators(city.name, store=str(store), group="pixels")
    want = pixels[TRUE_COLOUR].sel(time="2025-07-01").transpose("band", "y", "x").values
    np.testing.assert_array_equal(got, want)  # the city grid is north-up
    # every month at once has no RGB GeoTIFF: one clear line, exit code 1
    assert main([*args, "--store", str(store)]) != 0
