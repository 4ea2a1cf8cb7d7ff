"""The built-up classifier's training data: labelled pixels and the rows they come from.

The first training set is a synthetic city generated with a *different seed* from the
demo's, so the demo is never scored on pixels the model saw. Labels come from the
generator's truth: pixels whose built-up state is the same in the first and last month
are labelled in every monthly composite; pixels that changed (construction) are used
only in the first month (not built) and the last month (built), where their state is
known. Classes are balanced by sampling (:func:`labelled_pixels`,
:func:`demo_training_data`). The real rows are every clear, labelled pixel-date of the
eo-learn Slovenia patch with its spatial fold (:func:`eolearn_rows`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from payesh.city import load_city
from payesh.features import BANDS, FEATURE_NAMES, feature_stack
from payesh.grid import city_geobox
from payesh.labels import EOLearnPatch, spatial_folds
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.progress import report

__all__ = ["MAX_PER_CLASS", "demo_training_data", "eolearn_rows", "labelled_pixels"]

MAX_PER_CLASS = 60_000


def labelled_pixels(
    composites: list[np.ndarray],
    first: np.ndarray,
    last: np.ndarray,
    *,
    seed: int,
    max_per_class: int = MAX_PER_CLASS,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and labels from monthly band composites and the truth rasters.

    Parameters
    ----------
    composites
        Per month, an array ``(y, x, band)`` of reflectance in :data:`BANDS` order.
    first, last
        Built-up truth (0/1) at the first and last month, ``(y, x)``.
    seed
        Seed of the class-balancing sample.
    feature_names
        Features to compute (:func:`payesh.features.feature_stack`).
    """
    stable = first == last
    xs, ys = [], []
    for i, comp in enumerate(composites):
        valid = ~np.isnan(comp).any(axis=-1)
        use = valid & stable
        label = first
        if i == 0:
            use = valid
        elif i == len(composites) - 1:
            use, label = valid, last
        xs.append(feature_stack(comp[use], feature_names=feature_names))
        ys.append(label[use].astype("int8"))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    rng = np.random.default_rng(seed)
    keep = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        keep.append(rng.choice(idx, size=min(len(idx), max_per_class), replace=False))
    sel = np.sort(np.concatenate(keep))
    return x[sel], y[sel]


def demo_training_data(
    out_dir: Path,
    *,
    seed: int = 101,
    size_km: float = 4.0,
    start: str = "2025-01",
    end: str = "2025-12",
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Monthly band composites and first/last truth of a generated training city.

    Generated once under ``out_dir/seed<seed>`` and cached there as ``composites.npz``.

    Returns
    -------
    composites, first, last
        As :func:`labelled_pixels` takes them.
    """
    from payesh.synthetic import DemoSpec, generate_city, load_truth

    folder = out_dir / f"seed{seed}"
    cache = folder / f"composites-{size_km:g}km-{start}-{end}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return list(z["composites"]), z["first"], z["last"]
    spec = DemoSpec(name="training", size_km=size_km, start=start, end=end, seed=seed)
    gen = generate_city(folder, spec)
    city = load_city(gen.manifest)
    plan = plan_run(
        city, str(gen.catalog), Period.parse(start, end), collections=["sentinel-2-l2a"]
    )
    gbox = city_geobox(city)
    comps = []
    months = list(plan.months)
    for i, month in enumerate(months):
        ds = s2_month(plan.month_items("s2", month), gbox, month).compute()
        comps.append(np.stack([ds[b].values[0] for b in BANDS], axis=-1).astype("float32"))
        report("training composites", i + 1, len(months))
    truth = load_truth(gen.truth_dir)
    first = truth.read_builtup(f"{pd.Timestamp(months[0]):%Y-%m}")
    last = truth.read_builtup(f"{pd.Timestamp(months[-1]):%Y-%m}")
    np.savez_compressed(cache, composites=np.stack(comps), first=first, last=last)
    return comps, first, last


def eolearn_rows(
    patch: EOLearnPatch, *, n_folds: int = 4, feature_names: tuple[str, ...] = FEATURE_NAMES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, labels and spatial fold of every clear, labelled pixel-date.

    Returns
    -------
    x, y, fold
        ``(n, f)`` float32 features, ``(n,)`` int8 labels, ``(n,)`` strip index
        (:func:`payesh.labels.spatial_folds`, ``n_folds`` strips).
    """
    folds = spatial_folds(patch.labels.shape, n_folds)
    xs, ys, fs = [], [], []
    for t in range(patch.bands.shape[0]):
        b = patch.bands[t]
        use = np.isfinite(b).all(axis=-1) & (patch.labels >= 0)
        xs.append(feature_stack(b[use], feature_names=feature_names))
        ys.append(patch.labels[use])
        fs.append(folds[use])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(fs)
