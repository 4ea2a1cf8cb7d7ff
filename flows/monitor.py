"""The monitor flow: search → load/mask/composite per product-month → indicators → store.

Only wiring lives here: every task calls one payesh library function, and the whole
run can be reproduced without Prefect by calling those functions in the same order
(see ``payesh.pipeline``). Tasks are coarse — one per product and month — and the
arithmetic inside each is a Dask graph run on Dask's threaded scheduler in this process
by default, or on the ``dask.distributed`` cluster at ``dask_address``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from payesh import monthcache, pipeline, runkeys, staging
from payesh.city import City, load_city
from payesh.errors import PayeshError
from payesh.grid import aligned_geobox
from payesh.monthly import landsat_month, viirs_month
from payesh.parallel import (
    MONTHS_ENV,
    bound_native_memory,
    frozen_heap,
    months_in_flight,
    release_native_memory,
    side_months_in_flight,
    threaded_dask,
    trimming,
    usable_cores,
)
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.progress import report
from payesh.store import RunWriter, history

LANDSAT_RESOLUTION_M = 30.0
#: Waits (s) before the retries of a task that reads over the network: backoff, with jitter.
LOAD_RETRY_DELAYS_S: list[float] = [5.0, 30.0]
NOTHING_NEW = "nothing new"


def retry_unless_final(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries a network task unless payesh's own error ended it: bad input, or a
    source that stayed down through payesh's retries (``PAYESH_HTTP_*``) — retrying
    those again only delays the one clear error."""
    return not isinstance(state.data, PayeshError)


@contextmanager
def dask_client(address: str | None) -> Iterator[Any]:
    """A Dask client on the cluster at ``address``; without one, Dask's threaded scheduler
    on one pool of :func:`payesh.parallel.default_threads` threads shared by the run's
    tasks (yields None).

    On one machine the threaded scheduler computes the same graphs as a
    ``distributed.LocalCluster`` in this process would, without importing ``distributed``
    or running its scheduler's and worker's event loops beside the run's own threads.
    """
    if address:
        from distributed import Client

        with Client(address) as client:
            yield client
        return
    with threaded_dask():
        yield None


def s2_months_at_once() -> int:
    """Sentinel-2 months a run makes at once here (:func:`payesh.parallel.months_in_flight`
    of the cores this process may use, or ``$PAYESH_S2_MONTHS_AT_ONCE``)."""
    return months_in_flight(usable_cores(), os.environ.get(MONTHS_ENV))


# --- tasks: one library call each ---------------------------------------------------------


@task(
    name="plan",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_final,
)
def plan_task(
    city: City,
    catalog: str,
    period: Period,
    collections: list[str] | None,
    night_lights: str = "stac",
) -> RunPlan:
    return plan_run(city, catalog, period, collections=collections, night_lights=night_lights)


@task(name="changed-months", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5.0, 30.0])
def changed_months_task(plan: RunPlan, store: str) -> dict[str, list[str]]:
    committed = runkeys.committed_keys(plan.city.name, store)
    return runkeys.changed_months(runkeys.plan_keys(plan), committed)


@task(
    name="s2-month",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=LOAD_RETRY_DELAYS_S,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_final,
)
def s2_month_task(
    plan: RunPlan,
    month: pd.Timestamp,
    stage: str | None = None,
    cache: str | None = None,
    reuse: bool = True,
    following: pd.Timestamp | None = None,
) -> xr.Dataset:
    def make() -> xr.Dataset:  # staged in the cache when there is one, else in the run's
        return pipeline.make_s2_month(
            plan, month, stage=None if cache else stage, following=following
        )

    return pipeline.kept_month(plan, "s2", month, make, cache=_path(cache), reuse=reuse)


@task(
    name="landsat-month",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=LOAD_RETRY_DELAYS_S,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_final,
)
def landsat_month_task(
    plan: RunPlan,
    month: pd.Timestamp,
    cache: str | None = None,
    reuse: bool = True,
    stage: str | None = None,
) -> xr.Dataset:
    def make() -> xr.Dataset:  # staged in the cache when there is one, else in the run's
        gbox = aligned_geobox(plan.city, LANDSAT_RESOLUTION_M)
        made = landsat_month(plan.month_items("landsat", month), gbox, month).compute()
        if cache or stage is None:
            return made
        return staging.stage_whole(made, stage, f"landsat-{month:%Y-%m}")

    return pipeline.kept_month(plan, "landsat", month, make, cache=_path(cache), reuse=reuse)


@task(
    name="viirs-month",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=LOAD_RETRY_DELAYS_S,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_final,
)
def viirs_month_task(
    plan: RunPlan, month: pd.Timestamp, cache: str | None = None, reuse: bool = True
) -> xr.Dataset:
    def make() -> xr.Dataset:
        return viirs_month(plan.month_items("viirs", month), plan.ntl_grid(), month).compute()

    return pipeline.kept_month(plan, "viirs", month, make, cache=_path(cache), reuse=reuse)


def _path(cache: str | None) -> Path | None:
    return Path(cache) if cache else None


@task(name="indicators", cache_policy=NO_CACHE)
def indicators_task(plan: RunPlan, monthly: pipeline.MonthlyData) -> pipeline.Indicators:
    return pipeline.compute_indicators(plan, monthly)


@task(name="store-months", cache_policy=NO_CACHE)
def pixel_months_task(run: RunWriter, monthly: pipeline.MonthlyData) -> bool:
    return pipeline.write_pixel_months(run, monthly)


@task(name="commit", cache_policy=NO_CACHE)
def commit_task(plan: RunPlan, result: pipeline.Indicators, run: RunWriter) -> str:
    return pipeline.commit(plan, result, run=run)


@task(name="export", cache_policy=NO_CACHE)
def export_task(plan: RunPlan, result: pipeline.Indicators, out_dir: str) -> dict[str, str]:
    return pipeline.export_run(plan, result, out_dir)


# --- the flow -----------------------------------------------------------------------------


@flow(name="monitor-city", log_prints=True)
def monitor_city(
    city: str,
    catalog: str,
    start: str | None = None,
    end: str | None = None,
    store: str = "data/store",
    dask_address: str | None = None,
    collections: list[str] | None = None,
    export_dir: str | None = None,
    months_back: int | None = None,
    force: bool = False,
    night_lights: str = "stac",
) -> dict[str, Any]:
    """Monitor ``city`` over months ``start``…``end`` (``YYYY-MM``) and commit its store.

    ``night_lights``: ``stac`` (the catalog's ``viirs-ntl-monthly`` items) or
    ``blackmarble`` (NASA Black Marble VNP46A3 from LAADS DAAC; needs ``EARTHDATA_TOKEN``;
    see :func:`payesh.plan.plan_run`).

    Without ``start``/``end``, the period is the last ``months_back`` months ending with
    the current one (what scheduled runs use). Unless ``force``, a run whose every
    product-month was already committed from the same inputs (same run keys, see
    :mod:`payesh.runkeys`) loads nothing, commits nothing and returns
    ``status="nothing new"``.
    """
    logger = get_run_logger()
    bound_native_memory()  # GDAL's cache and malloc's arenas: memory flat over the months
    the_city = load_city(city)
    period = runkeys.run_period(start, end, months_back)
    plan = plan_task(the_city, catalog, period, collections, night_lights)
    logger.info(plan.summary())
    store_loc = pipeline.store_location(plan.city, store)
    if not force:
        changed = changed_months_task(plan, store)
        if not changed:
            head = history(plan.city.name, store=store)[0]["snapshot_id"]
            logger.info(
                "%s: every product-month of %s is committed from the same inputs (snapshot "
                "%s); nothing loaded, nothing committed",
                NOTHING_NEW,
                period,
                head,
            )
            return {
                "status": NOTHING_NEW,
                "period": str(period),
                "snapshot": head,
                "store": store_loc,
                "exports": {},
            }
        logger.info("to compute: %s", "; ".join(f"{k} {', '.join(v)}" for k, v in changed.items()))
    months = list(plan.months)
    # Months whose inputs a run already made are opened from the month cache
    # (payesh.monthcache; $PAYESH_MONTH_CACHE), unless forced; every month made is kept.
    kept = monthcache.cache_dir()
    if kept is not None:
        monthcache.writable(kept)  # before any month is read: one clear error
    month_params = {"cache": str(kept) if kept else None, "reuse": not force}
    # Sentinel-2 months go to local disk as they are made (payesh.staging) and are read
    # back block by block by the indicators, the commit and the exports; Landsat months
    # too, a month whole (3.7 MB at 24 km). Landsat and VIIRS months are made alongside
    # the Sentinel-2 ones, not after them: from local files one at a time, one of each
    # beside each Sentinel-2 month; from remote ones (which wait on round trips, not on
    # the cores) several at once, all queued at the start.
    remote = plan.reads_remote()
    # the objects of the imports and the plan are left out of the run's full collections
    with staging.run_stage() as stage, frozen_heap():
        with (
            pipeline.files_ahead_closed(plan),
            dask_client(dask_address),
            ThreadPoolTaskRunner[Any](max_workers=side_months_in_flight(remote)) as side,
            ThreadPoolTaskRunner[Any](max_workers=s2_months_at_once()) as s2,
        ):
            # local: a Landsat and a VIIRS month (~0.2 s of one thread) beside each
            # Sentinel-2 month, not all 24 beside the first: they fill the cores' gaps
            others = [
                (key, task)
                for key, task in (("landsat", landsat_month_task), ("viirs", viirs_month_task))
                if key in plan.items
            ]
            side_futures: dict[str, list[Any]] = {key: [] for key, _ in others}

            def submit_side(month: pd.Timestamp) -> None:
                for key, task in others:
                    job = {"plan": plan, "month": month, **month_params}
                    if key == "landsat":  # staged as made, like the Sentinel-2 months
                        job["stage"] = str(stage)
                    side_futures[key].append(side.submit(task, job))

            monthly: dict[str, list[xr.Dataset]] = {}
            if "s2" in plan.items:
                params = {"plan": plan, "stage": str(stage), **month_params}
                # remote files of the next month are opened while a month is read
                after = [*months[1:], None]
                s2_futures = [
                    s2.submit(s2_month_task, {**params, "month": m, "following": nxt})
                    for m, nxt in zip(months, after, strict=True)
                ]
                for m in months if remote else months[:1]:
                    submit_side(m)
                monthly["s2"] = []
                for i, future in enumerate(s2_futures):
                    monthly["s2"].append(future.result())
                    report("s2: load, mask, composite", i + 1, len(months))
                    if not remote and i + 1 < len(months):
                        submit_side(months[i + 1])
            else:
                for m in months:
                    submit_side(m)
            for key, pending in side_futures.items():
                monthly[key] = []
                for i, future in enumerate(pending):
                    monthly[key].append(future.result())
                    report(f"{key}: load, mask, composite", i + 1, len(months))
        release_native_memory()
        use = pipeline.cache_use(monthly)
        if kept:
            logger.info("months from the cache (%s): %s", kept, use.summary())
        data = pipeline.MonthlyData.from_lists(monthly)
        # the staged months are on this machine: read by this process's threads. The
        # pixels' months are written into the run (nothing visible before its commit)
        # while the indicators are computed: the two share the cores. Their freed pages
        # go back to the system as they run (payesh.nativemem.trimming): no moment
        # between their steps has both's arrays freed for a single trim.
        with threaded_dask(), trimming():
            with pipeline.open_commit(plan, store=store) as run:
                with ThreadPoolTaskRunner[Any](max_workers=1) as ahead:
                    early = ahead.submit(pixel_months_task, {"run": run, "monthly": data})
                    result = indicators_task(plan, data)
                    early.result()
                logger.info(result.summary())
                snapshot = commit_task(plan, result, run)
            logger.info("committed snapshot %s", snapshot)
            exports = export_task(plan, result, export_dir) if export_dir else {}
        if kept:  # what this run did not use, and no run used for a day
            monthcache.prune(kept, plan.city, use.keys)
    return {
        "status": "committed",
        "period": str(period),
        "snapshot": snapshot,
        "store": store_loc,
        "exports": exports,
        "summary": result.summary(),
        "months_from_cache": use.from_cache,
    }


@flow(name="backfill-city", log_prints=True)
def backfill_city(
    city: str,
    catalog: str,
    start: str,
    end: str,
    store: str = "data/store",
    step: str = "year",
    dask_address: str | None = None,
    collections: list[str] | None = None,
    night_lights: str = "stac",
) -> list[dict[str, Any]]:
    """Fill ``city``'s store for ``start``…``end``, one committed run per ``step``.

    ``step`` is ``year`` (calendar years; the default: a year of months gives the
    night-light baseline and the first-seen dates their meaning) or ``month``. Each
    piece is a ``monitor-city`` subflow run: a piece already committed from the same
    inputs is skipped, so a backfill that stopped half-way is resumed by running it
    again.
    """
    logger = get_run_logger()
    pieces = runkeys.backfill_periods(Period.parse(start, end), step)
    logger.info("backfill %s %s..%s: %d runs of one %s", city, start, end, len(pieces), step)
    results = []
    for piece in pieces:
        first, last = f"{piece.start:%Y-%m}", f"{piece.end:%Y-%m}"
        run = monitor_city.with_options(flow_run_name=f"backfill-{first}..{last}")
        results.append(
            run(
                city=city,
                catalog=catalog,
                start=first,
                end=last,
                store=store,
                dask_address=dask_address,
                collections=collections,
                night_lights=night_lights,
            )
        )
    return results
