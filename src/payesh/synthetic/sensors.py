"""Render one acquisition of each sensor from the scenario's state on its date.

Every function renders a single scene and returns plain numpy arrays in the
provider's encoding (DN, QA bits, counts), so the generator holds one scene in
memory at a time whatever the period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pyproj import Transformer
from scipy import ndimage

from .grid import rng_for
from .scenario import WATER, Scenario
from .scene import smooth_noise
from .spectra import MATERIAL_INDEX, MATERIAL_TABLE, air_temperature_c, summerness

#: Sentinel-2 L2A DN encoding of processing baseline >= 04.00: ``refl = DN * 1e-4 - 0.1``.
S2_SCALE, S2_OFFSET = 0.0001, -0.1
#: Landsat C2 L2 surface temperature encoding: ``K = DN * 0.00341802 + 149.0``.
ST_SCALE, ST_OFFSET = 0.00341802, 149.0

#: QA_PIXEL values of Landsat 8/9 Collection 2 (bit 0 fill, 1 dilated cloud, 2 cirrus,
#: 3 cloud, 4 shadow, 5 snow, 6 clear, 7 water; 8-15 confidences), as found in real scenes.
QA_CLEAR, QA_WATER, QA_CLOUD = 21824, 21952, 22280
QA_DILATED, QA_SHADOW, QA_CIRRUS, QA_FILL = 21762, 23888, 54596, 1

# probability of a clear scene and mean cloud fraction of a cloudy one, by month (Khoy)
_P_CLEAR = (0.35, 0.3, 0.3, 0.35, 0.5, 0.75, 0.85, 0.9, 0.85, 0.65, 0.45, 0.35)
_MEAN_COVER = (0.55, 0.55, 0.5, 0.45, 0.35, 0.2, 0.15, 0.1, 0.15, 0.3, 0.45, 0.55)


def draw_cloud_fraction(day: dt.date, rng: np.random.Generator) -> float:
    """Cloud fraction (0–1) of a scene on ``day``: seasonal, often 0, sometimes ~1."""
    i = day.month - 1
    if rng.random() < _P_CLEAR[i]:
        return 0.0
    if day.month in (11, 12, 1, 2, 3, 4) and rng.random() < 0.15:
        return float(rng.uniform(0.93, 1.0))  # an overcast day
    m = _MEAN_COVER[i]
    return float(np.clip(rng.beta(1.5, 1.5 * (1 - m) / m), 0.02, 0.9))


def _cloud_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    big = smooth_noise(rng, shape, cell, 1.5)
    small = smooth_noise(rng, shape, max(2, cell // 4), 1.0)
    return 0.8 * big + 0.35 * small


def _threshold(field: np.ndarray, fraction: float) -> float:
    if fraction <= 0.0:
        return np.inf
    sample = field[::4, ::4]
    return float(np.quantile(sample, 1.0 - fraction))


def _shift(mask: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``out[r - dr, c - dc] = mask[r, c]`` (a shadow cast ``dr`` rows north, ``dc`` west)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[: h - dr, : w - dc] = mask[dr:, dc:]
    return out


@dataclass(frozen=True)
class S2Scene:
    """One Sentinel-2 L2A acquisition in provider encoding.

    Attributes
    ----------
    bands
        ``blue green red nir`` (10 m) and ``swir16 swir22`` (20 m): ``uint16`` DN with the
        +1000 BOA offset; ``scl``: ``uint8`` scene classification at 20 m.
    stats
        Percentages of SCL classes over the scene (keys of the ``s2:*_percentage``
        properties) and ``eo:cloud_cover``.
    """

    bands: dict[str, np.ndarray]
    stats: dict[str, float]


def render_s2(sc: Scenario, index: int) -> S2Scene:
    """Render Sentinel-2 scene ``index`` of the scenario (see :class:`S2Scene`)."""
    day = sc.s2_dates[index]
    rng = rng_for(sc.spec.seed, "s2", index)
    h, w = sc.grids.s2_10.shape
    under, canopy, fv = sc.surface(day)
    cover = sc.cover

    # snow on some winter days (not on water)
    snow = None
    p_snow = 0.3 if day.month in (12, 1, 2) else 0.08 if day.month in (3, 11) else 0.0
    if rng.random() < p_snow:
        snow = (smooth_noise(rng, (h, w), 40) > rng.uniform(-1.2, 0.8)) & (cover != WATER)

    frac = draw_cloud_fraction(day, rng)
    if sc.bright is not None and day == sc.bright[1]:
        frac = 0.0  # the one-scene bright object must be seen
    field = _cloud_field(rng, (h, w), 25)
    thr = _threshold(field, frac) + 0.12  # clouds and their thin-cirrus rim make up `frac`
    thin = (field > thr - 0.12) & (field <= thr)
    cloud = field > thr
    alpha = np.where(cloud, np.clip(0.55 + (field - thr) / 0.5, 0.0, 1.0), 0.0)
    alpha = np.where(thin, 0.3 * (field - (thr - 0.12)) / 0.12, alpha).astype(np.float32)
    dr, dc = int(rng.integers(15, 45)), int(rng.integers(3, 20))
    shadow = _shift(cloud, dr, dc) & ~cloud & ~thin

    gain = (1.0 + 0.02 * rng.standard_normal(6)).astype(np.float32)
    noise = (0.004 * rng.standard_normal((h + 6, w + 6), dtype=np.float32)).astype(np.float32)
    cloud_refl = MATERIAL_TABLE[MATERIAL_INDEX["cloud"]]
    snow_refl = MATERIAL_TABLE[MATERIAL_INDEX["snow"]]
    refl: list[np.ndarray] = []
    for b in range(6):
        t = MATERIAL_TABLE[:, b]
        r = t[under] * (1.0 - fv) + t[canopy] * fv
        r *= sc.texture
        r *= gain[b]
        r += noise[b : b + h, b : b + w]
        if snow is not None:
            r[snow] = snow_refl[b] * (0.9 + 0.1 * sc.texture[snow])
        r[shadow] *= 0.35
        r = r * (1.0 - alpha) + (cloud_refl[b] * (0.9 + 0.15 * np.clip(field - thr, 0, 1))) * alpha
        refl.append(r)

    # scene classification from the surface, then clouds on top
    red, nir = refl[2], refl[3]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-3)
    scl = np.where(ndvi > 0.35, 4, 5).astype(np.uint8)
    scl[under == MATERIAL_INDEX["water"]] = 6
    if snow is not None:
        scl[snow] = 11
    n_uncl = int(0.003 * h * w)
    flat = scl.reshape(-1)
    flat[rng.integers(0, h * w, n_uncl)] = 7
    scl[shadow] = 3
    scl[thin] = 10
    scl[cloud] = 8
    scl[cloud & (field > thr + 0.5)] = 9

    bands: dict[str, np.ndarray] = {}
    for key, r in zip(("blue", "green", "red", "nir"), refl[:4], strict=True):
        bands[key] = _to_dn(r)
    for key, r in zip(("swir16", "swir22"), refl[4:], strict=True):
        bands[key] = _to_dn(r.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    scl20 = np.ascontiguousarray(scl[::2, ::2])
    bands["scl"] = scl20

    counts = np.bincount(scl20.reshape(-1), minlength=12).astype(np.float64)
    pct = 100.0 * counts / counts.sum()
    stats = {
        "eo:cloud_cover": round(float(pct[8] + pct[9] + pct[10]), 6),
        "s2:nodata_pixel_percentage": round(float(pct[0]), 6),
        "s2:saturated_defective_pixel_percentage": round(float(pct[1]), 6),
        "s2:dark_features_percentage": round(float(pct[2]), 6),
        "s2:cloud_shadow_percentage": round(float(pct[3]), 6),
        "s2:vegetation_percentage": round(float(pct[4]), 6),
        "s2:not_vegetated_percentage": round(float(pct[5]), 6),
        "s2:water_percentage": round(float(pct[6]), 6),
        "s2:unclassified_percentage": round(float(pct[7]), 6),
        "s2:medium_proba_clouds_percentage": round(float(pct[8]), 6),
        "s2:high_proba_clouds_percentage": round(float(pct[9]), 6),
        "s2:thin_cirrus_percentage": round(float(pct[10]), 6),
        "s2:snow_ice_percentage": round(float(pct[11]), 6),
    }
    return S2Scene(bands, stats)


def _to_dn(refl: np.ndarray) -> np.ndarray:
    dn = np.rint((refl - S2_OFFSET) / S2_SCALE)
    return np.clip(dn, 1, 65535).astype(np.uint16)


# heating of each material relative to arid bare soil (sunlit, dry)
_HEAT = np.ones(len(MATERIAL_TABLE), dtype=np.float32)
for _name, _k in {
    "crop_soil": 0.75,
    "dry_stubble": 0.9,
    "asphalt": 1.15,
    "metal_roof": 1.05,
    "concrete": 0.95,
    "plastic_sheet": 0.9,
}.items():
    _HEAT[MATERIAL_INDEX[_name]] = _k


@dataclass(frozen=True)
class LandsatScene:
    """One Landsat C2 L2 acquisition: ``lwir11`` (ST_B10 DN) and ``qa_pixel`` (uint16)."""

    lwir11: np.ndarray
    qa_pixel: np.ndarray
    cloud_cover: float


def render_landsat(sc: Scenario, index: int) -> LandsatScene:
    """Render Landsat scene ``index``: surface temperature and QA_PIXEL on the 30 m grid."""
    day = sc.landsat_dates[index]
    rng = rng_for(sc.spec.seed, "landsat", index)
    doy = float(day.timetuple().tm_yday)
    t_air, s = air_temperature_c(doy), summerness(doy)
    excess = 3.0 + 15.0 * s  # sunlit dry soil minus air, °C
    under, _canopy, fv = sc.surface(day)
    temp = t_air + excess * _HEAT[under] * (1.0 - 0.85 * fv)
    water = under == MATERIAL_INDEX["water"]
    temp[water] = 0.6 * t_air + 6.0
    built = np.isin(sc.cover, (5, 6, 8)).astype(np.float32)  # urban, road, load
    uhi = ndimage.gaussian_filter(built[::3, ::3], 10.0)
    temp += 2.5 * np.repeat(np.repeat(uhi, 3, 0), 3, 1)[: temp.shape[0], : temp.shape[1]]
    if sc.load is not None and day >= sc.load.start:
        temp[sc.load.rect.slices] += sc.load.st_increase_k
    temp = ndimage.gaussian_filter(temp.astype(np.float32), 3.0)  # TIRS 100 m footprint

    lg, sg = sc.grids.landsat, sc.grids.s2_10
    lx, ly = lg.centres()
    cols = (lx - sg.transform.c) / 10.0 - 0.5
    rows = (sg.transform.f - ly) / 10.0 - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    t30 = ndimage.map_coordinates(temp, [rr, cc], order=1, mode="nearest").astype(np.float32)
    water30 = (
        ndimage.map_coordinates(water.astype(np.float32), [rr, cc], order=1, mode="nearest") > 0.4
    )
    t30 += 0.3 * rng.standard_normal(t30.shape).astype(np.float32)

    qa = np.full(lg.shape, QA_CLEAR, dtype=np.uint16)
    qa[water30] = QA_WATER
    frac = draw_cloud_fraction(day, rng)
    field = _cloud_field(rng, lg.shape, 8)
    thr = _threshold(field, frac) + 0.12
    cloud = field > thr
    dilated = (field > thr - 0.12) & ~cloud
    cirrus = (field > thr - 0.3) & (field <= thr - 0.12)
    shadow = _shift(cloud | dilated, int(rng.integers(5, 15)), int(rng.integers(1, 6)))
    shadow &= ~cloud & ~dilated & ~cirrus
    t30[shadow] -= 4.0
    qa[shadow] = QA_SHADOW
    t30[cirrus] -= 3.0
    qa[cirrus] = QA_CIRRUS
    t30[dilated] -= 2.0
    qa[dilated] = QA_DILATED
    t30[cloud] = t_air - 20.0 - 10.0 * np.clip(field[cloud] - thr, 0.0, 1.5)
    qa[cloud] = QA_CLOUD
    dn = np.clip(np.rint((t30 + 273.15 - ST_OFFSET) / ST_SCALE), 1, 65535).astype(np.uint16)
    cc_pct = round(100.0 * float((cloud | dilated).mean()), 2)
    return LandsatScene(dn, qa, cc_pct)


@dataclass(frozen=True)
class ViirsMonth:
    """One monthly VIIRS DNB composite: ``radiance`` (float32) and ``cf_cvg`` (uint16)."""

    radiance: np.ndarray
    cf_cvg: np.ndarray


_CF_BASE = (7, 8, 11, 14, 17, 20, 22, 22, 19, 15, 10, 7)  # cloud-free nights per month


class ViirsRenderer:
    """Monthly night lights on the 1/240° grid: built-up lights blurred by a 500 m PSF."""

    def __init__(self, sc: Scenario, *, psf_m: float = 500.0, cell: int = 5) -> None:
        self.sc, self.cell = sc, cell
        sg, vg = sc.grids.s2_10, sc.grids.viirs
        self.pad = int(np.ceil(2500.0 / (10.0 * cell)))  # 2.5 km of dark countryside
        self.sigma = psf_m / (10.0 * cell)
        lon, lat = vg.centres()
        lon2, lat2 = np.meshgrid(lon, lat)
        to_utm = Transformer.from_crs("EPSG:4326", sg.crs, always_xy=True)
        x, y = to_utm.transform(lon2, lat2)
        self.cols = (np.asarray(x) - sg.transform.c) / (10.0 * cell) - 0.5 + self.pad
        self.rows = (sg.transform.f - np.asarray(y)) / (10.0 * cell) - 0.5 + self.pad
        rng = rng_for(sc.spec.seed, "viirs")
        winter = [i for i, m in enumerate(sc.months) if m.month in (12, 1, 2)]
        k = min(len(winter), int(rng.integers(1, 3)))
        self.missing = {int(i) for i in rng.choice(winter, size=k, replace=False)} if k else set()
        self.peak_radiance = 55.0  # nW cm-2 sr-1 of a fully built 1 km2

    def _blurred(self, lights: np.ndarray, extra: float) -> np.ndarray:
        c = self.cell
        h, w = (lights.shape[0] // c) * c, (lights.shape[1] // c) * c
        coarse = lights[:h, :w].reshape(h // c, c, w // c, c).mean(axis=(1, 3))
        load = self.sc.load
        if load is not None and extra > 0.0:
            r0, c0, r1, c1 = (
                load.rect.r0 // c,
                load.rect.c0 // c,
                -(-load.rect.r1 // c),
                -(-load.rect.c1 // c),
            )
            n = (r1 - r0) * (c1 - c0)
            coarse[r0:r1, c0:c1] += extra / self.peak_radiance * 2 * np.pi * self.sigma**2 / n
        coarse = np.pad(coarse, self.pad)
        return ndimage.gaussian_filter(coarse, self.sigma, mode="constant")

    def render(self, index: int) -> ViirsMonth:
        """Render month ``index`` of the scenario."""
        sc = self.sc
        month = sc.months[index]
        mid = month + dt.timedelta(days=14)
        rng = rng_for(sc.spec.seed, "viirs", index)
        extra = sc.load.radiance_increase if sc.load is not None and mid >= sc.load.start else 0.0
        blurred = self._blurred(sc.lights_at(mid), extra)
        val = ndimage.map_coordinates(blurred, [self.rows, self.cols], order=1, mode="constant")
        season = 1.0 + (
            0.08 if month.month in (12, 1, 2) else -0.04 if month.month in (6, 7, 8) else 0.0
        )
        shape = sc.grids.viirs.shape
        rad = 0.3 + self.peak_radiance * val * season * (1.0 + 0.03 * rng.standard_normal())
        rad = rad + 0.08 * rng.standard_normal(shape) + 0.02 * rad * rng.standard_normal(shape)
        rad = np.maximum(rad, 0.0).astype(np.float32)
        cf = _CF_BASE[month.month - 1] + rng.integers(-2, 3, shape)
        cf = np.clip(cf, 1, None).astype(np.uint16)
        if index in self.missing:
            gap = smooth_noise(rng, shape, 4, 1.0) > rng.uniform(-0.3, 0.3)
            cf[gap] = 0
            rad[gap] = 0.0  # EOG writes 0 where no cloud-free observation: missing, not dark
        return ViirsMonth(rad, cf)
