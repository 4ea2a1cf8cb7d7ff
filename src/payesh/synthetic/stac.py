"""COG writing and STAC items that follow the providers' conventions.

* ``sentinel-2-l2a``: Earth Search v1 item layout (asset keys, ``raster:bands`` with the
  ``scale 0.0001 / offset -0.1`` of baseline >= 04.00, ``eo:bands``, ``proj:*``, ``mgrs:*``,
  ``s2:*`` percentages, ``earthsearch:boa_offset_applied``).
* ``landsat-c2-l2``: Earth Search / USGS Collection 2 Level-2 (``lwir11`` ST_B10 with
  ``scale 0.00341802 / offset 149``, ``qa_pixel`` with ``classification:bitfields``).
* ``viirs-ntl-monthly``: the EOG VNL monthly crop layout of the reference Mumbai catalog
  (``radiance``, ``cf_cvg``), plus ``proj:shape``/``proj:transform`` so it loads without
  opening the files.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from pyproj import Transformer

from .grid import DemoSpec, PixelGrid
from .sensors import S2_OFFSET, S2_SCALE, ST_OFFSET, ST_SCALE

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

S2_EXTENSIONS = [
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
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

#: Earth Search key -> (file name, band description, centre µm, FWHM µm, resolution m).
S2_ASSETS: dict[str, tuple[str, str, float, float, int]] = {
    "blue": ("B02", "Blue (band 2)", 0.49, 0.098, 10),
    "green": ("B03", "Green (band 3)", 0.56, 0.045, 10),
    "red": ("B04", "Red (band 4)", 0.665, 0.038, 10),
    "nir": ("B08", "NIR 1 (band 8)", 0.842, 0.145, 10),
    "swir16": ("B11", "SWIR 1 (band 11)", 1.61, 0.143, 20),
    "swir22": ("B12", "SWIR 2 (band 12)", 2.19, 0.242, 20),
}


def write_cog(
    path: Path,
    data: np.ndarray,
    grid: PixelGrid,
    *,
    nodata: float | None,
    spec: DemoSpec,
) -> None:
    """Write a single-band Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    path
        Output file.
    data
        ``(height, width)`` array in the grid's shape; its dtype is the file's.
    grid
        CRS and transform of the array.
    nodata
        The nodata value recorded in the file, or ``None``.
    spec
        Supplies ``compress`` and ``blocksize``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": spec.compress,
        "blocksize": spec.blocksize,
        "overviews": "NONE",  # half the write time; the pipeline reads full resolution
        "num_threads": "ALL_CPUS",
    }
    if np.issubdtype(data.dtype, np.integer) and spec.compress.upper() in (
        "DEFLATE",
        "LZW",
        "ZSTD",
    ):
        options["predictor"] = "STANDARD"
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data, 1)


def footprint(grid: PixelGrid) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon (EPSG:4326) of a grid's outline and its bbox (degrees)."""
    left, bottom, right, top = grid.bounds
    xs = [left, right, right, left, left]
    ys = [bottom, bottom, top, top, bottom]
    if grid.crs != "EPSG:4326":
        to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        xs, ys = (list(v) for v in to_ll.transform(xs, ys))
    ring = [[round(float(x), 9), round(float(y), 9)] for x, y in zip(xs, ys, strict=True)]
    bbox = [
        min(r[0] for r in ring),
        min(r[1] for r in ring),
        max(r[0] for r in ring),
        max(r[1] for r in ring),
    ]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _transform6(grid: PixelGrid) -> list[float]:
    t = grid.transform
    return [t.a, t.b, t.c, t.d, t.e, t.f]


def _stamp(day: dt.date, hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC) + dt.timedelta(
        seconds=second
    )


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sun_angles(day: dt.date, lat: float) -> tuple[float, float]:
    """Approximate late-morning sun ``(azimuth, elevation)`` in degrees."""
    doy = day.timetuple().tm_yday
    decl = 23.44 * math.sin(2 * math.pi * (doy - 81) / 365.0)
    elev = 90.0 - lat + decl - 6.0
    return 155.0 - 10.0 * math.sin(2 * math.pi * (doy - 81) / 365.0), elev


def mgrs_tile(epsg: int, lat: float, x: float, y: float) -> tuple[int, str, str]:
    """MGRS ``(zone, latitude band, 100 km square)`` of a UTM point (WGS84, AA scheme)."""
    zone = epsg % 100
    band = "CDEFGHJKLMNPQRSTUVWXX"[int((lat + 80) // 8)]
    cols = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")[(zone - 1) % 3]
    rows = "ABCDEFGHJKLMNPQRSTUV"
    col = cols[int(x // 100000) - 1]
    row = rows[(int(y // 100000) + (5 if zone % 2 == 0 else 0)) % 20]
    return zone, band, col + row


def s2_item(
    *,
    item_id: str,
    platform: str,
    day: dt.date,
    index: int,
    epsg: int,
    grid10: PixelGrid,
    grid20: PixelGrid,
    mgrs: tuple[int, str, str],
    stats: dict[str, float],
    folder: Path,
) -> pystac.Item:
    """An Earth Search v1 style ``sentinel-2-l2a`` item whose assets are COGs in ``folder``."""
    geom, bbox = footprint(grid10)
    when = _stamp(day, 7, 52, 11.0 + 0.137 * index)
    zone, band, square = mgrs
    az, el = sun_angles(day, bbox[1])
    tile = f"{zone}{band}{square}"
    stamp = when.strftime("%Y%m%dT%H%M%S")
    gen = (when + dt.timedelta(hours=3, minutes=12)).strftime("%Y%m%dT%H%M%S")
    props: dict[str, Any] = {
        "created": _iso(when + dt.timedelta(hours=5)),
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": stats["eo:cloud_cover"],
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "mgrs:utm_zone": zone,
        "mgrs:latitude_band": band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{tile}",
        "view:sun_azimuth": round(az, 6),
        "view:sun_elevation": round(el, 6),
        **{k: v for k, v in stats.items() if k != "eo:cloud_cover"},
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "05.10",
        "s2:product_uri": f"{item_id[:3]}_MSIL2A_{stamp}_N0510_R049_T{tile}_{gen}.SAFE",
        "s2:generation_time": _iso(when + dt.timedelta(hours=3, minutes=12)),
        "s2:reflectance_conversion_factor": round(
            1.0 + 0.0334 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 3) / 365.25), 9
        ),
        "s2:sequence": "0",
        # The DNs carry BOA_ADD_OFFSET (+1000): the provider did not remove it, so the
        # declared raster:bands offset (-0.1) applies — as for Earth Search items whose
        # flag is false. (True means Element84 already removed it from the DNs.)
        "earthsearch:boa_offset_applied": False,
        "processing:software": {"payesh.synthetic": "0.1.0"},
        "updated": _iso(when + dt.timedelta(hours=5)),
    }
    item = pystac.Item(
        id=item_id,
        geometry=geom,
        bbox=bbox,
        datetime=when,
        properties=props,
        stac_extensions=list(S2_EXTENSIONS),
        collection="sentinel-2-l2a",
    )
    for key, (fname, desc, wl, fwhm, res) in S2_ASSETS.items():
        grid = grid10 if res == 10 else grid20
        item.add_asset(
            key,
            pystac.Asset(
                href=str(folder / f"{fname}.tif"),
                media_type=COG_TYPE,
                title=f"{desc.split(' (')[0]} ({desc.split('(')[1]} - {res}m",
                roles=["data", "reflectance"],
                extra_fields={
                    "eo:bands": [
                        {
                            "name": key,
                            "common_name": key,
                            "description": desc,
                            "center_wavelength": wl,
                            "full_width_half_max": fwhm,
                        }
                    ],
                    "gsd": res,
                    "proj:shape": list(grid.shape),
                    "proj:transform": _transform6(grid),
                    "raster:bands": [
                        {
                            "nodata": 0,
                            "data_type": "uint16",
                            "bits_per_sample": 15,
                            "spatial_resolution": res,
                            "scale": S2_SCALE,
                            "offset": S2_OFFSET,
                        }
                    ],
                },
            ),
        )
    item.add_asset(
        "scl",
        pystac.Asset(
            href=str(folder / "SCL.tif"),
            media_type=COG_TYPE,
            title="Scene classification map (SCL)",
            roles=["data", "reflectance"],
            extra_fields={
                "proj:shape": list(grid20.shape),
                "proj:transform": _transform6(grid20),
                "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            },
        ),
    )
    return item


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
    when = _stamp(day, 7, 31, 26.656)
    az, el = sun_angles(day, bbox[1])
    sat = item_id[2:4]
    props: dict[str, Any] = {
        "platform": platform,
        "instruments": ["oli", "tirs"],
        "created": _iso(when + dt.timedelta(days=9)),
        "gsd": 30,
        "description": "Landsat Collection 2 Level-2",
        "eo:cloud_cover": cloud_cover,
        "view:off_nadir": 0,
        "view:sun_elevation": round(el, 8),
        "view:sun_azimuth": round(az, 7),
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "proj:shape": list(grid.shape),
        "proj:transform": _transform6(grid),
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
        "updated": _iso(when + dt.timedelta(days=9)),
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
    common = {"proj:shape": list(grid.shape), "proj:transform": _transform6(grid)}
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
    common = {"proj:shape": list(grid.shape), "proj:transform": _transform6(grid)}
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
