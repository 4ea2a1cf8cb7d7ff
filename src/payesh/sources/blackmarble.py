"""NASA Black Marble night lights: VNP46A3 (monthly) and VNP46A4 (yearly) HDF5 tiles.

Black Marble tiles are 10° × 10° on a global lon/lat grid (``h`` 0–35 from 180° W,
``v`` 0–17 from 90° N), 2400 × 2400 pixels of 15 arc-seconds each, corners on whole
multiples of the pixel size: the lattice :func:`payesh.grid.ntl_geobox` builds with its
default origin, so no pixel is resampled. Each HDF5-EOS file holds, under
``HDFEOS/GRIDS/VIIRS_Grid_DNB_2d/Data Fields``:

* ``NearNadir_Composite_Snow_Free`` — uint16 radiance, ``_FillValue`` 65535, and
  ``scale_factor`` / ``add_offset`` attributes (0.1 / 0 in the files: nW·cm⁻²·sr⁻¹);
* ``NearNadir_Composite_Snow_Free_Quality`` — uint8: 0 good (> 3 observations),
  1 poor (≤ 3), 2 gap-filled from earlier data, 255 fill;
* ``NearNadir_Composite_Snow_Free_Num`` — uint16 number of observations behind the value;
* ``lat`` / ``lon`` — pixel-centre coordinates (degrees).

:func:`blackmarble_month` mosaics the tiles over a night-light grid into the same
Dataset :func:`payesh.monthly.viirs_month` returns — ``radiance`` (NaN where missing)
and ``cf_cvg`` (observations) — so indicators do not care which provider it came from.
Fill (65535, or quality 255) is missing, not dark. Gap-filled pixels keep their value and
are counted in ``attrs["gap_filled_pixels"]``; their ``cf_cvg`` is the number of
observations the file reports for them (usually 0).

Downloads come from NASA's LAADS DAAC archive with an Earthdata bearer token
(:func:`earthdata_token` reads ``EARTHDATA_TOKEN``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import requests
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from pystac_client.exceptions import APIError
from shapely.geometry import box as shapely_box
from shapely.geometry import mapping

from payesh.errors import SourceError
from payesh.sources.http import DEFAULT_POLICY, RetryPolicy, check_response, with_retries

__all__ = [
    "BLACK_MARBLE_PRODUCTS",
    "DATA_FIELDS",
    "LAADS_URL",
    "LAYER",
    "RESOLUTION_DEG",
    "blackmarble_month",
    "cache_dir",
    "download_tile",
    "earthdata_token",
    "fetch",
    "fetch_item",
    "items_month",
    "laads_directory_url",
    "laads_url",
    "mosaic",
    "read_tile",
    "search_granules",
    "tile_geobox",
    "tiles_over",
]

DATA_FIELDS = "HDFEOS/GRIDS/VIIRS_Grid_DNB_2d/Data Fields"
LAYER = "NearNadir_Composite_Snow_Free"
TILE_DEG = 10.0
TILE_PX = 2400
RESOLUTION_DEG = TILE_DEG / TILE_PX  # 15 arc-seconds
QUALITY_GAP_FILLED = 2
QUALITY_FILL = 255
#: product -> how often (VNP46A3 monthly composites, VNP46A4 yearly).
BLACK_MARBLE_PRODUCTS: Mapping[str, str] = {"VNP46A3": "monthly", "VNP46A4": "yearly"}
LAADS_URL = "https://ladsweb.modaps.eosdis.nasa.gov"
DEFAULT_COLLECTION = "5200"  # LAADS collection of Black Marble v2
#: Environment: the LAADS server to use, and where downloaded tiles are kept.
LAADS_ENV = "PAYESH_LAADS_URL"
CACHE_ENV = "PAYESH_BLACKMARBLE_DIR"
_TILE_ID = re.compile(r"^h(\d{2})v(\d{2})$")


def _parse_tile(tile: str) -> tuple[int, int]:
    m = _TILE_ID.match(tile)
    if not m or int(m.group(1)) > 35 or int(m.group(2)) > 17:
        raise SourceError(f"{tile!r} is not a Black Marble tile id (h00v00 … h35v17)")
    return int(m.group(1)), int(m.group(2))


def tile_geobox(tile: str) -> GeoBox:
    """The 2400 × 2400 EPSG:4326 grid of Black Marble tile ``tile`` (``h21v05``)."""
    h, v = _parse_tile(tile)
    transform = Affine(
        RESOLUTION_DEG, 0.0, -180.0 + TILE_DEG * h, 0.0, -RESOLUTION_DEG, 90.0 - TILE_DEG * v
    )
    return GeoBox((TILE_PX, TILE_PX), transform, "EPSG:4326")


@lru_cache(maxsize=4)
def _tile_polygons(path: str) -> tuple[tuple[str, tuple[float, float, float, float]], ...]:
    try:
        features = json.loads(Path(path).read_text())["features"]
        out = []
        for f in features:
            xs = [p[0] for p in f["geometry"]["coordinates"][0]]
            ys = [p[1] for p in f["geometry"]["coordinates"][0]]
            out.append((str(f["properties"]["TileID"]), (min(xs), min(ys), max(xs), max(ys))))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise SourceError(f"{path}: not a Black Marble tile grid (GeoJSON, TileID): {err}") from err
    return tuple(out)


def tiles_over(bbox: Sequence[float], *, grid: Path | str | None = None) -> list[str]:
    """Ids of the Black Marble tiles a lon/lat ``bbox`` (west, south, east, north) overlaps.

    With ``grid``, the tiles are read from the published tile grid
    (``blackmarbletiles.geojson``, property ``TileID``); without, they follow from the
    grid's definition (10° tiles from 180° W, 90° N) — the same answer. Tiles that only
    touch the bbox along an edge are left out.
    """
    west, south, east, north = bbox
    if grid is not None:
        found = [
            tile
            for tile, (x0, y0, x1, y1) in _tile_polygons(str(grid))
            if x0 < east and west < x1 and y0 < north and south < y1
        ]
        return sorted(found)
    h0 = max(0, math.floor((west + 180.0) / TILE_DEG))
    h1 = min(35, math.ceil((east + 180.0) / TILE_DEG) - 1)
    v0 = max(0, math.floor((90.0 - north) / TILE_DEG))
    v1 = min(17, math.ceil((90.0 - south) / TILE_DEG) - 1)
    return sorted(f"h{h:02d}v{v:02d}" for h in range(h0, h1 + 1) for v in range(v0, v1 + 1))


def _attr(ds: object, name: str, default: float | None) -> float | None:
    value = getattr(ds, "attrs", {}).get(name)
    if value is None:
        return default
    return float(np.asarray(value).ravel()[0])


def read_tile(path: Path | str, *, layer: str = LAYER) -> xr.Dataset:
    """One Black Marble HDF5 tile on its own grid, in physical units.

    Returns
    -------
    xarray.Dataset
        ``radiance`` float32 nW·cm⁻²·sr⁻¹ (NaN at fill or quality 255), ``cf_cvg``
        uint16 observations (0 where missing), ``gap_filled`` bool; dims (y, x), EPSG:4326.

    Raises
    ------
    SourceError
        The file is not HDF5, or lacks the layer or its quality layer.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            fields = f[DATA_FIELDS]
            if layer not in fields or f"{layer}_Quality" not in fields:
                raise SourceError(
                    f"{path}: no {layer!r} and {layer + '_Quality'!r} under {DATA_FIELDS!r} "
                    f"(it has: {', '.join(sorted(fields))})"
                )
            rad = fields[layer]
            raw = rad[()]
            fill = _attr(rad, "_FillValue", 65535.0)
            scale = _attr(rad, "scale_factor", 1.0)
            offset = _attr(rad, "add_offset", 0.0)
            quality = fields[f"{layer}_Quality"][()]
            num = fields[f"{layer}_Num"][()] if f"{layer}_Num" in fields else None
            num_fill = (
                _attr(fields[f"{layer}_Num"], "_FillValue", 65535.0) if num is not None else None
            )
            lat = fields["lat"][()] if "lat" in fields else None
            lon = fields["lon"][()] if "lon" in fields else None
    except SourceError:
        raise
    except (OSError, KeyError) as err:
        raise SourceError(f"{path}: cannot read it as a Black Marble HDF5 tile: {err}") from err
    if lat is not None and lon is not None:
        west, north = float(lon[0]) - RESOLUTION_DEG / 2, float(lat[0]) + RESOLUTION_DEG / 2
    else:
        m = re.search(r"\.(h\d{2}v\d{2})\.", path.name)
        if m is None:
            raise SourceError(f"{path}: no lat/lon layers and no hNNvNN tile id in its name")
        box = tile_geobox(m.group(1))
        west, north = box.affine.c, box.affine.f
    gbox = GeoBox(
        raw.shape, Affine(RESOLUTION_DEG, 0.0, west, 0.0, -RESOLUTION_DEG, north), "EPSG:4326"
    )
    missing = quality == QUALITY_FILL
    if fill is not None:
        missing |= raw == fill
    radiance = np.where(missing, np.nan, raw.astype("float64") * (scale or 1.0) + (offset or 0.0))
    if num is None:
        count = (~missing).astype("uint16")
    else:
        bad_num = (num == num_fill) if num_fill is not None else np.zeros(num.shape, bool)
        count = np.where(missing | bad_num, 0, num).astype("uint16")
    template = xr_zeros(gbox, dtype="float32")
    out = xr.Dataset(
        {
            "radiance": template.copy(data=radiance.astype("float32")),
            "cf_cvg": template.copy(data=count),
            "gap_filled": template.copy(data=(quality == QUALITY_GAP_FILLED) & ~missing),
        }
    )
    out = out.rename({"latitude": "y", "longitude": "x"}) if "latitude" in out.dims else out
    out["radiance"].attrs.update(units="nW cm-2 sr-1", long_name="night-time radiance")
    out["cf_cvg"].attrs.update(units="1", long_name="observations behind the composite")
    return out


def _offset(target: float, source: float) -> int:
    steps = (target - source) / RESOLUTION_DEG
    n = round(steps)
    if abs(steps - n) > 1e-3:
        raise SourceError(
            f'the night-light grid is not on the Black Marble 15" lattice (off by '
            f"{steps - n:+.3f} px); build it with payesh.grid.ntl_geobox(city) (origin 0, 0)"
        )
    return int(n)


def blackmarble_month(
    paths: Sequence[Path | str], geobox: GeoBox, month: pd.Timestamp
) -> xr.Dataset:
    """The tiles in ``paths`` mosaicked onto the night-light grid ``geobox`` for ``month``.

    Returns
    -------
    xarray.Dataset
        As :func:`payesh.monthly.viirs_month`: ``radiance`` float32 nW·cm⁻²·sr⁻¹ (NaN
        where missing) and ``cf_cvg`` uint16; dims (time=1, y, x). ``attrs``:
        ``source_items`` (file names without ``.h5``: the ids of
        :func:`search_granules`' items), ``gap_filled_pixels`` (how many kept values were
        gap-filled).
    """
    return mosaic([(Path(p).name.removesuffix(".h5"), read_tile(p)) for p in paths], geobox, month)


def mosaic(
    tiles: Sequence[tuple[str, xr.Dataset]], geobox: GeoBox, month: pd.Timestamp
) -> xr.Dataset:
    """Tiles read by :func:`read_tile`, each with its id, placed on ``geobox`` (the
    first tile to give a pixel a value wins); as :func:`blackmarble_month`."""
    ny, nx = geobox.shape
    radiance = np.full((ny, nx), np.nan, dtype="float32")
    count = np.zeros((ny, nx), dtype="uint16")
    gap = np.zeros((ny, nx), dtype=bool)
    t = geobox.affine
    used = []
    for name, tile in tiles:
        ta = tile.odc.geobox.affine
        col0 = _offset(t.c, ta.c)
        row0 = _offset(ta.f, t.f)
        th, tw = tile["radiance"].shape
        ys, ye = max(0, -row0), min(ny, th - row0)
        xs, xe = max(0, -col0), min(nx, tw - col0)
        if ys >= ye or xs >= xe:
            continue
        src = (slice(ys + row0, ye + row0), slice(xs + col0, xe + col0))
        dst = (slice(ys, ye), slice(xs, xe))
        value = tile["radiance"].values[src]
        fresh = np.isnan(radiance[dst]) & ~np.isnan(value)
        radiance[dst] = np.where(fresh, value, radiance[dst])
        count[dst] = np.where(fresh, tile["cf_cvg"].values[src], count[dst])
        gap[dst] |= fresh & tile["gap_filled"].values[src]
        used.append(name)
    template = xr_zeros(geobox, dtype="float32")
    out = xr.Dataset(
        {"radiance": template.copy(data=radiance), "cf_cvg": template.copy(data=count)}
    )
    out = out.rename({"latitude": "y", "longitude": "x"}) if "latitude" in out.dims else out
    out = out.expand_dims(time=[month])
    out["radiance"].attrs.update(units="nW cm-2 sr-1", long_name="night-time radiance")
    out["cf_cvg"].attrs.update(units="1", long_name="observations behind the composite")
    out.attrs["source_items"] = used
    out.attrs["gap_filled_pixels"] = int(gap.sum())
    return out


# --- downloads ------------------------------------------------------------------------------


def earthdata_token(environ: Mapping[str, str] = os.environ) -> str:
    """The NASA Earthdata bearer token from ``EARTHDATA_TOKEN``.

    Raises
    ------
    SourceError
        The variable is unset or empty.
    """
    token = environ.get("EARTHDATA_TOKEN", "").strip()
    if not token:
        raise SourceError(
            "EARTHDATA_TOKEN is not set: Black Marble downloads from LAADS DAAC need a NASA "
            "Earthdata token (create one at https://urs.earthdata.nasa.gov/profile)"
        )
    return token


def _day_of_year(product: str, when: date) -> date:
    if product not in BLACK_MARBLE_PRODUCTS:
        raise SourceError(
            f"unknown Black Marble product {product!r} (payesh reads: "
            f"{', '.join(BLACK_MARBLE_PRODUCTS)})"
        )
    return date(when.year, 1, 1) if product == "VNP46A4" else date(when.year, when.month, 1)


def laads_directory_url(
    product: str, when: date, *, collection: str = DEFAULT_COLLECTION, base: str = LAADS_URL
) -> str:
    """The LAADS DAAC archive folder holding ``product``'s tiles for the period of ``when``.

    VNP46A3 files are dated the first day of their month, VNP46A4 the first of the year:
    ``{base}/archive/allData/5200/VNP46A3/2025/060`` holds March 2025.
    """
    day = _day_of_year(product, when)
    doy = day.timetuple().tm_yday
    return f"{base.rstrip('/')}/archive/allData/{collection}/{product}/{day.year}/{doy:03d}"


def laads_url(environ: Mapping[str, str] = os.environ) -> str:
    """The LAADS DAAC server: ``PAYESH_LAADS_URL`` if set (a mirror, or a test server),
    else :data:`LAADS_URL`."""
    return environ.get(LAADS_ENV, "").strip() or LAADS_URL


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where downloaded tiles are kept and reused: ``PAYESH_BLACKMARBLE_DIR``, else
    ``data/blackmarble``."""
    return Path(environ.get(CACHE_ENV, "").strip() or "data/blackmarble")


def _get(
    url: str, token: str, policy: RetryPolicy, *, stream: bool = False, missing_ok: bool = False
) -> requests.Response | None:
    """GET ``url`` with the bearer token, retried on 429/5xx/timeouts; ``None`` for a 404
    when ``missing_ok`` (a period LAADS has not published yet)."""

    def once() -> requests.Response:
        resp = requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=policy.timeout, stream=stream
        )
        try:
            check_response(resp)
        except Exception:
            resp.close()
            raise
        if "text/html" in resp.headers.get("Content-Type", ""):
            resp.close()
            raise SourceError(
                f"{url}: answered with an HTML page, not data — the Earthdata token is likely "
                f"invalid or expired"
            )
        return resp

    try:
        return with_retries(once, url=f"GET {url}", policy=policy)
    except APIError as err:
        status = getattr(err, "status_code", None)
        if status == 404 and missing_ok:
            return None
        hint = " — check EARTHDATA_TOKEN" if status in (401, 403) else ""
        raise SourceError(f"{url}: download failed: {err}{hint}") from err
    except requests.RequestException as err:
        raise SourceError(f"{url}: download failed: {err}") from err


def _listing(folder: str, token: str, policy: RetryPolicy) -> list[dict[str, Any]] | None:
    """The entries of a LAADS archive folder (``<folder>.json``); ``None`` if it does not
    exist (404: not published yet)."""
    resp = _get(folder + ".json", token, policy, missing_ok=True)
    if resp is None:
        return None
    with resp:
        try:
            listing = resp.json()
        except ValueError as err:
            raise SourceError(f"{folder}.json: not a JSON listing: {err}") from err
    entries = listing.get("content", []) if isinstance(listing, dict) else listing
    if not isinstance(entries, list):
        raise SourceError(f"{folder}.json: no list of files (got {type(entries).__name__})")
    return [e for e in entries if isinstance(e, dict)]


def _latest(entries: Sequence[Mapping[str, Any]], prefix: str) -> Mapping[str, Any] | None:
    """The entry of the latest production of a tile-period (names sort by production time)."""
    found = sorted(
        (e for e in entries if str(e.get("name", "")).startswith(prefix)),
        key=lambda e: str(e["name"]),
    )
    return found[-1] if found else None


def _granule_item(
    product: str, tile: str, day: date, folder: str, entry: Mapping[str, Any]
) -> pystac.Item:
    """A STAC item for one Black Marble file: id the file name without ``.h5``, the
    ``radiance`` asset its LAADS URL (with the tile's grid as ``proj:transform`` and the
    listed size), dated the first day of its period."""
    name = str(entry["name"])
    box = tile_geobox(tile)
    west, south, east, north = box.boundingbox
    a = box.affine
    end = (pd.Timestamp(day) + pd.DateOffset(months=1 if product == "VNP46A3" else 12)).date()
    item = pystac.Item(
        id=name.removesuffix(".h5"),
        geometry=mapping(shapely_box(west, south, east, north)),
        bbox=[west, south, east, north],
        datetime=datetime(day.year, day.month, day.day, tzinfo=UTC),
        properties={
            "start_datetime": f"{day.isoformat()}T00:00:00Z",
            "end_datetime": f"{end.isoformat()}T00:00:00Z",
            "blackmarble:tile": tile,
            "proj:code": "EPSG:4326",
        },
        collection=product,
    )
    extra: dict[str, Any] = {"proj:transform": [a.a, a.b, a.c, a.d, a.e, a.f]}
    if isinstance(entry.get("size"), int):
        extra["file:size"] = entry["size"]
    if (md5 := _listed_md5(entry)) is not None:
        extra["file:checksum"] = "d50110" + md5  # multihash: MD5, 16 bytes
    item.add_asset(
        "radiance",
        pystac.Asset(
            href=f"{folder}/{name}",
            media_type="application/x-hdf5",
            roles=["data"],
            title=f"{LAYER} and its quality layers",
            extra_fields=extra,
        ),
    )
    return item


def search_granules(
    bbox: Sequence[float],
    months: Sequence[pd.Timestamp],
    *,
    token: str,
    product: str = "VNP46A3",
    base: str = LAADS_URL,
    collection: str = DEFAULT_COLLECTION,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> tuple[list[pystac.Item], list[str]]:
    """The Black Marble files over ``bbox`` for ``months``, as STAC items; and what is missing.

    One archive listing per period (month for VNP46A3, year for VNP46A4); for each tile
    over ``bbox`` the latest production. A period whose folder does not exist yet, or
    lacks a tile, is named in the second list (``2025-11 (not published)``,
    ``2025-03 h22v05``) rather than failing the run.

    Raises
    ------
    SourceError
        The server refuses the token, stays down through the retries, or answers with
        something that is not a listing.
    """
    tiles = tiles_over(bbox)
    items: list[pystac.Item] = []
    missing: list[str] = []
    seen: set[date] = set()
    for month in months:
        day = _day_of_year(product, month.date())
        if day in seen:
            continue
        seen.add(day)
        folder = laads_directory_url(product, day, collection=collection, base=base)
        entries = _listing(folder, token, policy)
        label = f"{day:%Y-%m}" if product == "VNP46A3" else f"{day:%Y}"
        if entries is None:
            missing.append(f"{label} (not published)")
            continue
        for tile in tiles:
            prefix = f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{tile}."
            entry = _latest(entries, prefix)
            if entry is None:
                missing.append(f"{label} {tile}")
            else:
                items.append(_granule_item(product, tile, day, folder, entry))
    return items, missing


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed_md5(entry_or_asset: Mapping[str, Any]) -> str | None:
    """The MD5 (hex) a listing entry (``md5sum``) or an item's asset (``file:checksum``,
    multihash ``d50110…``) gives, if any."""
    text = entry_or_asset.get("md5sum")
    if isinstance(text, str) and re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return text.lower()
    multihash = entry_or_asset.get("file:checksum")
    if isinstance(multihash, str) and re.fullmatch(r"d50110[0-9a-fA-F]{32}", multihash):
        return multihash[6:].lower()
    return None


def _intact(path: Path, size: int | None, md5: str | None) -> str | None:
    """Why the file at ``path`` is not the one listed (``None``: it is)."""
    got = path.stat().st_size
    if size is not None and got != size:
        return f"{got} bytes, the archive lists {size}"
    if md5 is not None and (found := _md5(path)) != md5:
        return f"MD5 {found}, the archive lists {md5}"
    return None


def fetch(
    url: str,
    dest: Path | str,
    *,
    token: str,
    size: int | None = None,
    md5: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Path:
    """Download ``url`` into folder ``dest`` (kept under its own name); its path.

    An existing file of that name (of ``size`` bytes and MD5 ``md5``, when given) is
    reused. The bytes go to ``<name>.part`` first and are renamed when complete and
    checked, so an interrupted or damaged download never looks like a finished one; a
    download that does not match the listing is tried once more, then reported.

    Raises
    ------
    SourceError
        The server refuses the token, the file is not there, the download fails, or
        twice its bytes do not match the listing.
    """
    out = Path(dest) / url.rsplit("/", 1)[-1]
    if out.is_file() and _intact(out, size, md5) is None:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.{uuid.uuid4().hex[:8]}.part")  # runs side by side
    why = None
    for _ in range(2):
        resp = _get(url, token, policy, stream=True)
        assert resp is not None
        try:
            with resp, part.open("wb") as f:
                for block in resp.iter_content(1 << 20):
                    f.write(block)
        except requests.RequestException as err:
            part.unlink(missing_ok=True)
            raise SourceError(f"{url}: download failed: {err}") from err
        why = _intact(part, size, md5)
        if why is None:
            part.replace(out)
            return out
    part.unlink(missing_ok=True)
    raise SourceError(f"{url}: downloaded twice, {why} both times; not kept")


def fetch_item(
    item: pystac.Item,
    dest: Path | str,
    *,
    token: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Path:
    """The local file of a Black Marble item (:func:`search_granules`), downloaded once
    into ``dest`` and checked against the listing's size and MD5 (``file:size``,
    ``file:checksum``); a local href is used where it is. ``token``: default
    :func:`earthdata_token`, asked for only when a download is needed."""
    asset = item.assets["radiance"]
    href = asset.get_absolute_href() or asset.href
    if "://" not in href or href.startswith("file://"):
        return Path(href.removeprefix("file://"))
    size = asset.extra_fields.get("file:size")
    size = size if isinstance(size, int) else None
    md5 = _listed_md5(asset.extra_fields)
    cached = Path(dest) / href.rsplit("/", 1)[-1]
    if cached.is_file() and _intact(cached, size, md5) is None:
        return cached
    try:
        return fetch(
            href, dest, token=token or earthdata_token(), size=size, md5=md5, policy=policy
        )
    except SourceError as err:
        raise SourceError(f"Black Marble item {item.id!r}: {err}") from err


def items_month(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    month: pd.Timestamp,
    *,
    dest: Path | str | None = None,
    token: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> xr.Dataset:
    """The month of night lights from Black Marble items (:func:`search_granules`):
    each file downloaded into ``dest`` (default :func:`cache_dir`) unless already there,
    then :func:`blackmarble_month` on ``geobox``.

    Files are checked against the listing's size and MD5 where it gives them (a kept
    copy that no longer matches is downloaded again). A file that does not read as a
    Black Marble tile is deleted and downloaded once more; if it still does not read,
    the error names the item and its URL — never an empty month.

    Raises
    ------
    SourceError
        A download fails or a file stays unreadable.
    """
    dest = cache_dir() if dest is None else Path(dest)
    tiles = []
    for item in items:
        path = fetch_item(item, dest, token=token, policy=policy)
        try:
            tile = read_tile(path)
        except SourceError as err:
            href = item.assets["radiance"].href
            if "://" not in href or href.startswith("file://"):
                raise SourceError(f"Black Marble item {item.id!r}: {err}") from err
            # a kept copy spoilt after its download (no MD5 listed to tell): once more
            path.unlink(missing_ok=True)
            path = fetch_item(item, dest, token=token, policy=policy)
            try:
                tile = read_tile(path)
            except SourceError as again:
                path.unlink(missing_ok=True)
                raise SourceError(
                    f"Black Marble item {item.id!r} ({href}): downloaded twice, unreadable "
                    f"both times: {again}"
                ) from again
        tiles.append((item.id, tile))
    return mosaic(tiles, geobox, month)


def download_tile(
    product: str,
    tile: str,
    when: date,
    dest: Path | str,
    *,
    token: str,
    base: str = LAADS_URL,
    collection: str = DEFAULT_COLLECTION,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Path:
    """Download one Black Marble tile-period to ``dest`` (a folder); its path.

    The archive folder's listing (``<folder>.json``) gives the file name (it carries a
    production time stamp), then the file is fetched; both with ``Authorization: Bearer
    <token>``, retried on 429/5xx. An existing file of that name is reused.

    Raises
    ------
    SourceError
        No such file in the archive, the server refuses the token, or the download fails.
    """
    _parse_tile(tile)
    folder = laads_directory_url(product, when, collection=collection, base=base)
    day = _day_of_year(product, when)
    prefix = f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{tile}."
    entries = _listing(folder, token, policy)
    entry = _latest(entries or [], prefix)
    if entry is None:
        why = " (the folder does not exist)" if entries is None else ""
        raise SourceError(f"{folder}: no {prefix}*.h5 file for tile {tile} ({product}, {day}){why}")
    size = entry.get("size")
    return fetch(
        f"{folder}/{entry['name']}",
        dest,
        token=token,
        size=size if isinstance(size, int) else None,
        md5=_listed_md5(entry),
        policy=policy,
    )
