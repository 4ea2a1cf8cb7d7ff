"""A run's indicators: every indicator of SPEC §5 for its city and months, with the
provenance the store keeps (:func:`compute_indicators`), and :func:`computed_in_place`,
a ``compute`` that writes each Dask block into arrays allocated once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import dask.array as dsa
import dask.base
import dask.local
import dask.threaded
import geopandas as gpd
import numpy as np
import xarray as xr

import payesh
from payesh import runkeys
from payesh.classifier import builtup_probability
from payesh.errors import PayeshError
from payesh.grid import tile_grid
from payesh.indicators import anomaly, construction, electricity, lst, nightlights, suspect, trend
from payesh.indicators.sites import MIN_SITE_AREA_M2
from payesh.indicators.tiles import pixels_per_tile, tile_coords_dataset, tile_counts
from payesh.model import BuiltupModel
from payesh.parallel import release_native_memory, whole_along
from payesh.plan import RunPlan
from payesh.records import read_consumption, read_permits
from payesh.rundata import Indicators, MonthlyData, pixel_months
from payesh.s2months import cached_model
from payesh.sites_io import SITE_COLUMNS
from payesh.truecolour import TRUE_COLOUR, true_colour_layer

__all__ = ["compute_indicators", "computed_in_place"]


def computed_in_place(ds: xr.Dataset) -> xr.Dataset:
    """``ds.compute()``, each Dask block written into arrays allocated once as it is done.

    ``compute`` keeps every block's result until the last is done, then concatenates
    them: twice the result's size at the end (``first_seen`` and the mean since of a
    24 km city: 69 MB held twice). ``dask.array.store`` writes each block in place —
    on this process's schedulers only: a ``dask.distributed`` cluster would write into
    copies of the arrays on its workers, so there it is ``compute``.
    """
    lazy = {str(v): var for v, var in ds.data_vars.items() if var.chunks is not None}
    if not lazy:
        return ds
    if dask.base.get_scheduler() not in (None, dask.threaded.get, dask.local.get_sync):
        return ds.compute()
    targets = {v: np.empty(var.shape, dtype=var.dtype) for v, var in lazy.items()}
    dsa.store([var.data for var in lazy.values()], list(targets.values()), lock=False)
    out = ds.copy()
    for v, values in targets.items():
        out[v] = out[v].copy(data=values)
    return out


def _valid_fraction(s2: xr.Dataset, tg: Any) -> xr.DataArray:
    # tile_reduce((clear_count > 0).astype("float32"), tg, how="mean"), in one pass: the
    # count is exact, every pixel counts (none is NaN), and the mean is taken in float64
    k = pixels_per_tile(s2["clear_count"], tg)
    _, clear = tile_counts(s2["clear_count"], tg, above=0, pixels_per_tile=k)
    vf = (clear / float(k * k)).astype("float32")
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
    given_model = model.version if model is not None else None  # None: the default model
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
        if "builtup_prob" in monthly.s2:  # classified month by month (s2_month_layers)
            stored = prob = monthly.s2["builtup_prob"]
            prob = whole_along(prob, "time")  # staged months: whole years per block
            version = str(prob.attrs.get("model_version", ""))
            if model is not None and model.version != version:
                raise PayeshError(
                    f"the months were classified with model {version!r}, not {model.version!r}"
                )
            models["builtup"] = version
        else:
            model = model or cached_model()
            models["builtup"] = model.version
            stored = prob = builtup_probability(monthly.s2, model).compute()
        # (y, x) first_seen and the sites' confidence term, from one read of the year
        held = computed_in_place(construction.persistence(prob))
        first_seen = held["first_seen"]
        sites = construction.extract_sites(
            first_seen, tg, min_area_m2=MIN_SITE_AREA_M2, mean_prob=held["mean_prob_since"]
        )
        del held
        release_native_memory()  # the year's blocks just read: before the tile sums read them
        sites = construction.match_permits(sites, permits)
        built = construction.construction_tile_indicators(prob, first_seen, sites, tg)
        built["valid_fraction"] = _valid_fraction(monthly.s2, tg)
        # computed now, in one pass over the year's blocks: the electricity model reads
        # builtup_fraction, and a lazy one would be read again by every later compute
        tiles = tiles.merge(built.compute(), compat="override")
        release_native_memory()
        # the store keeps a month per chunk: given the staged months as they are, it
        # rechunks a few MB a block, not whole years of several blocks
        months = pixel_months(monthly)
        if months is None:
            months = xr.Dataset({"builtup_prob": stored})
            if TRUE_COLOUR in monthly.s2:  # the sites' evidence chips
                months[TRUE_COLOUR] = monthly.s2[TRUE_COLOUR]
            elif "red" in monthly.s2:
                months[TRUE_COLOUR] = true_colour_layer(monthly.s2).compute()
        # staged: lazy, written block by block
        groups["pixels"] = months.assign(first_seen=first_seen)

    if monthly.viirs is not None:
        ntl = monthly.viirs
        weights = nightlights.ntl_tile_weights(plan.ntl_grid(), tg)
        nt = nightlights.ntl_tile_indicators(ntl, weights, tg)
        tiles = tiles.merge(nt, compat="override")
        tiles["ntl_anomaly"] = anomaly.ntl_anomaly(
            nt["ntl_sum"], valid_fraction=nt["ntl_valid_fraction"]
        )
        tiles = tiles.merge(trend.ntl_trend(nt["ntl_sum"]), compat="override")
        groups["ntl"] = ntl
    if monthly.landsat is not None:
        # staged months: a month whole per block (its city median), read once, now
        ls = whole_along(monthly.landsat, "y", "x")
        tiles = tiles.merge(
            lst.lst_tile_indicators(ls["lst"], ls["lst_count"], tg).compute(),
            compat="override",  # the tile coords come from one TileGrid on both sides
        )
    model_card: dict[str, Any] = {}
    if "ntl_sum" in tiles:
        elec, model_card = electricity.electricity_estimate(tiles, consumption)
        if elec is not None:
            tiles["electricity_mwh"] = elec
        if "lst_mean" in tiles:
            tiles = tiles.merge(suspect.load_suspect(tiles), compat="override")

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
        # where "viirs" came from: the catalog, or Black Marble files (item id = file name)
        "night_lights": _night_lights_source(plan),
        "code_version": payesh.__version__,
        "model_versions": json.dumps(models),
        "electricity_model": json.dumps(model_card, default=str),
        "source_items": json.dumps(dict(monthly.source_items)),
        # items found but not read (bad asset, CRS, checksum, truncated file): see warnings
        # (at planning: no asset, no CRS; at reading: the file) — both counted here
        "skipped_items": json.dumps(_all_skipped(plan, monthly)),
        # what each product-month was computed from: lets a re-run skip (payesh.runkeys)
        runkeys.KEYS_ATTR: json.dumps(runkeys.plan_keys(plan, model_version=given_model)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Indicators(groups=groups, sites=sites, provenance=provenance)


def _night_lights_source(plan: RunPlan) -> str:
    if plan.night_lights != "blackmarble":
        return f"{plan.night_lights}: {plan.catalog}"
    hrefs = [i.assets["radiance"].href for i in plan.items.get("viirs", [])]
    folder = hrefs[0].rsplit("/", 4)[0] if hrefs else ""
    return f"blackmarble: NASA Black Marble VNP46A3 (LAADS DAAC) {folder}".rstrip()


def _all_skipped(plan: RunPlan, monthly: MonthlyData) -> dict[str, list[str]]:
    """Item ids skipped when planning and when reading, by product."""
    keys = sorted(set(plan.skipped) | set(monthly.skipped_items))
    return {
        k: sorted(set(plan.skipped.get(k, [])) | set(monthly.skipped_items.get(k, [])))
        for k in keys
    }
