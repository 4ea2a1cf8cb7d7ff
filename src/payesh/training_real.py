"""Training on real labels and measuring the models on them.

With ``real_labels`` (``payesh train-builtup --real-labels``) the real pixels of the
eo-learn Slovenia patch (:mod:`payesh.labels`) join the synthetic training rows
(:mod:`payesh.training_data`), weighted by :func:`real_weight`, and the models are
measured on them by spatial cross-validation (:func:`spatial_cv`: held-out strips, never
random pixels); a no-SWIR variant is checked on the real Sentinel-2 L2A Zagreb scenes
(:func:`zagreb_builtup_share`). :func:`train_real_models` does all of it and writes the
held-out metrics as Markdown notes for the model cards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from payesh.errors import PayeshError
from payesh.features import BANDS, FEATURE_NAMES, RGBN_FEATURE_NAMES
from payesh.labels import EOLearnPatch, read_eolearn_patch
from payesh.model import BuiltupModel, fit_estimator, train_builtup
from payesh.monthly import s2_month
from payesh.progress import report
from payesh.training_data import demo_training_data, eolearn_rows, labelled_pixels

__all__ = [
    "REAL_SHARE",
    "ZAGREB_URBAN_WINDOW",
    "real_weight",
    "spatial_cv",
    "train_real_models",
    "zagreb_builtup_share",
]

REAL_SHARE = 0.1
"""Weight of the real (eo-learn) rows per class, relative to the synthetic rows of that
class: 0.1 lets ~600 real built-up pixel-dates count like 6 000 synthetic ones."""


def _scores(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    pred = p > threshold
    return {
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "n": float(len(y)),
        "positives": float(int(np.sum(y))),
    }


def real_weight(y_base: np.ndarray, y_real: np.ndarray, share: float) -> np.ndarray:
    """Per-row weight of the real rows so each real class weighs ``share`` of the
    base set's class of the same label (real built-up pixels are few: ~2 %)."""
    w = np.ones(len(y_real))
    for cls in (0, 1):
        n_real = max(int(np.sum(y_real == cls)), 1)
        w[y_real == cls] = share * np.sum(y_base == cls) / n_real
    return w


def spatial_cv(
    x_base: np.ndarray,
    y_base: np.ndarray,
    x_real: np.ndarray,
    y_real: np.ndarray,
    fold: np.ndarray,
    *,
    seed: int,
    share: float,
    max_iter: int = 40,
) -> dict[str, float]:
    """Held-out scores on real labels, out of fold by spatial strips.

    For each strip, a model is fitted on the base rows plus the real rows of the other
    strips (weighted by :func:`real_weight`), and predicts the held-out strip; the scores
    pool every strip's out-of-fold predictions. ``share=0`` fits on the base rows only
    (transfer from synthetic to real without seeing any real label). ``max_iter``: trees
    per model (the default model's 40).
    """
    oof = np.full(len(y_real), np.nan)
    for k in np.unique(fold):
        tr = fold != k
        if share > 0:
            x = np.concatenate([x_base, x_real[tr]])
            y = np.concatenate([y_base, y_real[tr]])
            w = np.concatenate([np.ones(len(y_base)), real_weight(y_base, y_real[tr], share)])
        else:
            x, y, w = x_base, y_base, np.ones(len(y_base))
        est = fit_estimator(x, y, seed=seed, sample_weight=w, max_iter=max_iter)
        oof[fold == k] = est.predict_proba(x_real[fold == k])[:, 1]
    return _scores(y_real, oof)


ZAGREB_URBAN_WINDOW: tuple[float, float, float, float] = (570000, 5068000, 582000, 5080000)
"""12 km × 12 km around Zagreb's centre (15.98 E, 45.81 N), EPSG:32633 metres (the window
``shared/realdata/PROVENANCE.md`` describes: SCL class 5 "not vegetated" ≈ 30 %)."""


def zagreb_builtup_share(
    model: BuiltupModel,
    *,
    window: tuple[float, float, float, float] = ZAGREB_URBAN_WINDOW,
    threshold: float = 0.5,
    root: Path | None = None,
) -> dict[str, float]:
    """Built-up share of a window of the real Sentinel-2 L2A Zagreb scenes (August 2023).

    The five 33TWL scenes are composited as a month (SCL-masked median, as in a run), on
    their 120 m grid, and classified with ``model`` (which must need only the bands
    stored locally: blue, green, red, nir). For comparison, the share of SCL class 5
    ("not vegetated": built-up, bare soil, rock) among the clear SCL classes 4–6 of the
    clearest scene is returned too.

    Returns
    -------
    dict
        ``builtup_share`` (prob > threshold, of clear pixels), ``mean_prob``,
        ``scl_not_vegetated_share``, ``clear_pixels`` (count), all unitless.
    """
    import pystac
    from odc.geo.geobox import GeoBox

    from payesh.classifier import builtup_probability
    from payesh.labels import realdata_dir
    from payesh.sources.load import load_s2

    folder = (root or realdata_dir()) / "s2_l2a_zagreb_33TWL_mapchete-eo" / "sentinel-2-l2a"
    items = [pystac.Item.from_file(f) for f in sorted(folder.glob("*/*.json"))]
    if not items:
        raise PayeshError(f"{folder}: no Zagreb Sentinel-2 items")
    gbox = GeoBox.from_bbox(window, crs="EPSG:32633", resolution=120)
    bands = tuple(b for b in BANDS if b in ("blue", "green", "red", "nir"))
    comp = s2_month(items, gbox, pd.Timestamp("2023-08-01"), bands=bands).compute()
    prob = builtup_probability(comp, model).values[0]
    clear = np.isfinite(prob)
    raw = load_s2(items, gbox, bands=("red",)).compute()
    scl = raw["scl"].values
    n_clear = ((scl >= 4) & (scl <= 6)).sum(axis=(1, 2))
    best = scl[int(np.argmax(n_clear))]
    land = (best >= 4) & (best <= 6)
    return {
        "builtup_share": float((prob[clear] > threshold).mean()),
        "mean_prob": float(prob[clear].mean()),
        "scl_not_vegetated_share": float((best[land] == 5).mean()),
        "clear_pixels": float(clear.sum()),
    }


def train_real_models(
    *,
    out_dir: Path,
    seed: int = 101,
    share: float = REAL_SHARE,
    n_folds: int = 4,
) -> tuple[BuiltupModel, BuiltupModel, str]:
    """Train the default model and its no-SWIR variant on synthetic + real labels.

    Returns
    -------
    model, rgbn_model, notes
        The two fitted models (versions set by the caller) and the Markdown notes with
        the held-out metrics on real labels, for the model cards.
    """
    comps, first, last = demo_training_data(out_dir, seed=seed)
    patch = read_eolearn_patch()
    parts: dict[str, tuple[np.ndarray, ...]] = {}
    cv: dict[str, dict[str, float]] = {}
    for key, names in (("full", FEATURE_NAMES), ("rgbn", RGBN_FEATURE_NAMES)):
        xb, yb = labelled_pixels(comps, first, last, seed=seed, feature_names=names)
        xr_, yr, fr = eolearn_rows(patch, n_folds=n_folds, feature_names=names)
        parts[key] = (xb, yb, xr_, yr)
        report("spatial cross-validation on real labels", len(cv) + 1, 3)
        cv[key] = spatial_cv(xb, yb, xr_, yr, fr, seed=seed, share=share)
        if key == "full":
            report("spatial cross-validation on real labels", len(cv) + 1, 3)
            cv["synthetic_only"] = spatial_cv(xb, yb, xr_, yr, fr, seed=seed, share=0.0)
    models = []
    for key, names in (("full", FEATURE_NAMES), ("rgbn", RGBN_FEATURE_NAMES)):
        xb, yb, xr_, yr = parts[key]
        w = np.concatenate([np.ones(len(yb)), real_weight(yb, yr, share)])
        models.append(
            train_builtup(
                np.concatenate([xb, xr_]),
                np.concatenate([yb, yr]),
                seed=seed,
                feature_names=names,
                sample_weight=w,
            )
        )
    zagreb = zagreb_builtup_share(models[1])
    notes = _real_notes(cv, zagreb, share=share, n_folds=n_folds, patch=patch)
    return models[0], models[1], notes


def _row(name: str, m: dict[str, float]) -> str:
    return (
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['auc']:.3f} "
        f"| {int(m['n'])} ({int(m['positives'])} built-up) |"
    )


def _real_notes(
    cv: dict[str, dict[str, float]],
    zagreb: dict[str, float],
    *,
    share: float,
    n_folds: int,
    patch: EOLearnPatch,
) -> str:
    return f"""## Held-out metrics on real labels

**eo-learn Slovenia patch** (1 km², {len(patch.dates)} Sentinel-2 L1C scenes of which the
clear pixel-dates are used; label = LULC class 8 "artificial surface" from the RABA
land-use parcels). Spatial {n_folds}-fold cross-validation: the patch is cut into
{n_folds} horizontal strips of 250 m; each strip is predicted by a model trained on the
synthetic city plus the real pixels of the *other* strips (real rows weighted to
{share:g} of the synthetic class weights); scores pool the out-of-fold predictions at
threshold 0.5.

| model | precision | recall | F1 | ROC AUC | pixel-dates |
|---|---|---|---|---|---|
{_row("default features, synthetic + real", cv["full"])}
{_row("default features, synthetic only (transfer)", cv["synthetic_only"])}
{_row("no-SWIR variant, synthetic + real", cv["rgbn"])}

Reading: the synthetic city alone does not transfer to real L1C imagery (AUC ≈ 0.5);
with real labels from neighbouring strips the ranking is good (AUC above) but at the
balanced threshold 0.5 precision is low, because built-up is ~2 % of this rural patch
and the real rows are class-balanced. In a run, persistence (3 of 4 clear months) and
the minimum site area filter most of these single-pixel false alarms. The labels are
parcel land use (a yard counts as "artificial surface"), on top-of-atmosphere L1C, not
the L2A a run reads: treat these numbers as a lower bound.

**ESA WorldCover (São Tomé, N00E006)**: not used for training or evaluation — there is no
Sentinel-2 imagery of São Tomé in `shared/realdata` and the machines here are offline,
so no image can be paired with those labels. Pairing the WorldCover tile of a city we
have scenes for (N45E015 for the Zagreb 33TWL scenes) would give a second real test.

**Zagreb, Sentinel-2 L2A, August 2023** (5 scenes, 120 m, SCL-masked monthly median):
the no-SWIR variant (the Zagreb files carry only B02/B03/B04/B08 locally) over the 12 km ×
12 km window around the centre ({ZAGREB_URBAN_WINDOW}, EPSG:32633) gives a built-up share
of **{zagreb["builtup_share"]:.1%}** of {int(zagreb["clear_pixels"])} clear pixels (mean
probability {zagreb["mean_prob"]:.2f}). Compared with: the scene classification's own
"not vegetated" class (SCL 5: built-up, bare soil, rock) = {zagreb["scl_not_vegetated_share"]:.1%}
of the clear land pixels of the clearest scene in the same window; the window holds
the dense centre, Novi Zagreb and the Sava floodplain fields and forest of Medvednica's
foothills, so a built-up share of roughly a quarter to a half is plausible.
"""
