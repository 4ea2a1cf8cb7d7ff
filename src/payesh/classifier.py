"""The built-up classifier: spectral features, training, skops persistence, prediction.

Features are Sentinel-2 bands of a monthly composite plus spectral indices whose
formulas come from `spyndex <https://github.com/awesome-spectral-indices/spyndex>`_
(Awesome Spectral Indices): each formula is checked (arithmetic on band symbols only) and
compiled once into a vectorised numpy expression evaluated on contiguous band planes.
On one core that is as fast as ``spyndex.computeIndex`` (both ≥ 10 Mpx/s for 8 indices,
`benchmarks/classifier.py`), and ~30× faster than the prediction itself. Every feature
is pixel-local, so prediction works on any (time, y, x) block.
The model is a :class:`~sklearn.ensemble.HistGradientBoostingClassifier`, saved with
skops (never pickle) next to a Markdown model card, and loaded only when every type in
the file is on an allow-list of scikit-learn / numpy types.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from payesh.errors import ModelError, PayeshError
from payesh.forest import (
    CompiledClassifier,
    compile_forest,
    forest_arrays,
    forest_from_arrays,
    predict_positive,
)
from payesh.parallel import each_run

log = logging.getLogger(__name__)

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

# scikit-learn estimators and their parts; numpy only for data types and random states,
# never numpy functions (``numpy.load`` and friends can read or run arbitrary files).
_TRUSTED = re.compile(
    r"^(sklearn\.[\w.]+"
    r"|numpy\.(ndarray|dtype|dtypes\.\w+|bool_?|str_|bytes_|(u?int|float|complex)\d+"
    r"|random\.[\w.]*(RandomState|Generator|MT19937|PCG64|SeedSequence))"
    r"|builtins\.(dict|list|tuple|str|int|float|bool|NoneType))$"
)

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
    _fill_features(out, cols, feature_names)
    return np.moveaxis(out, 0, -1)


def _fill_features(
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
    notes
        Free text (Markdown) for the model card: evaluation on real labels, choices.
    """

    estimator: Any
    feature_names: tuple[str, ...]
    version: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    training: str = ""
    created: str = ""
    notes: str = ""


def fit_estimator(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 40,
    max_leaf_nodes: int = 15,
    learning_rate: float = 0.25,
) -> Any:
    """A :class:`~sklearn.ensemble.HistGradientBoostingClassifier` fitted on all of
    ``x, y`` (no held-out split; see :func:`train_builtup` for the parameters)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    est = HistGradientBoostingClassifier(
        random_state=seed,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        learning_rate=learning_rate,
        early_stopping=False,
    )
    est.fit(np.asarray(x, dtype="float32"), np.asarray(y), sample_weight=sample_weight)
    return est


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
    sample_weight: np.ndarray | None = None,
    notes: str = "",
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
    sample_weight
        ``(n,)`` weight of each row in the fit (e.g. to give a small real-label set the
        weight of the synthetic one); held-out metrics are unweighted.
    notes
        Markdown for the model card (see :class:`BuiltupModel`).

    Returns
    -------
    BuiltupModel
        Fitted on the training split; ``metrics`` from the held-out split.
    """
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
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype="float64")
    if w.shape != y.shape:
        raise PayeshError(f"sample_weight has shape {w.shape}, labels {y.shape}")
    x_tr, x_te, y_tr, y_te, w_tr, _ = train_test_split(
        x, y, w, test_size=test_size, random_state=seed, stratify=y
    )
    est = fit_estimator(
        x_tr,
        y_tr,
        seed=seed,
        sample_weight=w_tr,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        learning_rate=learning_rate,
    )
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
        notes=notes,
    )


def models_dir() -> Path:
    """The repository's ``models/`` folder."""
    return Path(__file__).resolve().parents[2] / "models"


def _feature_line(name: str) -> str:
    if name in BANDS:
        return f"- `{name}`: Sentinel-2 surface reflectance (unitless)"
    idx = index_function(name)
    return f"- `{name}` ({idx.long_name}): `{idx.formula}` — spyndex; {idx.reference}"


def _card(model: BuiltupModel) -> str:
    m = model.metrics
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in m.items())
    feats = "\n".join(_feature_line(n) for n in model.feature_names)
    est = model.estimator
    params = {k: est.get_params().get(k) for k in ("max_iter", "max_leaf_nodes", "learning_rate")}
    return f"""# Built-up classifier {model.version}

- **Version:** {model.version}
- **Created (UTC):** {model.created}
- **Estimator:** `{type(est).__name__}` ({type(est).__module__}), {params}
- **File:** `builtup-{model.version}.skops` (skops; load with `payesh.classifier.load_model`)

## Training data

{model.training or "(not described)"}

## Features

Spyndex symbols: B=blue (B02), G=green (B03), R=red (B04), N=nir (B08), S1=swir16 (B11),
S2=swir22 (B12). Pixel-local only: no neighbourhood and no temporal features. Per-pixel
statistics over the year (median, std) were left out: a run streams month by month in
spatial blocks, so a month's prediction cannot see the rest of the year, and the time
axis is already used by the persistence rule (N of M clear months) after prediction.
They were not measured against the held-out metrics.

{feats}

## Held-out metrics (class 1 = built-up)

| metric | value |
|---|---|
{rows}

{model.notes}
"""


def save_model(model: BuiltupModel, directory: str | Path, *, make_current: bool = True) -> Path:
    """Write ``builtup-<version>.skops``, its compiled trees ``builtup-<version>.trees.npz``
    (:func:`write_compiled`) and its model card ``builtup-<version>.md``; with
    ``make_current``, name it in ``builtup-current.txt`` so runs use it.

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

    if isinstance(model.estimator, CompiledClassifier):
        raise ModelError(
            f"model {model.version}: its estimator is compiled trees, not a scikit-learn "
            "model; save the model it was loaded from (load_model(path, compiled=False))"
        )
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
        "notes": model.notes,
    }
    sio.dump(payload, path)
    write_compiled(model, path)
    path.with_suffix(".md").write_text(_card(model), encoding="utf-8")
    if make_current:
        (folder / CURRENT).write_text(path.name + "\n", encoding="utf-8")
    return path


def _is_trusted(type_name: str) -> bool:
    return _TRUSTED.match(type_name) is not None


TREES_SUFFIX = ".trees.npz"
"""The compiled trees beside a model: ``builtup-<version>.trees.npz``."""


def compiled_path(path: str | Path) -> Path:
    """Where the compiled trees of the model file ``path`` are (:func:`write_compiled`)."""
    p = Path(path)
    return p.with_name(p.stem + TREES_SUFFIX)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_compiled(model: BuiltupModel, path: str | Path) -> Path | None:
    """Write the compiled trees of ``model``, saved as ``path``, beside it.

    The file (:func:`compiled_path`) holds the trees as plain arrays
    (:func:`payesh.forest.forest_arrays`) and the model's metadata, with the SHA-256 of
    ``path``: :func:`load_model` uses it only while the ``.skops`` file is unchanged, and
    then imports neither scikit-learn nor skops (about 3 s of every run). Nothing is
    written for a model the compiled trees cannot reproduce exactly (returns ``None``).
    """
    forest = compile_forest(model.estimator)
    if forest is None:
        return None
    p = Path(path)
    meta = {
        "format": 1,
        "skops_sha256": _sha256(p),
        "feature_names": list(model.feature_names),
        "version": model.version,
        "metrics": dict(model.metrics),
        "training": model.training,
        "created": model.created,
        "notes": model.notes,
    }
    out = compiled_path(p)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **forest_arrays(forest)}
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return out


def _load_compiled(path: Path) -> BuiltupModel | None:
    """The model from its compiled trees, or ``None`` (none, stale or unreadable: logged)."""
    side = compiled_path(path)
    if not side.is_file():
        return None
    try:
        with np.load(side, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("skops_sha256") != _sha256(path):
                log.info("%s: written for another %s; loading the model itself", side, path.name)
                return None
            forest = forest_from_arrays(z)
        return BuiltupModel(
            estimator=CompiledClassifier(forest),
            feature_names=tuple(meta["feature_names"]),
            version=str(meta["version"]),
            metrics=dict(meta["metrics"]),
            training=str(meta["training"]),
            created=str(meta["created"]),
            notes=str(meta["notes"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: cannot be used (%s); loading %s itself", side, err, path.name)
        return None


def load_model(path: str | Path, *, compiled: bool = True) -> BuiltupModel:
    """Load a model written by :func:`save_model`, trusting only known types.

    With ``compiled`` (the default) and the model's compiled trees beside it, written
    from this very file (:func:`write_compiled`), the model is read from those: its
    ``estimator`` is a :class:`payesh.forest.CompiledClassifier`, whose probabilities are
    scikit-learn's bit for bit. Otherwise (``compiled=False``, no such file, or one
    written for other bytes) the ``.skops`` file is loaded: its types are listed with
    ``skops.io.get_untrusted_types``; each must be a scikit-learn type, a numpy data type
    or random state, or a plain builtin, else nothing is loaded (numpy *functions* are
    refused too).

    Raises
    ------
    ModelError
        Naming the path: missing, unreadable, holding untrusted types, or not a model.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: model file not found; run `payesh train-builtup`")
    if compiled:
        fast = _load_compiled(p)
        if fast is not None:
            return fast
    import skops.io as sio

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
        notes=str(payload.get("notes", "")),
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
        _fill_features(feats, cols, feature_names)
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
