"""Training the built-up classifier from labelled pixels (``payesh train-builtup``).

The first training set is a synthetic city generated with a *different seed* from the
demo's, so the demo is never scored on pixels the model saw. Labels come from the
generator's truth: pixels whose built-up state is the same in the first and last month
are labelled in every monthly composite; pixels that changed (construction) are used
only in the first month (not built) and the last month (built), where their state is
known. Classes are balanced by sampling. Real labels (ESA WorldCover, the eo-learn
land-use raster) are the next step (issue #6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from payesh.city import load_city
from payesh.classifier import BANDS, FEATURE_NAMES, feature_stack, save_model, train_builtup
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.progress import report

__all__ = ["labelled_pixels", "train_builtup_from_demo"]

MAX_PER_CLASS = 60_000


def labelled_pixels(
    composites: list[np.ndarray],
    first: np.ndarray,
    last: np.ndarray,
    *,
    seed: int,
    max_per_class: int = MAX_PER_CLASS,
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
        xs.append(feature_stack(comp[use]))
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


def train_builtup_from_demo(
    *,
    out_dir: Path,
    models_dir: Path,
    seed: int = 101,
    size_km: float = 4.0,
    start: str = "2025-01",
    end: str = "2025-12",
) -> Path:
    """Generate a training city (``seed``), train the classifier, write it to ``models_dir``.

    Returns
    -------
    Path
        The ``.skops`` file written (its model card ``.md`` beside it).
    """
    from payesh.synthetic import DemoSpec, generate_city, load_truth

    spec = DemoSpec(name="training", size_km=size_km, start=start, end=end, seed=seed)
    gen = generate_city(out_dir / f"seed{seed}", spec)
    city = load_city(gen.manifest)
    plan = plan_run(
        city, str(gen.catalog), Period.parse(start, end), collections=["sentinel-2-l2a"]
    )
    gbox = city_geobox(city)
    comps = []
    months = list(plan.months)
    for i, month in enumerate(months):
        ds = s2_month(plan.month_items("s2", month), gbox, month).compute()
        comps.append(np.stack([ds[b].values[0] for b in BANDS], axis=-1))
        report("training composites", i + 1, len(months))
    truth = load_truth(gen.truth_dir)
    first = truth.read_builtup(f"{pd.Timestamp(months[0]):%Y-%m}")
    last = truth.read_builtup(f"{pd.Timestamp(months[-1]):%Y-%m}")
    x, y = labelled_pixels(comps, first, last, seed=seed)
    model = train_builtup(
        x,
        y,
        seed=seed,
        feature_names=FEATURE_NAMES,
        version=f"synthetic-s{seed}-v2",
        training=(
            f"payesh.synthetic city, seed {seed} (the demo uses seed 0), {size_km:g} km, "
            f"{start}..{end}; monthly median Sentinel-2 L2A composites, SCL-masked; "
            f"{len(y)} pixels ({int(y.sum())} built-up), classes balanced; labels from the "
            f"generator's truth (stable pixels every month, changed pixels first/last month)."
        ),
    )
    return save_model(model, models_dir)
