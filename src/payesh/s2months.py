"""A Sentinel-2 month as a run keeps it: composited, classified, staged.

The run classifies each month as soon as its composite exists (:func:`s2_month_layers`)
and keeps ``builtup_prob``, ``true_colour`` and ``clear_count``, written to the run's
staging folder and read back lazily (:func:`stage_s2_month`); :func:`make_s2_month` does
both for one month of a plan, reading the next month's files ahead, and
:func:`files_ahead_closed` closes those of months a failed run never made. The built-up
model is loaded once per process (:func:`cached_model`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pandas as pd
import xarray as xr

from payesh import staging
from payesh.classifier import builtup_probability
from payesh.grid import city_geobox, tile_grid
from payesh.model import BuiltupModel
from payesh.model_io import default_model_path, load_model
from payesh.monthly import s2_month
from payesh.plan import RunPlan
from payesh.sources.opening import close_ahead
from payesh.truecolour import TRUE_COLOUR, true_colour_layer

__all__ = [
    "cached_model",
    "files_ahead_closed",
    "make_s2_month",
    "s2_month_layers",
    "stage_s2_month",
]


@lru_cache(maxsize=4)
def _model_at(path: str, mtime_ns: int) -> BuiltupModel:
    return load_model(path)


def cached_model(path: str | Path | None = None) -> BuiltupModel:
    """The built-up model at ``path`` (default: the current one), loaded once per process."""
    where = Path(path) if path is not None else default_model_path()
    return _model_at(str(where), where.stat().st_mtime_ns)


def s2_month_layers(composite: xr.Dataset, model: BuiltupModel | None = None) -> xr.Dataset:
    """What a run keeps of a Sentinel-2 month: ``builtup_prob``, ``true_colour`` and
    ``clear_count``.

    Classifying each month as soon as its composite exists lets the run drop the six
    reflectance bands (24 bytes a pixel) and keep 9 bytes a pixel per month; the
    probability is pixel-local, so this equals classifying the year's cube at once.
    ``true_colour`` (uint8 red/green/blue, :func:`payesh.truecolour.true_colour_layer`) is
    what the sites' evidence chips show; ``clear_count`` gives ``valid_fraction``. The
    composite's ``obs_count`` is not kept: nothing after the month reads it (staged, it
    was 2 of 11 bytes a pixel written and never read back).
    """
    model = model or cached_model()
    bare = composite.copy()
    bare.attrs = {}  # the month's item lists belong to the run, not to the layer
    prob = builtup_probability(bare, model)  # runs of pixels on a pool of its own
    out = xr.Dataset(
        {"builtup_prob": prob, "clear_count": composite["clear_count"]}
        | {TRUE_COLOUR: true_colour_layer(bare)}
    )
    out.attrs = dict(composite.attrs)
    return out


def stage_s2_month(plan: RunPlan, layers: xr.Dataset, stage: str | Path) -> xr.Dataset:
    """Write one month's :func:`s2_month_layers` to the run's staging folder; the month,
    read back lazily (see :mod:`payesh.staging`): memory then holds one month, not a year."""
    month = pd.Timestamp(layers["time"].values[0])
    block = staging.block_pixels(tile_grid(plan.city).tile_pixels)
    path = staging.stage_dataset(layers, stage, f"s2-{month:%Y-%m}", block=block)
    return staging.open_staged(path)


def make_s2_month(
    plan: RunPlan,
    month: pd.Timestamp,
    *,
    stage: str | Path | None = None,
    following: pd.Timestamp | None = None,
) -> xr.Dataset:
    """One Sentinel-2 month as a run keeps it: composite, then :func:`s2_month_layers`;
    with ``stage``, written there and returned lazily (:func:`stage_s2_month`).
    ``following``: the month the run makes next, whose remote files are opened while this
    one is read (:func:`payesh.sources.opening.open_ahead`).

    What the month freed stays with malloc for the next month, which allocates the same
    arrays again: given back to the system after every month (``malloc_trim``), each
    month faulted its ~500 MB in afresh at 24 km (35 000 page faults, 0.2–0.3 CPU-s a
    month), for the same peak. The run gives it back once, after its last month.
    """
    ahead = plan.month_items("s2", following) if following is not None else None
    composite = s2_month(
        plan.month_items("s2", month), city_geobox(plan.city), month, ahead=ahead
    ).compute()
    layers = s2_month_layers(composite)  # classified now: the bands are not kept
    if stage is None:
        return layers
    return stage_s2_month(plan, layers, stage)


@contextmanager
def files_ahead_closed(plan: RunPlan) -> Iterator[None]:
    """Around a run's Sentinel-2 months: when they end, the remote files opened ahead for
    a month of ``plan`` that was never made (the run failed before it) are closed
    (:func:`payesh.sources.opening.close_ahead`), not left open in a process that goes on
    (a worker, a notebook) until newer months push them out."""
    try:
        yield
    finally:
        close_ahead([item for month in plan.months for item in plan.month_items("s2", month)])
