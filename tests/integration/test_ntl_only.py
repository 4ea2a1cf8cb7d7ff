"""A catalog with night lights only (the real VIIRS Mumbai cube) still gives the energy
indicators: the missing products are reported, not fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from payesh.city import City
from payesh.errors import MissingDataWarning
from payesh.grid import tile_grid
from payesh.monthly import viirs_month
from payesh.period import Period
from payesh.pipeline import MonthlyData, commit, compute_indicators
from payesh.plan import plan_run
from payesh.store import open_indicators, open_sites

pytestmark = pytest.mark.integration

MUMBAI = Path(__file__).resolve().parents[3] / "shared" / "realdata"
MUMBAI = MUMBAI / "viirs_monthly_mumbai_2012-2015" / "stac" / "catalog.json"


def test_night_lights_only_catalog(tmp_path: Path) -> None:
    city = City(
        name="mumbai",
        title="Mumbai (real VIIRS monthly, EOG)",
        bbox=(72.80, 18.90, 72.95, 19.20),
        crs="EPSG:32643",
        tile_size=2000,
    )
    with pytest.warns(MissingDataWarning, match="sentinel-2-l2a, landsat-c2-l2"):
        plan = plan_run(city, str(MUMBAI), Period.parse("2013-01", "2014-12"))
    assert set(plan.items) == {"viirs"}
    assert len(plan.items["viirs"]) == 24
    ntl = [viirs_month(plan.month_items("viirs", m), plan.ntl_grid(), m) for m in plan.months]
    result = compute_indicators(plan, MonthlyData.from_lists({"viirs": ntl}))
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
    snapshot = commit(plan, result, store=str(tmp_path))
    assert snapshot
    stored = open_indicators("mumbai", store=str(tmp_path)).compute()
    np.testing.assert_array_equal(stored["ntl_sum"].values, tiles["ntl_sum"].values)
    assert len(open_sites("mumbai", store=str(tmp_path))) == 0
