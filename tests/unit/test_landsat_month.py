"""A Landsat month with no clear observation is warned and stored as missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from payesh.city import load_city
from payesh.errors import CloudyMonthWarning
from payesh.grid import aligned_geobox
from payesh.monthly import landsat_month
from payesh.period import Period
from payesh.plan import plan_run

HIGH_CONFIDENCE_CLOUD = 22280
"""A Landsat Collection 2 QA_PIXEL value of high-confidence cloud (bit 3 set)."""


def test_an_all_cloud_landsat_month_is_warned(tiny_city: Any, tmp_path: Path) -> None:
    city = load_city(tiny_city.manifest)
    plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-06"))
    month = next(m for m in plan.months if plan.month_items("landsat", m))
    items = [item.clone() for item in plan.month_items("landsat", month)]
    gbox = aligned_geobox(city, 30.0)
    clear = landsat_month(items, gbox, month)
    assert int(clear["lst_count"].max()) > 0  # the month as generated has clear pixels
    for item in items:
        asset = item.assets["qa_pixel"]
        with rasterio.open(asset.get_absolute_href()) as src:
            profile, data = src.profile, src.read()
        cloudy = tmp_path / f"{item.id}_QA_PIXEL.TIF"
        with rasterio.open(cloudy, "w", **profile) as dst:
            dst.write(np.full_like(data, HIGH_CONFIDENCE_CLOUD))
        asset.href = str(cloudy)
        asset.extra_fields.pop("file:checksum", None)  # the bytes changed on purpose
    with pytest.warns(CloudyMonthWarning, match=f"Landsat {month:%Y-%m}: no clear observation"):
        out = landsat_month(items, gbox, month)
    assert int(out["lst_count"].max()) == 0
    assert bool(np.isnan(out["lst"].values).all())
    assert out.attrs["source_items"] == [i.id for i in items]  # read, not skipped
