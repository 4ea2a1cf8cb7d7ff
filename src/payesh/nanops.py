"""NaN-skipping reductions that never warn, for kernels run in Dask worker threads.

numpy's ``nanmedian``/``nanmean``/``nanmax`` warn ("All-NaN slice", "Mean of empty
slice") where every value is missing. Silencing that with ``warnings.catch_warnings()``
inside a kernel is not thread-safe: with several Dask threads, one thread's exit
restores the filters while another is still inside, and the warning escapes. Here
all-missing slices are filled before reducing and set back to NaN after, so no warning
is ever raised.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "median_clear",
    "median_clear_dn_rows",
    "median_clear_rows",
    "nanmax",
    "nanmean",
    "nanmedian",
]

Axis = int | tuple[int, ...]


def _prepare(a: np.ndarray, axis: Axis) -> tuple[np.ndarray, np.ndarray]:
    # no np.asarray: xarray's coarsen hands Dask arrays here, which must stay lazy
    empty = np.isnan(a).all(axis=axis, keepdims=True)
    return np.where(empty, 0, a), empty


def _finish(out: np.ndarray, empty: np.ndarray, axis: Axis) -> np.ndarray:
    return np.where(np.squeeze(empty, axis=axis), np.nan, out)


def nanmedian(a: np.ndarray, axis: Axis) -> np.ndarray:
    """``np.nanmedian`` along ``axis``; NaN where every value is NaN, without a warning.

    For numpy input this sorts once and picks the middle of each slice's valid values:
    numpy's own ``nanmedian`` falls back to a per-slice Python loop when NaNs are
    present, which made it the slowest step of a monthly composite (0.45 s for a
    400 × 400 × 6 stack; this takes about a tenth of that).
    """
    if not isinstance(a, np.ndarray):  # Dask and other duck arrays: stay lazy
        filled, empty = _prepare(a, axis)
        return _finish(np.nanmedian(filled, axis=axis), empty, axis)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(ax % a.ndim for ax in axes)
    keep = [d for d in range(a.ndim) if d not in axes]
    flat = np.transpose(a, keep + list(axes)).reshape([a.shape[d] for d in keep] + [-1])
    ordered = np.sort(flat, axis=-1)  # NaN sorts last
    n = (~np.isnan(flat)).sum(axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0)[..., None], axis=-1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def nanmean(a: np.ndarray, axis: Axis) -> np.ndarray:
    """``np.nanmean`` along ``axis``; NaN where every value is NaN, without a warning."""
    filled, empty = _prepare(a, axis)
    return _finish(np.nanmean(filled, axis=axis), empty, axis)


def nanmax(a: np.ndarray, axis: Axis) -> np.ndarray:
    """``np.nanmax`` along ``axis``; NaN where every value is NaN, without a warning."""
    filled, empty = _prepare(a, axis)
    return _finish(np.nanmax(filled, axis=axis), empty, axis)


@njit(nogil=True, cache=True, inline="always")
def _sort_columns(buf: np.ndarray) -> None:  # pragma: no cover - compiled
    """Sort each column of ``buf`` (time, x) in place: an odd-even transposition sort
    along time (``t_len`` rounds of compare-exchange of neighbours, which sorts any
    sequence of ``t_len``), each step one branch-free pass over the row that the
    compiler turns into vector min/max."""
    t_len, nx = buf.shape
    for r in range(t_len):
        for i in range(r % 2, t_len - 1, 2):
            for x in range(nx):
                a = buf[i, x]
                b = buf[i + 1, x]
                buf[i, x] = a if a < b else b
                buf[i + 1, x] = b if a < b else a


@njit(nogil=True, cache=True)
def _median_clear_kernel(
    stack: np.ndarray, clear: np.ndarray, out: np.ndarray, start: int, stop: int
) -> None:  # pragma: no cover - compiled
    """Row by row: the row's values into a (time, x) buffer, +inf where not clear or
    NaN; an odd-even transposition sort along time (``t_len`` rounds of compare-exchange
    of neighbours, which sorts any sequence of ``t_len``), each step one pass over the
    row that the compiler turns into vector min/max, with no data-dependent branch; then
    the middle of each pixel's ``n`` valid values, which sorted first.

    An insertion sort per pixel gives the same values, but its branches mispredict on
    every pixel: this is about 8 times faster at 6–13 observations (measured).
    """
    t_len, _, nx = stack.shape
    buf = np.empty((t_len, nx), dtype=stack.dtype)
    count = np.empty(nx, dtype=np.int64)
    inf = stack.dtype.type(np.inf)
    two = stack.dtype.type(2)
    for y in range(start, stop):
        count[:] = 0
        for t in range(t_len):
            for x in range(nx):
                v = stack[t, y, x]
                ok = clear[t, y, x] and v == v
                buf[t, x] = v if ok else inf
                count[x] += ok
        _sort_columns(buf)
        for x in range(nx):
            n = count[x]
            out[y, x] = np.nan if n == 0 else (buf[(n - 1) // 2, x] + buf[n // 2, x]) / two


def median_clear_dn_rows(
    stack: np.ndarray,
    clear: np.ndarray,
    out: np.ndarray,
    rows: slice,
    scale: np.float32,
    offset: np.float32,
) -> None:
    """:func:`median_clear_rows` of a uint16 ``stack`` of DN (65535: missing) into float32
    values ``DN * scale + offset``: the same values as converting the stack first, for a
    ``scale`` above 0 (the conversion keeps the order of the DNs, so the middle values
    are those of the middle DNs, converted and averaged in float32 the same way), with
    half the memory traffic and integer compares."""
    if stack.shape != clear.shape or stack.shape[1:] != out.shape or stack.ndim != 3:
        raise ValueError(
            f"stack {stack.shape}, clear {clear.shape} and out {out.shape} do not match"
        )
    if stack.dtype != np.uint16 or not scale > 0:
        raise ValueError(f"a uint16 stack and a scale above 0, not {stack.dtype} and {scale}")
    start, stop, _ = rows.indices(out.shape[0])
    _median_clear_dn_kernel(stack, clear, out, start, stop, np.float32(scale), np.float32(offset))


@njit(nogil=True, cache=True)
def _median_clear_dn_kernel(
    stack: np.ndarray,
    clear: np.ndarray,
    out: np.ndarray,
    start: int,
    stop: int,
    scale: np.float32,
    offset: np.float32,
) -> None:  # pragma: no cover - compiled
    """:func:`_median_clear_kernel` on DN, 65535 standing for +inf; the two middle DNs
    converted as :func:`payesh.sources.placing._value` converts (two rounded float32
    steps) and averaged as the float32 kernel averages."""
    t_len, _, nx = stack.shape
    buf = np.empty((t_len, nx), dtype=np.uint16)
    count = np.empty(nx, dtype=np.int64)
    missing = np.uint16(65535)
    two = np.float32(2)
    for y in range(start, stop):
        count[:] = 0
        for t in range(t_len):
            for x in range(nx):
                v = stack[t, y, x]
                ok = clear[t, y, x] and v != missing
                buf[t, x] = v if ok else missing
                count[x] += ok
        _sort_columns(buf)
        for x in range(nx):
            n = count[x]
            if n == 0:
                out[y, x] = np.nan
            else:
                lo = np.float32(buf[(n - 1) // 2, x]) * scale + offset
                hi = np.float32(buf[n // 2, x]) * scale + offset
                out[y, x] = (lo + hi) / two


def median_clear(stack: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the values of ``stack`` where ``clear`` (and not NaN).

    The same values as ``nanmedian(np.where(clear, stack, nan), axis=0)`` — the middle
    of the sorted valid values, the mean of the two middle ones for an even count, in
    ``stack``'s dtype — by a sorting network in compiled code (a month has a handful of
    observations), without building the masked copy.
    """
    if stack.shape != clear.shape:
        raise ValueError(f"stack {stack.shape} and clear {clear.shape} differ in shape")
    t_len = stack.shape[0]
    flat = stack.reshape(t_len, 1, -1)
    out = np.empty((1, flat.shape[2]), dtype=stack.dtype)
    _median_clear_kernel(flat, clear.reshape(t_len, 1, -1), out, 0, 1)
    return out.reshape(stack.shape[1:])


def median_clear_rows(stack: np.ndarray, clear: np.ndarray, out: np.ndarray, rows: slice) -> None:
    """``out[rows] = median_clear(stack[:, rows], clear[:, rows])`` for (time, y, x)
    arrays, in place and without copying the rows out: row ranges of one block can then
    be reduced on several threads at once."""
    if stack.shape != clear.shape or stack.shape[1:] != out.shape or stack.ndim != 3:
        raise ValueError(
            f"stack {stack.shape}, clear {clear.shape} and out {out.shape} do not match"
        )
    start, stop, _ = rows.indices(out.shape[0])
    _median_clear_kernel(stack, clear, out, start, stop)
