"""Raw DN of a file's window placed on the city grid in physical units (compiled).

A window read under a block of the city (:func:`payesh.sources.citygrid.read_raw`)
comes with each city row's and column's index into it. :func:`place_first` writes a
time step's first item into its block (every pixel, NaN where the window gives
nothing); :func:`place_missing` fuses the items after it (the first valid value wins, in
item order). A value becomes ``DN * scale + offset`` in float32, NaN at nodata and where
saturated (:func:`_value`); SCL keeps its classes.

:func:`place_first_dn` and :func:`place_missing_dn` do the same into uint16 stacks of
DN, :data:`DN_MISSING` where the float32 stacks hold NaN, for a month whose items share
each band's scale and offset (:func:`dn_conversions`): the medians then convert only
the middle values (:func:`payesh.nanops.median_clear_dn_rows`), to the same float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from payesh.sources.citygrid import ItemPlan

__all__ = [
    "DN_MISSING",
    "Conversion",
    "dn_conversions",
    "place_first",
    "place_first_dn",
    "place_missing",
    "place_missing_dn",
]

#: A missing pixel of a stack kept in DN (:func:`place_first_dn`): nodata, saturated,
#: outside the rasters. Never a valid DN: every DN from the saturated one up is missing.
DN_MISSING = np.uint16(65535)


#: How a raw value becomes a grid value, for the placing kernels (one tuple: Numba passes
#: it as a typed tuple): nodata of the file and of the item, the saturated DN, scale,
#: offset (float32 each), and whether the band is physical (False: a class, SCL).
Conversion = tuple[np.float32, np.float32, np.float32, np.float32, np.float32, bool]


def place_first(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:
    """:func:`place_missing` into an ``out`` whatever it holds: every pixel of ``out`` is
    written, NaN where the window gives nothing. A window of the 10 m grid (consecutive
    rows and columns) covering ``out`` goes through :func:`_place_window`, the same values
    by the same float32 operations and faster: it writes each pixel once (no NaN fill
    first) and need not check ``out`` for fusing items (that check keeps the compiler from
    vectorising the general loop: 0.62 ms for 512², numpy's vectorised steps 0.29–0.5 ms,
    :func:`_place_window` ~0.1 ms, measured); any other window (20 m) through
    :func:`_place_rows`.
    """
    ok_r, ok_c = np.flatnonzero(ri >= 0), np.flatnonzero(ci >= 0)
    if not len(ok_r) or not len(ok_c):
        out.fill(np.nan)
        return
    # the rows and columns inside the raster are one range of the block each, and their
    # source indices never decrease: consecutive when they span as many as they count
    i0, i1, j0, j1 = int(ok_r[0]), int(ok_r[-1]) + 1, int(ok_c[0]), int(ok_c[-1]) + 1
    if ri[i1 - 1] - ri[i0] != i1 - 1 - i0 or ci[j1 - 1] - ci[j0] != j1 - 1 - j0:
        # 20 m: each pixel repeated (numpy's gather would cost twice the compiled loop)
        _place_rows(win, ri, ci, out, conv)
        return
    if (i0, i1, j0, j1) != (0, out.shape[0], 0, out.shape[1]):
        out.fill(np.nan)  # the city's edge: pixels outside the raster
    src = win[ri[i0] : ri[i1 - 1] + 1, ci[j0] : ci[j1 - 1] + 1]
    _place_window(src, out[i0:i1, j0:j1], conv)


@njit(nogil=True, cache=True, inline="always")
def _value(
    dn: Any,
    conv: Conversion,
) -> np.float32:  # pragma: no cover - compiled
    """One raw value on the grid: NaN at either nodata and, with ``physical``, where
    saturated; else ``DN * scale + offset`` in float32 (two rounded steps, as numpy's
    in-place ``*=`` then ``+=``; no fused multiply-add), or the class (SCL) as it is."""
    nodata_file, nodata_item, saturated, scale, offset, physical = conv
    v = np.float32(dn)
    if (v == nodata_file) | (v == nodata_item):
        return np.float32(np.nan)
    if physical:
        if v >= saturated:
            return np.float32(np.nan)
        return v * scale + offset
    return v


@njit(nogil=True, cache=True, inline="always")
def _column_span(ci: np.ndarray, width: int) -> tuple[int, int]:  # pragma: no cover
    """First and last source column the block's columns read; (width, -1) if none."""
    c_lo, c_hi = width, -1
    for j in range(ci.shape[0]):
        c = ci[j]
        if c >= 0:
            c_lo = min(c_lo, c)
            c_hi = max(c_hi, c)
    return c_lo, c_hi


@njit(nogil=True, cache=True)
def _place_rows(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:  # pragma: no cover - compiled
    """:func:`place_missing` into an ``out`` whatever it holds (every pixel written, NaN
    where the window gives nothing), for any ``ri``/``ci``: each source row is converted
    once, in a vectorised pass over the columns it spans, and gathered from there; an
    output row on the same source row as the one before (20 m on the 10 m grid) is a
    copy of it. The same float32 operations; a 512² window of a 20 m band 0.30 → 0.12 ms.
    """
    ny, nx = out.shape
    nan = np.float32(np.nan)
    c_lo, c_hi = _column_span(ci, win.shape[1])
    row = np.empty(max(0, c_hi - c_lo + 1), dtype=np.float32)
    last_r, last_i = -1, -1
    for i in range(ny):
        r = ri[i]
        o = out[i]
        if r < 0 or c_hi < 0:
            o[:] = nan
            continue
        if r == last_r:
            o[:] = out[last_i]
            continue
        src = win[r]
        for k in range(row.shape[0]):
            row[k] = _value(src[c_lo + k], conv)
        for j in range(nx):
            c = ci[j]
            o[j] = row[c - c_lo] if c >= 0 else nan
        last_r, last_i = r, i


@njit(nogil=True, cache=True)
def _place_window(
    src: np.ndarray,
    dst: np.ndarray,
    conv: Conversion,
) -> None:  # pragma: no cover - compiled
    """``dst = src`` as :func:`place_missing` converts a value, for windows of the same
    shape: three passes over each row (convert, scale, mark missing), each vectorised."""
    nodata_file, nodata_item, saturated, scale, offset, physical = conv
    n, m = src.shape
    row = np.empty(m, dtype=np.float32)
    for i in range(n):
        s = src[i]
        d = dst[i]
        for j in range(m):
            row[j] = np.float32(s[j])
        if physical:
            for j in range(m):
                d[j] = row[j] * scale + offset  # float32: rounded after each step
            for j in range(m):
                v = row[j]
                if (v == nodata_file) | (v == nodata_item) | (v >= saturated):
                    d[j] = np.nan
        else:
            for j in range(m):
                v = row[j]
                d[j] = np.nan if (v == nodata_file) | (v == nodata_item) else v


@njit(nogil=True, cache=True)
def place_missing(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:  # pragma: no cover - compiled
    """Fill the still-missing (NaN) pixels of ``out`` with ``win[ri[i], ci[j]]``.

    Each value as :func:`_value` converts it (NaN at nodata and saturation). Filling only
    the missing pixels fuses the items of one time step: the first valid value wins, in
    item order.
    """
    for i in range(ri.shape[0]):
        r = ri[i]
        if r < 0:
            continue
        for j in range(ci.shape[0]):
            c = ci[j]
            if c < 0 or out[i, j] == out[i, j]:
                continue
            out[i, j] = _value(win[r, c], conv)


# ----------------------------------------------------------------- the same, kept in DN
#
# A month whose items share each band's scale and offset (nearly every month) keeps its
# stacks in uint16 DN: the conversion is monotonic, so the median of the converted
# values is the conversion of the middle DNs (payesh.nanops.median_clear_dn_rows), and
# placing a window is a copy. DN_MISSING marks what the float32 stacks mark with NaN.


@lru_cache(maxsize=64)
def _dn_limits(conv: Conversion) -> tuple[np.int32, np.int32, np.int32]:
    """(nodata of the file, nodata of the item, first saturated DN) as integers, for
    integer compares that select the same DNs as :func:`_value`'s float32 ones: a nodata
    that no uint16 equals (NaN, a fraction, out of range) becomes -1; float32 holds every
    uint16 exactly, so ``float32(dn) >= saturated`` is ``dn >= ceil(saturated)``."""

    def exact(v: float) -> int:
        return int(v) if math.isfinite(v) and v == int(v) and 0 <= v <= 65535 else -1

    nodata_file, nodata_item, saturated = (float(v) for v in conv[:3])
    first_saturated = 65536 if math.isnan(saturated) else min(max(math.ceil(saturated), 0), 65536)
    return np.int32(exact(nodata_file)), np.int32(exact(nodata_item)), np.int32(first_saturated)


def place_first_dn(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:
    """:func:`place_first` into a uint16 ``out`` of DN from a uint16 ``win``: the same
    pixels missing (:data:`DN_MISSING`: nodata, saturated, outside the raster), the others
    as stored."""
    if win.dtype != np.uint16:  # a DN above 65535 or below 0 would not fit the stack
        raise ValueError(f"DN stacks are read from uint16 files, not {win.dtype}")
    limits = _dn_limits(conv)
    ok_r, ok_c = np.flatnonzero(ri >= 0), np.flatnonzero(ci >= 0)
    if not len(ok_r) or not len(ok_c):
        out.fill(DN_MISSING)
        return
    i0, i1, j0, j1 = int(ok_r[0]), int(ok_r[-1]) + 1, int(ok_c[0]), int(ok_c[-1]) + 1
    if ri[i1 - 1] - ri[i0] != i1 - 1 - i0 or ci[j1 - 1] - ci[j0] != j1 - 1 - j0:
        _place_rows_dn(win, ri, ci, out, *limits)
        return
    if (i0, i1, j0, j1) != (0, out.shape[0], 0, out.shape[1]):
        out.fill(DN_MISSING)
    src = win[ri[i0] : ri[i1 - 1] + 1, ci[j0] : ci[j1 - 1] + 1]
    _place_window_dn(src, out[i0:i1, j0:j1], *limits)


def place_missing_dn(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:
    """:func:`place_missing` for a uint16 ``out`` of DN: fill its :data:`DN_MISSING`
    pixels, the first valid value of the time step's items winning."""
    if win.dtype != np.uint16:
        raise ValueError(f"DN stacks are read from uint16 files, not {win.dtype}")
    _place_missing_dn(win, ri, ci, out, *_dn_limits(conv))


@njit(nogil=True, cache=True, inline="always")
def _dn(dn: Any, nd_file: Any, nd_item: Any, saturated: Any) -> np.uint16:  # pragma: no cover
    """One raw value kept in DN: :data:`DN_MISSING` where :func:`_value` gives NaN
    (int32 compares: eight to a vector where int64 gives four)."""
    v = np.int32(dn)
    if (v == nd_file) | (v == nd_item) | (v >= saturated):
        return np.uint16(65535)
    return np.uint16(v)


@njit(nogil=True, cache=True)
def _place_window_dn(
    src: np.ndarray, dst: np.ndarray, nd_file: Any, nd_item: Any, saturated: Any
) -> None:  # pragma: no cover - compiled
    n, m = src.shape
    for i in range(n):
        s = src[i]
        d = dst[i]
        for j in range(m):
            d[j] = _dn(s[j], nd_file, nd_item, saturated)


@njit(nogil=True, cache=True)
def _place_rows_dn(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    nd_file: Any,
    nd_item: Any,
    saturated: Any,
) -> None:  # pragma: no cover - compiled
    """:func:`_place_rows` in DN: each source row kept once over the columns it spans
    (a vectorised pass), then gathered; a row on the same source row is a copy."""
    ny, nx = out.shape
    missing = np.uint16(65535)
    c_lo, c_hi = _column_span(ci, win.shape[1])
    row = np.empty(max(0, c_hi - c_lo + 1), dtype=np.uint16)
    last_r, last_i = -1, -1
    for i in range(ny):
        r = ri[i]
        o = out[i]
        if r < 0 or c_hi < 0:
            o[:] = missing
            continue
        if r == last_r:
            o[:] = out[last_i]
            continue
        src = win[r]
        for k in range(row.shape[0]):
            row[k] = _dn(src[c_lo + k], nd_file, nd_item, saturated)
        for j in range(nx):
            c = ci[j]
            o[j] = row[c - c_lo] if c >= 0 else missing
        last_r, last_i = r, i


@njit(nogil=True, cache=True)
def _place_missing_dn(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    nd_file: Any,
    nd_item: Any,
    saturated: Any,
) -> None:  # pragma: no cover - compiled
    missing = np.uint16(65535)
    for i in range(ri.shape[0]):
        r = ri[i]
        if r < 0:
            continue
        for j in range(ci.shape[0]):
            c = ci[j]
            if c < 0 or out[i, j] != missing:
                continue
            out[i, j] = _dn(win[r, c], nd_file, nd_item, saturated)


def dn_conversions(
    plans: Sequence[ItemPlan], bands: Sequence[str]
) -> dict[str, tuple[np.float32, np.float32]] | None:
    """Each band's (scale, offset) when the month's stacks can be kept in DN: every file
    of the bands uint16 and, per band, one scale above 0 and one offset for all items
    (:func:`~payesh.nanops.median_clear_dn_rows`): the files' dtype from their open
    datasets; else None (float32 stacks)."""
    out: dict[str, tuple[np.float32, np.float32]] = {}
    for band in bands:
        found = {
            (np.float32(p.scale_offset[band][0]), np.float32(p.scale_offset[band][1]))
            for p in plans
        }
        dtypes = {
            None if p.grids[band].dataset is None else p.grids[band].dataset.dtypes[0]
            for p in plans
        }
        if len(found) != 1 or dtypes != {"uint16"}:
            return None
        scale, offset = found.pop()
        if not scale > 0:
            return None
        out[band] = (scale, offset)
    return out
