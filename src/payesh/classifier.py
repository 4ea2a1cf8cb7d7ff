"""The built-up classifier: spectral features, training, skops persistence, prediction.

Features are Sentinel-2 bands of a monthly composite plus spectral indices whose
formulas come from spyndex (:mod:`payesh.features`); every feature is pixel-local, so
prediction works on any (time, y, x) block. The model is a
:class:`~sklearn.ensemble.HistGradientBoostingClassifier` (:mod:`payesh.model`), saved
with skops (never pickle) next to a Markdown model card, and loaded only when every type
in the file is on an allow-list of scikit-learn / numpy types (:mod:`payesh.model_io`).

This module predicts (:func:`builtup_probability`) and re-exports the public names of
those three, so that ``from payesh.classifier import …`` gives all of the classifier.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import xarray as xr

from payesh.errors import ModelError, PayeshError
from payesh.features import (
    BANDS,
    FEATURE_NAMES,
    INDICES,
    RGBN_FEATURE_NAMES,
    SpectralIndex,
    feature_stack,
    fill_features,
    index_function,
    required_bands,
    spectral_features,
)
from payesh.features import SPYNDEX_BANDS as SPYNDEX_BANDS
from payesh.forest import predict_positive
from payesh.model import BuiltupModel, fit_estimator, train_builtup
from payesh.model_io import CURRENT as CURRENT
from payesh.model_io import (
    TREES_SUFFIX,
    compiled_path,
    default_model_path,
    load_model,
    models_dir,
    save_model,
    write_compiled,
)
from payesh.parallel import each_run

__all__ = [
    "BANDS",
    "FEATURE_NAMES",
    "INDICES",
    "RGBN_FEATURE_NAMES",
    "TREES_SUFFIX",
    "BuiltupModel",
    "SpectralIndex",
    "builtup_probability",
    "compiled_path",
    "default_model_path",
    "feature_stack",
    "fit_estimator",
    "index_function",
    "load_model",
    "model_bands",
    "models_dir",
    "required_bands",
    "save_model",
    "spectral_features",
    "train_builtup",
    "write_compiled",
]

# -------------------------------------------------------------------------- prediction


_FEATURE_BLOCK_PX = 32768
"""Pixels whose features are made and classified together by :func:`_probability_planes`:
their feature planes (14 × 128 kB) are still in the core's cache when the trees read them."""


def _probability_planes(
    *planes: np.ndarray,
    estimator: Any,
    band_names: tuple[str, ...],
    feature_names: tuple[str, ...],
) -> np.ndarray:
    """P(built-up), float32, of pixels given as one array per band (``band_names``, all of
    one shape); NaN where a band is not finite.

    The bands are read where they lie (a composite keeps one plane per band), in runs of
    :data:`_FEATURE_BLOCK_PX` pixels, on a pool of threads: a run's features, then its
    trees, while they are in the core's cache. The values are those of
    :func:`feature_stack` and :func:`payesh.forest.predict_positive` on the stacked bands,
    pixel by pixel (every step is pixel-local; tests compare the two).
    """
    shape = np.shape(planes[0])
    flat = [np.asarray(p).reshape(-1) for p in planes]  # a view for contiguous planes
    n = flat[0].size
    out = np.empty(n, dtype="float32")

    def run(lo: int) -> None:
        hi = min(n, lo + _FEATURE_BLOCK_PX)
        part = [f[lo:hi] for f in flat]
        valid = np.isfinite(part[0])
        for f in part[1:]:
            valid &= np.isfinite(f)
        dense = bool(valid.all())  # the usual month: no copy of the valid pixels' bands
        cols = {
            b: np.asarray(f if dense else f[valid], dtype="float32")
            for b, f in zip(band_names, part, strict=True)
        }
        m = hi - lo if dense else int(np.count_nonzero(valid))
        dst = out[lo:hi]
        if not dense:
            dst[:] = np.nan
        if m == 0:
            return
        feats = _feature_buffer(len(feature_names), m)
        fill_features(feats, cols, feature_names)
        # compiled trees: predict_proba's values bit for bit, several times faster;
        # on this thread (the runs are the parallel jobs)
        prob = predict_positive(estimator, feats.T, threads=1)
        if dense:
            dst[:] = prob
        else:
            dst[valid] = prob

    each_run(n, _FEATURE_BLOCK_PX, run, "features")
    return out.reshape(shape)


_buffers = threading.local()


def _feature_buffer(n_features: int, pixels: int) -> np.ndarray:
    """This thread's float32 feature planes (``n_features``, ``pixels``), reused from run
    to run (a fresh 2 MB array each run would be mapped and faulted in afresh)."""
    buf = getattr(_buffers, "feats", None)
    if buf is None or buf.shape[0] != n_features or buf.shape[1] < pixels:
        buf = _buffers.feats = np.empty((n_features, pixels), dtype="float32")
    return buf[:, :pixels]


def model_bands(model: BuiltupModel) -> tuple[str, ...]:
    """The composite bands ``model`` needs (in :data:`BANDS` order).

    Raises
    ------
    ModelError
        If the model's features are not ones this code can compute.
    """
    try:
        return required_bands(tuple(model.feature_names))
    except ModelError as err:
        raise ModelError(
            f"model {model.version} expects features {model.feature_names} this code cannot "
            f"make ({err}); retrain with `payesh train-builtup`"
        ) from err


def builtup_probability(composite: xr.Dataset, model: BuiltupModel) -> xr.DataArray:
    """Probability that each pixel of each month is built-up.

    Pixel-local: each pixel-month's probability depends on that pixel-month's bands
    only, so any (time, y, x) block — one month, one spatial chunk — gives the same
    values as the whole cube.

    Parameters
    ----------
    composite
        Monthly composite (time, y, x) with the bands the model needs
        (:func:`model_bands`; :data:`BANDS` for the default model), reflectance.
    model
        The classifier (:func:`load_model`).

    Returns
    -------
    xr.DataArray
        ``builtup_prob`` (time, y, x) float32 in [0, 1], NaN where any band is NaN;
        lazy (predicted block by block) on Dask-backed input.
    """
    bands = model_bands(model)
    missing = [b for b in bands if b not in composite]
    if missing:
        raise PayeshError(f"composite lacks band(s) {missing}; needs {list(bands)}")
    # the bands as they are (one plane each): no stacked copy along a band axis
    out = xr.apply_ufunc(
        _probability_planes,
        *(composite[b] for b in bands),
        dask="parallelized",
        output_dtypes=["float32"],
        kwargs={
            "estimator": model.estimator,
            "band_names": bands,
            "feature_names": tuple(model.feature_names),
        },
    )
    return out.rename("builtup_prob").assign_attrs(
        units="1",
        long_name="built-up probability",
        description=f"P(built-up) from classifier {model.version} on the monthly composite",
        model_version=model.version,
    )
