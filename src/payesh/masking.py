"""Cloud and quality masks: which observations are clear.

Masks only ever remove observations (a pixel masked by any rule stays masked), and
masked values become NaN, never zero, so that later counts of clear observations and
``valid_fraction`` stay honest.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from numba import njit
from scipy import ndimage

__all__ = [
    "QA_PIXEL_MASKED_BITS",
    "SCL_MASKED",
    "SCL_SNOW",
    "landsat_clear",
    "mask_landsat",
    "mask_s2",
    "mask_viirs",
    "scl_clear",
    "scl_masks",
]

# Sentinel-2 L2A scene classes treated as not clear (ESA L2A Product Definition, SCL):
# 0 no data, 1 saturated/defective, 3 cloud shadow, 8 cloud medium probability,
# 9 cloud high probability, 10 thin cirrus. 11 (snow/ice) is optional.
SCL_MASKED: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
SCL_SNOW = 11
_SCL_CLOUDY = (3, 8, 9, 10)  # the classes whose edges are dilated by the buffer

# Landsat Collection 2 QA_PIXEL bits (USGS LSDS-1619): 0 fill, 1 dilated cloud,
# 2 cirrus, 3 cloud, 4 cloud shadow.
QA_PIXEL_MASKED_BITS: tuple[int, ...] = (0, 1, 2, 3, 4)


def _dilate(block: np.ndarray, buffer_px: int) -> np.ndarray:
    if buffer_px <= 0:
        return block
    structure = np.zeros((1, 2 * buffer_px + 1, 2 * buffer_px + 1), dtype=bool)
    yy, xx = np.mgrid[-buffer_px : buffer_px + 1, -buffer_px : buffer_px + 1]
    structure[0] = yy**2 + xx**2 <= buffer_px**2
    return ndimage.binary_dilation(block, structure=structure)


def _disk_offsets(buffer_px: int) -> np.ndarray:
    """(dy, dx) of the disk :func:`_dilate` grows by, centre included; (0, 2) if none."""
    if buffer_px <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    yy, xx = np.mgrid[-buffer_px : buffer_px + 1, -buffer_px : buffer_px + 1]
    keep = yy**2 + xx**2 <= buffer_px**2
    return np.stack([yy[keep], xx[keep]], axis=1).astype(np.int64)


@njit(nogil=True, cache=True)
def _scl_masks_kernel(
    scl: np.ndarray,
    bad_lut: np.ndarray,
    cloudy_lut: np.ndarray,
    offsets: np.ndarray,
    bad: np.ndarray,
    observed: np.ndarray,
) -> None:  # pragma: no cover - compiled
    ny, nx = scl.shape
    grow = offsets.shape[0] > 0
    for y in range(ny):
        for x in range(nx):
            v = scl[y, x]
            c = 0
            if v == v and v >= 0 and v < 256:  # NaN (no data) and impossible values: 0
                c = int(v)
            if bad_lut[c]:
                bad[y, x] = True
            observed[y, x] = c != 0
    if grow:
        for y in range(ny):
            for x in range(nx):
                v = scl[y, x]
                if not (v == v and v >= 0 and v < 256) or not cloudy_lut[int(v)]:
                    continue
                for k in range(offsets.shape[0]):
                    yy = y + offsets[k, 0]
                    xx = x + offsets[k, 1]
                    if 0 <= yy < ny and 0 <= xx < nx:
                        bad[yy, xx] = True


def scl_masks(
    scl: np.ndarray, *, mask_snow: bool = False, buffer_px: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(bad, observed)`` of one SCL image (y, x), in one compiled pass.

    ``scl`` holds scene classes as numbers, NaN where there is no data (class 0); a
    value outside 0–255 (no SCL class) also counts as no data, masked.
    ``bad``: a masked class (:data:`SCL_MASKED`, plus snow with ``mask_snow``) or within
    ``buffer_px`` pixels (a disk) of a cloud or shadow class; ``observed``: class not 0.
    The same masks as :func:`scl_clear` on that image (``~bad``), tested equal.
    """
    bad_lut = np.zeros(256, dtype=np.bool_)
    bad_lut[list(SCL_MASKED) + ([SCL_SNOW] if mask_snow else [])] = True
    cloudy_lut = np.zeros(256, dtype=np.bool_)
    cloudy_lut[list(_SCL_CLOUDY)] = True
    bad = np.zeros(scl.shape, dtype=np.bool_)
    observed = np.empty(scl.shape, dtype=np.bool_)
    _scl_masks_kernel(
        np.ascontiguousarray(scl), bad_lut, cloudy_lut, _disk_offsets(buffer_px), bad, observed
    )
    return bad, observed


def scl_clear(scl: xr.DataArray, *, mask_snow: bool = False, buffer_px: int = 0) -> xr.DataArray:
    """Clear-observation mask from the Sentinel-2 SCL band.

    Parameters
    ----------
    scl
        Scene classification, dims (time, y, x).
    mask_snow
        Also mask class 11 (snow and ice).
    buffer_px
        Dilate clouds and shadows by this many pixels (of ``scl``'s grid) before masking.

    Returns
    -------
    xarray.DataArray
        bool, True where the observation is clear.
    """
    masked = list(SCL_MASKED) + ([SCL_SNOW] if mask_snow else [])
    bad = scl.isin(masked)
    if buffer_px > 0:
        cloudy = scl.isin(list(_SCL_CLOUDY))
        if cloudy.chunks is not None:
            # dask refuses an overlap deeper than the array; an overlap as deep as the
            # whole axis already shows every chunk all of its neighbours
            _, ny, nx = cloudy.shape
            grown = cloudy.data.map_overlap(
                _dilate,
                depth={0: 0, 1: min(buffer_px, ny), 2: min(buffer_px, nx)},
                boundary=False,
                buffer_px=buffer_px,
                dtype=bool,
            )
        else:
            grown = _dilate(cloudy.values, buffer_px)
        bad = bad | cloudy.copy(data=grown)
    return ~bad


def mask_s2(
    ds: xr.Dataset,
    bands: tuple[str, ...],
    *,
    mask_snow: bool = False,
    buffer_px: int = 0,
) -> xr.Dataset:
    """Sentinel-2 reflectance with unclear observations set to NaN, plus ``clear``."""
    clear = scl_clear(ds["scl"], mask_snow=mask_snow, buffer_px=buffer_px)
    out = xr.Dataset({b: ds[b].where(clear) for b in bands})
    for b in bands:
        out[b].attrs = ds[b].attrs
    out["clear"] = clear & ds[bands[0]].notnull()
    out["observed"] = ds["scl"] != 0
    out.attrs = ds.attrs
    return out


def landsat_clear(qa_pixel: xr.DataArray) -> xr.DataArray:
    """True where none of the QA_PIXEL fill/cloud/shadow bits (0–4) is set."""
    mask = sum(1 << b for b in QA_PIXEL_MASKED_BITS)
    return (qa_pixel & mask) == 0


def mask_landsat(ds: xr.Dataset) -> xr.Dataset:
    """Landsat LST with cloudy, shadowed and fill observations set to NaN, plus ``clear``."""
    clear = landsat_clear(ds["qa_pixel"]) & ds["lst"].notnull()
    out = xr.Dataset({"lst": ds["lst"].where(clear), "clear": clear})
    out["lst"].attrs = ds["lst"].attrs
    out.attrs = ds.attrs
    return out


def mask_viirs(ds: xr.Dataset) -> xr.Dataset:
    """Night lights with ``cf_cvg == 0`` (no cloud-free observation) set to missing, not dark."""
    out = ds.copy()
    out["radiance"] = ds["radiance"].where(ds["cf_cvg"] > 0)
    out["radiance"].attrs = ds["radiance"].attrs
    return out
