"""STAC items that follow the providers' conventions, and their collections.

* ``sentinel-2-l2a``: Earth Search v1 item layout (:mod:`payesh.synthetic.sentinel2`).
* ``landsat-c2-l2``: Earth Search / USGS Collection 2 Level-2 (``lwir11`` ST_B10 with
  ``scale 0.00341802 / offset 149``, ``qa_pixel`` with ``classification:bitfields``).
* ``viirs-ntl-monthly``: the EOG VNL monthly crop layout of the reference Mumbai catalog
  (``radiance``, ``cf_cvg``), plus ``proj:shape``/``proj:transform`` so it loads without
  opening the files.

This module holds the Landsat and VIIRS items and :func:`collection`. COG writing and the
fields every item shares are in :mod:`payesh.synthetic.cog`; this module re-exports their
public names and the Sentinel-2 item's, so that ``from payesh.synthetic.stac import …``
still gives all of them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pystac

from .cog import COG_TYPE, footprint, iso, sun_angles, transform6, utc_stamp, write_cog
from .grid import PixelGrid
from .sensors import ST_OFFSET, ST_SCALE
from .sentinel2 import S2_ASSETS, S2_EXTENSIONS, mgrs_tile, s2_item

__all__ = [
    "COG_TYPE",
    "LANDSAT_EXTENSIONS",
    "QA_PIXEL_BITFIELDS",
    "S2_ASSETS",
    "S2_EXTENSIONS",
    "VIIRS_EXTENSIONS",
    "collection",
    "footprint",
    "landsat_item",
    "mgrs_tile",
    "s2_item",
    "sun_angles",
    "viirs_item",
    "write_cog",
]

LANDSAT_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
]
VIIRS_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]


def _bitfield(
    name: str, desc: str, offset: int, length: int, classes: list[tuple[int, str, str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": desc,
        "offset": offset,
        "length": length,
        "classes": [{"value": v, "name": n, "description": d} for v, n, d in classes],
    }


def _flag(name: str, desc: str, offset: int, yes: str) -> dict[str, Any]:
    return _bitfield(
        name, desc, offset, 1, [(0, f"not_{name}", f"Not {desc.lower()}"), (1, name, yes)]
    )


def _confidence(name: str, desc: str, offset: int) -> dict[str, Any]:
    levels = [
        (0, "not_set", "No confidence level set"),
        (1, "low", "Low confidence"),
        (2, "medium", "Medium confidence"),
        (3, "high", "High confidence"),
    ]
    return _bitfield(name, desc, offset, 2, levels)


#: ``classification:bitfields`` of QA_PIXEL (Landsat 8/9 Collection 2).
QA_PIXEL_BITFIELDS: list[dict[str, Any]] = [
    _flag("fill", "Image or fill data", 0, "Fill data"),
    _flag("dilated_cloud", "Dilated cloud", 1, "Cloud dilation"),
    _flag("cirrus", "Cirrus mask", 2, "High confidence cirrus"),
    _flag("cloud", "Cloud mask", 3, "High confidence cloud"),
    _flag("cloud_shadow", "Cloud shadow mask", 4, "High confidence cloud shadow"),
    _flag("snow", "Snow/Ice mask", 5, "High confidence snow cover"),
    _flag("clear", "Clear mask", 6, "Cloud and dilated cloud bits are not set"),
    _flag("water", "Water mask", 7, "Water"),
    _confidence("cloud_confidence", "Cloud confidence levels", 8),
    _confidence("cloud_shadow_confidence", "Cloud shadow confidence levels", 10),
    _confidence("snow_confidence", "Snow/Ice confidence levels", 12),
    _confidence("cirrus_confidence", "Cirrus confidence levels", 14),
]


def landsat_item(
    *,
    item_id: str,
    platform: str,
    day: dt.date,
    epsg: int,
    grid: PixelGrid,
    cloud_cover: float,
    wrs: tuple[str, str],
    folder: Path,
) -> pystac.Item:
    """An Earth Search style ``landsat-c2-l2`` item with ``lwir11`` and ``qa_pixel``."""
    geom, bbox = footprint(grid)
    when = utc_stamp(day, 7, 31, 26.656)
    az, el = sun_angles(day, bbox[1])
    sat = item_id[2:4]
    props: dict[str, Any] = {
        "platform": platform,
        "instruments": ["oli", "tirs"],
        "created": iso(when + dt.timedelta(days=9)),
        "gsd": 30,
        "description": "Landsat Collection 2 Level-2",
        "eo:cloud_cover": cloud_cover,
        "view:off_nadir": 0,
        "view:sun_elevation": round(el, 8),
        "view:sun_azimuth": round(az, 7),
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "proj:shape": list(grid.shape),
        "proj:transform": transform6(grid),
        "landsat:cloud_cover_land": cloud_cover,
        "landsat:wrs_type": "2",
        "landsat:wrs_path": wrs[0],
        "landsat:wrs_row": wrs[1],
        "landsat:collection_category": "T1",
        "landsat:collection_number": "02",
        "landsat:correction": "L2SP",
        "landsat:scene_id": f"LC{int(sat)}{wrs[0]}{wrs[1]}{day.year}{day.timetuple().tm_yday:03d}LGN00",
        "grid:code": f"WRS2-{wrs[0]}{wrs[1]}",
        "sci:doi": "10.5066/P9OGBGM6",
        "processing:software": {"payesh.synthetic": "0.1.0"},
        "updated": iso(when + dt.timedelta(days=9)),
    }
    item = pystac.Item(
        id=item_id,
        geometry=geom,
        bbox=bbox,
        datetime=when,
        properties=props,
        stac_extensions=list(LANDSAT_EXTENSIONS),
        collection="landsat-c2-l2",
    )
    common = {"proj:shape": list(grid.shape), "proj:transform": transform6(grid)}
    item.add_asset(
        "lwir11",
        pystac.Asset(
            href=str(folder / f"{item_id}_ST_B10.TIF"),
            media_type=COG_TYPE,
            title="Surface Temperature Band",
            description="Collection 2 Level-2 Thermal Infrared Band (ST_B10) Surface Temperature",
            roles=["data", "temperature"],
            extra_fields={
                "eo:bands": [
                    {
                        "name": "TIRS_B10",
                        "common_name": "lwir11",
                        "description": "Long-wave infrared",
                        "center_wavelength": 10.9,
                        "full_width_half_max": 0.59,
                    }
                ],
                "raster:bands": [
                    {
                        "nodata": 0,
                        "data_type": "uint16",
                        "spatial_resolution": 30,
                        "unit": "kelvin",
                        "scale": ST_SCALE,
                        "offset": ST_OFFSET,
                    }
                ],
                "gsd": 100,
                **common,
            },
        ),
    )
    item.add_asset(
        "qa_pixel",
        pystac.Asset(
            href=str(folder / f"{item_id}_QA_PIXEL.TIF"),
            media_type=COG_TYPE,
            title="Pixel Quality Assessment Band",
            description="Collection 2 Level-1 Pixel Quality Assessment Band (QA_PIXEL)",
            roles=["cloud", "cloud-shadow", "snow-ice", "water-mask"],
            extra_fields={
                "classification:bitfields": QA_PIXEL_BITFIELDS,
                "raster:bands": [
                    {
                        "nodata": 1,
                        "data_type": "uint16",
                        "spatial_resolution": 30,
                        "unit": "bit index",
                    }
                ],
                **common,
            },
        ),
    )
    return item


def viirs_item(*, item_id: str, month: dt.date, grid: PixelGrid, folder: Path) -> pystac.Item:
    """A ``viirs-ntl-monthly`` item (EOG VNL monthly layout) with ``radiance``, ``cf_cvg``."""
    geom, bbox = footprint(grid)
    item = pystac.Item(
        id=item_id,
        geometry=geom,
        bbox=bbox,
        datetime=dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC),
        properties={"proj:code": "EPSG:4326", "proj:epsg": 4326},
        stac_extensions=list(VIIRS_EXTENSIONS),
        collection="viirs-ntl-monthly",
    )
    common = {"proj:shape": list(grid.shape), "proj:transform": transform6(grid)}
    item.add_asset(
        "radiance",
        pystac.Asset(
            href=str(folder / "radiance.tif"),
            media_type=COG_TYPE,
            title="Average DNB radiance (avg_rade9h)",
            roles=["data"],
            extra_fields={
                "raster:bands": [{"data_type": "float32", "unit": "nW cm-2 sr-1"}],
                **common,
            },
        ),
    )
    item.add_asset(
        "cf_cvg",
        pystac.Asset(
            href=str(folder / "cf_cvg.tif"),
            media_type=COG_TYPE,
            title="Number of cloud-free observations (cf_cvg)",
            roles=["data"],
            extra_fields={"raster:bands": [{"data_type": "uint16"}], **common},
        ),
    )
    return item


def collection(
    cid: str,
    *,
    title: str,
    description: str,
    license_: str,
    bbox: list[float],
    start: dt.datetime,
    end: dt.datetime,
    providers: list[pystac.Provider],
) -> pystac.Collection:
    """A collection with the given spatial and temporal extent."""
    return pystac.Collection(
        id=cid,
        title=title,
        description=description,
        license=license_,
        providers=providers,
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
    )
