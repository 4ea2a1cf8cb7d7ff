"""Classifying each month as it is composited equals classifying the year at once."""

from __future__ import annotations

from typing import Any

import xarray as xr

from payesh import pipeline
from payesh.city import load_city
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run


def test_month_by_month_layers_give_the_same_indicators(tiny_city: Any) -> None:
    city = load_city(tiny_city.manifest)
    plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-06"))
    gbox = city_geobox(city)
    composites = [s2_month(plan.month_items("s2", m), gbox, m) for m in plan.months]
    layers = [pipeline.s2_month_layers(c) for c in composites]
    assert all("red" not in lay and "builtup_prob" in lay for lay in layers)
    assert layers[0].attrs["source_items"] == composites[0].attrs["source_items"]

    whole = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists({"s2": composites}))
    streamed = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists({"s2": layers}))
    xr.testing.assert_identical(whole.groups["pixels"], streamed.groups["pixels"])
    xr.testing.assert_identical(whole.groups["tiles"], streamed.groups["tiles"])
    assert whole.sites.equals(streamed.sites)
    assert whole.provenance["model_versions"] == streamed.provenance["model_versions"]
