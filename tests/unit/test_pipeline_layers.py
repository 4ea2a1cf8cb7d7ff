"""Classifying each month as it is composited equals classifying the year at once."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from payesh import classifier, pipeline, staging, truecolour
from payesh.city import load_city
from payesh.errors import PayeshError
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.store import SNAPSHOT_ATTR, open_indicators


def test_month_by_month_layers_give_the_same_indicators(tiny_city: Any) -> None:
    city = load_city(tiny_city.manifest)
    plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-06"))
    gbox = city_geobox(city)
    composites = [s2_month(plan.month_items("s2", m), gbox, m) for m in plan.months]
    layers = [pipeline.s2_month_layers(c) for c in composites]
    # what the run keeps of a month: no bands, no observation count (nothing reads it)
    assert all(
        set(lay.data_vars) == {"builtup_prob", "clear_count", "true_colour"} for lay in layers
    )
    assert layers[0].attrs["source_items"] == composites[0].attrs["source_items"]

    whole = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists({"s2": composites}))
    streamed = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists({"s2": layers}))
    xr.testing.assert_identical(whole.groups["pixels"], streamed.groups["pixels"])
    xr.testing.assert_identical(whole.groups["tiles"], streamed.groups["tiles"])
    assert whole.sites.equals(streamed.sites)
    assert whole.provenance["model_versions"] == streamed.provenance["model_versions"]


def test_staged_months_give_the_same_indicators_and_store(
    tiny_city: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Months staged on disk and read back block by block (what the flow does, #10) give
    the indicators, sites and stored values of months kept in memory — bit for bit;
    classifying a month (and making its true colour) in runs of a few pixels on a pool
    gives the values of one run."""
    city = load_city(tiny_city.manifest)
    plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-06"))
    gbox = city_geobox(city)
    composites = [s2_month(plan.month_items("s2", m), gbox, m) for m in plan.months]
    monkeypatch.setattr(classifier, "_FEATURE_BLOCK_PX", 1 << 30)  # one run a month
    monkeypatch.setattr(truecolour, "_RUN_PX", 1 << 30)
    in_memory = [pipeline.s2_month_layers(c) for c in composites]
    monkeypatch.setattr(classifier, "_FEATURE_BLOCK_PX", 7 * gbox.shape[1] + 3)  # runs of rows
    monkeypatch.setattr(truecolour, "_RUN_PX", 5 * gbox.shape[1] - 2)  # and parts of rows
    by_rows = [pipeline.s2_month_layers(c) for c in composites]
    for a, b in zip(in_memory, by_rows, strict=True):
        xr.testing.assert_identical(a, b)

    with staging.run_stage(tmp_path / "stage") as stage:
        staged = [pipeline.stage_s2_month(plan, lay, stage) for lay in by_rows]
        assert all(s["builtup_prob"].chunks is not None for s in staged)  # lazy, from disk
        assert sorted(p.name for p in stage.iterdir()) == [
            f"s2-{m:%Y-%m}.stage" for m in plan.months
        ]
        ref = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists({"s2": in_memory}))
        got = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists({"s2": staged}))
        assert got.groups["pixels"]["builtup_prob"].chunks is not None  # not loaded whole
        xr.testing.assert_identical(ref.groups["pixels"], got.groups["pixels"].compute())
        xr.testing.assert_identical(ref.groups["tiles"], got.groups["tiles"])
        assert ref.sites.equals(got.sites)
        pipeline.commit(plan, ref, store=str(tmp_path / "ref"))
        pipeline.commit(plan, got, store=str(tmp_path / "got"))
        # as the flow commits: the pixels' months written into the run while the
        # indicators are computed, then the rest; twice, the second onto stored months
        data = pipeline.MonthlyData.from_lists({"s2": staged})
        for _ in range(2):
            with pipeline.open_commit(plan, store=str(tmp_path / "early")) as run:
                with ThreadPoolExecutor(1) as ahead:
                    wrote = ahead.submit(pipeline.write_pixel_months, run, data)
                    early = pipeline.compute_indicators(plan, data)
                    assert wrote.result()
                assert run.written("pixels") == {"builtup_prob", "true_colour"}
                pipeline.commit(plan, early, run=run)
        pipeline.commit(plan, got, store=str(tmp_path / "got"))
    assert not stage.exists()  # deleted with the run
    for group in ("pixels", "tiles"):
        a = open_indicators(city.name, group=group, store=str(tmp_path / "ref")).compute()
        for other in ("got", "early"):
            b = open_indicators(city.name, group=group, store=str(tmp_path / other)).compute()
            for ds in (a, b):  # which commit, and when: not values
                ds.attrs.pop(SNAPSHOT_ATTR, None)
                ds.attrs.pop("created", None)
            xr.testing.assert_identical(a, b)


def test_a_stage_is_deleted_on_error_and_stale_stages_are_swept(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staging.run_stage(tmp_path) as stage:
        (stage / "s2-2025-01.stage").mkdir()
        raise RuntimeError("the run failed")
    assert not stage.exists()
    # a killed run's folder (its process is gone) is swept by the next run; a live one stays
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"payesh-stage-{dead.pid}-abc"
    (stale / "s2-2025-01.stage").mkdir(parents=True)
    live = tmp_path / f"payesh-stage-{os.getpid()}-def"
    live.mkdir()
    with staging.run_stage(tmp_path) as stage:
        assert stage.name.startswith(f"payesh-stage-{os.getpid()}-")
        assert not stale.exists() and live.exists()


def test_an_unwritable_staging_folder_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PayeshError, match="PAYESH_STAGING_DIR"), staging.run_stage(blocker / "x"):
        pass


def test_a_forked_child_gets_pools_of_its_own() -> None:
    """Pools are shared within a process; a child forked after they started (the crash
    tests' zygote, a Prefect process worker) must not wait on its parent's threads."""
    from payesh.parallel import shared_pool

    assert shared_pool("test", 2).submit(lambda: 1).result() == 1
    assert shared_pool("test", 2) is shared_pool("test", 2)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its pool runs a job
        try:
            ok = shared_pool("test", 2).submit(lambda: 41 + 1).result(timeout=10) == 42
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_month_that_cannot_be_staged_is_one_clear_error(tmp_path: Path) -> None:
    """A staging folder that cannot be written (here: gone; in life: a full disk) is one
    PayeshError naming the month and the folder and the setting, not a traceback."""
    ds = xr.Dataset({"builtup_prob": (("time", "y", "x"), np.zeros((1, 4, 4), "float32"))})
    blocker = tmp_path / "stage"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(PayeshError, match=r"s2-2025-01 in .*stage.*PAYESH_STAGING_DIR"):
        staging.stage_dataset(ds, blocker, "s2-2025-01", block=2)


def test_computed_in_place_equals_compute() -> None:
    """Each Dask block written into arrays allocated once: what ``compute`` gives, with
    numpy and Dask variables, datetimes included, coordinates and attributes kept."""
    import dask.array as dsa

    from payesh.pipeline import computed_in_place

    rng = np.random.default_rng(3)
    dates = np.datetime64("2025-01-01", "ns") + rng.integers(0, 300, (50, 70)).astype(
        "timedelta64[D]"
    )
    dates[rng.random((50, 70)) < 0.3] = np.datetime64("NaT", "ns")
    ds = xr.Dataset(
        {
            "first_seen": (("y", "x"), dsa.from_array(dates, chunks=(17, 23)), {"a": 1}),
            "mean": (("y", "x"), dsa.from_array(rng.random((50, 70)), chunks=(20, 70))),
            "eager": (("y", "x"), rng.random((50, 70)).astype("float32")),
        },
        coords={"y": np.arange(50), "x": np.arange(70)},
        attrs={"b": 2},
    )
    got = computed_in_place(ds)
    assert all(v.chunks is None for v in got.data_vars.values())
    xr.testing.assert_identical(got, ds.compute())


def test_computed_in_place_on_a_distributed_cluster_computes() -> None:
    """Workers in other processes would write into copies of the arrays: there the
    values come back by ``compute``, not through ``dask.array.store``."""
    import dask.array as dsa

    distributed = pytest.importorskip("distributed")
    from payesh.pipeline import computed_in_place

    values = np.arange(60 * 40, dtype="float32").reshape(60, 40)
    ds = xr.Dataset({"v": (("y", "x"), dsa.from_array(values, chunks=(25, 15)))})
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        got = computed_in_place(ds)
    np.testing.assert_array_equal(got["v"].values, values)
