"""Training the built-up classifier from labelled pixels (``payesh train-builtup``).

The first training set is a synthetic city generated with a *different seed* from the
demo's, so the demo is never scored on pixels the model saw. Labels come from the
generator's truth: pixels whose built-up state is the same in the first and last month
are labelled in every monthly composite; pixels that changed (construction) are used
only in the first month (not built) and the last month (built), where their state is
known. Classes are balanced by sampling.

With ``real_labels`` (``payesh train-builtup --real-labels``) the real pixels of the
eo-learn Slovenia patch (:mod:`payesh.labels`) join the training set, and the models are
measured on them by spatial cross-validation (held-out strips, never random pixels); a
no-SWIR variant is checked on the real Sentinel-2 L2A Zagreb scenes.

The training data are in :mod:`payesh.training_data`, the training on real labels and
its evaluation in :mod:`payesh.training_real`; their names are re-exported here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from payesh.features import FEATURE_NAMES
from payesh.model import train_builtup
from payesh.model_io import save_model
from payesh.training_data import (
    MAX_PER_CLASS,
    demo_training_data,
    eolearn_rows,
    labelled_pixels,
)
from payesh.training_real import (
    REAL_SHARE,
    ZAGREB_URBAN_WINDOW,
    real_weight,
    spatial_cv,
    train_real_models,
    zagreb_builtup_share,
)

__all__ = [
    "MAX_PER_CLASS",
    "REAL_SHARE",
    "ZAGREB_URBAN_WINDOW",
    "demo_training_data",
    "eolearn_rows",
    "labelled_pixels",
    "real_weight",
    "spatial_cv",
    "train_builtup_from_demo",
    "train_real_models",
    "zagreb_builtup_share",
]


def train_builtup_from_demo(
    *,
    out_dir: Path,
    models_dir: Path,
    seed: int = 101,
    size_km: float = 4.0,
    start: str = "2025-01",
    end: str = "2025-12",
    real_labels: bool = False,
) -> Path:
    """Generate a training city (``seed``), train the classifier, write it to ``models_dir``.

    Parameters
    ----------
    out_dir
        Where the training city is generated (and its composites cached).
    models_dir
        Where the model, its card and ``builtup-current.txt`` are written.
    real_labels
        Also train on the eo-learn Slovenia patch's real labels, measure the models on
        them by spatial cross-validation, check the Zagreb scenes, and write the no-SWIR
        variant ``builtup-<version>-rgbn`` beside the default model (not made current).

    Returns
    -------
    Path
        The ``.skops`` file of the default model (its model card ``.md`` beside it).
    """
    comps, first, last = demo_training_data(
        out_dir, seed=seed, size_km=size_km, start=start, end=end
    )
    synthetic = (
        f"payesh.synthetic city, seed {seed} (the demo uses seed 0), {size_km:g} km, "
        f"{start}..{end}; monthly median Sentinel-2 L2A composites, SCL-masked; up to "
        f"{MAX_PER_CLASS} pixels per class, classes balanced; labels from the generator's "
        "truth (stable pixels every month, changed pixels first/last month)."
    )
    if not real_labels:
        x, y = labelled_pixels(comps, first, last, seed=seed)
        model = train_builtup(
            x,
            y,
            seed=seed,
            feature_names=FEATURE_NAMES,
            version=f"synthetic-s{seed}-v3",
            training=synthetic + " Held-out metrics: a stratified random 25 % of these pixels.",
        )
        return save_model(model, models_dir)
    model, rgbn, notes = train_real_models(out_dir=out_dir, seed=seed)
    version = f"synthetic-s{seed}-eolearn-v3"
    training = (
        f"{synthetic}\n\nPlus real labels: every clear pixel-date of the eo-learn Slovenia "
        "test patch (Sentinel-2 L1C, LULC class 8 = built-up), each class weighted to "
        f"{REAL_SHARE:g} of the synthetic class weight. The held-out table below is a "
        "stratified random 25 % of all these rows (mostly synthetic pixels); the metrics on "
        "real labels, spatially held out, are in the section after it."
    )
    path = save_model(
        dataclasses.replace(model, version=version, training=training, notes=notes), models_dir
    )
    save_model(
        dataclasses.replace(
            rgbn,
            version=f"{version}-rgbn",
            training=training + " Features without SWIR (for imagery lacking B11/B12).",
            notes=notes,
        ),
        models_dir,
        make_current=False,
    )
    return path
