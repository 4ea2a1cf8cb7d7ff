"""Spectral features of a Sentinel-2 composite: its bands plus spyndex indices.

Features are Sentinel-2 bands of a monthly composite plus spectral indices whose
formulas come from `spyndex <https://github.com/awesome-spectral-indices/spyndex>`_
(Awesome Spectral Indices): each formula is checked (arithmetic on band symbols only) and
compiled once into a vectorised numpy expression evaluated on contiguous band planes.
On one core that is as fast as ``spyndex.computeIndex`` (both ≥ 10 Mpx/s for 8 indices,
`benchmarks/classifier.py`), and ~30× faster than the prediction itself. Every feature
is pixel-local, so prediction works on any (time, y, x) block.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from payesh.errors import ModelError, PayeshError

__all__ = [
    "BANDS",
    "FEATURE_NAMES",
    "INDICES",
    "RGBN_FEATURE_NAMES",
    "SPYNDEX_BANDS",
    "SpectralIndex",
    "feature_stack",
    "fill_features",
    "index_function",
    "required_bands",
    "spectral_features",
]

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
"""Sentinel-2 bands of a composite (Earth Search names), in the order of the band axis."""

SPYNDEX_BANDS: dict[str, str] = {
    "B": "blue",
    "G": "green",
    "R": "red",
    "N": "nir",
    "S1": "swir16",
    "S2": "swir22",
}
"""spyndex's standard band symbols → the composite's band names (B02 B03 B04 B08 B11 B12)."""

INDICES: tuple[str, ...] = ("NDVI", "NDBI", "MNDWI", "BI", "UI", "BLFEI", "NSDS", "DBSI")
"""spyndex indices of the default model, chosen to separate buildings from vegetation,
water and — the hard case in the seed cities — dry bare soil:

- NDVI (Rouse 1974) vegetation; MNDWI (Xu 2006) water;
- NDBI (Zha 2003) and UI (Kawamura 1996) built-up, both SWIR-vs-NIR;
- BI, the bare-soil index (Rikimaru 2002), high on soil *and* roofs;
- BLFEI (Bouhennache 2019) built-up land features extraction index, designed to split
  built-up from bare land with the two SWIR bands;
- DBSI, dry bareness index (Rasul 2018), built for arid cities: bare soil from built-up;
- NSDS (SWIR1−SWIR2 normalised difference, soil moisture/clay), separates soil from
  concrete and asphalt whose SWIR2 is flatter.

EBBI and NDBaI need thermal bands, which a Sentinel-2 composite does not have.
"""

FEATURE_NAMES: tuple[str, ...] = BANDS + INDICES
"""Feature columns of the default model (:func:`feature_stack`)."""

RGBN_FEATURE_NAMES: tuple[str, ...] = ("blue", "green", "red", "nir", "NDVI", "NDWI", "BITM")
"""A reduced feature set for imagery without SWIR (e.g. the real Zagreb test scenes,
whose B11/B12 are not local): the four 10 m bands, NDVI, NDWI (McFeeters 1996) and the
TM brightness index BITM (Khan 2005)."""

_FORMULA_OK = re.compile(r"^[A-Za-z0-9_+\-*/(). ]+$")


@dataclass(frozen=True)
class SpectralIndex:
    """A spyndex index compiled into a vectorised numpy expression.

    Attributes
    ----------
    name, long_name, formula, reference
        As in ``spyndex.indices[name]``.
    bands
        Composite band names (:data:`BANDS`) the formula reads.
    """

    name: str
    long_name: str
    formula: str
    reference: str
    bands: tuple[str, ...]
    _code: Any = field(repr=False, compare=False)
    _symbols: tuple[tuple[str, str], ...] = field(repr=False, compare=False)

    def __call__(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        """The index of reflectances ``bands`` (band name → array); NaN where not finite."""
        env = {sym: bands[band] for sym, band in self._symbols}
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # the formula is spyndex's, checked against _FORMULA_OK; no builtins reachable
            out = np.array(eval(self._code, {"__builtins__": {}}, env))
        out[~np.isfinite(out)] = np.nan
        return out


@functools.cache
def index_function(name: str) -> SpectralIndex:
    """spyndex index ``name``, compiled once into a vectorised numpy function.

    Raises
    ------
    ModelError
        If spyndex has no such index, or it needs a band or constant a Sentinel-2
        composite does not provide (thermal bands, ``L``, …).
    """
    import spyndex

    idx = spyndex.indices.get(name)
    if idx is None:
        raise ModelError(f"spyndex has no spectral index {name!r}")
    missing = [b for b in idx.bands if b not in SPYNDEX_BANDS]
    if missing:
        raise ModelError(
            f"spectral index {name!r} needs {missing}, which a Sentinel-2 composite of "
            f"{list(BANDS)} does not provide"
        )
    formula = str(idx.formula)
    if not _FORMULA_OK.match(formula):
        raise ModelError(f"spectral index {name!r}: unexpected formula {formula!r}")
    symbols = tuple((sym, SPYNDEX_BANDS[sym]) for sym in idx.bands)
    return SpectralIndex(
        name=name,
        long_name=str(idx.long_name),
        formula=formula,
        reference=str(idx.reference),
        bands=tuple(b for _, b in symbols),
        _code=compile(formula, f"<spyndex {name}>", "eval"),
        _symbols=symbols,
    )


def required_bands(feature_names: tuple[str, ...]) -> tuple[str, ...]:
    """The composite bands (in :data:`BANDS` order) the features ``feature_names`` need.

    Raises
    ------
    ModelError
        For a name that is neither a band nor a usable spyndex index.
    """
    need: set[str] = set()
    for name in feature_names:
        if name in BANDS:
            need.add(name)
        else:
            need.update(index_function(name).bands)
    return tuple(b for b in BANDS if b in need)


def feature_stack(
    bands: np.ndarray,
    *,
    band_names: tuple[str, ...] = BANDS,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
) -> np.ndarray:
    """Spectral features of reflectances, along the last axis.

    Parameters
    ----------
    bands
        ``(…, len(band_names))`` surface reflectance (unitless, ~0–1).
    band_names
        Names of the band columns (a subset of :data:`BANDS`, any order).
    feature_names
        Features to compute, in order: band names and spyndex index names (see
        :data:`INDICES`, :func:`index_function`).

    Returns
    -------
    np.ndarray
        ``(…, len(feature_names))`` float32; an index is NaN where undefined (0/0).
        Pixel-local: row ``i`` depends on ``bands[i]`` only.
    """
    x = np.asarray(bands, dtype="float32")
    if x.shape[-1] != len(band_names):
        raise PayeshError(
            f"feature_stack got {x.shape[-1]} band columns for the names {band_names}"
        )
    planes = np.moveaxis(x, -1, 0).copy()  # one contiguous plane per band: faster maths
    cols = {b: planes[i] for i, b in enumerate(band_names)}
    out = np.empty((len(feature_names), *x.shape[:-1]), dtype="float32")  # planes
    fill_features(out, cols, feature_names)
    return np.moveaxis(out, 0, -1)


def fill_features(
    out: np.ndarray, cols: Mapping[str, np.ndarray], feature_names: tuple[str, ...]
) -> None:
    """``out[j]`` = feature ``feature_names[j]`` of the float32 band planes ``cols``."""
    for j, name in enumerate(feature_names):
        if name in cols:
            out[j] = cols[name]
            continue
        fn = index_function(name)
        lacking = [b for b in fn.bands if b not in cols]
        if lacking:
            raise PayeshError(f"feature {name!r} needs band(s) {lacking}, not in {list(cols)}")
        out[j] = fn(cols)


def _band_array(composite: xr.Dataset, bands: tuple[str, ...] = BANDS) -> xr.DataArray:
    missing = [b for b in bands if b not in composite]
    if missing:
        raise PayeshError(f"composite lacks band(s) {missing}; needs {list(bands)}")
    arr = composite[list(bands)].to_dataarray("band")
    arr = arr.transpose(*[d for d in arr.dims if d != "band"], "band")
    if arr.chunks is not None:
        arr = arr.chunk({"band": -1})
    return arr


def spectral_features(
    composite: xr.Dataset, *, feature_names: tuple[str, ...] = FEATURE_NAMES
) -> xr.DataArray:
    """Spectral features of a monthly composite, lazily.

    Parameters
    ----------
    composite
        Dataset with the bands the features need (surface reflectance, unitless), dims
        e.g. (time, y, x).
    feature_names
        Features to compute (default :data:`FEATURE_NAMES`).

    Returns
    -------
    xr.DataArray
        ``features`` (…, feature) float32 with ``feature`` = ``feature_names``.
    """
    bands = required_bands(feature_names)
    arr = _band_array(composite, bands)
    out = xr.apply_ufunc(
        feature_stack,
        arr,
        input_core_dims=[["band"]],
        output_core_dims=[["feature"]],
        dask="parallelized",
        output_dtypes=["float32"],
        dask_gufunc_kwargs={"output_sizes": {"feature": len(feature_names)}},
        kwargs={"band_names": bands, "feature_names": tuple(feature_names)},
    )
    return out.assign_coords(feature=list(feature_names)).rename("features")
