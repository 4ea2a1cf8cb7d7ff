"""Suspected unregistered loads (SPEC §5): tile-months whose light and heat rose beyond
what their built-up change and history explain, with a score, a reason and the evidence
present.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from payesh.indicators._common import var_attrs
from payesh.indicators.anomaly import time_ufunc

__all__ = [
    "EVIDENCE_HEAT",
    "EVIDENCE_LIGHT",
    "EVIDENCE_STATIC",
    "GROWTH_MIN",
    "HEAT_DELTA",
    "LIGHT_Z",
    "load_suspect",
]

LIGHT_Z = 3.0
"""Night-light anomaly (robust σ) above which light is unexplained by the tile's season."""
HEAT_DELTA = 3.0
"""Heat anomaly, °C, that counts as extra heat. The hot-spot anomaly of an unchanged tile
wanders by up to ±2.5 °C on a one-year history (measured on the demo city: seasonal
contrast of roofs vs. the city median), so 3 °C keeps quiet tiles quiet while a
compound a few Landsat pixels wide heating by 10 K shows +3.5…+6.6 °C."""
EVIDENCE_LIGHT = 1
"""``load_suspect_evidence`` bit: ``ntl_anomaly`` ≥ ``light_z``."""
EVIDENCE_HEAT = 2
"""``load_suspect_evidence`` bit: heat anomaly ≥ ``heat_delta`` °C."""
EVIDENCE_STATIC = 4
"""``load_suspect_evidence`` bit: built-up grew by less than ``growth_min`` (known)."""
GROWTH_MIN = 0.02
"""Growth of the built-up fraction (unitless, 2 points of tile area ≈ 20 000 m² of a 1 km
tile) below which the tile's built-up is taken as unchanged."""


def _suspect_kernel(
    z: np.ndarray,
    heat: np.ndarray,
    growth: np.ndarray,
    *,
    light_z: float,
    heat_delta: float,
    growth_min: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        light_term = np.clip(z / (2 * light_z), 0.0, 1.0)
        heat_term = np.clip(heat / (2 * heat_delta), 0.0, 1.0)
        static_term = 1.0 - np.clip(growth / (2 * growth_min), 0.0, 1.0)
        score = light_term * np.fmax(heat_term, static_term)
        light_hi = z >= light_z
        heat_hi = heat >= heat_delta
        static = growth < growth_min
    # Precision first: light alone is not enough (VIIRS blooms ~500 m into neighbouring
    # tiles, and a new lit street is not a crime); light AND a new hot spot are.
    flag = light_hi & heat_hi
    evidence = (
        EVIDENCE_LIGHT * light_hi
        + EVIDENCE_HEAT * heat_hi
        + EVIDENCE_STATIC * (static & np.isfinite(growth))
    ).astype("int8")
    score = np.where(np.isfinite(z), score, np.nan).astype("float32")
    reason = np.full(z.shape, "", dtype="<U80")
    for idx in zip(*np.nonzero(flag), strict=True):
        parts = [f"light {z[idx]:+.1f}σ"]
        if np.isfinite(heat[idx]):
            parts.append(f"heat {heat[idx]:+.1f} °C")
        if np.isfinite(growth[idx]):
            parts.append(
                "built-up unchanged" if static[idx] else f"built-up +{100 * growth[idx]:.0f}%"
            )
        reason[idx] = "; ".join(parts)
    return score, flag.astype("int8"), reason, evidence


def _growth_kernel(bf: np.ndarray) -> np.ndarray:
    """Built-up fraction minus its first valid value, along the last axis (time)."""
    finite = np.isfinite(bf)
    first = np.argmax(finite, axis=-1)
    base = np.take_along_axis(bf, first[..., None], axis=-1)
    return (bf - base).astype("float32")


def load_suspect(
    tiles: xr.Dataset,
    *,
    light_z: float = LIGHT_Z,
    heat_delta: float = HEAT_DELTA,
    growth_min: float = GROWTH_MIN,
) -> xr.Dataset:
    """Tiles whose light and heat rose beyond what their built-up change and history explain.

    A tile-month is flagged when its ``ntl_anomaly`` ≥ ``light_z`` AND its heat anomaly
    (``lst_hotspot_anomaly``, else ``lst_anomaly``) ≥ ``heat_delta``. Light alone is not
    enough: VIIRS light blooms ~500 m into neighbouring tiles, and new lit streets are
    legitimate. Whether built-up grew is reported in the reason and raises the score
    when it did not. Missing heat data is never evidence: without Landsat, no flag.

    Parameters
    ----------
    tiles
        (time, tile_y, tile_x) with ``ntl_anomaly`` (σ) and optionally ``lst_anomaly``
        (°C) and ``builtup_fraction`` (unitless).
    light_z, heat_delta, growth_min
        Thresholds; see :data:`LIGHT_Z`, :data:`HEAT_DELTA`, :data:`GROWTH_MIN`.

    Returns
    -------
    xr.Dataset
        ``load_suspect_score`` (0–1: ``clip(z / 2·light_z) × max(clip(ΔLST / 2·heat_delta),
        1 − clip(growth / 2·growth_min))``, so ≥ 0.25 when flagged, 1 for a doubled
        light threshold with doubled heat or no growth; NaN without lights),
        ``load_suspect`` (int8 0/1), ``load_suspect_reason`` (short text, "" unless flagged),
        ``load_suspect_evidence`` (int8 bit mask, CF ``flag_masks``: 1 light, 2 heat,
        4 built-up unchanged — set in every tile-month, flagged or not, so a planner sees
        which evidence is there and which is missing).
    """
    z = tiles["ntl_anomaly"]
    nan = xr.full_like(z, np.nan, dtype="float32")
    if "lst_hotspot_anomaly" in tiles:
        heat = tiles["lst_hotspot_anomaly"]
    elif "lst_anomaly" in tiles:
        heat = tiles["lst_anomaly"]
    else:
        heat = nan
    if "builtup_fraction" in tiles:
        growth = time_ufunc(_growth_kernel, tiles["builtup_fraction"])
    else:
        growth = nan
    score, flag, reason, evidence = xr.apply_ufunc(
        _suspect_kernel,
        z,
        heat,
        growth,
        output_core_dims=[[], [], [], []],
        dask="parallelized",
        output_dtypes=["float32", "int8", "<U80", "int8"],
        kwargs={
            "light_z": float(light_z),
            "heat_delta": float(heat_delta),
            "growth_min": float(growth_min),
        },
    )
    return xr.Dataset(
        {
            "load_suspect_score": score.assign_attrs(
                var_attrs(
                    "1",
                    "suspect load score",
                    "0-1: light anomaly (1 at 2x threshold) x max(heat anomaly, absence of "
                    "built-up growth)",
                )
            ),
            "load_suspect": flag.assign_attrs(
                var_attrs(
                    "1",
                    "suspect load flag",
                    f"1 when ntl_anomaly >= {light_z} and the LST hot-spot anomaly >= "
                    f"{heat_delta} degC",
                )
            ),
            "load_suspect_reason": reason.assign_attrs(
                var_attrs("1", "suspect load reason", "why the tile-month was flagged")
            ),
            "load_suspect_evidence": evidence.assign_attrs(
                {
                    **var_attrs(
                        "1",
                        "suspect load evidence",
                        f"bit mask of the evidence present in every tile-month: "
                        f"{EVIDENCE_LIGHT} light (ntl_anomaly >= {light_z}), "
                        f"{EVIDENCE_HEAT} heat (anomaly >= {heat_delta} degC), "
                        f"{EVIDENCE_STATIC} built-up unchanged (growth < {growth_min})",
                    ),
                    "flag_masks": [EVIDENCE_LIGHT, EVIDENCE_HEAT, EVIDENCE_STATIC],
                    "flag_meanings": "light heat builtup_unchanged",
                }
            ),
        }
    )
