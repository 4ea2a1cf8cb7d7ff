"""The built-up classifier: spectral features, training, skops persistence, prediction.

Features are the six Sentinel-2 bands of a monthly composite plus five normalised-
difference indices (formulas below). The model is a
:class:`~sklearn.ensemble.HistGradientBoostingClassifier`, saved with skops (never
pickle) next to a Markdown model card, and loaded only when every type in the file is on
an allow-list of scikit-learn / numpy types.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from payesh.errors import ModelError, PayeshError

__all__ = [
    "BANDS",
    "FEATURE_NAMES",
    "BuiltupModel",
    "builtup_probability",
    "default_model_path",
    "feature_stack",
    "load_model",
    "models_dir",
    "save_model",
    "spectral_features",
    "train_builtup",
]

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
"""Sentinel-2 bands of a composite, in the order of the feature axis."""

INDICES: tuple[str, ...] = ("ndvi", "ndbi", "mndwi", "bsi", "ndwi")
FEATURE_NAMES: tuple[str, ...] = BANDS + INDICES
"""Names of the columns of :func:`feature_stack`."""

# scikit-learn estimators and their parts; numpy only for data types and random states,
# never numpy functions (``numpy.load`` and friends can read or run arbitrary files).
_TRUSTED = re.compile(
    r"^(sklearn\.[\w.]+"
    r"|numpy\.(ndarray|dtype|dtypes\.\w+|bool_?|str_|bytes_|(u?int|float|complex)\d+"
    r"|random\.[\w.]*(RandomState|Generator|MT19937|PCG64|SeedSequence))"
    r"|builtins\.(dict|list|tuple|str|int|float|bool|NoneType))$"
)


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised difference ``(a − b) / (a + b)``; NaN where the sum is 0 or NaN."""
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s != 0, (a - b) / s, np.nan)


def feature_stack(bands: np.ndarray) -> np.ndarray:
    """Spectral features of reflectances, along the last axis.

    Parameters
    ----------
    bands
        ``(…, 6)`` surface reflectance (unitless, ~0–1) in the order of :data:`BANDS`.

    Returns
    -------
    np.ndarray
        ``(…, 11)`` float32, in the order of :data:`FEATURE_NAMES`: the six bands, then

        - NDVI = (nir − red)/(nir + red) — Rouse et al. 1974 (NASA SP-351);
        - NDBI = (swir16 − nir)/(swir16 + nir) — Zha, Gao & Ni 2003, IJRS 24:583;
        - MNDWI = (green − swir16)/(green + swir16) — Xu 2006, IJRS 27:3025;
        - BSI = ((swir16 + red) − (nir + blue))/((swir16 + red) + (nir + blue)) —
          Rikimaru, Roy & Miyatake 2002, Tropical Ecology 43:39;
        - NDWI = (green − nir)/(green + nir) — McFeeters 1996, IJRS 17:1425.

        Indices lie in [−1, 1] for non-negative reflectance; NaN where undefined.
    """
    x = np.asarray(bands, dtype="float64")
    if x.shape[-1] != len(BANDS):
        raise PayeshError(f"feature_stack needs {len(BANDS)} bands {BANDS}, got {x.shape[-1]}")
    blue, green, red, nir, swir16, _ = (x[..., i] for i in range(len(BANDS)))
    idx = [
        _nd(nir, red),
        _nd(swir16, nir),
        _nd(green, swir16),
        _nd(swir16 + red, nir + blue),
        _nd(green, nir),
    ]
    return np.concatenate([x, np.stack(idx, axis=-1)], axis=-1).astype("float32")


def _band_array(composite: xr.Dataset) -> xr.DataArray:
    missing = [b for b in BANDS if b not in composite]
    if missing:
        raise PayeshError(f"composite lacks band(s) {missing}; needs {list(BANDS)}")
    arr = composite[list(BANDS)].to_dataarray("band")
    arr = arr.transpose(*[d for d in arr.dims if d != "band"], "band")
    if arr.chunks is not None:
        arr = arr.chunk({"band": -1})
    return arr


def spectral_features(composite: xr.Dataset) -> xr.DataArray:
    """Spectral features of a monthly composite, lazily.

    Parameters
    ----------
    composite
        Dataset with the bands of :data:`BANDS` (surface reflectance, unitless), dims
        e.g. (time, y, x).

    Returns
    -------
    xr.DataArray
        ``features`` (…, feature) float32 with ``feature`` = :data:`FEATURE_NAMES`
        (see :func:`feature_stack` for the formulas).
    """
    arr = _band_array(composite)
    out = xr.apply_ufunc(
        feature_stack,
        arr,
        input_core_dims=[["band"]],
        output_core_dims=[["feature"]],
        dask="parallelized",
        output_dtypes=["float32"],
        dask_gufunc_kwargs={"output_sizes": {"feature": len(FEATURE_NAMES)}},
    )
    return out.assign_coords(feature=list(FEATURE_NAMES)).rename("features")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class BuiltupModel:
    """A trained built-up classifier and what is known about it.

    Attributes
    ----------
    estimator
        A fitted scikit-learn classifier with ``predict_proba``; class 1 = built-up.
    feature_names
        Names of its input columns, in order (:data:`FEATURE_NAMES`).
    version
        Version string; part of the file name (``builtup-<version>.skops``).
    metrics
        Held-out metrics: precision, recall, f1, accuracy (unitless), n_train, n_test.
    training
        Free text describing the training data.
    created
        ISO date-time (UTC) of training.
    """

    estimator: Any
    feature_names: tuple[str, ...]
    version: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    training: str = ""
    created: str = ""


def train_builtup(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
    test_size: float = 0.25,
    version: str | None = None,
    training: str = "",
    max_iter: int = 40,
    max_leaf_nodes: int = 15,
    learning_rate: float = 0.25,
) -> BuiltupModel:
    """Train the built-up classifier and measure it on a held-out split.

    Histogram gradient boosting is used because it trains in seconds on millions of
    pixels, accepts NaN features natively (a missing index goes down a learnt branch),
    needs no feature scaling, and captures the non-linear, non-monotone spectral
    signatures of roofs, roads, soil and water without hand-set constraints.

    Parameters
    ----------
    features
        ``(n, f)`` feature rows (e.g. :func:`feature_stack` of labelled pixels).
    labels
        ``(n,)`` 1 = built-up, 0 = not.
    seed
        Seed of the split and of the estimator.
    feature_names
        Column names, length ``f``.
    test_size
        Held-out share (stratified), unitless.
    version
        Model version; default the UTC training time ``YYYYMMDDTHHMMSS``.
    training
        Description of the training data, for the model card.
    max_iter, max_leaf_nodes, learning_rate
        Boosting size. Prediction time grows with the number of trees, and prediction
        over every pixel-month is the classifier's cost in a run. Measured on the demo
        city (a held-out seed): 200 trees × 31 leaves predict 0.11 Mpx/s per run at
        F1 0.9997; 40 × 15 at rate 0.25 predict 0.44 Mpx/s at F1 0.9996. Real labels
        (issue #6) may need more capacity: measure again then.

    Returns
    -------
    BuiltupModel
        Fitted on the training split; ``metrics`` from the held-out split.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
    from sklearn.model_selection import train_test_split

    x = np.asarray(features, dtype="float32")
    y = np.asarray(labels).astype("int64")
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise PayeshError(f"features (n, f) and labels (n,) expected, got {x.shape} and {y.shape}")
    if x.shape[1] != len(feature_names):
        raise PayeshError(f"{x.shape[1]} feature columns but {len(feature_names)} names")
    if set(np.unique(y)) != {0, 1}:
        raise PayeshError("labels must contain both classes 0 (not built-up) and 1 (built-up)")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    est = HistGradientBoostingClassifier(
        random_state=seed,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        learning_rate=learning_rate,
        early_stopping=False,
    )
    est.fit(x_tr, y_tr)
    pred = est.predict(x_te)
    metrics = {
        "precision": float(precision_score(y_te, pred, zero_division=0)),
        "recall": float(recall_score(y_te, pred, zero_division=0)),
        "f1": float(f1_score(y_te, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y_te, pred)),
        "n_train": float(len(y_tr)),
        "n_test": float(len(y_te)),
    }
    now = dt.datetime.now(dt.UTC)
    return BuiltupModel(
        estimator=est,
        feature_names=tuple(feature_names),
        version=version or now.strftime("%Y%m%dT%H%M%S"),
        metrics=metrics,
        training=training,
        created=now.isoformat(timespec="seconds"),
    )


def models_dir() -> Path:
    """The repository's ``models/`` folder."""
    return Path(__file__).resolve().parents[2] / "models"


def _card(model: BuiltupModel) -> str:
    m = model.metrics
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in m.items())
    return f"""# Built-up classifier {model.version}

- **Version:** {model.version}
- **Created (UTC):** {model.created}
- **Estimator:** `{type(model.estimator).__name__}` ({type(model.estimator).__module__})
- **File:** `builtup-{model.version}.skops` (skops; load with `payesh.classifier.load_model`)

## Training data

{model.training or "(not described)"}

## Features

{", ".join(f"`{n}`" for n in model.feature_names)}

Bands are Sentinel-2 L2A surface reflectance; indices as in `payesh.classifier.feature_stack`.

## Held-out metrics (class 1 = built-up)

| metric | value |
|---|---|
{rows}
"""


def save_model(model: BuiltupModel, directory: str | Path, *, make_current: bool = True) -> Path:
    """Write ``builtup-<version>.skops`` and its model card ``builtup-<version>.md``;
    with ``make_current``, name it in ``builtup-current.txt`` so runs use it.

    Parameters
    ----------
    model
        The trained model.
    directory
        Folder to write into (created if needed), e.g. :func:`models_dir`.

    Returns
    -------
    Path
        The ``.skops`` file written.
    """
    import skops.io as sio

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"builtup-{model.version}.skops"
    payload = {
        "estimator": model.estimator,
        "feature_names": list(model.feature_names),
        "version": model.version,
        "metrics": json.dumps(dict(model.metrics)),
        "training": model.training,
        "created": model.created,
    }
    sio.dump(payload, path)
    path.with_suffix(".md").write_text(_card(model), encoding="utf-8")
    if make_current:
        (folder / CURRENT).write_text(path.name + "\n", encoding="utf-8")
    return path


def _is_trusted(type_name: str) -> bool:
    return _TRUSTED.match(type_name) is not None


def load_model(path: str | Path) -> BuiltupModel:
    """Load a model written by :func:`save_model`, trusting only known types.

    The file's types are listed with ``skops.io.get_untrusted_types``; each must be a
    scikit-learn type, a numpy data type or random state, or a plain builtin, else nothing
    is loaded (numpy *functions* are refused too).

    Raises
    ------
    ModelError
        Naming the path: missing, unreadable, holding untrusted types, or not a model.
    """
    import skops.io as sio

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: model file not found; run `payesh train-builtup`")
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as err:
        raise ModelError(f"{p}: not a readable skops file ({err})") from err
    bad = sorted(t for t in untrusted if not _is_trusted(t))
    if bad:
        raise ModelError(f"{p}: refusing to load untrusted types {bad}; retrain the model")
    try:
        payload = sio.load(p, trusted=list(untrusted))
    except Exception as err:
        raise ModelError(f"{p}: cannot load the model ({err})") from err
    if not isinstance(payload, dict) or "estimator" not in payload:
        raise ModelError(f"{p}: not a payesh built-up model (no estimator)")
    est = payload["estimator"]
    if not hasattr(est, "predict_proba"):
        raise ModelError(f"{p}: estimator {type(est).__name__} has no predict_proba")
    return BuiltupModel(
        estimator=est,
        feature_names=tuple(payload.get("feature_names", FEATURE_NAMES)),
        version=str(payload.get("version", p.stem.removeprefix("builtup-"))),
        metrics=json.loads(payload.get("metrics", "{}")),
        training=str(payload.get("training", "")),
        created=str(payload.get("created", "")),
    )


CURRENT = "builtup-current.txt"
"""File in ``models/`` naming the model runs use (file times mean nothing after a clone)."""


def default_model_path(directory: str | Path | None = None) -> Path:
    """The model named by ``models/builtup-current.txt``, else the last ``builtup-*.skops``
    by name.

    Raises
    ------
    ModelError
        If there is none, or the current one named is missing.
    """
    folder = Path(directory) if directory is not None else models_dir()
    pointer = folder / CURRENT
    if pointer.is_file():
        path = folder / pointer.read_text(encoding="utf-8").strip()
        if not path.is_file():
            raise ModelError(f"{pointer} names {path.name}, which is not in {folder}")
        return path
    files = sorted(folder.glob("builtup-*.skops"), key=lambda f: f.name)
    if not files:
        raise ModelError(f"no built-up model in {folder}; run `payesh train-builtup`")
    return files[-1]


# -------------------------------------------------------------------------- prediction


def _predict_kernel(bands: np.ndarray, *, estimator: Any) -> np.ndarray:
    out = np.full(bands.shape[:-1], np.nan, dtype="float32")
    valid = np.isfinite(bands).all(axis=-1)
    if valid.any():
        feats = feature_stack(bands[valid])
        out[valid] = estimator.predict_proba(feats)[:, 1].astype("float32")
    return out


def builtup_probability(composite: xr.Dataset, model: BuiltupModel) -> xr.DataArray:
    """Probability that each pixel of each month is built-up.

    Parameters
    ----------
    composite
        Monthly composite with the bands of :data:`BANDS` (time, y, x), reflectance.
    model
        The classifier (:func:`load_model`); its features must be :data:`FEATURE_NAMES`.

    Returns
    -------
    xr.DataArray
        ``builtup_prob`` (time, y, x) float32 in [0, 1], NaN where any band is NaN;
        lazy (predicted block by block) on Dask-backed input.
    """
    if tuple(model.feature_names) != FEATURE_NAMES:
        raise ModelError(
            f"model {model.version} expects features {model.feature_names}, this code makes "
            f"{FEATURE_NAMES}; retrain with `payesh train-builtup`"
        )
    arr = _band_array(composite)
    out = xr.apply_ufunc(
        _predict_kernel,
        arr,
        input_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=["float32"],
        kwargs={"estimator": model.estimator},
    )
    return out.rename("builtup_prob").assign_attrs(
        units="1",
        long_name="built-up probability",
        description=f"P(built-up) from classifier {model.version} on the monthly composite",
        model_version=model.version,
    )
