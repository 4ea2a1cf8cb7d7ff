"""The monitor flow: search → load/mask/composite per product-month → indicators → store.

Only wiring lives here: every task calls one payesh library function, and the whole
run can be reproduced without Prefect by calling those functions in the same order
(see ``payesh.pipeline``). Tasks are coarse — one per product and month — and the
arithmetic inside each is a Dask graph run on the cluster the flow connects to (a local
one by default, or ``dask_address``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import xarray as xr
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from payesh import pipeline
from payesh.city import City, load_city
from payesh.grid import aligned_geobox, city_geobox
from payesh.monthly import landsat_month, s2_month, viirs_month
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.progress import report

LANDSAT_RESOLUTION_M = 30.0


@contextmanager
def dask_client(address: str | None) -> Iterator[Any]:
    """A Dask client on ``address``, or on a local cluster sized to this machine."""
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    logging.getLogger("distributed").setLevel(logging.WARNING)
    workers = max(1, min(4, os.cpu_count() or 1))
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=workers,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# --- tasks: one library call each ---------------------------------------------------------


@task(name="plan", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def plan_task(city: City, catalog: str, period: Period, collections: list[str] | None) -> RunPlan:
    return plan_run(city, catalog, period, collections=collections)


@task(name="s2-month", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def s2_month_task(plan: RunPlan, month: pd.Timestamp) -> xr.Dataset:
    gbox = city_geobox(plan.city)
    return s2_month(plan.month_items("s2", month), gbox, month).compute()


@task(name="landsat-month", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def landsat_month_task(plan: RunPlan, month: pd.Timestamp) -> xr.Dataset:
    gbox = aligned_geobox(plan.city, LANDSAT_RESOLUTION_M)
    return landsat_month(plan.month_items("landsat", month), gbox, month).compute()


@task(name="viirs-month", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def viirs_month_task(plan: RunPlan, month: pd.Timestamp) -> xr.Dataset:
    return viirs_month(plan.month_items("viirs", month), plan.ntl_grid(), month).compute()


@task(name="indicators", cache_policy=NO_CACHE)
def indicators_task(plan: RunPlan, monthly: pipeline.MonthlyData) -> pipeline.Indicators:
    return pipeline.compute_indicators(plan, monthly)


@task(name="commit", cache_policy=NO_CACHE)
def commit_task(plan: RunPlan, result: pipeline.Indicators, store: str) -> str:
    return pipeline.commit(plan, result, store=store)


@task(name="export", cache_policy=NO_CACHE)
def export_task(plan: RunPlan, result: pipeline.Indicators, out_dir: str) -> dict[str, str]:
    return pipeline.export_run(plan, result, out_dir)


# --- the flow -----------------------------------------------------------------------------


@flow(name="monitor-city", log_prints=True)
def monitor_city(
    city: str,
    start: str,
    end: str,
    catalog: str,
    store: str = "data/store",
    dask_address: str | None = None,
    collections: list[str] | None = None,
    export_dir: str | None = None,
) -> dict[str, Any]:
    """Monitor ``city`` over months ``start``…``end`` (``YYYY-MM``) and commit its store."""
    logger = get_run_logger()
    the_city = load_city(city)
    period = Period.parse(start, end)
    plan = plan_task(the_city, catalog, period, collections)
    logger.info(plan.summary())
    products = {"s2": s2_month_task, "landsat": landsat_month_task, "viirs": viirs_month_task}
    monthly: dict[str, list[xr.Dataset]] = {}
    months = list(plan.months)
    with dask_client(dask_address):
        for key, month_task in products.items():
            if key not in plan.items:
                continue
            monthly[key] = []
            for i, month in enumerate(months):
                monthly[key].append(month_task(plan, month))  # type: ignore[arg-type]
                report(f"{key}: load, mask, composite", i + 1, len(months))
        result = indicators_task(plan, pipeline.MonthlyData.from_lists(monthly))
    logger.info(result.summary())
    snapshot = commit_task(plan, result, store)
    logger.info("committed snapshot %s", snapshot)
    exports = export_task(plan, result, export_dir) if export_dir else {}
    return {
        "snapshot": snapshot,
        "store": pipeline.store_location(plan.city, store),
        "exports": exports,
        "summary": result.summary(),
    }
