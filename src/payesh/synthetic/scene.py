"""Laying out the demo city and drawing its growth scenario.

:func:`build_scenario` lays the land cover out once, on the 10 m Sentinel-2 scene grid
(farmland and arid hills from smooth noise fields, crop parcels, the urban core and
villages, the river, roads, roofs and gardens), then places the scenario's new
buildings, permits, unregistered load and traps with a rejection sampler of
non-overlapping rectangles. What a scenario is (its land-cover codes, records and
calendar) lives in :mod:`payesh.synthetic.scenario`; this module re-exports those names
so that ``from payesh.synthetic.scene import …`` still gives all of the scenario.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from scipy import ndimage

from .grid import CityGrids, DemoSpec, rng_for
from .scenario import (
    BARE,
    BUILT_COVERS,
    COVER_NAMES,
    CROP,
    LOAD,
    ORCHARD,
    ROAD,
    SITE,
    URBAN,
    WATER,
    Load,
    Permit,
    Rect,
    Scenario,
    Site,
    acquisition_dates,
    month_end,
    month_starts,
)
from .spectra import CROP_CALENDARS, MATERIAL_INDEX, ROOF_MATERIALS

__all__ = [
    "BARE",
    "BUILT_COVERS",
    "COVER_NAMES",
    "CROP",
    "LOAD",
    "ORCHARD",
    "ROAD",
    "SITE",
    "URBAN",
    "WATER",
    "Load",
    "Permit",
    "Rect",
    "Scenario",
    "Site",
    "acquisition_dates",
    "build_scenario",
    "month_end",
    "month_starts",
    "smooth_noise",
]

_M = MATERIAL_INDEX


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: int, sigma: float = 1.5
) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field (float32) of ``shape``.

    White noise on a grid of ``cell``-pixel cells, Gaussian-filtered (``sigma`` cells)
    and bilinearly upsampled: cost is that of the coarse grid plus one zoom.
    """
    ch, cw = shape[0] // cell + 3, shape[1] // cell + 3
    coarse = ndimage.gaussian_filter(rng.standard_normal((ch, cw)).astype(np.float32), sigma)
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-6)
    fine = ndimage.zoom(coarse, cell, order=1, grid_mode=True, mode="nearest")
    return np.ascontiguousarray(fine[: shape[0], : shape[1]], dtype=np.float32)


# ---------------------------------------------------------------------------- layout
def _layout(spec: DemoSpec, grids: CityGrids) -> dict[str, np.ndarray]:
    rng = rng_for(spec.seed, "layout")
    h, w = grids.s2_10.shape
    side = grids.city.shape[0] * grids.city.resolution
    r_off, c_off = grids.city_offset
    # metric coordinates of pixel centres relative to the city centre (y up)
    y = ((r_off + grids.city.shape[0] / 2.0) - (np.arange(h) + 0.5)) * 10.0
    x = ((np.arange(w) + 0.5) - (c_off + grids.city.shape[1] / 2.0)) * 10.0
    yy, xx = y[:, None].astype(np.float32), x[None, :].astype(np.float32)

    # farmland vs arid hills: a smooth field plus a gradient towards one side
    ang = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(ang) * xx + np.sin(ang) * yy) / side
    hills = smooth_noise(rng, (h, w), 40) * 0.6 + 2.0 * grad
    cover = np.where(hills > 0.45, BARE, CROP).astype(np.uint8)

    # crop parcels: columns of fields with staggered rows
    fh, fw = int(rng.integers(15, 25)), int(rng.integers(22, 35))
    ncb = w // fw + 1
    shift = rng.integers(0, fh, ncb)
    col_block = np.arange(w) // fw
    row_block = (np.arange(h)[:, None] + shift[col_block][None, :]) // fh
    field_id = (row_block * ncb + col_block[None, :]).astype(np.int32)
    n_fields = int(field_id.max()) + 1
    ctype = rng.choice(3, size=n_fields, p=[0.45, 0.4, 0.15])
    params = CROP_CALENDARS[ctype].copy()
    params[:, 0] += rng.uniform(-12, 12, n_fields)
    params[:, 1] += rng.uniform(-10, 10, n_fields)
    params[:, 3] *= rng.uniform(0.85, 1.05, n_fields)

    # urban core (irregular disc) and a few villages
    radius = 0.2 * side
    dist = np.hypot(xx, yy) / radius + 0.18 * smooth_noise(rng, (h, w), 20)
    urban = dist < 1.0
    for _ in range(max(1, round(side / 2500))):
        vx, vy = rng.uniform(-0.4, 0.4, 2) * side
        if np.hypot(vx, vy) < 1.6 * radius:
            continue
        urban |= np.hypot(xx - vx, yy - vy) < rng.uniform(80, 160)
    orchard_ring = (dist > 0.95) & (dist < 1.5) & (smooth_noise(rng, (h, w), 15) > 0.2)
    cover[orchard_ring & (cover == CROP)] = ORCHARD
    cover[orchard_ring & (cover == BARE) & (hills < 0.7)] = ORCHARD
    cover[urban] = URBAN
    parks = urban & (smooth_noise(rng, (h, w), 10) > 1.6)
    cover[parks] = ORCHARD

    # river: a meander across the scene, north or south of the core
    y0 = rng.choice([-1.0, 1.0]) * rng.uniform(0.28, 0.36) * side
    amp, lam, phase = 0.05 * side, rng.uniform(0.8, 1.2) * side, rng.uniform(0, 2 * np.pi)
    width = max(30.0, 0.01 * side)
    centre = y0 + amp * np.sin(2 * np.pi * xx / lam + phase)
    cover[np.abs(yy - centre) < width / 2] = WATER

    # roads: two arterials through the core plus a street grid inside built-up areas
    ry, rx = rng.uniform(-0.05, 0.05, 2) * side
    road = (np.abs(yy - ry) < 10.0) | (np.abs(xx - rx) < 10.0)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    streets = ((rows % 15) == 0) | ((cols % 15) == 0)
    road |= streets & (cover == URBAN)
    cover[road] = ROAD

    # roofs: 20 m blocks of mixed materials; gardens in the built fabric
    roof_idx = np.array([_M[m] for m in ROOF_MATERIALS], dtype=np.uint8)
    blocks = rng.choice(
        len(ROOF_MATERIALS), size=(h // 2 + 1, w // 2 + 1), p=[0.45, 0.15, 0.2, 0.2]
    )
    roof = roof_idx[np.repeat(np.repeat(blocks, 2, 0), 2, 1)[:h, :w]]
    roof[cover == ROAD] = _M["asphalt"]
    garden = np.clip(0.12 + 0.12 * smooth_noise(rng, (h, w), 6), 0.0, 0.4).astype(np.float32)
    garden[cover == ROAD] = 0.03
    texture = (1.0 + 0.035 * rng.standard_normal((h, w), dtype=np.float32)).astype(np.float32)
    texture *= 1.0 + 0.05 * smooth_noise(rng, (h, w), 8)
    built_tex = np.isin(cover, (URBAN,))
    texture[built_tex] *= 1.0 + 0.08 * rng.standard_normal(int(built_tex.sum()), dtype=np.float32)
    return {
        "cover": cover,
        "roof": roof,
        "garden": garden,
        "texture": texture.astype(np.float32),
        "field_id": field_id,
        "field_params": params.astype(np.float32),
        "dist": dist.astype(np.float32),
    }


class _Placer:
    """Rejection sampler of non-overlapping rectangles inside the city."""

    def __init__(
        self, cover: np.ndarray, dist: np.ndarray, grids: CityGrids, rng: np.random.Generator
    ):
        self.cover, self.dist, self.rng = cover, dist, rng
        self.taken = np.zeros(cover.shape, dtype=bool)
        r_off, c_off = grids.city_offset
        self.box = (r_off, c_off, r_off + grids.city.shape[0], c_off + grids.city.shape[1])

    def place(
        self, hh: int, ww: int, allowed: tuple[int, ...], dmin: float, dmax: float, gap: int = 3
    ) -> Rect | None:
        r0b, c0b, r1b, c1b = self.box
        for attempt in range(4000):
            lo, hi = (dmin, dmax) if attempt < 2500 else (0.0, 99.0)
            r = int(self.rng.integers(r0b + 2, max(r0b + 3, r1b - hh - 2)))
            c = int(self.rng.integers(c0b + 2, max(c0b + 3, c1b - ww - 2)))
            rect = Rect(r, c, r + hh, c + ww)
            sl = rect.slices
            if not lo <= float(self.dist[r + hh // 2, c + ww // 2]) <= hi:
                continue
            if not np.isin(self.cover[sl], allowed).all():
                continue
            if self.taken[rect.grow(gap).slices].any():
                continue
            self.taken[rect.grow(gap).slices] = True
            return rect
        return None


def build_scenario(spec: DemoSpec, grids: CityGrids) -> Scenario:
    """Lay out the city and draw its growth scenario (deterministic by ``spec.seed``).

    Parameters
    ----------
    spec
        The demo specification.
    grids
        The city's grids (:func:`payesh.synthetic.grid.city_grids`).

    Returns
    -------
    Scenario
    """
    months = month_starts(spec.start, spec.end)
    rng = rng_for(spec.seed, "scenario")
    s2_dates = acquisition_dates(months, spec.s2_revisit_days, int(rng.integers(0, 30)))
    ls_dates = acquisition_dates(months, spec.landsat_revisit_days, int(rng.integers(0, 30)))
    lay = _layout(spec, grids)
    cover = lay["cover"]
    placer = _Placer(cover, lay["dist"], grids, rng)
    side = grids.city.shape[0] * grids.city.resolution
    n_months = len(months)

    # the unregistered load: an existing warehouse compound at the edge of town
    load_rect = placer.place(12, 14, (URBAN, CROP, BARE, ORCHARD), 0.9, 1.3)
    load = None
    if load_rect is not None:
        cover[load_rect.slices] = LOAD
        lay["roof"][load_rect.slices] = _M["metal_roof"]
        lay["garden"][load_rect.slices] = 0.0
        start = months[n_months // 2]
        load = Load(load_rect, start, 2500.0, 10.0, 25.0)

    # new buildings
    n_sites = min(100, int(rng.integers(8, 16) * max(1.0, side / 4000.0)))
    later = list(range(1, n_months)) or [0]
    sites_raw: list[tuple[Rect, dt.date, str]] = []
    for _ in range(n_sites):
        hh = int(rng.integers(7, 12))
        ww = int(rng.integers(max(7, -(-42 // hh)), 13))
        rect = placer.place(hh, ww, (CROP, BARE), 1.0, 1.9)
        if rect is None:
            break
        m = months[int(rng.choice(later))]
        built = m + dt.timedelta(days=int(rng.integers(0, 12)))
        material = str(rng.choice(["concrete", "metal_roof", "clay_tile"], p=[0.6, 0.25, 0.15]))
        sites_raw.append((rect, built, material))
    sites_raw.sort(key=lambda s: (s[1], s[0].r0, s[0].c0))

    n = len(sites_raw)
    roles = (["late"] + ["none"] * max(2, round(0.35 * n)) + ["permit"] * n)[:n]
    rng.shuffle(roles)
    year = months[0].year

    def parcel(rect: Rect) -> tuple[float, float, float, float]:
        pad = float(rng.uniform(8, 20))
        dx, dy = (float(v) for v in rng.uniform(-5, 5, 2))
        left, bottom, right, top = rect.utm_bounds(grids)
        return (left - pad + dx, bottom - pad + dy, right + pad + dx, top + pad + dy)

    pending: list[tuple[dt.date, tuple[float, float, float, float], bool, int]] = []
    issued_of: dict[int, dt.date] = {}
    for i, ((rect, built, _), role) in enumerate(zip(sites_raw, roles, strict=True)):
        if role == "permit":
            issued_of[i] = built - dt.timedelta(days=int(rng.integers(30, 180)))
        elif role == "late":  # construction started before the permit: still unauthorized
            issued_of[i] = built + dt.timedelta(days=int(rng.integers(15, 45)))
        else:
            continue
        pending.append((issued_of[i], parcel(rect), True, i))
    for _ in range(max(2, n // 4)):  # permits never built
        rect = placer.place(
            int(rng.integers(7, 11)), int(rng.integers(7, 11)), (CROP, BARE), 1.0, 2.0
        )
        if rect is not None:
            issued = months[0] + dt.timedelta(days=int(rng.integers(-120, 28 * n_months)))
            pending.append((issued, parcel(rect), False, -1))
    pending.sort(key=lambda p: (p[0], p[1]))
    permits: list[Permit] = []
    pid_of: dict[int, str] = {}
    for k, (issued, bounds, was_built, i) in enumerate(pending):
        pid = f"P-{year}-{k + 1:04d}"
        permits.append(Permit(pid, issued, bounds, was_built))
        if i >= 0:
            pid_of[i] = pid
    sites = [
        Site(
            f"S{i + 1:03d}",
            rect,
            built,
            material,
            pid_of.get(i),
            issued_of.get(i),
            "permitted" if roles[i] == "permit" else "unauthorized",
        )
        for i, (rect, built, material) in enumerate(sites_raw)
    ]

    # traps: a cleared field never built on; a bright object on one date only
    cleared = None
    rect = placer.place(int(rng.integers(14, 20)), int(rng.integers(15, 22)), (CROP,), 1.0, 2.2)
    if rect is not None:
        cleared = (
            rect,
            months[max(0, n_months // 3)] + dt.timedelta(days=int(rng.integers(5, 20))),
        )
    bright = None
    rect = placer.place(7, 7, (CROP, BARE), 1.0, 2.2)
    if rect is not None and s2_dates:
        summer = [d for d in s2_dates if 5 <= d.month <= 9] or s2_dates
        bright = (rect, summer[int(rng.integers(0, len(summer)))])

    return Scenario(
        spec=spec,
        grids=grids,
        months=months,
        s2_dates=s2_dates,
        landsat_dates=ls_dates,
        cover=cover,
        roof=lay["roof"],
        texture=lay["texture"],
        garden=lay["garden"],
        field_id=lay["field_id"],
        field_params=lay["field_params"],
        sites=sites,
        permits=permits,
        cleared=cleared,
        bright=bright,
        load=load,
    )
