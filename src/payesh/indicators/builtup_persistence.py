"""When each pixel became persistently built-up (SPEC §5): ``first_seen`` and its confidence.

A pixel is *newly built* when it was not built-up at the start of the period and its
built-up probability stays above a threshold in ``n`` of the last ``m`` clear monthly
composites (persistence: a bright scene, a ploughed field or a cloudy month does not make
a building). :func:`persistent_builtup` dates each such pixel (``first_seen``);
:func:`persistence` also gives, from the same read, the mean probability since then (the
confidence term of :mod:`payesh.indicators.sites`). The rule is a numba kernel over
batches of pixels (:data:`_BATCH_PX`), lifted over the blocks with ``xr.apply_ufunc``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from numba import njit

from payesh.errors import PayeshError
from payesh.parallel import whole_along

__all__ = [
    "BUILTUP_THRESHOLD",
    "NAT",
    "mean_prob_since",
    "persistence",
    "persistent_builtup",
]

BUILTUP_THRESHOLD = 0.5
"""Probability above which a pixel-month counts as built-up (the classifier's own
decision boundary; its held-out precision/recall are measured there)."""

NAT = np.datetime64("NaT", "ns")
"""Not a time, in nanoseconds: ``first_seen`` of a pixel never newly built."""


_BATCH_PX = 1 << 15
"""Pixels the persistence kernels take at once: their int64/bool temporaries (a dozen
arrays of pixels × months) stay a few MB whatever the size of the block Dask hands them."""


@njit(nogil=True, cache=True)
def _first_seen_index(
    p: np.ndarray, threshold: float, n: int, m: int, baseline: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out[i]``: the index (along time) of pixel ``i``'s ``first_seen`` month in
    probabilities ``p`` (n_pix, time), -1 where it is not newly built.

    Per pixel, as :func:`persistent_builtup` defines it: its clear (finite) months in time
    order; ``above`` where over ``threshold``; existing if above in any of the first
    ``baseline``; a window (the last ``m`` clear months up to one) is satisfied from the
    ``baseline``-th on when ``n`` of it are above; new when not existing, with at least
    ``baseline + n`` clear months and the last window satisfied; first_seen is the first
    above month of the window that opens the final unbroken stretch of satisfied windows.
    """
    n_pix, n_t = p.shape
    months = np.empty(n_t, dtype=np.int64)  # the pixel's clear months, in time order
    above = np.empty(n_t, dtype=np.bool_)
    for i in range(n_pix):
        n_clear = 0
        for t in range(n_t):
            v = p[i, t]
            if np.isfinite(v):
                months[n_clear] = t
                above[n_clear] = v > threshold
                n_clear += 1
        out[i] = -1
        if n_clear == 0 or n_clear < baseline + n:
            continue
        existing = False
        for q in range(min(baseline, n_clear)):
            existing |= above[q]
        if existing:
            continue
        last_unsat = -1
        satisfied = False
        for q in range(n_clear):
            count = 0
            for r in range(max(q - m + 1, 0), q + 1):
                count += above[r]
            satisfied = q >= baseline and count >= n
            if not satisfied:
                last_unsat = q
        if not satisfied:  # the last window
            continue
        q0 = last_unsat + 1
        j = 0
        for q in range(max(q0 - m + 1, 0), q0 + 1):
            if above[q]:
                j = q
                break
        out[i] = months[j]


def _persistence_batch(
    p: np.ndarray, times: np.ndarray, threshold: float, n: int, m: int, baseline: int
) -> np.ndarray:
    """first_seen (n_pix,) datetime64[ns] of probabilities ``p`` (n_pix, time)."""
    index = np.empty(p.shape[0], dtype=np.int64)
    _first_seen_index(p, float(threshold), int(n), int(m), int(baseline), index)
    if not len(times):
        return np.full(p.shape[0], NAT)
    return np.where(index >= 0, times[np.maximum(index, 0)], NAT)


def _mean_since_batch(p: np.ndarray, first_seen: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Mean (float64 sums, float32 result) of the clear ``p`` (n_pix, time) in months at or
    after each pixel's ``first_seen``; NaN where none (NaT: never).

    Only the newly built pixels (few) are summed: each row's sum is the same whichever
    rows are taken with it."""
    out = np.full(p.shape[0], np.nan, dtype="float32")
    new = np.flatnonzero(~np.isnat(first_seen))
    if not new.size:
        return out
    p, first_seen = p[new], first_seen[new]
    take = (times[None, :] >= first_seen[:, None]) & np.isfinite(p)
    total = np.where(take, p, 0).sum(axis=-1, dtype="float64")
    count = take.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[new] = np.where(count > 0, total / count, np.nan)
    return out


def _persistence_kernel(
    prob: np.ndarray,
    *,
    times: np.ndarray,
    threshold: float,
    n: int,
    m: int,
    baseline: int,
    with_mean: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """first_seen (…,) datetime64[ns] from probabilities (…, time), in batches of
    :data:`_BATCH_PX` pixels; ``with_mean``: also the mean probability since first_seen."""
    lead = prob.shape[:-1]
    p = prob.reshape(-1, prob.shape[-1])
    first_seen = np.empty(p.shape[0], dtype="datetime64[ns]")
    mean = np.empty(p.shape[0], dtype="float32") if with_mean else None
    for lo in range(0, p.shape[0], _BATCH_PX):
        part = p[lo : lo + _BATCH_PX]
        fs = _persistence_batch(part, times, threshold, n, m, baseline)
        first_seen[lo : lo + _BATCH_PX] = fs
        if mean is not None:
            mean[lo : lo + _BATCH_PX] = _mean_since_batch(part, fs, times)
    if mean is None:
        return first_seen.reshape(lead)
    return first_seen.reshape(lead), mean.reshape(lead)


def _mean_since_kernel(
    prob: np.ndarray, first_seen: np.ndarray, *, times: np.ndarray
) -> np.ndarray:
    p = prob.reshape(-1, prob.shape[-1])
    fs = first_seen.reshape(-1)
    out = np.empty(p.shape[0], dtype="float32")
    for lo in range(0, p.shape[0], _BATCH_PX):
        out[lo : lo + _BATCH_PX] = _mean_since_batch(
            p[lo : lo + _BATCH_PX], fs[lo : lo + _BATCH_PX], times
        )
    return out.reshape(prob.shape[:-1])


def persistent_builtup(
    prob: xr.DataArray,
    *,
    threshold: float = BUILTUP_THRESHOLD,
    n: int = 3,
    m: int = 4,
    baseline: int = 1,
) -> xr.DataArray:
    """Date each pixel became persistently built-up during the period.

    Only clear composites count (NaN months are skipped, neither built nor not). A pixel
    above ``threshold`` in any of its first ``baseline`` clear composites was built before
    the period (existing, not new). A pixel is newly built when, at its last clear
    composite, at least ``n`` of its last ``m`` clear composites are above threshold;
    ``first_seen`` is the first above-threshold month of the window that opens the final
    unbroken stretch of such windows (the start of the run that is still standing).

    Defaults: 3 of 4 clear months tolerates one dark or misclassified month while a
    single bright scene (1 of 4) or a two-month cleared field cannot qualify; requiring
    the run to last to the end drops temporary bright surfaces. A baseline of one clear
    composite is conservative: anything bright at the start is not reported as new.

    Parameters
    ----------
    prob
        ``builtup_prob`` (time, y, x), unitless in [0, 1], NaN where not clear.
    threshold
        Probability above which a pixel-month is built-up.
    n, m
        Persistence: above threshold in ≥ ``n`` of the last ``m`` clear composites.
    baseline
        Number of first clear composites defining what already existed.

    Returns
    -------
    xr.DataArray
        ``first_seen`` (y, x) datetime64[ns], NaT where not newly built; lazy on Dask.
    """
    first_seen, _ = _persistence(prob, threshold, n, m, baseline, with_mean=False)
    return first_seen


def persistence(
    prob: xr.DataArray,
    *,
    threshold: float = BUILTUP_THRESHOLD,
    n: int = 3,
    m: int = 4,
    baseline: int = 1,
) -> xr.Dataset:
    """:func:`persistent_builtup` and, from the same read of ``prob``, the confidence term
    of :func:`extract_sites`.

    Returns
    -------
    xr.Dataset
        (y, x): ``first_seen`` (as :func:`persistent_builtup`) and ``mean_prob_since``
        (float32, unitless: mean ``prob`` of the pixel's clear months at or after
        ``first_seen``, summed in float64; NaN where not newly built). Lazy on Dask.
    """
    first_seen, mean = _persistence(prob, threshold, n, m, baseline, with_mean=True)
    assert mean is not None
    return xr.Dataset({"first_seen": first_seen, "mean_prob_since": mean})


def _persistence(
    prob: xr.DataArray, threshold: float, n: int, m: int, baseline: int, *, with_mean: bool
) -> tuple[xr.DataArray, xr.DataArray | None]:
    if not 1 <= n <= m:
        raise PayeshError(f"persistence needs 1 <= n <= m, got n={n}, m={m}")
    times = prob["time"].values.astype("datetime64[ns]")
    dtypes = [np.dtype("datetime64[ns]")] + ([np.dtype("float32")] if with_mean else [])
    out = xr.apply_ufunc(
        _persistence_kernel,
        whole_along(prob, "time"),
        input_core_dims=[["time"]],
        output_core_dims=[[] for _ in dtypes],
        dask="parallelized",
        output_dtypes=dtypes,
        kwargs={
            "times": times,
            "threshold": float(threshold),
            "n": int(n),
            "m": int(m),
            "baseline": int(baseline),
            "with_mean": with_mean,
        },
    )
    first_seen, mean = out if with_mean else (out, None)
    first_seen = first_seen.drop_vars("time", errors="ignore").rename("first_seen")
    first_seen.attrs = {}  # not prob's: a datetime has no `units` attribute (xarray encodes it)
    first_seen = first_seen.assign_attrs(
        long_name="first seen built-up",
        description=(
            f"first month of the persistent built-up run (prob > {threshold} in >= {n} of "
            f"the last {m} clear composites, not built in the first {baseline} clear "
            "composite(s)); NaT = not newly built"
        ),
    )
    if mean is not None:
        mean = mean.drop_vars("time", errors="ignore").rename("mean_prob_since")
        mean.attrs = {
            "units": "1",
            "long_name": "mean built-up probability since first seen",
            "description": "mean prob of the clear months at or after first_seen; NaN if none",
        }
    return first_seen, mean


def mean_prob_since(prob: xr.DataArray, first_seen: np.ndarray) -> np.ndarray:
    """Mean probability of each pixel over its clear months since ``first_seen``."""
    fs = xr.DataArray(first_seen, dims=prob.dims[1:])
    if prob.chunks is not None:  # block by block, as prob is read
        spatial = dict(zip(prob.dims, prob.chunks, strict=True))
        fs = fs.chunk({d: spatial[d] for d in fs.dims})
    mean = xr.apply_ufunc(
        _mean_since_kernel,
        whole_along(prob, "time"),
        fs,
        input_core_dims=[["time"], []],
        dask="parallelized",
        output_dtypes=[np.dtype("float32")],
        kwargs={"times": prob["time"].values.astype("datetime64[ns]")},
    )
    return np.asarray(mean.values)
