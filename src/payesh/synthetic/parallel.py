"""Rendering and writing scenes in worker processes (``generate_city(..., workers=N)``).

Every scene is a pure function of the scenario and its index (its random numbers come
from :func:`~payesh.synthetic.grid.rng_for` with the index as a tag), so rendering scenes
in any order, in any process, writes the same bytes as rendering them one after the
other. Each worker receives the scenario once (pickled by its initializer), then renders
and writes whole scenes; only the few numbers the STAC items need come back.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from payesh.errors import PayeshError

from .cog import write_cog
from .scenario import Scenario
from .sensors import ViirsRenderer, render_landsat, render_s2

__all__ = [
    "S2_10M",
    "S2_FILES",
    "SceneJob",
    "check_workers_start",
    "landsat_job",
    "run_jobs",
    "s2_job",
    "viirs_job",
]

#: Earth Search asset key -> file name of a Sentinel-2 scene's COGs.
S2_FILES: tuple[tuple[str, str], ...] = (
    ("blue", "B02"),
    ("green", "B03"),
    ("red", "B04"),
    ("nir", "B08"),
    ("swir16", "B11"),
    ("swir22", "B12"),
    ("scl", "SCL"),
)
S2_10M = ("blue", "green", "red", "nir")

#: ``(function name, scene index, output folder, item id)`` of one scene to render.
SceneJob = tuple[str, int, str, str]

_SCENARIO: Scenario | None = None
_VIIRS: ViirsRenderer | None = None


def _init(sc: Scenario) -> None:
    global _SCENARIO, _VIIRS
    _SCENARIO, _VIIRS = sc, None


def _scenario() -> Scenario:
    if _SCENARIO is None:  # pragma: no cover - only if called outside run_jobs
        raise RuntimeError("scene jobs run in workers started by run_jobs")
    return _SCENARIO


def s2_job(index: int, folder: str, _item_id: str) -> dict[str, float]:
    """Render Sentinel-2 scene ``index``, write its seven COGs into ``folder``; its stats."""
    sc = _scenario()
    scene = render_s2(sc, index)
    grids = sc.grids
    for key, fname in S2_FILES:
        grid = grids.s2_10 if key in S2_10M else grids.s2_20
        write_cog(Path(folder) / f"{fname}.tif", scene.bands[key], grid, nodata=0, spec=sc.spec)
    return scene.stats


def landsat_job(index: int, folder: str, item_id: str) -> dict[str, float]:
    """Render Landsat scene ``index``, write ST_B10 and QA_PIXEL; its cloud cover (%)."""
    sc = _scenario()
    ls = render_landsat(sc, index)
    base = Path(folder) / item_id
    write_cog(Path(f"{base}_ST_B10.TIF"), ls.lwir11, sc.grids.landsat, nodata=0, spec=sc.spec)
    write_cog(Path(f"{base}_QA_PIXEL.TIF"), ls.qa_pixel, sc.grids.landsat, nodata=1, spec=sc.spec)
    return {"cloud_cover": ls.cloud_cover}


def viirs_job(index: int, folder: str, _item_id: str) -> dict[str, float]:
    """Render night-light month ``index``, write radiance and cf_cvg; its missing share."""
    global _VIIRS
    sc = _scenario()
    if _VIIRS is None:
        _VIIRS = ViirsRenderer(sc)
    vm = _VIIRS.render(index)
    write_cog(Path(folder) / "radiance.tif", vm.radiance, sc.grids.viirs, nodata=None, spec=sc.spec)
    write_cog(Path(folder) / "cf_cvg.tif", vm.cf_cvg, sc.grids.viirs, nodata=None, spec=sc.spec)
    return {"missing_fraction": round(float((vm.cf_cvg == 0).mean()), 4)}


_JOBS: dict[str, Callable[[int, str, str], dict[str, float]]] = {
    "s2": s2_job,
    "landsat": landsat_job,
    "viirs": viirs_job,
}


def _run(kind: str, index: int, folder: str, item_id: str) -> dict[str, float]:
    return _JOBS[kind](index, folder, item_id)


#: Seconds a probe process may take to start (import the main module again) and exit.
PROBE_TIMEOUT_S = 120.0


def _started() -> None:
    """A probe process's whole work: having started is the test."""


def check_workers_start(ctx: Any, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Start one process as the pool's workers are started, and see it exit cleanly.

    A spawned process imports the caller's main module again. A script that calls
    ``generate_city(..., workers=N)`` outside ``if __name__ == "__main__":`` makes every
    worker try to start workers of its own while it starts, and die; the
    ``ProcessPoolExecutor`` then waits for them for ever (seen: a guard-less script hung).
    The probe finds this first and says so.

    Raises
    ------
    PayeshError
        The probe exited with an error, or did not exit within ``timeout`` seconds.
    """
    probe = ctx.Process(target=_started, name="payesh-worker-probe")
    probe.start()
    probe.join(timeout)
    if probe.is_alive():
        probe.kill()
        probe.join()
        why = f"did not start and exit within {timeout:g} s"
    elif probe.exitcode != 0:
        why = f"exited with code {probe.exitcode} while starting"
    else:
        return
    raise PayeshError(
        f"a scene-rendering worker process {why}. Workers are spawned processes that "
        "import the main module again: a script must call generate_city(..., workers=N) "
        'inside `if __name__ == "__main__":` (or use workers=1); its error, if any, is '
        "printed above"
    )


def run_jobs(
    sc: Scenario, jobs: Sequence[SceneJob], *, workers: int
) -> Iterator[tuple[SceneJob, dict[str, float]]]:
    """Run ``jobs`` on ``workers`` processes; yields ``(job, result)`` in the jobs' order.

    Processes are started with ``spawn`` (never ``fork``: the caller may hold threads,
    GDAL's among them), after a probe process showed that they can start
    (:func:`check_workers_start`). At most ``2 × workers`` scenes are in flight, so
    memory stays at about two scenes per worker.
    """
    ctx = multiprocessing.get_context("spawn")
    check_workers_start(ctx)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(sc,)) as pool:
        pending: list[tuple[SceneJob, Future[dict[str, Any]]]] = []
        todo = iter(jobs)
        for job in todo:
            pending.append((job, pool.submit(_run, *job)))
            if len(pending) >= 2 * workers:
                done, fut = pending.pop(0)
                yield done, fut.result()
        for done, fut in pending:
            yield done, fut.result()
