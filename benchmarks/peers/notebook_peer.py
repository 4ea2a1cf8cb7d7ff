"""The notebook peer: payesh's core indicators as a capable data scientist writes them.

odc-stac + xarray + Dask, the idioms of the Pangeo / Open Data Cube tutorials, no payesh
machinery on the compute path:

* ``odc.stac.load`` of the bands onto the city grid, Dask chunks of 2048 px;
* the SCL cloud mask (classes 0 1 3 8 9 10, clouds and shadows grown by one pixel) with
  ``.where``; scale and offset from ``raster:bands``;
* ``.resample(time="1MS").median()`` for the monthly composite;
* ``xr.apply_ufunc`` running payesh's own classifier (the same model file, the same
  features from :func:`payesh.classifier.feature_stack`, ``predict_proba``);
* ``coarsen`` to 1 km tiles: ``builtup_fraction`` (share of clear pixels with
  P(built-up) > 0.5), ``ntl_sum`` (night lights brought to a 50 m grid by nearest
  neighbour, valid-area mean × pixels per tile), ``lst_mean`` (Landsat ST_B10 with the
  QA_PIXEL mask, monthly mean, tile mean);
* ``to_zarr`` of the per-pixel probability and the tiles, computed in one
  ``dask.compute`` (so the Sentinel-2 chain runs once).

The grids come from :mod:`payesh.grid` (the city's 10 m grid and its tiles), so both sides
produce the same tiles; that is geometry, not compute. Run as a script it prints one
``RESULT {json}`` line (seconds, task time per stage from Dask's profiler); see
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import dask
import numpy as np
import odc.stac
import pandas as pd
import pystac
import xarray as xr
from dask.diagnostics import Profiler
from dask.utils import key_split

from payesh.city import load_city
from payesh.classifier import BANDS, default_model_path, feature_stack, load_model
from payesh.grid import aligned_geobox, city_geobox

SCL_NOT_CLEAR = [0, 1, 3, 8, 9, 10]
SCL_CLOUDY = [3, 8, 9, 10]
QA_CLOUDY_BITS = 0b11111  # fill, dilated cloud, cirrus, cloud, shadow
CHUNKS = {"x": 2048, "y": 2048}
EARTH_RADIUS_M = 6_371_008.8


def _items(catalog: str, start: str, end: str) -> dict[str, list[pystac.Item]]:
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end) + pd.offsets.MonthEnd(1)
    out: dict[str, list[pystac.Item]] = defaultdict(list)
    for item in pystac.Catalog.from_file(catalog).get_items(recursive=True):
        assert item.datetime is not None
        if t0 <= pd.Timestamp(item.datetime.replace(tzinfo=None)) < t1 + pd.Timedelta(days=1):
            out[item.collection_id or ""].append(item)
    return out


def _scale_offset(item: pystac.Item, key: str) -> tuple[float, float]:
    rb = item.assets[key].extra_fields["raster:bands"][0]
    return float(rb.get("scale", 1.0)), float(rb.get("offset", 0.0))


def _grow(mask: xr.DataArray) -> xr.DataArray:
    """Grow a boolean mask by one pixel (4-neighbours), as payesh's 1 px cloud buffer."""
    out = mask
    for dim in ("x", "y"):
        for step in (1, -1):
            out = out | mask.shift({dim: step}, fill_value=False)
    return out


def _predict(bands: np.ndarray, *, estimator: Any) -> np.ndarray:
    flat = bands.reshape(-1, bands.shape[-1])
    ok = np.isfinite(flat).all(axis=1)
    prob = np.full(flat.shape[0], np.nan, dtype="float32")
    if ok.any():
        prob[ok] = estimator.predict_proba(feature_stack(flat[ok]))[:, 1]
    return prob.reshape(bands.shape[:-1])


def builtup(items: list[pystac.Item], gbox: Any, tile_px: int) -> tuple[xr.DataArray, xr.DataArray]:
    """Monthly P(built-up) per pixel and the tiles' built-up fraction."""
    s2 = odc.stac.load(items, bands=[*BANDS, "scl"], geobox=gbox, chunks=CHUNKS, groupby="time")
    scale, offset = _scale_offset(items[0], "red")
    refl = s2[list(BANDS)]
    refl = refl.where(refl != 0) * scale + offset
    clear = ~s2.scl.isin(SCL_NOT_CLEAR) & ~_grow(s2.scl.isin(SCL_CLOUDY))
    monthly = refl.where(clear).resample(time="1MS").median()

    model = load_model(default_model_path(), compiled=False)
    stack = monthly.to_dataarray("band").transpose("time", "y", "x", "band").chunk({"band": -1})
    prob = xr.apply_ufunc(
        _predict,
        stack,
        input_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        kwargs={"estimator": model.estimator},
    ).rename("builtup_prob")
    built = (prob > 0.5).where(prob.notnull())
    fraction = built.coarsen(y=tile_px, x=tile_px).mean().astype("float32")
    return prob, fraction.rename("builtup_fraction")


def night_lights(items: list[pystac.Item], city: Any) -> xr.DataArray:
    """Tile sums of night-light radiance (Σ radiance × share of each pixel in the tile)."""
    fine = aligned_geobox(city, 50.0)
    per_tile = round(city.tile_size / fine.resolution.x)
    vi = odc.stac.load(items, bands=["radiance", "cf_cvg"], geobox=fine, chunks=CHUNKS)
    rad = vi.radiance.where(vi.cf_cvg > 0)
    lat = math.radians(float(items[0].bbox[1] + items[0].bbox[3]) / 2)  # type: ignore[index]
    d = math.radians(1 / 240)
    pixel_m2 = EARTH_RADIUS_M**2 * d * d * math.cos(lat)
    tiles = rad.coarsen(y=per_tile, x=per_tile)
    valid = rad.notnull().coarsen(y=per_tile, x=per_tile).mean()
    ntl = (tiles.mean() * (city.tile_size**2 / pixel_m2)).where(valid >= 0.5)
    return ntl.resample(time="1MS").mean().astype("float32").rename("ntl_sum")


def land_surface_temperature(items: list[pystac.Item], city: Any) -> xr.DataArray:
    """Tile mean of the monthly mean clear-sky surface temperature, °C."""
    gbox = aligned_geobox(city, 30.0)
    per_tile = round(city.tile_size / gbox.resolution.x)
    ls = odc.stac.load(items, bands=["lwir11", "qa_pixel"], geobox=gbox, chunks=CHUNKS)
    scale, offset = _scale_offset(items[0], "lwir11")
    clear = (ls.qa_pixel & QA_CLOUDY_BITS) == 0
    lst = ls.lwir11.where((ls.lwir11 != 0) & clear) * scale + offset - 273.15
    monthly = lst.resample(time="1MS").mean()
    valid = monthly.notnull().coarsen(y=per_tile, x=per_tile).mean()
    tiles = monthly.coarsen(y=per_tile, x=per_tile).mean().where(valid >= 0.5)
    return tiles.astype("float32").rename("lst_mean")


def _tiles(da: xr.DataArray) -> xr.DataArray:
    return da.rename(y="tile_y", x="tile_x").drop_vars("spatial_ref", errors="ignore")


def indicators(catalog: str, manifest: str, start: str, end: str) -> tuple[xr.Dataset, xr.Dataset]:
    """The lazy pixel and tile datasets of the peer."""
    city = load_city(manifest)
    gbox = city_geobox(city)
    items = _items(catalog, start, end)
    prob, bfrac = builtup(items["sentinel-2-l2a"], gbox, city.tile_pixels)
    ntl = night_lights(items["viirs-ntl-monthly"], city)
    lst = land_surface_temperature(items["landsat-c2-l2"], city)
    tiles = xr.merge([_tiles(bfrac), _tiles(ntl), _tiles(lst)], join="override", compat="override")
    pixels = prob.to_dataset().drop_vars("spatial_ref", errors="ignore")
    return pixels, tiles


#: Stage of a Dask task: the first rule any ``-``-separated part of its name matches.
STAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    # (stage, parts equal to, parts containing)
    ("classify", (), ("predict",)),
    ("composite", (), ("median", "resample")),
    ("write", ("store-map", "finalize"), ("zarr", "store")),
    ("load", (*BANDS, "scl", "lwir11", "qa_pixel", "radiance", "cf_cvg"), ("dc_load", "odc")),
    ("mask", ("where", "isin", "invert", "and_", "or_", "shift", "ne", "eq", "gt", "ge"), ()),
    ("aggregate", ("sum", "count", "truediv", "mul", "sub", "add", "astype"), ("coarsen", "mean")),
)


def stage_of(name: str) -> str:
    """Stage of a Dask task from its name (``key_split`` of its key; fused names join parts)."""
    parts = name.lower().split("-")
    for stage, equal, contain in STAGES:
        if any(p in equal or any(c in p for c in contain) for p in parts):
            return stage
    return "other"


def run(
    catalog: str, manifest: str, start: str, end: str, out: str, threads: int
) -> dict[str, Any]:
    """Build, compute and write the peer's indicators; seconds and task time per stage."""
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads), Profiler() as prof:
        pixels, tiles = indicators(catalog, manifest, start, end)
        target = Path(out)
        writes = [
            pixels.to_zarr(target / "pixels.zarr", mode="w", compute=False),
            tiles.to_zarr(target / "tiles.zarr", mode="w", compute=False),
        ]
        dask.compute(*writes)
    seconds = time.perf_counter() - t0
    by_stage: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    for r in prof.results:
        name = key_split(r.key)
        by_name[name] += r.end_time - r.start_time
        by_stage[stage_of(name)] += r.end_time - r.start_time
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {
        "seconds": seconds,
        "task_seconds_by_stage": {k: round(v, 3) for k, v in sorted(by_stage.items())},
        "task_seconds_top": {k: round(v, 3) for k, v in top},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--start", default="2025-01")
    p.add_argument("--end", default="2025-12")
    p.add_argument("--out", required=True, help="folder for pixels.zarr and tiles.zarr")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    out = run(a.catalog, a.manifest, a.start, a.end, a.out, a.threads)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
