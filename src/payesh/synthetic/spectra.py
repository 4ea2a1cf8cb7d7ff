"""Surface-reflectance signatures and vegetation phenology of the demo's land covers.

Reflectances are bottom-of-atmosphere values (0–1) in the six Sentinel-2 bands the
pipeline reads, ``blue green red nir swir16 swir22`` (B02 B03 B04 B08 B11 B12),
obtained by averaging laboratory spectra over the S2 band passes and rounding. Sources:

* USGS Spectral Library version 7 (Kokaly et al., 2017, USGS Data Series 1035,
  doi:10.3133/ds1035): arid/calcareous soils, dry grass, plastic sheeting, snow.
* ECOSTRESS Spectral Library 1.0 (Meerdink et al., 2019, Remote Sens. Environ. 230,
  doi:10.1016/j.rse.2019.05.015): construction concrete, asphalt, galvanised and
  painted metal roofing, terracotta tile, green leaves, tap water.
* Typical S2 L2A values of irrigated crops, orchards and turbid rivers in semi-arid
  Iran/Turkey reported in the S2 land-cover literature (e.g. the ESA WorldCover 2021
  validation report; Ghorbanian et al., 2020, ISPRS J. 167, doi:10.1016/j.isprsjprs.2020.07.013).

The hard case is deliberate: arid bare soil and concrete differ by less than 0.05 in
SWIR, so NDBI alone cannot separate new buildings from cleared land.
"""

from __future__ import annotations

import numpy as np

#: Sentinel-2 band keys (Earth Search v1), in the order of every spectrum below.
S2_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")

#: Reflectance (0–1) of each surface material in :data:`S2_BANDS` order.
MATERIALS: dict[str, tuple[float, ...]] = {
    # soils (USGS splib07: calcareous arid soil; tilled moist loam)
    "arid_soil": (0.14, 0.19, 0.25, 0.30, 0.38, 0.33),
    "crop_soil": (0.07, 0.10, 0.13, 0.18, 0.25, 0.21),
    # vegetation (ECOSTRESS green leaves, S2 canopies at full cover)
    "crop_canopy": (0.03, 0.07, 0.035, 0.42, 0.22, 0.11),
    "tree_canopy": (0.03, 0.06, 0.04, 0.33, 0.17, 0.08),
    "dry_stubble": (0.08, 0.11, 0.15, 0.24, 0.33, 0.26),
    # water (turbid river / reservoir)
    "water": (0.06, 0.07, 0.05, 0.02, 0.01, 0.005),
    # built materials (ECOSTRESS manmade)
    "concrete": (0.20, 0.23, 0.25, 0.29, 0.33, 0.30),
    "asphalt": (0.06, 0.07, 0.08, 0.10, 0.13, 0.12),
    "metal_roof": (0.24, 0.26, 0.27, 0.29, 0.24, 0.19),
    "clay_tile": (0.07, 0.10, 0.19, 0.28, 0.36, 0.30),
    # transient / atmospheric
    "plastic_sheet": (0.46, 0.49, 0.51, 0.56, 0.46, 0.38),
    "snow": (0.85, 0.84, 0.82, 0.75, 0.10, 0.08),
    "cloud": (0.55, 0.55, 0.56, 0.58, 0.45, 0.32),
}

#: Index of each material in :data:`MATERIAL_TABLE`.
MATERIAL_INDEX: dict[str, int] = {name: i for i, name in enumerate(MATERIALS)}

#: ``(n_materials, 6)`` float32 lookup table of :data:`MATERIALS`.
MATERIAL_TABLE: np.ndarray = np.array(list(MATERIALS.values()), dtype=np.float32)

#: The roof materials a built pixel is drawn from.
ROOF_MATERIALS: tuple[str, ...] = ("concrete", "metal_roof", "clay_tile", "asphalt")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def double_logistic(
    doy: float,
    sos: np.ndarray | float,
    eos: np.ndarray | float,
    fmin: np.ndarray | float,
    fmax: np.ndarray | float,
) -> np.ndarray:
    """Green fractional cover on day-of-year ``doy`` (a double-logistic season).

    Parameters
    ----------
    doy
        Day of year (1–366).
    sos, eos
        Day of year of the start / end of the season (mid-points of green-up and senescence).
    fmin, fmax
        Fractional cover (0–1) out of season and at peak.

    Returns
    -------
    numpy.ndarray
        Fractional green cover (0–1), broadcast over the parameters.
    """
    rise = _sigmoid(np.asarray((doy - np.asarray(sos)) / 8.0))
    fall = _sigmoid(np.asarray((doy - np.asarray(eos)) / 8.0))
    out = np.asarray(fmin) + (np.asarray(fmax) - np.asarray(fmin)) * np.clip(rise - fall, 0.0, 1.0)
    return out.astype(np.float32)


#: Crop calendars of the Khoy plain: ``(sos, eos, fmin, fmax)`` per crop type.
#: 0 winter wheat/barley (green-up March, harvest late June), 1 summer crop
#: (sugar beet / maize / alfalfa: May–September), 2 fallow.
CROP_CALENDARS: np.ndarray = np.array(
    [
        [85.0, 170.0, 0.08, 0.85],
        [140.0, 265.0, 0.03, 0.90],
        [120.0, 200.0, 0.03, 0.12],
    ],
    dtype=np.float32,
)

#: Orchards and parks (apple, apricot, poplar): leaf-out mid-April, leaf fall November.
ORCHARD_CALENDAR: tuple[float, float, float, float] = (110.0, 310.0, 0.15, 0.75)


def air_temperature_c(doy: float) -> float:
    """Mean daytime air temperature (°C) of the Khoy plain on day-of-year ``doy``.

    A sinusoid fitted by eye to the Khoy synoptic station normals (January about
    −2 °C, July about 27 °C at the Landsat overpass).
    """
    return float(12.5 + 14.5 * np.sin(2.0 * np.pi * (doy - 110.0) / 365.0))


def summerness(doy: float) -> float:
    """Solar-heating factor (0 in mid-winter, 1 in mid-summer) on ``doy``."""
    return float(0.5 + 0.5 * np.sin(2.0 * np.pi * (doy - 100.0) / 365.0))
