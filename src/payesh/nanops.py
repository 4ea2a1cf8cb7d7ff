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

__all__ = ["nanmax", "nanmean", "nanmedian"]

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
