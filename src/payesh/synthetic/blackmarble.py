"""NASA Black Marble files of a generated city: its night lights as VNP46A3 HDF5 tiles.

Real Black Marble files cannot be committed (a 2400 × 2400 tile is several MB; none
small enough is published). :func:`write_tile` writes one with the real layout — the
HDF-EOS5 group ``HDFEOS/GRIDS/VIIRS_Grid_DNB_2d/Data Fields``, the layer names, their
``_FillValue`` / ``scale_factor`` / ``add_offset`` attributes and ``lat`` / ``lon`` of the
pixel centres — and :func:`write_archive` turns the monthly VIIRS night lights that
:func:`payesh.synthetic.generate_city` made into the folder tree of NASA's LAADS DAAC
archive (``archive/allData/5200/VNP46A3/<year>/<day of year>/``), so that a run can read
the same lights through :mod:`payesh.sources.laads` from a server on loopback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import rasterio

from payesh.sources.blackmarble import (
    DATA_FIELDS,
    LAYER,
    QUALITY_FILL,
    RESOLUTION_DEG,
    TILE_PX,
    tile_geobox,
    tiles_over,
)
from payesh.sources.laads import DEFAULT_COLLECTION

__all__ = ["DN_SCALE", "uniform_layers", "write_archive", "write_tile"]

#: nW·cm⁻²·sr⁻¹ per DN of ``NearNadir_Composite_Snow_Free`` (its ``scale_factor``).
DN_SCALE = 0.1
FILL_DN = 65535


def write_tile(
    path: Path | str, tile: str, dn: np.ndarray, quality: np.ndarray, num: np.ndarray
) -> Path:
    """A VNP46A3-like HDF5 file of ``tile`` (``h22v05``): uint16 radiance DN, uint8
    quality (0 good, 2 gap-filled, 255 fill), uint16 observation counts; 2400 × 2400."""
    import h5py

    path = Path(path)
    box = tile_geobox(tile)
    with h5py.File(path, "w") as f:
        fields = f.create_group(DATA_FIELDS)
        rad = fields.create_dataset(LAYER, data=dn, compression="gzip")
        rad.attrs["_FillValue"] = np.array([FILL_DN], dtype="uint16")
        rad.attrs["scale_factor"] = np.array([DN_SCALE], dtype="float32")
        rad.attrs["add_offset"] = np.array([0.0], dtype="float32")
        rad.attrs["units"] = np.bytes_("nW/(cm2 sr)")
        q = fields.create_dataset(f"{LAYER}_Quality", data=quality, compression="gzip")
        q.attrs["_FillValue"] = np.array([QUALITY_FILL], dtype="uint8")
        n = fields.create_dataset(f"{LAYER}_Num", data=num, compression="gzip")
        n.attrs["_FillValue"] = np.array([FILL_DN], dtype="uint16")
        half = RESOLUTION_DEG / 2
        fields["lon"] = box.affine.c + half + RESOLUTION_DEG * np.arange(dn.shape[1])
        fields["lat"] = box.affine.f - half - RESOLUTION_DEG * np.arange(dn.shape[0])
        f.attrs["HorizontalTileNumber"] = np.array([int(tile[1:3])], dtype="int32")
        f.attrs["VerticalTileNumber"] = np.array([int(tile[4:6])], dtype="int32")
    return path


def uniform_layers(dn: int, count: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole tile's layers for :func:`write_tile`: DN ``dn`` everywhere, quality good,
    ``count`` observations."""
    shape = (TILE_PX, TILE_PX)
    return (
        np.full(shape, dn, "uint16"),
        np.zeros(shape, "uint8"),
        np.full(shape, count, "uint16"),
    )


def _month_tiles(
    radiance: np.ndarray, cvg: np.ndarray, transform: rasterio.Affine, tiles: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The lights of one month placed into ``tiles``: (DN, quality, count) each; fill
    outside the city's raster and where it has no clear night (``cf_cvg == 0``)."""
    out = {}
    missing = (cvg == 0) | ~np.isfinite(radiance)
    dn_city = np.where(missing, FILL_DN, np.clip(np.round(radiance / DN_SCALE), 0, FILL_DN - 1))
    for tile in tiles:
        t = tile_geobox(tile).affine
        dn = np.full((TILE_PX, TILE_PX), FILL_DN, dtype="uint16")
        quality = np.full((TILE_PX, TILE_PX), QUALITY_FILL, dtype="uint8")
        num = np.zeros((TILE_PX, TILE_PX), dtype="uint16")
        col0 = round((transform.c - t.c) / RESOLUTION_DEG)
        row0 = round((t.f - transform.f) / RESOLUTION_DEG)
        h, w = radiance.shape
        ys, ye = max(0, -row0), min(h, TILE_PX - row0)
        xs, xe = max(0, -col0), min(w, TILE_PX - col0)
        if ys < ye and xs < xe:
            dst = (slice(ys + row0, ye + row0), slice(xs + col0, xe + col0))
            src = (slice(ys, ye), slice(xs, xe))
            dn[dst] = dn_city[src]
            quality[dst] = np.where(missing[src], QUALITY_FILL, 0)
            num[dst] = np.where(missing[src], 0, cvg[src])
        out[tile] = (dn, quality, num)
    return out


def write_archive(
    catalog: Path | str, root: Path | str, *, production: str = "2025100120000"
) -> list[Path]:
    """The VIIRS months of a generated city's ``catalog`` as VNP46A3 files under ``root``,
    in LAADS DAAC's layout; the paths written.

    Radiance becomes DN of 0.1 nW·cm⁻²·sr⁻¹ (rounded: a pixel differs from the COG's by
    at most 0.05), pixels without a clear night are fill (quality 255), ``cf_cvg`` is the
    observation count. ``production`` is the file names' production time stamp
    (``YYYYDDDHHMMSS``; a later one stands for a reprocessing).
    """
    root = Path(root)
    items = [
        i
        for i in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True)
        if i.collection_id == "viirs-ntl-monthly"
    ]
    written = []
    for item in sorted(items, key=lambda i: str(i.datetime)):
        assert item.datetime is not None
        day = pd.Timestamp(item.datetime.replace(tzinfo=None)).replace(day=1)
        with rasterio.open(item.assets["radiance"].get_absolute_href()) as src:
            radiance, transform = src.read(1).astype("float64"), src.transform
            west, south, east, north = src.bounds
        with rasterio.open(item.assets["cf_cvg"].get_absolute_href()) as src:
            cvg = src.read(1).astype("uint16")
        doy = day.day_of_year
        folder = root / "archive/allData" / DEFAULT_COLLECTION / "VNP46A3" / f"{day.year}/{doy:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        tiles = tiles_over((west, south, east, north))
        for tile, layers in _month_tiles(radiance, cvg, transform, tiles).items():
            name = f"VNP46A3.A{day.year}{doy:03d}.{tile}.002.{production}.h5"
            written.append(write_tile(folder / name, tile, *layers))
    return written
