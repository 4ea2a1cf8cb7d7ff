"""A catalog with night lights only (the real VIIRS Mumbai cube) still gives the energy
indicators: the missing products are reported, not fatal; and the monsoon months, seen on
few clear nights, are reported with their low valid fraction and raise no anomaly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from payesh.city import City
from payesh.errors import MissingDataWarning
from payesh.grid import tile_grid
from payesh.indicators.energy import LIGHT_Z, MIN_VALID, REL_FLOOR, ntl_anomaly
from payesh.monthly import viirs_month
from payesh.period import Period
from payesh.pipeline import MonthlyData, commit, compute_indicators, export_run
from payesh.plan import plan_run
from payesh.store import open_indicators, open_sites

pytestmark = pytest.mark.integration

MUMBAI = Path(__file__).resolve().parents[3] / "shared" / "realdata"
MUMBAI = MUMBAI / "viirs_monthly_mumbai_2012-2015" / "stac" / "catalog.json"


def _made_up_consumption(path: Path) -> Path:
    """A reported-consumption CSV for 2012-04..2015-03: MADE UP for the test (a trend and
    a hot-season peak), not Mumbai's; it only lets the run calibrate a model."""
    months = pd.date_range("2012-04-01", "2015-03-01", freq="MS")
    k = np.arange(len(months))
    mwh = 1.0e6 * (1 + 0.004 * k) * (1 + 0.08 * np.cos(2 * np.pi * (months.month - 5) / 12))
    path.write_text(
        "month,mwh\n" + "".join(f"{m:%Y-%m},{v:.1f}\n" for m, v in zip(months, mwh, strict=True))
    )
    return path


def test_night_lights_only_catalog(tmp_path: Path) -> None:
    city = City(
        name="mumbai",
        title="Mumbai (real VIIRS monthly, EOG)",
        bbox=(72.80, 18.90, 72.95, 19.20),
        crs="EPSG:32643",
        tile_size=2000,
        consumption=_made_up_consumption(tmp_path / "consumption.csv"),
    )
    with pytest.warns(MissingDataWarning, match="sentinel-2-l2a, landsat-c2-l2"):
        plan = plan_run(city, str(MUMBAI), Period.parse("2012-04", "2015-03"))
    assert set(plan.items) == {"viirs"}
    assert len(plan.items["viirs"]) == 36  # three of every calendar month: seasonal baselines
    ntl = [viirs_month(plan.month_items("viirs", m), plan.ntl_grid(), m) for m in plan.months]
    monthly = MonthlyData.from_lists({"viirs": ntl})
    result = compute_indicators(plan, monthly)
    tiles = result.groups["tiles"]
    assert {"ntl_sum", "ntl_mean", "lit_fraction", "ntl_anomaly", "ntl_trend"} <= set(tiles)
    assert "builtup_fraction" not in tiles and "pixels" not in result.groups
    assert len(result.sites) == 0
    # real radiance: non-negative, monsoon months missing rather than dark
    assert float(tiles["ntl_sum"].min()) >= 0
    vf = tiles["ntl_valid_fraction"].values
    assert (vf < 1).any()
    assert np.isnan(tiles["ntl_sum"].values[vf < 0.5]).all()
    rows, cols = tile_grid(city).shape
    assert tiles["ntl_trend"].shape == (rows, cols)
    _check_monsoon(tiles, monthly.viirs)
    # calibrated on lights alone (no built-up, no heat): the card says so, and the export
    # writes it as models/electricity-mumbai.md
    card = json.loads(result.provenance["electricity_model"])
    assert card["features"] == ["ntl_total"] and set(card["cv_by_features"]) == {"lights"}
    written = export_run(plan, result, tmp_path / "exports")
    md = Path(written["electricity_model_card"])
    assert md == tmp_path / "exports" / "models" / "electricity-mumbai.md"
    assert md.read_text().startswith("# Electricity model card — mumbai")
    assert f"**{card['cv_r2']:.2f}**" in md.read_text()
    snapshot = commit(plan, result, store=str(tmp_path))
    assert snapshot
    stored = open_indicators("mumbai", store=str(tmp_path)).compute()
    np.testing.assert_array_equal(stored["ntl_sum"].values, tiles["ntl_sum"].values)
    assert len(open_sites("mumbai", store=str(tmp_path))) == 0


def _check_monsoon(tiles: xr.Dataset, viirs: xr.Dataset) -> None:
    """Low-coverage monsoon months: low valid fraction, no anomaly, out of every baseline."""
    months = pd.DatetimeIndex(tiles["time"].values)
    # from the raw cf_cvg, independently of the indicators: months whose median pixel
    # was seen on at most one cloud-free night
    cf = viirs["cf_cvg"].values.reshape(len(months), -1)
    low = np.median(cf, axis=1) <= 1
    assert [f"{m:%Y-%m}" for m in months[low]] == ["2012-07", "2013-06", "2013-07", "2014-08"]
    vf = tiles["ntl_valid_fraction"].values
    z = tiles["ntl_anomaly"].values
    # reported, with their low valid fraction (not as dark, not dropped)
    assert (vf[low].mean(axis=(1, 2)) < MIN_VALID).all()
    dry = np.isin(months.month, [11, 12, 1, 2, 3, 4])
    np.testing.assert_allclose(vf[dry], 1.0, atol=1e-6)
    # no anomaly in a low-coverage month, nor in any tile-month below MIN_VALID
    assert np.isnan(z[low]).all()
    assert np.isnan(z[vf < MIN_VALID]).all()
    # the rest is scored: with three years, every month has a same-month baseline
    assert np.isfinite(z[dry]).all()
    # the baseline is the same calendar month of the other years (2014-01: Jan 2013, 2015)
    x = tiles["ntl_sum"].values.astype("float64")
    jan = np.flatnonzero(months.month == 1)
    r, c = np.unravel_index(np.nanargmax(x[jan[1]]), x.shape[1:])  # the brightest tile
    base = x[[jan[0], jan[2]], r, c]
    med = np.median(base)
    scale = max(1.4826 * np.median(np.abs(base - med)), REL_FLOOR * med, 0.5)
    assert z[jan[1], r, c] == pytest.approx((x[jan[1], r, c] - med) / scale, rel=1e-4)
    # a low-coverage month enters no baseline: garbage in it changes no other z-score
    spoiled = tiles["ntl_sum"].copy()
    spoiled[low] = spoiled[low] * 10
    z2 = ntl_anomaly(spoiled, valid_fraction=tiles["ntl_valid_fraction"]).values
    np.testing.assert_array_equal(np.isnan(z2), np.isnan(z))
    np.testing.assert_allclose(z2[~low], z[~low])
    # real data, dry season: few tile-months beyond the light threshold
    assert np.mean(np.abs(z[dry]) >= LIGHT_Z) < 0.05
