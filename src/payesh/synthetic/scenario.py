"""The demo city's scenario: its land-cover codes, its records and its calendar.

A :class:`Scenario` is a few static per-pixel maps on the 10 m Sentinel-2 scene grid (the
city plus a margin) and the scenario's events; the state on any date is those maps with
the events applied (buildings appearing, a field cleared, a one-day bright object). Each
sensor renders from that state. The months and acquisition dates of a scenario come from
the calendar helpers at the end of this module; :mod:`payesh.synthetic.scene` lays the
city out and draws the scenario.

Land-cover codes (``uint8``), also used by the truth's land-cover rasters:

====  ==========  =========================================================
code  name        meaning
====  ==========  =========================================================
1     bare        arid bare soil / rangeland
2     crop        irrigated cropland (parcels with crop calendars)
3     orchard     orchards, tree rows and urban parks
4     water       river
5     urban       existing built-up (roof mix with gardens)
6     road        asphalt roads and streets
7     site        a new building of the scenario (from its ``built`` date)
8     load        the compound hosting the unregistered load (built from the start)
====  ==========  =========================================================
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from .grid import CityGrids, DemoSpec
from .spectra import MATERIAL_INDEX, ORCHARD_CALENDAR, double_logistic

BARE, CROP, ORCHARD, WATER, URBAN, ROAD, SITE, LOAD = 1, 2, 3, 4, 5, 6, 7, 8
COVER_NAMES: dict[int, str] = {
    BARE: "bare",
    CROP: "crop",
    ORCHARD: "orchard",
    WATER: "water",
    URBAN: "urban",
    ROAD: "road",
    SITE: "site",
    LOAD: "load",
}
#: Covers counted as built-up (impervious) in the truth rasters.
BUILT_COVERS: tuple[int, ...] = (URBAN, ROAD, SITE, LOAD)

_M = MATERIAL_INDEX


@dataclass(frozen=True)
class Rect:
    """A rectangle of 10 m scene pixels, rows ``r0:r1`` and columns ``c0:c1``."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index of the rectangle in a scene-grid array."""
        return slice(self.r0, self.r1), slice(self.c0, self.c1)

    @property
    def area_m2(self) -> float:
        """Area in square metres (10 m pixels)."""
        return float((self.r1 - self.r0) * (self.c1 - self.c0) * 100)

    def grow(self, px: int) -> Rect:
        """The rectangle grown by ``px`` pixels on every side."""
        return Rect(self.r0 - px, self.c0 - px, self.r1 + px, self.c1 + px)

    def utm_bounds(self, grids: CityGrids) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the city's UTM CRS (metres)."""
        t = grids.s2_10.transform
        return (t.c + 10 * self.c0, t.f - 10 * self.r1, t.c + 10 * self.c1, t.f - 10 * self.r0)


@dataclass(frozen=True)
class Site:
    """A new building (compound) of the scenario."""

    site_id: str
    rect: Rect
    built: dt.date
    material: str
    permit_id: str | None
    permit_issued: dt.date | None
    status: str


@dataclass(frozen=True)
class Permit:
    """A building permit: its parcel is the footprint grown by ``pad_m`` and shifted."""

    permit_id: str
    issued: dt.date
    bounds: tuple[float, float, float, float]
    built: bool


@dataclass(frozen=True)
class Load:
    """The unregistered electrical load (e.g. a crypto-mining compound)."""

    rect: Rect
    start: dt.date
    extra_mwh_per_month: float
    st_increase_k: float
    radiance_increase: float


@dataclass
class Scenario:
    """Static maps (scene grid, 10 m) plus the scenario's events."""

    spec: DemoSpec
    grids: CityGrids
    months: list[dt.date]
    s2_dates: list[dt.date]
    landsat_dates: list[dt.date]
    cover: np.ndarray  # uint8 (H, W), state at the start
    roof: np.ndarray  # uint8 material index of built pixels
    texture: np.ndarray  # float32 multiplicative texture (~1)
    garden: np.ndarray  # float32 green fraction of built pixels at peak
    field_id: np.ndarray  # int32 crop parcel of each pixel
    field_params: np.ndarray  # float32 (n_fields, 4): sos, eos, fmin, fmax
    sites: list[Site] = field(default_factory=list)
    permits: list[Permit] = field(default_factory=list)
    cleared: tuple[Rect, dt.date] | None = None
    bright: tuple[Rect, dt.date] | None = None
    load: Load | None = None

    # ------------------------------------------------------------------ state
    def cover_at(self, day: dt.date) -> np.ndarray:
        """Land-cover codes on ``day`` (new sites become :data:`SITE` once built)."""
        cover = self.cover.copy()
        for s in self.sites:
            if day >= s.built:
                cover[s.rect.slices] = SITE
        if self.cleared is not None and day >= self.cleared[1]:
            cover[self.cleared[0].slices] = BARE
        return cover

    def builtup_at(self, day: dt.date) -> np.ndarray:
        """Boolean built-up map on ``day`` (the truth's definition, see ``BUILT_COVERS``)."""
        return np.isin(self.cover_at(day), BUILT_COVERS)

    def surface(self, day: dt.date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sub-pixel mixture on ``day``: background material, canopy material, green fraction.

        Returns
        -------
        under, canopy : numpy.ndarray
            ``uint8`` material indices (see :data:`~payesh.synthetic.spectra.MATERIALS`).
        fv : numpy.ndarray
            ``float32`` green fractional cover (0–1) of the canopy material.
        """
        doy = float(day.timetuple().tm_yday)
        cover = self.cover
        p = self.field_params
        fv_fields = double_logistic(doy, p[:, 0], p[:, 1], p[:, 2], p[:, 3])
        stubble = (doy > p[:, 1] + 10) & (doy < p[:, 1] + 60) & (p[:, 3] > 0.5)
        sos, eos, fmin, fmax = ORCHARD_CALENDAR
        f_orch = float(double_logistic(doy, sos, eos, fmin, fmax))

        under = np.full(cover.shape, _M["arid_soil"], dtype=np.uint8)
        canopy = np.full(cover.shape, _M["tree_canopy"], dtype=np.uint8)
        fv = np.full(cover.shape, 0.02 + 0.04 * f_orch, dtype=np.float32)

        crop = cover == CROP
        fid = self.field_id[crop]
        under[crop] = np.where(stubble[fid], _M["dry_stubble"], _M["crop_soil"])
        canopy[crop] = _M["crop_canopy"]
        fv[crop] = fv_fields[fid]

        orch = cover == ORCHARD
        under[orch] = _M["crop_soil"]
        fv[orch] = f_orch

        water = cover == WATER
        under[water] = _M["water"]
        fv[water] = 0.0

        built = (cover == URBAN) | (cover == ROAD) | (cover == LOAD)
        under[built] = self.roof[built]
        fv[built] = self.garden[built] * (f_orch / ORCHARD_CALENDAR[3])

        for s in self.sites:
            sl = s.rect.slices
            if day >= s.built:
                under[sl] = _M[s.material]
                fv[sl] = 0.0
            elif day >= s.built - dt.timedelta(days=40):  # earthworks before the roof
                under[sl] = _M["arid_soil"]
                fv[sl] = 0.0
        if self.cleared is not None:
            rect, when = self.cleared
            sl = rect.slices
            if day >= when:
                under[sl] = _M["arid_soil"]
                fv[sl] = 0.0
            else:  # a perennial (alfalfa) field until it is cleared
                fv[sl] = np.maximum(fv[sl], 0.35 + 0.4 * f_orch)
                canopy[sl] = _M["crop_canopy"]
        if self.bright is not None and day == self.bright[1]:
            sl = self.bright[0].slices
            under[sl] = _M["plastic_sheet"]
            fv[sl] = 0.0
        return under, canopy, fv

    def lights_at(self, day: dt.date) -> np.ndarray:
        """Relative night-time light emission (float32, 0–1 per pixel) on ``day``."""
        cover = self.cover
        lit = np.zeros(cover.shape, dtype=np.float32)
        lit[cover == URBAN] = 1.0
        lit[cover == ROAD] = 0.6
        lit[cover == LOAD] = 0.3  # a warehouse: a few yard lights
        for s in self.sites:
            if day >= s.built:
                lit[s.rect.slices] = 0.8
        return lit


# ---------------------------------------------------------------------------- dates
def month_starts(start: str, end: str) -> list[dt.date]:
    """First days of the months from ``start`` to ``end`` (``YYYY-MM``, inclusive)."""
    y, m = (int(v) for v in start.split("-"))
    y1, m1 = (int(v) for v in end.split("-"))
    out: list[dt.date] = []
    while (y, m) <= (y1, m1):
        out.append(dt.date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    if not out:
        raise ValueError(f"end {end!r} is before start {start!r}")
    return out


def month_end(day: dt.date) -> dt.date:
    """Last day of ``day``'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def acquisition_dates(months: list[dt.date], every: int, first_offset: int) -> list[dt.date]:
    """Dates every ``every`` days from the first month's day ``1 + first_offset``."""
    day = months[0] + dt.timedelta(days=first_offset % every)
    last = month_end(months[-1])
    out = []
    while day <= last:
        out.append(day)
        day += dt.timedelta(days=every)
    return out
