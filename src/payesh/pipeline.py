"""The monitor run as plain library steps, from monthly composites to the store.

The Prefect flow in ``flows/monitor.py`` calls these in order; so can a notebook or a
test, without Prefect:

>>> plan = plan_run(city, catalog, period)                       # doctest: +SKIP
>>> monthly = MonthlyData.from_lists({"s2": [s2_month(...).compute() for m in months], ...})
>>> result = compute_indicators(plan, monthly)
>>> snapshot = commit(plan, result, store="data/store")

The steps live in focused modules, re-exported here: :mod:`payesh.rundata` (the run's
data), :mod:`payesh.s2months` (a Sentinel-2 month as a run keeps it),
:mod:`payesh.keptmonths` (months kept between runs), :mod:`payesh.run_indicators` (the
indicators); this module holds the store and export steps.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr

import payesh
from payesh.keptmonths import CACHE_ATTR as CACHE_ATTR
from payesh.keptmonths import CacheUse as CacheUse
from payesh.keptmonths import cache_use as cache_use
from payesh.keptmonths import kept_month as kept_month
from payesh.plan import RunPlan
from payesh.run_indicators import compute_indicators
from payesh.run_indicators import computed_in_place as computed_in_place
from payesh.rundata import Indicators, MonthlyData, pixel_months
from payesh.s2months import (
    cached_model,
    files_ahead_closed,
    make_s2_month,
    s2_month_layers,
    stage_s2_month,
)

if TYPE_CHECKING:
    from payesh.store import RunWriter

__all__ = [
    "Indicators",
    "MonthlyData",
    "cached_model",
    "commit",
    "compute_indicators",
    "export_run",
    "files_ahead_closed",
    "make_s2_month",
    "open_commit",
    "pixel_months",
    "s2_month_layers",
    "stage_s2_month",
    "store_location",
    "write_pixel_months",
]


def store_location(city: Any, store: str) -> str:
    """Where ``city``'s store lives under the store root ``store``."""
    from payesh.store import store_path

    return store_path(city.name, store)


def write_pixel_months(run: RunWriter, monthly: MonthlyData) -> bool:
    """Write the months of the ``pixels`` group into ``run`` ahead of the indicators.

    The flow runs this while :func:`compute_indicators` computes: the write (reading the
    staged months, compressing) and the indicators share the cores instead of taking
    turns. :func:`commit` then writes ``first_seen`` and the other groups. Returns whether
    there was anything to write (see :func:`pixel_months`).
    """
    ds = pixel_months(monthly)
    if ds is None:
        return False
    run.write("pixels", ds)
    return True


def commit(
    plan: RunPlan, result: Indicators, *, store: str | None = None, run: RunWriter | None = None
) -> str:
    """Write the run's indicators to the city's store as one commit; returns the snapshot id.

    With ``run`` (:func:`payesh.store.open_run`), into that run: variables it holds
    already (:func:`write_pixel_months`) are not written again.
    """
    from payesh.store import write_run

    groups: dict[str, Any] = dict(result.groups)
    groups["sites"] = result.sites
    message = f"monitor {plan.city.name} {plan.period}"
    if run is None:
        return write_run(
            plan.city.name, groups, store=store, message=message, provenance=result.provenance
        )
    for name, obj in groups.items():
        done = run.written(name)
        if done and isinstance(obj, xr.Dataset):
            rest = [v for v in obj.data_vars if v not in done]
            if not rest:
                continue
            obj = obj[rest]  # with the coordinates of these variables only
        run.write(name, obj)
    return run.commit(message, result.provenance)


def open_commit(plan: RunPlan, *, store: str | None = None) -> AbstractContextManager[RunWriter]:
    """The run's writes to its city's store (:func:`payesh.store.open_run`)."""
    from payesh.store import open_run

    return open_run(plan.city.name, store=store)


def export_run(plan: RunPlan, result: Indicators, out_dir: str | Path) -> dict[str, str]:
    """Write the tiles CSV and the sites GeoJSON of a run into ``out_dir``, with each site's
    evidence (``out_dir/evidence/<site_id>-chip.png``, ``-curve.png``, named in the sites'
    ``evidence_chip`` / ``evidence_curve`` columns), and, when the run calibrated an
    electricity model, its card as ``out_dir/models/electricity-<city>.md``."""
    from payesh.export import export_sites_with_evidence, export_tiles_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiles_csv = out / f"{plan.city.name}-tiles.csv"
    sites_json = out / f"{plan.city.name}-sites.geojson"
    export_tiles_csv(result.groups["tiles"], tiles_csv)
    sites = export_sites_with_evidence(
        result.sites, result.groups.get("pixels"), sites_json, format="geojson"
    )
    written = {"tiles": str(tiles_csv), "sites": str(sites_json)}
    if "evidence_chip" in sites.columns:
        written["evidence"] = str(out / "evidence")
    card = json.loads(result.provenance.get("electricity_model") or "{}")
    if "cv_r2" in card:  # the run calibrated an electricity model: its card
        from payesh.indicators.electricity_card import write_model_card

        written["electricity_model_card"] = str(
            write_model_card(
                card,
                city=plan.city.name,
                models_dir=out / "models",
                code_version=payesh.__version__,
            )
        )
    return written
