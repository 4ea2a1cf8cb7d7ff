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
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as dsa
import dask.base
import dask.local
import dask.threaded
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

import payesh
from payesh import runkeys, staging
from payesh.classifier import BuiltupModel, builtup_probability, default_model_path, load_model
from payesh.errors import PayeshError
from payesh.evidence import TRUE_COLOUR, true_colour_layer
from payesh.grid import city_geobox, tile_grid
from payesh.indicators import construction, energy
from payesh.indicators.tiles import pixels_per_tile, tile_coords_dataset, tile_counts
from payesh.monthly import s2_month
from payesh.parallel import release_native_memory, whole_along
from payesh.plan import RunPlan
from payesh.records import read_consumption, read_permits
from payesh.sites_io import SITE_COLUMNS

if TYPE_CHECKING:
    from payesh.store import RunWriter

__all__ = [
    "Indicators",
    "MonthlyData",
    "cached_model",
    "commit",
    "compute_indicators",
    "export_run",
    "make_s2_month",
    "open_commit",
    "pixel_months",
    "s2_month_layers",
    "stage_s2_month",
    "store_location",
    "write_pixel_months",
]

MIN_SITE_AREA_M2 = 2000.0


@dataclass(frozen=True)
class MonthlyData:
    """Monthly composites of each product, concatenated along ``time``."""

    s2: xr.Dataset | None = None
    landsat: xr.Dataset | None = None
    viirs: xr.Dataset | None = None
    source_items: Mapping[str, list[str]] = field(default_factory=dict)
    skipped_items: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, monthly: Mapping[str, list[xr.Dataset]]) -> MonthlyData:
        """Concatenate per-month datasets (as produced by :mod:`payesh.monthly`)."""
        joined: dict[str, xr.Dataset | None] = {}
        items: dict[str, list[str]] = {}
        skipped: dict[str, list[str]] = {}
        for key in ("s2", "landsat", "viirs"):
            parts = monthly.get(key)
            if not parts:
                joined[key] = None
                continue
            items[key] = sorted({i for p in parts for i in p.attrs.get("source_items", [])})
            skipped[key] = sorted({i for p in parts for i in p.attrs.get("skipped_items", [])})
            # a month with no data (payesh.monthly.empty_month) has no spatial_ref: the
            # others' CRS is its CRS too (one grid per product)
            ref = next((p.coords["spatial_ref"] for p in parts if "spatial_ref" in p.coords), None)
            if ref is not None:
                parts = [
                    p if "spatial_ref" in p.coords else p.assign_coords(spatial_ref=ref)
                    for p in parts
                ]
            ds = xr.concat(parts, dim="time", combine_attrs="drop_conflicts")
            ds.attrs.pop("source_items", None)
            ds.attrs.pop("skipped_items", None)
            ds.attrs.pop(CACHE_ATTR, None)
            joined[key] = ds
        if all(v is None for v in joined.values()):
            raise PayeshError("a run needs the monthly data of at least one product")
        return cls(
            s2=joined["s2"],
            landsat=joined["landsat"],
            viirs=joined["viirs"],
            source_items=items,
            skipped_items={k: v for k, v in skipped.items() if v},
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


@lru_cache(maxsize=4)
def _model_at(path: str, mtime_ns: int) -> BuiltupModel:
    return load_model(path)


def cached_model(path: str | Path | None = None) -> BuiltupModel:
    """The built-up model at ``path`` (default: the current one), loaded once per process."""
    where = Path(path) if path is not None else default_model_path()
    return _model_at(str(where), where.stat().st_mtime_ns)


def s2_month_layers(composite: xr.Dataset, model: BuiltupModel | None = None) -> xr.Dataset:
    """What a run keeps of a Sentinel-2 month: ``builtup_prob``, ``true_colour`` and
    ``clear_count``.

    Classifying each month as soon as its composite exists lets the run drop the six
    reflectance bands (24 bytes a pixel) and keep 9 bytes a pixel per month; the
    probability is pixel-local, so this equals classifying the year's cube at once.
    ``true_colour`` (uint8 red/green/blue, :func:`payesh.evidence.true_colour_layer`) is
    what the sites' evidence chips show; ``clear_count`` gives ``valid_fraction``. The
    composite's ``obs_count`` is not kept: nothing after the month reads it (staged, it
    was 2 of 11 bytes a pixel written and never read back).
    """
    model = model or cached_model()
    bare = composite.copy()
    bare.attrs = {}  # the month's item lists belong to the run, not to the layer
    prob = builtup_probability(bare, model)  # runs of pixels on a pool of its own
    out = xr.Dataset(
        {"builtup_prob": prob, "clear_count": composite["clear_count"]}
        | {TRUE_COLOUR: true_colour_layer(bare)}
    )
    out.attrs = dict(composite.attrs)
    return out


def stage_s2_month(plan: RunPlan, layers: xr.Dataset, stage: str | Path) -> xr.Dataset:
    """Write one month's :func:`s2_month_layers` to the run's staging folder; the month,
    read back lazily (see :mod:`payesh.staging`): memory then holds one month, not a year."""
    month = pd.Timestamp(layers["time"].values[0])
    block = staging.block_pixels(tile_grid(plan.city).tile_pixels)
    path = staging.stage_dataset(layers, stage, f"s2-{month:%Y-%m}", block=block)
    return staging.open_staged(path)


def make_s2_month(
    plan: RunPlan,
    month: pd.Timestamp,
    *,
    stage: str | Path | None = None,
    following: pd.Timestamp | None = None,
) -> xr.Dataset:
    """One Sentinel-2 month as a run keeps it: composite, then :func:`s2_month_layers`;
    with ``stage``, written there and returned lazily (:func:`stage_s2_month`).
    ``following``: the month the run makes next, whose remote files are opened while this
    one is read (:func:`payesh.sources.aligned.open_ahead`).

    What the month freed stays with malloc for the next month, which allocates the same
    arrays again: given back to the system after every month (``malloc_trim``), each
    month faulted its ~500 MB in afresh at 24 km (35 000 page faults, 0.2–0.3 CPU-s a
    month), for the same peak. The run gives it back once, after its last month.
    """
    ahead = plan.month_items("s2", following) if following is not None else None
    composite = s2_month(
        plan.month_items("s2", month), city_geobox(plan.city), month, ahead=ahead
    ).compute()
    layers = s2_month_layers(composite)  # classified now: the bands are not kept
    if stage is None:
        return layers
    return stage_s2_month(plan, layers, stage)


#: Attribute a month made by :func:`kept_month` carries for the run: ``key:hit|made``.
CACHE_ATTR = "payesh_month_cache"


def kept_month(
    plan: RunPlan,
    product: str,
    month: pd.Timestamp,
    make: Callable[[], xr.Dataset],
    *,
    cache: Path | None,
    reuse: bool = True,
) -> xr.Dataset:
    """``product``'s ``month`` from the month cache (:mod:`payesh.monthcache`) when a
    month of the same key is kept there (and ``reuse``), else ``make()``, kept for the
    next run — unless an item of it was skipped as unreadable: that month is made again
    by every run until it reads whole. Without ``cache``, ``make()``. Sentinel-2 months
    come back lazily, as staged; Landsat and night-light months in memory.
    ``attrs[CACHE_ATTR]`` says which (``<key>:hit`` or ``<key>:made``), for the run to
    count and to prune by (:func:`cache_use`)."""
    if cache is None:
        return make()
    from payesh import monthcache

    key = monthcache.month_key(
        product,
        month,
        city=plan.city,
        item_ids=plan.item_ids(product, month),
        model_version=runkeys.model_fingerprint() if product == "s2" else "",
    )
    kept = monthcache.get(cache, plan.city, product, month, key) if reuse else None
    how = "hit"
    if kept is None:
        how = "made"
        made = make()
        if made.attrs.get("skipped_items"):
            # an item of the month could not be read: the month is made again by the next
            # run (the provider may fix the file under the same id), so it is kept only
            # for this run, under a name no run looks up
            key = f"{key}.{uuid.uuid4().hex[:8]}"
        tile_px = tile_grid(plan.city).tile_pixels
        kept = monthcache.put(cache, plan.city, product, month, key, made, tile_pixels=tile_px)
    if product != "s2":
        kept = kept.load()
    kept.attrs[CACHE_ATTR] = f"{key}:{how}"
    return kept


@dataclass(frozen=True)
class CacheUse:
    """What a run's months took from the month cache: the keys it used (to keep them, see
    :func:`payesh.monthcache.prune`) and, per product, how many months were found kept."""

    keys: list[str] = field(default_factory=list)
    from_cache: dict[str, int] = field(default_factory=dict)
    months: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """``s2 11 of 12, landsat 12 of 12``."""
        return ", ".join(f"{k} {n} of {self.months[k]}" for k, n in self.from_cache.items())


def cache_use(monthly: Mapping[str, list[xr.Dataset]]) -> CacheUse:
    """Read (and take off) the marks :func:`kept_month` put on a run's months."""
    use = CacheUse()
    for product, months in monthly.items():
        for ds in months:
            mark = ds.attrs.pop(CACHE_ATTR, None)
            if mark is None:
                continue
            key, how = str(mark).rsplit(":", 1)
            use.keys.append(key)
            use.months[product] = use.months.get(product, 0) + 1
            use.from_cache[product] = use.from_cache.get(product, 0) + (how == "hit")
    return use


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


def store_location(city: Any, store: str) -> str:
    """Where ``city``'s store lives under the store root ``store``."""
    from payesh.store import store_path

    return store_path(city.name, store)


def pixel_months(monthly: MonthlyData) -> xr.Dataset | None:
    """The monthly layers of the ``pixels`` group as the store gets them, when the months
    were classified as they were made (:func:`s2_month_layers`); ``None`` otherwise.

    ``builtup_prob`` and ``true_colour``, staged or in memory: what
    :func:`compute_indicators` puts in ``groups["pixels"]`` beside ``first_seen``.
    """
    s2 = monthly.s2
    if s2 is None or "builtup_prob" not in s2:
        return None
    if TRUE_COLOUR not in s2 and "red" in s2:
        return None  # true colour is made by compute_indicators
    names = ["builtup_prob"] + ([TRUE_COLOUR] if TRUE_COLOUR in s2 else [])
    return xr.Dataset({name: s2[name] for name in names})


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
