"""The monitor run as plain library steps, from monthly composites to the store.

The Prefect flow in ``flows/monitor.py`` calls these in order; so can a notebook or a
test, without Prefect:

>>> plan = plan_run(city, catalog, period)                       # doctest: +SKIP
>>> monthly = MonthlyData.from_lists({"s2": [s2_month(...).compute() for m in months], ...})
>>> result = compute_indicators(plan, monthly)
>>> snapshot = commit(plan, result, store="data/store")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import xarray as xr

import payesh
from payesh.classifier import BuiltupModel, builtup_probability, default_model_path, load_model
from payesh.errors import PayeshError
from payesh.grid import tile_grid
from payesh.indicators import construction, energy
from payesh.indicators.tiles import tile_coords_dataset, tile_reduce
from payesh.plan import RunPlan
from payesh.records import read_consumption, read_permits
from payesh.sites_io import SITE_COLUMNS

__all__ = [
    "Indicators",
    "MonthlyData",
    "commit",
    "compute_indicators",
    "export_run",
    "store_location",
]

MIN_SITE_AREA_M2 = 2000.0


@dataclass(frozen=True)
class MonthlyData:
    """Monthly composites of each product, concatenated along ``time``."""

    s2: xr.Dataset | None = None
    landsat: xr.Dataset | None = None
    viirs: xr.Dataset | None = None
    source_items: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, monthly: Mapping[str, list[xr.Dataset]]) -> MonthlyData:
        """Concatenate per-month datasets (as produced by :mod:`payesh.monthly`)."""
        joined: dict[str, xr.Dataset | None] = {}
        items: dict[str, list[str]] = {}
        for key in ("s2", "landsat", "viirs"):
            parts = monthly.get(key)
            if not parts:
                joined[key] = None
                continue
            items[key] = sorted({i for p in parts for i in p.attrs.get("source_items", [])})
            ds = xr.concat(parts, dim="time", combine_attrs="drop_conflicts")
            ds.attrs.pop("source_items", None)
            joined[key] = ds
        if all(v is None for v in joined.values()):
            raise PayeshError("a run needs the monthly data of at least one product")
        return cls(
            s2=joined["s2"], landsat=joined["landsat"], viirs=joined["viirs"], source_items=items
        )


@dataclass(frozen=True)
class Indicators:
    """Everything a run produces, ready to commit."""

    groups: dict[str, xr.Dataset]
    sites: gpd.GeoDataFrame
    provenance: dict[str, Any]

    def summary(self) -> str:
        """A few lines a person reads after a run."""
        tiles = self.groups["tiles"]
        n_t = tiles.sizes["time"]
        n_tiles = tiles.sizes["tile_y"] * tiles.sizes["tile_x"]
        status = self.sites["status"].value_counts().to_dict() if len(self.sites) else {}
        flagged = int(tiles["load_suspect"].max("time").sum()) if "load_suspect" in tiles else 0
        return (
            f"{n_tiles} tiles × {n_t} months; sites: {len(self.sites)} "
            f"({status.get('unauthorized', 0)} unauthorized, {status.get('permitted', 0)} permitted); "
            f"tiles flagged for unexplained load: {flagged}"
        )


def _valid_fraction(s2: xr.Dataset, tg: Any) -> xr.DataArray:
    clear = (s2["clear_count"] > 0).astype("float32")
    vf = tile_reduce(clear, tg, how="mean")
    vf.attrs.update(
        units="1",
        long_name="share of the tile's pixels with at least one clear Sentinel-2 observation",
    )
    return vf


def compute_indicators(
    plan: RunPlan,
    monthly: MonthlyData,
    *,
    model: BuiltupModel | None = None,
) -> Indicators:
    """Every indicator of SPEC §5 for the run's city and months.

    Parameters
    ----------
    plan
        The run (city, period, items).
    monthly
        Monthly composites (computed or lazy).
    model
        Built-up classifier; default: the newest in ``models/``.
    """
    city = plan.city
    tg = tile_grid(city)
    permits = read_permits(city.permits) if city.permits else None
    consumption = read_consumption(city.consumption) if city.consumption else None

    groups: dict[str, xr.Dataset] = {}
    tiles = tile_coords_dataset(tg)
    models: dict[str, str] = {}
    sites = gpd.GeoDataFrame(
        {c: [] for c in SITE_COLUMNS if c != "geometry"}, geometry=[], crs=city.crs
    )
    if monthly.s2 is not None:
        model = model or load_model(default_model_path())
        models["builtup"] = model.version
        prob = builtup_probability(monthly.s2, model).compute()
        first_seen = construction.persistent_builtup(prob)
        sites = construction.extract_sites(first_seen, tg, min_area_m2=MIN_SITE_AREA_M2, prob=prob)
        sites = construction.match_permits(sites, permits)
        tiles = tiles.merge(
            construction.construction_tile_indicators(prob, first_seen, sites, tg),
            compat="override",
        )
        tiles["valid_fraction"] = _valid_fraction(monthly.s2, tg)
        groups["pixels"] = xr.Dataset({"builtup_prob": prob, "first_seen": first_seen})

    if monthly.viirs is not None:
        ntl = monthly.viirs
        weights = energy.ntl_tile_weights(plan.ntl_grid(), tg)
        nt = energy.ntl_tile_indicators(ntl, weights, tg)
        tiles = tiles.merge(nt, compat="override")
        tiles["ntl_anomaly"] = energy.ntl_anomaly(
            nt["ntl_sum"], valid_fraction=nt["ntl_valid_fraction"]
        )
        tiles = tiles.merge(energy.ntl_trend(nt["ntl_sum"]), compat="override")
        groups["ntl"] = ntl
    if monthly.landsat is not None:
        tiles = tiles.merge(
            energy.lst_tile_indicators(monthly.landsat["lst"], monthly.landsat["lst_count"], tg),
            compat="override",  # the tile coords come from one TileGrid on both sides
        )
    model_card: dict[str, Any] = {}
    if "ntl_sum" in tiles:
        elec, model_card = energy.electricity_estimate(tiles, consumption)
        if elec is not None:
            tiles["electricity_mwh"] = elec
        if "lst_mean" in tiles:
            tiles = tiles.merge(energy.load_suspect(tiles), compat="override")

    if "valid_fraction" not in tiles:
        # without Sentinel-2, the quality of what there is: the first energy product's
        for name in ("ntl_valid_fraction", "lst_valid_fraction"):
            if name in tiles:
                tiles["valid_fraction"] = tiles[name].copy()
                tiles["valid_fraction"].attrs["description"] = f"{name} (no Sentinel-2 in run)"
                break
    groups["tiles"] = tiles.compute()
    provenance = {
        "city": city.name,
        "period": str(plan.period),
        "catalog": plan.catalog,
        "code_version": payesh.__version__,
        "model_versions": json.dumps(models),
        "electricity_model": json.dumps(model_card, default=str),
        "source_items": json.dumps(dict(monthly.source_items)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Indicators(groups=groups, sites=sites, provenance=provenance)


def store_location(city: Any, store: str) -> str:
    """Where ``city``'s store lives under the store root ``store``."""
    from payesh.store import store_path

    return store_path(city.name, store)


def commit(plan: RunPlan, result: Indicators, *, store: str) -> str:
    """Write the run's indicators to the city's store as one commit; returns the snapshot id."""
    from payesh.store import write_run

    groups: dict[str, Any] = dict(result.groups)
    groups["sites"] = result.sites
    message = f"monitor {plan.city.name} {plan.period}"
    return write_run(
        plan.city.name, groups, store=store, message=message, provenance=result.provenance
    )


def export_run(plan: RunPlan, result: Indicators, out_dir: str | Path) -> dict[str, str]:
    """Write the tiles CSV and the sites GeoJSON of a run into ``out_dir``."""
    from payesh.export import export_sites, export_tiles_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiles_csv = out / f"{plan.city.name}-tiles.csv"
    sites_json = out / f"{plan.city.name}-sites.geojson"
    export_tiles_csv(result.groups["tiles"], tiles_csv)
    export_sites(result.sites, sites_json, format="geojson")
    return {"tiles": str(tiles_csv), "sites": str(sites_json)}
