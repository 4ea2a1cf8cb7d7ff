"""The built-up model: a trained classifier with what is known about it, and its training.

The model is a :class:`~sklearn.ensemble.HistGradientBoostingClassifier` on spectral
features (:mod:`payesh.features`), fitted here and measured on a held-out split;
:mod:`payesh.model_io` saves and loads it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from payesh.errors import PayeshError
from payesh.features import FEATURE_NAMES

__all__ = ["BuiltupModel", "fit_estimator", "train_builtup"]


@dataclass(frozen=True)
class BuiltupModel:
    """A trained built-up classifier and what is known about it.

    Attributes
    ----------
    estimator
        A fitted scikit-learn classifier with ``predict_proba``; class 1 = built-up.
    feature_names
        Names of its input columns, in order (:data:`~payesh.features.FEATURE_NAMES`).
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
        ``(n, f)`` feature rows (e.g. :func:`~payesh.features.feature_stack` of labelled pixels).
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
