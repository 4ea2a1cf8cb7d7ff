"""Orchestration: render every scene, write the catalog, manifest, permits, consumption, truth.

The scenes are rendered by :mod:`payesh.synthetic.serial` (this process) or
:mod:`payesh.synthetic.parallel` (worker processes); the side files and the spec check
are in :mod:`payesh.synthetic.cityfiles`, whose names are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pystac
import yaml

from .cityfiles import MWH_PER_M2, DemoSpecError, consumption, permits_geojson, validate
from .grid import DemoSpec, GeneratedCity, city_grids
from .parallel import SceneJob, run_jobs
from .scenario import month_end
from .scene import build_scenario
from .sentinel2 import mgrs_tile, s2_item
from .serial import serial_jobs
from .stac import collection, landsat_item, viirs_item
from .truth import write_truth

__all__ = [
    "DEFAULT_SPEC",
    "MWH_PER_M2",
    "WRS_PATH_ROW",
    "DemoSpecError",
    "Progress",
    "consumption",
    "generate_city",
]

Progress = Callable[[str, int, int], None]

#: WRS-2 path/row of the Khoy area (a plausible scene of the Landsat reference grid).
WRS_PATH_ROW = ("168", "033")

#: The default demo: 4 km around Khoy, 2025.
DEFAULT_SPEC = DemoSpec()


def generate_city(
    out_dir: str | Path,
    spec: DemoSpec = DEFAULT_SPEC,
    *,
    progress: Progress | None = None,
    workers: int = 1,
) -> GeneratedCity:
    """Generate a synthetic growing city: static STAC catalog + COGs, manifest, permits,
    reported consumption and ground truth, offline and deterministically by ``spec.seed``.

    Parameters
    ----------
    out_dir
        Output folder; ``cities/``, ``catalog/``, ``permits/``, ``consumption/`` and
        ``truth/`` are created in it (``catalog/`` and ``truth/`` are replaced).
    spec
        What to generate (size in km, period, revisits in days, seed, COG options).
    progress
        Called as ``progress(stage, done, total)`` after each scene; stages are
        ``"sentinel-2-l2a"``, ``"landsat-c2-l2"``, ``"viirs-ntl-monthly"`` and ``"truth"``.
    workers
        Processes that render and write scenes (``1``: this process only). The files
        are the same for any number of workers: each scene depends only on the seed and
        its index. Workers are spawned and import the main module again: from a script,
        call this inside ``if __name__ == "__main__":``.

    Returns
    -------
    GeneratedCity
        The paths written.

    Raises
    ------
    DemoSpecError
        If ``spec`` cannot be generated (bad name, months, resolution or tile size).
    PayeshError
        With ``workers > 1``, when a worker process cannot start (see
        :func:`payesh.synthetic.parallel.check_workers_start`).
    """
    validate(spec)
    if workers < 1:
        raise DemoSpecError(f"generate_city workers must be >= 1, got {workers}")
    root = Path(out_dir).resolve()
    report: Progress = progress or (lambda _stage, _done, _total: None)
    grids = city_grids(spec)
    sc = build_scenario(spec, grids)
    cat_dir, truth_dir = root / "catalog", root / "truth"
    for d in (cat_dir, truth_dir):
        if d.exists():
            shutil.rmtree(d)
    cat_dir.mkdir(parents=True)

    _lon, lat = spec.center
    cx = 0.5 * (grids.city.bounds[0] + grids.city.bounds[2])
    cy = 0.5 * (grids.city.bounds[1] + grids.city.bounds[3])
    mgrs = mgrs_tile(grids.epsg, lat, cx, cy)
    first = dt.datetime(sc.months[0].year, sc.months[0].month, 1, tzinfo=dt.UTC)
    last_day = month_end(sc.months[-1])
    last = dt.datetime(last_day.year, last_day.month, last_day.day, 23, 59, 59, tzinfo=dt.UTC)
    ext_bbox = list(grids.bbox)

    catalog = pystac.Catalog(
        id=f"payesh-synthetic-{spec.name}",
        description=f"Synthetic imagery of the demo city {spec.name!r} (payesh.synthetic, seed {spec.seed})",
        title=f"payesh synthetic city {spec.name}",
    )
    s2c = collection(
        "sentinel-2-l2a",
        title="Sentinel-2 Level-2A",
        description="Synthetic Sentinel-2 L2A scenes in the Earth Search v1 layout",
        license_="proprietary",
        bbox=ext_bbox,
        start=first,
        end=last,
        providers=[
            pystac.Provider("ESA", roles=[pystac.ProviderRole.PRODUCER]),
            pystac.Provider("payesh", roles=[pystac.ProviderRole.PROCESSOR]),
        ],
    )
    lsc = collection(
        "landsat-c2-l2",
        title="Landsat Collection 2 Level-2",
        description="Synthetic Landsat 8/9 Collection 2 Level-2 surface temperature (ST_B10) and QA_PIXEL",
        license_="proprietary",
        bbox=ext_bbox,
        start=first,
        end=last,
        providers=[
            pystac.Provider("USGS", roles=[pystac.ProviderRole.PRODUCER]),
            pystac.Provider("payesh", roles=[pystac.ProviderRole.PROCESSOR]),
        ],
    )
    vic = collection(
        "viirs-ntl-monthly",
        title="VIIRS DNB monthly night lights",
        description="Synthetic EOG VIIRS DNB monthly composites (avg_rade9h, cf_cvg)",
        license_="CC-BY-4.0",
        bbox=ext_bbox,
        start=first,
        end=last,
        providers=[
            pystac.Provider("EOG", roles=[pystac.ProviderRole.PRODUCER]),
            pystac.Provider("payesh", roles=[pystac.ProviderRole.PROCESSOR]),
        ],
    )
    for c in (s2c, lsc, vic):
        catalog.add_child(c)

    tile = f"{mgrs[0]}{mgrs[1]}{mgrs[2]}"
    s2_jobs: list[SceneJob] = []
    for i, day in enumerate(sc.s2_dates):
        sat = "S2B" if i % 2 == 0 else "S2C"
        item_id = f"{sat}_{tile}_{day:%Y%m%d}_0_L2A"
        folder = cat_dir / "sentinel-2-l2a" / item_id
        folder.mkdir(parents=True)
        s2_jobs.append(("s2", i, str(folder), item_id))
    ls_jobs: list[SceneJob] = []
    for i, day in enumerate(sc.landsat_dates):
        sat = "LC09" if i % 2 == 0 else "LC08"
        item_id = f"{sat}_L2SP_{WRS_PATH_ROW[0]}{WRS_PATH_ROW[1]}_{day:%Y%m%d}_02_T1"
        folder = cat_dir / "landsat-c2-l2" / item_id
        folder.mkdir(parents=True)
        ls_jobs.append(("landsat", i, str(folder), item_id))
    vi_jobs: list[SceneJob] = [
        ("viirs", i, str(cat_dir / "viirs-ntl-monthly" / f"VNL_npp_{m:%Y%m}_{spec.name}"), "")
        for i, m in enumerate(sc.months)
    ]
    jobs = [*s2_jobs, *ls_jobs, *vi_jobs]
    scenes = run_jobs(sc, jobs, workers=workers) if workers > 1 else serial_jobs(sc, jobs)

    s2_meta: list[dict[str, Any]] = []
    ls_meta: list[dict[str, Any]] = []
    vi_meta: list[dict[str, Any]] = []
    bright_item = None
    totals = {"s2": len(s2_jobs), "landsat": len(ls_jobs), "viirs": len(vi_jobs)}
    stages = {"s2": "sentinel-2-l2a", "landsat": "landsat-c2-l2", "viirs": "viirs-ntl-monthly"}
    for (kind, i, folder_name, item_id), stats in scenes:
        folder = Path(folder_name)
        if kind == "s2":
            day = sc.s2_dates[i]
            item = s2_item(
                item_id=item_id,
                platform="sentinel-2b" if item_id.startswith("S2B") else "sentinel-2c",
                day=day,
                index=i,
                epsg=grids.epsg,
                grid10=grids.s2_10,
                grid20=grids.s2_20,
                mgrs=mgrs,
                stats=stats,
                folder=folder,
            )
            s2c.add_item(item)
            s2_meta.append(
                {
                    "id": item_id,
                    "date": day.isoformat(),
                    "cloud_cover": stats["eo:cloud_cover"],
                    "snow": stats["s2:snow_ice_percentage"],
                }
            )
            if sc.bright is not None and day == sc.bright[1]:
                bright_item = item_id
        elif kind == "landsat":
            day = sc.landsat_dates[i]
            cloud_cover = stats["cloud_cover"]
            item = landsat_item(
                item_id=item_id,
                platform="landsat-9" if item_id.startswith("LC09") else "landsat-8",
                day=day,
                epsg=grids.epsg,
                grid=grids.landsat,
                cloud_cover=cloud_cover,
                wrs=WRS_PATH_ROW,
                folder=folder,
            )
            lsc.add_item(item)
            ls_meta.append({"id": item_id, "date": day.isoformat(), "cloud_cover": cloud_cover})
        else:
            month = sc.months[i]
            vid = folder.name
            vic.add_item(viirs_item(item_id=vid, month=month, grid=grids.viirs, folder=folder))
            vi_meta.append(
                {
                    "id": vid,
                    "month": f"{month:%Y-%m}",
                    "missing_fraction": stats["missing_fraction"],
                }
            )
        report(stages[kind], i + 1, totals[kind])

    catalog.normalize_hrefs(str(cat_dir))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)

    # manifest, permits, consumption
    for sub in ("cities", "permits", "consumption"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    w, s, e, n = grids.bbox
    manifest = {
        "name": spec.name,
        "title": f"Synthetic city {spec.name} (payesh demo, seed {spec.seed})",
        "bbox": [
            math.floor(w * 1e7) / 1e7,
            math.floor(s * 1e7) / 1e7,
            math.ceil(e * 1e7) / 1e7,
            math.ceil(n * 1e7) / 1e7,
        ],
        "crs": f"EPSG:{grids.epsg}",
        "resolution": spec.resolution,
        "tile_size": spec.tile_size,
        "permits": f"permits/{spec.name}.geojson",
        "consumption": f"consumption/{spec.name}.csv",
    }
    manifest_path = root / "cities" / f"{spec.name}.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    permits_path = root / "permits" / f"{spec.name}.geojson"
    permits_path.write_text(permits_geojson(sc))
    rows = consumption(sc)
    cons_path = root / "consumption" / f"{spec.name}.csv"
    cons_path.write_text("month,mwh\n" + "".join(f"{m},{v:.1f}\n" for m, v in rows))

    extra = {
        "bright_item": bright_item,
        "sentinel-2-l2a": s2_meta,
        "landsat-c2-l2": ls_meta,
        "viirs-ntl-monthly": vi_meta,
        "consumption_mwh": dict(rows),
        "utm_bounds_note": "the city grid is the manifest bbox projected to crs and snapped to the nearest tile_size",
    }
    write_truth(sc, truth_dir, extra=extra)
    report("truth", 1, 1)
    return GeneratedCity(
        root=root,
        manifest=manifest_path,
        catalog=cat_dir / "catalog.json",
        permits=permits_path,
        consumption=cons_path,
        truth_dir=truth_dir,
    )
