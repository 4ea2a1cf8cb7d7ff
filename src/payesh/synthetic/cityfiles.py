"""What :func:`~payesh.synthetic.generate_city` writes beside the imagery, and its spec check.

The city's side files: the reported electricity consumption (lit built-up area times
a seasonal demand, :func:`consumption`) and the building permits as GeoJSON
(:func:`permits_geojson`); and :func:`validate`, which rejects a :class:`DemoSpec` that
cannot be generated (:class:`DemoSpecError`) before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re

from pyproj import Transformer

from ..errors import PayeshError
from .grid import DemoSpec, rng_for
from .scenario import Scenario

__all__ = ["MWH_PER_M2", "DemoSpecError", "consumption", "permits_geojson", "validate"]

#: Reported electricity per square metre of lit built-up footprint (MWh per month).
MWH_PER_M2 = 0.009
_NAME = re.compile(r"^[a-z0-9_-]+$")


class DemoSpecError(PayeshError, ValueError):
    """A :class:`DemoSpec` that cannot be generated (the message names the field)."""


def validate(spec: DemoSpec) -> None:
    for key in ("start", "end"):
        value = getattr(spec, key)
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", str(value)):
            raise DemoSpecError(f"DemoSpec.{key} must be a month YYYY-MM, got {value!r}")
    if spec.end < spec.start:
        raise DemoSpecError(f"DemoSpec.end {spec.end!r} is before DemoSpec.start {spec.start!r}")
    if not _NAME.match(spec.name):
        raise DemoSpecError(f"DemoSpec.name {spec.name!r} must match [a-z0-9_-]+")
    if spec.resolution != 10:
        raise DemoSpecError(
            f"DemoSpec.resolution must be 10 (the Sentinel-2 grid), got {spec.resolution}"
        )
    if spec.tile_size % 20 or spec.tile_size <= 0:
        raise DemoSpecError(
            f"DemoSpec.tile_size must be a positive multiple of 20 m, got {spec.tile_size}"
        )
    if spec.size_km <= 0 or spec.s2_revisit_days <= 0 or spec.landsat_revisit_days <= 0:
        raise DemoSpecError("DemoSpec.size_km and the revisit intervals must be positive")


def _season(month: dt.date) -> float:
    """Relative demand: winter heating (January) and summer cooling (July) peaks."""
    doy = (month + dt.timedelta(days=14)).timetuple().tm_yday
    winter = max(0.0, math.cos(2 * math.pi * (doy - 15) / 365.0))
    summer = max(0.0, math.cos(2 * math.pi * (doy - 200) / 365.0))
    return 1.0 + 0.22 * winter + 0.28 * summer


def consumption(sc: Scenario) -> list[tuple[str, float]]:
    """Reported electricity ``(YYYY-MM, MWh)``: lit built-up area x seasonality, no hidden load."""
    rng = rng_for(sc.spec.seed, "consumption")
    r0, c0 = sc.grids.city_offset
    n = sc.grids.city.shape[0]
    out = []
    for m in sc.months:
        lit = sc.lights_at(m + dt.timedelta(days=14))[r0 : r0 + n, c0 : c0 + n]
        area = float(lit.sum()) * 100.0
        mwh = area * MWH_PER_M2 * _season(m) * (1.0 + 0.015 * rng.standard_normal())
        out.append((m.strftime("%Y-%m"), round(mwh, 1)))
    return out


def permits_geojson(sc: Scenario) -> str:
    to_ll = Transformer.from_crs(sc.grids.city.crs, "EPSG:4326", always_xy=True)
    feats = []
    for p in sc.permits:
        left, bottom, right, top = p.bounds
        xs, ys = to_ll.transform(
            [left, right, right, left, left], [bottom, bottom, top, top, bottom]
        )
        ring = [[round(float(x), 8), round(float(y), 8)] for x, y in zip(xs, ys, strict=True)]
        feats.append(
            {
                "type": "Feature",
                "properties": {"permit_id": p.permit_id, "issued": p.issued.isoformat()},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    doc = {
        "type": "FeatureCollection",
        "name": f"{sc.spec.name}_permits",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": feats,
    }
    return json.dumps(doc, indent=1) + "\n"
