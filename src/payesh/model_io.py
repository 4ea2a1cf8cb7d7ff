"""Built-up models on disk: skops files, model cards, compiled trees, the current model.

A model (:class:`payesh.model.BuiltupModel`) is saved with skops (never pickle) next to
a Markdown model card and its compiled trees (:mod:`payesh.forest`), and loaded only
when every type in the file is on an allow-list of scikit-learn / numpy types (or from
its compiled trees, while they were written from the very same file).
``models/builtup-current.txt`` names the model runs use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from payesh.errors import ModelError
from payesh.features import BANDS, FEATURE_NAMES, index_function
from payesh.forest import (
    CompiledClassifier,
    compile_forest,
    forest_arrays,
    forest_from_arrays,
)
from payesh.model import BuiltupModel

log = logging.getLogger(__name__)

__all__ = [
    "CURRENT",
    "TREES_SUFFIX",
    "compiled_path",
    "default_model_path",
    "load_model",
    "models_dir",
    "save_model",
    "write_compiled",
]

# scikit-learn estimators and their parts; numpy only for data types and random states,
# never numpy functions (``numpy.load`` and friends can read or run arbitrary files).
_TRUSTED = re.compile(
    r"^(sklearn\.[\w.]+"
    r"|numpy\.(ndarray|dtype|dtypes\.\w+|bool_?|str_|bytes_|(u?int|float|complex)\d+"
    r"|random\.[\w.]*(RandomState|Generator|MT19937|PCG64|SeedSequence))"
    r"|builtins\.(dict|list|tuple|str|int|float|bool|NoneType))$"
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
