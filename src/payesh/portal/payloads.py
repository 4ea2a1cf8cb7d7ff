"""What the portal's heavier answers carry: a map tile, a site's evidence chip, a download.

:func:`_render` draws one XYZ tile of a layer, :func:`_chip` one site's evidence chip, and
:func:`_export` writes a layer to a file in a download format (under
:data:`~payesh.portal.guard.GDAL_HARDENING`). The endpoints of :mod:`payesh.portal.app`
call them; the heavy libraries (matplotlib, rasterio, the exporters) are imported only
when a chip or a download is asked for, which keeps the portal's import light.
"""

from pathlib import Path

import numpy as np
from fastapi import HTTPException

from payesh.portal.data import CityData, Layer, site_curves, window_of
from payesh.portal.guard import GDAL_HARDENING
from payesh.portal.tiles import empty_tile, render_tile, source_window

__all__ = ["_chip", "_export", "_render"]


def _render(c: CityData, lyr: Layer, ti: int | None, z: int, x: int, y: int) -> bytes:
    grid = c.grid(lyr.group)
    win = source_window(grid, z, x, y)
    if win is None:
        return empty_tile()
    rows, cols, tr = win
    arr = c.values(lyr, ti)[rows, cols]
    smooth = lyr.group != "tiles" and not lyr.is_date and lyr.name != "cf_cvg"
    return render_tile(arr, grid, tr, z, x, y, c.style(lyr), smooth=smooth)


def _chip(c: CityData, site_id: str) -> bytes:
    from payesh.portal.chips import render_chip, true_colour_window

    if c.sites is None or "pixels" not in c.groups or "builtup_prob" not in c.groups["pixels"]:
        raise HTTPException(404, "this city has no site evidence")
    match = c.sites[c.sites["site_id"].astype(str) == site_id]
    if match.empty:
        raise HTTPException(404, "no such site")
    grid = c.grid("pixels")
    row = match.to_crs(grid.crs).iloc[0]
    win = window_of(grid, row.geometry.bounds, pad_m=20 * abs(grid.transform.a))
    if win is None:
        raise HTTPException(404, "the site lies outside the pixel grid")
    rows, cols, tr = win
    prob = c.groups["pixels"]["builtup_prob"].isel(y=rows, x=cols)
    arr = np.asarray(prob.compute(scheduler="synchronous").values, dtype="float32")
    if grid.flip_y:
        arr = arr[:, ::-1, :]
    from payesh.portal.data import _months

    return render_chip(
        arr,
        tr,
        _months(c.groups["pixels"]),
        row.geometry,
        site_id=site_id,
        first_seen=row["first_seen"],
        curve=site_curves(c).get(site_id, []),
        rgb=true_colour_window(c.groups["pixels"], rows, cols, flip_y=grid.flip_y),
    )


def _export(c: CityData, layer: str, format: str, time: str | None, out: Path) -> None:
    import rasterio

    from payesh.export import export_layer, export_sites, export_tiles_csv

    with rasterio.Env(**GDAL_HARDENING):
        if layer == "sites":
            assert c.sites is not None
            export_sites(c.sites, out, format=format)
        elif layer == "tiles" and format == "csv":
            export_tiles_csv(c.groups["tiles"], out, time=time)
        else:
            group = "tiles" if layer == "tiles" else c.layers[layer].group
            export_layer(c.groups[group], layer, out, format=format, time=time)
