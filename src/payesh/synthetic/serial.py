"""Rendering and writing scenes one after the other in this process (``workers=1``).

The in-process counterpart of :mod:`payesh.synthetic.parallel`: :func:`serial_jobs`
renders each scene here and hands its COGs to a small thread pool (``_Writer``) that
writes them while the next scene renders; the files are the same as with workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .cog import write_cog
from .grid import DemoSpec, PixelGrid
from .parallel import S2_10M, S2_FILES, SceneJob
from .scenario import Scenario
from .sensors import ViirsRenderer, render_landsat, render_s2

__all__ = ["serial_jobs"]


class _Writer:
    """Writes one scene's COGs in background threads while the next scene renders.

    At most one scene waits to be written, so memory stays at about two scenes.
    """

    def __init__(self, spec: DemoSpec) -> None:
        self.spec = spec
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.pending: list[Future[None]] = []

    def submit(self, files: list[tuple[Path, np.ndarray, PixelGrid, float | None]]) -> None:
        self.wait()
        self.pending = [
            self.pool.submit(write_cog, path, data, grid, nodata=nodata, spec=self.spec)
            for path, data, grid, nodata in files
        ]

    def wait(self) -> None:
        for f in self.pending:
            f.result()
        self.pending = []

    def close(self) -> None:
        self.wait()
        self.pool.shutdown()


def serial_jobs(sc: Scenario, jobs: list[SceneJob]) -> Iterator[tuple[SceneJob, dict[str, float]]]:
    """Render scenes one after the other in this process, writing each while the next renders."""
    writer = _Writer(sc.spec)
    grids = sc.grids
    viirs: ViirsRenderer | None = None
    try:
        for job in jobs:
            kind, i, folder_name, item_id = job
            folder = Path(folder_name)
            if kind == "s2":
                scene = render_s2(sc, i)
                writer.submit(
                    [
                        (
                            folder / f"{fname}.tif",
                            scene.bands[key],
                            grids.s2_10 if key in S2_10M else grids.s2_20,
                            0,
                        )
                        for key, fname in S2_FILES
                    ]
                )
                yield job, scene.stats
            elif kind == "landsat":
                ls = render_landsat(sc, i)
                writer.submit(
                    [
                        (folder / f"{item_id}_ST_B10.TIF", ls.lwir11, grids.landsat, 0),
                        (folder / f"{item_id}_QA_PIXEL.TIF", ls.qa_pixel, grids.landsat, 1),
                    ]
                )
                yield job, {"cloud_cover": ls.cloud_cover}
            else:
                writer.wait()
                viirs = viirs or ViirsRenderer(sc)
                vm = viirs.render(i)
                write_cog(
                    folder / "radiance.tif", vm.radiance, grids.viirs, nodata=None, spec=sc.spec
                )
                write_cog(folder / "cf_cvg.tif", vm.cf_cvg, grids.viirs, nodata=None, spec=sc.spec)
                yield job, {"missing_fraction": round(float((vm.cf_cvg == 0).mean()), 4)}
    finally:
        writer.close()
