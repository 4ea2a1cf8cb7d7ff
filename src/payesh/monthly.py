"""One product-month: load → mask → composite, as a lazy Dask-backed Dataset.

These are the units of work a flow schedules (one task per product and month). A month
without any item is returned all-missing with zero counts, never as zeros.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from payesh.composite import monthly_composite
from payesh.errors import (
    BadItemWarning,
    CloudyMonthWarning,
    MissingDataWarning,
    NoReadableItemsError,
)
from payesh.masking import mask_landsat, mask_s2, mask_viirs
from payesh.sources import laads
from payesh.sources.aligned import s2_month_aligned
from payesh.sources.blackmarble import BLACK_MARBLE_PRODUCTS
from payesh.sources.http import current_policy
from payesh.sources.load import S2_REFLECTANCE, load_landsat_lst, load_s2, load_viirs
from payesh.sources.validate import with_skipped

__all__ = ["empty_month", "landsat_month", "s2_month", "viirs_month"]


def empty_month(
    geobox: GeoBox,
    month: pd.Timestamp,
    variables: Mapping[str, str],
    *,
    attrs: Mapping[str, Mapping[str, str]] | None = None,
) -> xr.Dataset:
    """A month with no observation: float variables NaN, integer counts 0."""
    base = xr_zeros(geobox, dtype="float32")
    data = {}
    for name, dtype in variables.items():
        fill = np.nan if np.dtype(dtype).kind == "f" else 0
        da = xr.full_like(base, fill, dtype=dtype).expand_dims(time=[month])
        da.attrs = dict((attrs or {}).get(name, {}))
        data[name] = da
    out = xr.Dataset(data)
    if "spatial_ref" in out.coords:
        out = out.drop_vars("spatial_ref")
    out.attrs["source_items"] = []
    return out


def _all_bad(
    err: NoReadableItemsError,
    items: Sequence[pystac.Item],
    month: pd.Timestamp,
    what: str,
    empty: xr.Dataset,
) -> xr.Dataset:
    """A month whose every item is bad, stored as missing; each item warned and listed.

    Only for files read locally: where any was read over a network the failure may be
    an outage, and ``err`` is raised again so that the task is retried and, failing
    that, the run stops before anything is committed.
    """
    if err.remote:
        raise err
    for problem in err.problems:
        warnings.warn(f"{problem}; item skipped", BadItemWarning, stacklevel=3)
    warnings.warn(
        f"{what} {month:%Y-%m}: every one of its {len(items)} item(s) is bad; the month is "
        f"stored as missing (valid_fraction 0)",
        MissingDataWarning,
        stacklevel=3,
    )
    empty.attrs["skipped_items"] = [i.id for i in items]
    return empty


NTL_VALID_RANGE: tuple[float, float] = (-100.0, 1.0e5)
"""Night-light radiance (nW·cm⁻²·sr⁻¹) outside this is not a measurement (a fill value,
an overflow, ±inf): such pixels are missing, not lit or dark. Real monthly composites
dip slightly below 0 (background noise) and reach a few thousand over gas flares."""


def _mask_out_of_range(ds: xr.Dataset, month: pd.Timestamp, *, count: bool) -> xr.Dataset:
    """``ds`` with impossible radiance set to NaN; with ``count``, a warning saying how
    many pixels (this reads the month's small night-light crop once more)."""
    lo, hi = NTL_VALID_RANGE
    rad = ds["radiance"]
    bad = rad.notnull() & ~((rad >= lo) & (rad <= hi))
    out = ds.copy()
    out["radiance"] = rad.where(~bad)
    out["radiance"].attrs = rad.attrs
    if not count:
        return out
    v = np.asarray(rad.values)  # one read; the mask above stays lazy
    flags = ~np.isnan(v) & ~((v >= lo) & (v <= hi))
    if flags.any():
        values = v[flags]
        warnings.warn(
            f"night lights {month:%Y-%m} (items {', '.join(ds.attrs.get('source_items', []))}): "
            f"{int(flags.sum())} pixel(s) with radiance outside {lo:g}..{hi:g} nW cm-2 sr-1 "
            f"(from {float(values.min()):g} to {float(values.max()):g}) are stored as missing",
            MissingDataWarning,
            stacklevel=3,
        )
    return out


def _warn_if_cloudy(comp: xr.Dataset, month: pd.Timestamp, what: str) -> None:
    if comp["clear_count"].chunks is not None:
        return  # lazy: building the month must not compute it
    if int(comp["clear_count"].max()) == 0:
        warnings.warn(
            f"{what} {month:%Y-%m}: no clear observation; stored as missing",
            CloudyMonthWarning,
            stacklevel=3,
        )


def s2_month(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    month: pd.Timestamp,
    *,
    chunks: Mapping[str, int] | None = None,
    buffer_px: int = 1,
    bands: Sequence[str] = S2_REFLECTANCE,
    threads: int | None = None,
    ahead: Sequence[pystac.Item] | None = None,
) -> xr.Dataset:
    """Monthly median Sentinel-2 surface reflectance on the city grid.

    Where every asset's pixel lattice is aligned with the city grid (the usual case: a
    city processed in its tiles' UTM zone) and no Dask ``chunks`` are asked for, the
    month is read with windowed reads straight into the grid
    (:mod:`payesh.sources.aligned`, on ``threads`` threads); otherwise through odc-stac.
    Both give the same values, masks and counts. ``ahead``: the next month's items, whose
    remote files the aligned reader opens while it reads this month
    (:func:`payesh.sources.opening.open_ahead`).

    Returns
    -------
    xarray.Dataset
        ``bands`` float32 reflectance (NaN where no clear observation), ``clear_count``
        and ``obs_count`` int16; dims (time=1, y, x). ``attrs["source_items"]`` lists the
        item ids read.
    """
    variables = {b: "float32" for b in bands} | {"clear_count": "int16", "obs_count": "int16"}
    if not items:
        return empty_month(geobox, month, variables)
    try:
        if chunks is None:
            fast = s2_month_aligned(
                items,
                geobox,
                month,
                bands=bands,
                buffer_px=buffer_px,
                threads=threads,
                ahead=ahead,
            )
            if fast is not None:
                _warn_if_cloudy(fast, month, "Sentinel-2")
                return with_skipped(fast, items)
        raw = load_s2(items, geobox, bands=bands, chunks=chunks)
    except NoReadableItemsError as err:
        return _all_bad(err, items, month, "Sentinel-2", empty_month(geobox, month, variables))
    masked = mask_s2(raw, tuple(bands), buffer_px=buffer_px)
    comp = monthly_composite(masked, bands, pd.DatetimeIndex([month]), how="median")
    for name in comp.data_vars:  # odc-stac's DN nodata means nothing on composites
        comp[name].attrs.pop("nodata", None)
    comp.attrs["source_items"] = list(raw.attrs["source_items"])
    _warn_if_cloudy(comp, month, "Sentinel-2")
    return with_skipped(comp, items)


def landsat_month(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    month: pd.Timestamp,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Monthly mean clear-sky land surface temperature (°C) with its count ``lst_count``."""

    def empty() -> xr.Dataset:
        out = empty_month(geobox, month, {"lst": "float32", "lst_count": "int16"})
        out["lst"].attrs.update(units="degC", long_name="land surface temperature")
        return out

    if not items:
        return empty()
    try:
        raw = load_landsat_lst(items, geobox, chunks=chunks)
    except NoReadableItemsError as err:
        return _all_bad(err, items, month, "Landsat", empty())
    masked = mask_landsat(raw)
    comp = monthly_composite(masked, ["lst"], pd.DatetimeIndex([month]), how="mean")
    _warn_if_cloudy(comp, month, "Landsat")
    out = xr.Dataset({"lst": comp["lst"], "lst_count": comp["clear_count"]})
    out["lst_count"].attrs.update(units="1", long_name="clear Landsat observations in the month")
    out.attrs["source_items"] = list(raw.attrs["source_items"])
    return with_skipped(out, items)


def viirs_month(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    month: pd.Timestamp,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """The month's night lights on their native grid; ``cf_cvg == 0`` is missing, not dark.

    ``items`` are STAC items of ``viirs-ntl-monthly``, or NASA Black Marble files found by
    :func:`payesh.sources.laads.search_granules` (collection ``VNP46A3``), which
    are downloaded (once, into ``$PAYESH_BLACKMARBLE_DIR``) and read in memory.
    """

    def empty() -> xr.Dataset:
        out = empty_month(geobox, month, {"radiance": "float32", "cf_cvg": "uint16"})
        out = out.rename({"latitude": "y", "longitude": "x"}) if "latitude" in out.dims else out
        out["radiance"].attrs.update(units="nW cm-2 sr-1", long_name="night-time radiance")
        return out

    if not items:
        return empty()
    if all(i.collection_id in BLACK_MARBLE_PRODUCTS for i in items):
        return laads.items_month(items, geobox, month, policy=current_policy())
    try:
        raw = mask_viirs(load_viirs(items, geobox, chunks=chunks))
        raw = _mask_out_of_range(raw, month, count=chunks is None)
    except NoReadableItemsError as err:
        return _all_bad(err, items, month, "night lights", empty())
    if raw.sizes["time"] > 1:  # several composites in one month: weight by clear observations
        w = raw["cf_cvg"].astype("float32")
        rad = (raw["radiance"].fillna(0) * w).sum("time") / w.sum("time").where(w.sum("time") > 0)
        cvg = raw["cf_cvg"].sum("time").astype("uint16")
        out = xr.Dataset({"radiance": rad.astype("float32"), "cf_cvg": cvg}).expand_dims(
            time=[month]
        )
        out["radiance"].attrs = raw["radiance"].attrs
    else:
        out = raw.assign_coords(time=[month])
    out.attrs["source_items"] = list(raw.attrs["source_items"])
    return with_skipped(out, items)
