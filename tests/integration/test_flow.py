"""The monitor flow end to end on a small generated city (real Prefect API, real Dask)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from pyproj import CRS

from payesh.city import load_city
from payesh.grid import tile_grid
from payesh.report import score_load, score_sites
from payesh.store import history, open_indicators, open_sites
from payesh.synthetic import load_truth

pytestmark = pytest.mark.integration

SPEC5_TILE_VARS = {
    "ntl_sum",
    "ntl_mean",
    "lit_fraction",
    "ntl_anomaly",
    "ntl_trend",
    "lst_mean",
    "electricity_mwh",
    "load_suspect",
    "builtup_fraction",
    "new_builtup_m2",
    "unauthorized_m2",
    "unauthorized_sites",
    "valid_fraction",
}


def test_store_holds_every_indicator_with_units_and_crs(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
) -> None:
    gen, store, result = monitored_tiny_city
    city = load_city(gen.manifest)
    tiles = open_indicators(city.name, store=str(store))
    assert SPEC5_TILE_VARS <= set(tiles.data_vars)
    for name in SPEC5_TILE_VARS:
        assert tiles[name].attrs.get("units"), f"{name} has no units"
    rows, cols = tile_grid(city).shape
    assert (tiles.sizes["tile_y"], tiles.sizes["tile_x"]) == (rows, cols)
    assert list(pd.DatetimeIndex(tiles.time.values).strftime("%Y-%m")) == [
        f"2025-{m:02d}" for m in range(1, 9)
    ]
    # lazy: nothing loaded until asked
    assert tiles["ntl_sum"].chunks is not None
    # CRS readable from the CF grid mapping
    pixels = open_indicators(city.name, store=str(store), group="pixels")
    crs = CRS.from_wkt(pixels["spatial_ref"].attrs["crs_wkt"])
    assert crs.to_epsg() == 32638
    assert {"builtup_prob", "first_seen"} <= set(pixels.data_vars)
    # provenance: every value traces back to STAC item ids
    items = json.loads(tiles.attrs["source_items"])
    assert items["s2"] and all(i.startswith("S2") for i in items["s2"])
    assert items["viirs"] and items["landsat"]
    assert json.loads(tiles.attrs["model_versions"])["builtup"]
    assert len(history(city.name, store=str(store))) >= 1
    assert result["snapshot"]


def test_missing_months_are_missing_not_zero(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
) -> None:
    gen, store, _ = monitored_tiny_city
    tiles = open_indicators(load_city(gen.manifest).name, store=str(store)).compute()
    vf = tiles["ntl_valid_fraction"].values
    ntl = tiles["ntl_sum"].values
    assert np.isnan(ntl[vf == 0]).all()
    assert (tiles["valid_fraction"].values >= 0).all() and (
        tiles["valid_fraction"].values <= 1
    ).all()


def test_finds_the_truth_on_the_tiny_city(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
) -> None:
    gen, store, _ = monitored_tiny_city
    city = load_city(gen.manifest)
    truth = load_truth(gen.truth_dir)
    sites = open_sites(city.name, store=str(store))
    score = score_sites(sites, truth)
    # precision first: false accusations cost more than a missed shed
    assert score.n_found > 0
    assert score.precision >= 0.75, score
    assert score.traps_hit == [], score
    built_in_time = [s for s in truth.sites if pd.Timestamp(s.built) <= pd.Timestamp("2025-05-01")]
    if built_in_time:
        assert score.matched_truth >= 1, score
    tiles = open_indicators(city.name, store=str(store)).compute()
    truth_tiles, flagged = score_load(tiles, truth)
    if truth.load is not None and pd.Timestamp(truth.load.start) <= pd.Timestamp("2025-06-01"):
        assert set(truth_tiles) & set(flagged), (truth_tiles, flagged)


def test_exports_have_the_columns_spec_names(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
) -> None:
    gen, _, result = monitored_tiny_city
    csv = pd.read_csv(result["exports"]["tiles"])
    assert list(csv.columns[:4]) == ["tile", "time", "lon", "lat"]
    assert SPEC5_TILE_VARS - {"ntl_trend"} <= set(csv.columns)
    city = load_city(gen.manifest)
    rows, cols = tile_grid(city).shape
    assert len(csv) == rows * cols * 8
    sites = gpd.read_file(result["exports"]["sites"])
    assert sites.crs.to_epsg() == 4326
    assert list(sites.columns) == [
        "site_id",
        "first_seen",
        "area_m2",
        "tile",
        "status",
        "permit_id",
        "confidence",
        "evidence_chip",
        "evidence_curve",
        "geometry",
    ]
    assert set(sites["status"]) <= {"unauthorized", "permitted"}
