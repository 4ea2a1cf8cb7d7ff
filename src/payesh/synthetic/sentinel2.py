"""The Sentinel-2 L2A item: the Earth Search v1 ``sentinel-2-l2a`` layout (asset keys,
``raster:bands`` with the ``scale 0.0001 / offset -0.1`` of baseline >= 04.00,
``eo:bands``, ``proj:*``, ``mgrs:*``, ``s2:*`` percentages,
``earthsearch:boa_offset_applied``), and the MGRS tile of a UTM point."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pystac

from .cog import COG_TYPE, footprint, iso, sun_angles, transform6, utc_stamp
from .grid import PixelGrid
from .sensors import S2_OFFSET, S2_SCALE

S2_EXTENSIONS = [
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
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
    when = utc_stamp(day, 7, 52, 11.0 + 0.137 * index)
    zone, band, square = mgrs
    az, el = sun_angles(day, bbox[1])
    tile = f"{zone}{band}{square}"
    stamp = when.strftime("%Y%m%dT%H%M%S")
    gen = (when + dt.timedelta(hours=3, minutes=12)).strftime("%Y%m%dT%H%M%S")
    props: dict[str, Any] = {
        "created": iso(when + dt.timedelta(hours=5)),
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
        "s2:generation_time": iso(when + dt.timedelta(hours=3, minutes=12)),
        "s2:reflectance_conversion_factor": round(
            1.0 + 0.0334 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 3) / 365.25), 9
        ),
        "s2:sequence": "0",
        # The DNs carry BOA_ADD_OFFSET (+1000): the provider did not remove it, so the
        # declared raster:bands offset (-0.1) applies — as for Earth Search items whose
        # flag is false. (True means Element84 already removed it from the DNs.)
        "earthsearch:boa_offset_applied": False,
        "processing:software": {"payesh.synthetic": "0.1.0"},
        "updated": iso(when + dt.timedelta(hours=5)),
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
                    "proj:transform": transform6(grid),
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
                "proj:transform": transform6(grid20),
                "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            },
        ),
    )
    return item
