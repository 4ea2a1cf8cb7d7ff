"""Reading imagery onto a city grid with odc-stac, in physical units.

``odc.stac.load`` returns raw digital numbers; here each band is converted with the
``raster:bands`` scale and offset *of the item it came from* (Sentinel-2 processing
baseline >= 04.00 carries a -0.1 reflectance offset, i.e. +1000 DN, older items none),
and nodata becomes NaN. 20 m Sentinel-2 bands are brought to the 10 m grid with
nearest-neighbour resampling, which conserves reflectance: every 20 m pixel becomes
four 10 m pixels of the same value, so block means are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import odc.stac
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from payesh.errors import NoReadableItemsError, SourceError
from payesh.parallel import distributed_client_active, io_threads
from payesh.sources.aws import read_options
from payesh.sources.checksum import readable_href, verify_items
from payesh.sources.http import current_policy, gdal_http_options
from payesh.sources.inflight import SlottedPool
from payesh.sources.profiles import LANDSAT, S2, S2_SATURATED_DN, VIIRS, Product
from payesh.sources.rio_retry import is_remote
from payesh.sources.signing import sign_items
from payesh.sources.validate import skip_bad_items

__all__ = ["S2_REFLECTANCE", "load_landsat_lst", "load_s2", "load_viirs"]

S2_REFLECTANCE = ("blue", "green", "red", "nir", "swir16", "swir22")
KELVIN_TO_C = 273.15

# Used only when an item gives no raster:bands: the published L2A conventions.
_S2_SCALE = 1e-4
_S2_BOA_OFFSET = -0.1  # processing baseline >= 04.00 (from 2022-01-25)


def _raster_band(asset: pystac.Asset) -> dict[str, Any]:
    bands = asset.extra_fields.get("raster:bands") or asset.extra_fields.get("bands") or []
    return dict(bands[0]) if bands else {}


def _s2_offset(item: pystac.Item, declared: float | None) -> float:
    """Reflectance offset of a Sentinel-2 L2A item.

    The declared ``raster:bands`` offset is used, except where the provider says it has
    already removed BOA_ADD_OFFSET from the digital numbers: Earth Search v1 marks such
    items ``earthsearch:boa_offset_applied: true`` while still declaring ``offset: -0.1``
    (Element84/earth-search#66, #71). Applying it twice makes vegetation's red reflectance
    negative, as the real 33TWL items in ``shared/realdata`` show.
    """
    if item.properties.get("earthsearch:boa_offset_applied") is True:
        return 0.0
    if declared is not None:
        return declared
    return _s2_default_offset(item)


def _s2_default_offset(item: pystac.Item) -> float:
    baseline = str(item.properties.get("s2:processing_baseline", "00.00"))
    try:
        return _S2_BOA_OFFSET if float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def _asset_keys(
    items: Sequence[pystac.Item], product: Product, bands: Sequence[str]
) -> dict[str, str]:
    """payesh band -> the asset key the items use; all items must agree."""
    keys: dict[str, str] = {}
    for band in bands:
        found = {product.asset_key(band, frozenset(i.assets)) for i in items}
        if None in found:
            missing = [i.id for i in items if product.asset_key(band, frozenset(i.assets)) is None]
            raise SourceError(
                f"item {missing[0]!r} has no asset for band {band!r} "
                f"(looked for {', '.join(product.bands[band])})"
            )
        if len(found) > 1:
            raise SourceError(
                f"items mix asset keys {sorted(str(k) for k in found)} for band {band!r}"
            )
        keys[band] = found.pop()  # type: ignore[assignment]
    return keys


def _usable(
    items: Sequence[pystac.Item], product: Product, bands: Sequence[str]
) -> list[pystac.Item]:
    """The items to read, ready to read: bad ones skipped, URLs signed where needed.

    Called right before reading (signed URLs expire). An item missing an asset, with no
    or the wrong CRS, a truncated or unreadable file, or bytes failing their
    ``file:checksum`` is skipped with a ``BadItemWarning`` naming it and the asset
    (:mod:`payesh.sources.validate`); the others are returned (signed copies where the
    provider signs, see :mod:`payesh.sources.signing`).
    """
    described = skip_bad_items(items, product, bands, stacklevel=4)
    ready = sign_items(described)
    keys = [product.asset_key(b, frozenset(i.assets)) or "" for i in ready[:1] for b in bands]
    hrefs = [ready[0].assets[k].href for k in keys] if ready else []
    env = gdal_remote_env() if any(is_remote(h) for h in hrefs) else GDAL_LOCAL
    env = env | read_options(ready, keys)  # requester-pays buckets (Earth Search's Landsat)
    return skip_bad_items(ready, product, bands, env=env, all_bad_is_error=True, stacklevel=4)


def _scale_offset_by_time(
    ds: xr.Dataset,
    items: Sequence[pystac.Item],
    asset_key: str,
    *,
    default: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-time (scale, offset) for ``asset_key`` from the items behind each time step."""
    by_time: dict[np.datetime64, set[tuple[float, float]]] = {}
    for item in items:
        rb = _raster_band(item.assets[asset_key])
        fallback = default or (1.0, 0.0)
        scale = float(rb.get("scale", fallback[0]))
        offset = float(rb.get("offset", fallback[1]))
        if item.collection_id in S2.collections:
            offset = _s2_offset(item, float(rb["offset"]) if "offset" in rb else None)
        assert item.datetime is not None
        t = np.datetime64(item.datetime.replace(tzinfo=None), "ns")
        by_time.setdefault(t, set()).add((scale, offset))
    scales, offsets = [], []
    for t in ds.time.values:
        found = by_time.get(np.datetime64(t, "ns"))
        if not found:
            raise SourceError(f"no item found behind time {t} of asset {asset_key!r}")
        if len(found) > 1:
            raise SourceError(f"items at {t} disagree on scale/offset of {asset_key!r}: {found}")
        s, o = found.pop()
        scales.append(s)
        offsets.append(o)
    return np.asarray(scales, dtype="float32"), np.asarray(offsets, dtype="float32")


def _to_physical(
    raw: xr.DataArray, scale: np.ndarray, offset: np.ndarray, nodata: float | None
) -> xr.DataArray:
    s = xr.DataArray(scale, dims="time", coords={"time": raw.time})
    o = xr.DataArray(offset, dims="time", coords={"time": raw.time})
    value = raw.astype("float32") * s + o
    if nodata is not None:
        value = value.where(raw != nodata)
    return value.astype("float32")


# GDAL options for reading COGs. Remote reads must not list directories on open and
# should retry transient HTTP errors; local reads keep directory listing so that
# ``.aux.xml`` sidecars (which some real products carry their georeferencing in) are found.
# GDAL_HTTP_VERSION=2TLS asks for HTTP/2 over https only (multiplexing needs it); plain
# http stays HTTP/1.1 rather than attempting an h2c upgrade. GDAL_HTTP_RETRY_CODES
# (GDAL >= 3.10) retries throttling and gateway errors, not only 502/503/504.
GDAL_REMOTE = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2TLS",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.jp2",
    "VSI_CACHE": "TRUE",
}
GDAL_LOCAL: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}


def gdal_remote_env() -> dict[str, str]:
    """:data:`GDAL_REMOTE` with GDAL's retries and timeouts from the process-wide retry
    policy (:func:`payesh.sources.retry.gdal_http_options`)."""
    return dict(GDAL_REMOTE) | gdal_http_options(current_policy())


def _configure_gdal(items: Sequence[pystac.Item], keys: Mapping[str, str]) -> bool:
    """Set odc-stac's GDAL options for reading ``items``; whether they are remote."""
    hrefs = [i.assets[k].href for i in items[:1] for k in keys.values()]
    remote = any(is_remote(h) for h in hrefs)
    options: dict[str, Any] = gdal_remote_env() if remote else dict(GDAL_LOCAL)
    options |= read_options(items, keys.values())
    odc.stac.configure_rio(cloud_defaults=False, **options)
    return remote


def _load(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    asset_keys: Mapping[str, str],
    *,
    chunks: Mapping[str, int] | Literal["now"] | None,
    resampling: str | dict[str, str] = "nearest",
) -> xr.Dataset:
    """The items' ``asset_keys`` on ``geobox``: Dask-backed (``chunks``; None: one chunk
    per scene), or read now into memory (``"now"``)."""
    items = sign_items(items)  # at read time: signed URLs expire, search results must not
    verify_items(items, asset_keys.values())  # only assets that carry a file:checksum
    remote = _configure_gdal(items, asset_keys)
    try:
        ds = odc.stac.load(
            list(items),
            bands=list(asset_keys.values()),
            geobox=geobox,
            chunks=None if chunks == "now" else dict(chunks) if chunks is not None else {},
            # read now: remote reads overlap their round trips (local: one thread, as before)
            pool=SlottedPool(io_threads()) if chunks == "now" and remote else None,
            resampling=resampling,
            groupby="time",
            fail_on_error=True,
            patch_url=readable_href,  # verified bytes kept in memory, where configured
        )
    except Exception as err:  # odc/rasterio raise many types; report them as one
        raise SourceError(f"cannot load {len(items)} item(s) onto the city grid: {err}") from err
    rename = {v: k for k, v in asset_keys.items() if v != k}
    return ds.rename(rename) if rename else ds


def _now_unless_cluster(chunks: Mapping[str, int] | None) -> Mapping[str, int] | Literal["now"]:
    if chunks is not None:
        return chunks
    return {} if distributed_client_active() else "now"


def load_s2(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    *,
    bands: Sequence[str] = S2_REFLECTANCE,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Sentinel-2 L2A surface reflectance and SCL on ``geobox``.

    Parameters
    ----------
    items
        Sentinel-2 L2A items (Earth Search or Planetary Computer asset keys).
    geobox
        The city grid (10 m).
    bands
        Reflectance bands to read (payesh names); ``scl`` is always read.
    chunks
        Dask chunks, e.g. ``{"time": 1, "y": 1024, "x": 1024}``; default one chunk per scene.

    Returns
    -------
    xarray.Dataset
        ``blue green red nir swir16 swir22``: float32 reflectance (unitless), NaN at
        nodata; ``scl``: uint8 scene classification (0 = nodata). Dims (time, y, x).
    """
    wanted = (*bands, "scl")
    items = _usable(items, S2, wanted)
    if not items:
        raise NoReadableItemsError("no usable Sentinel-2 items to load", problems=[], remote=False)
    keys = _asset_keys(items, S2, wanted)
    raw = _load(items, geobox, keys, chunks=chunks)
    out = xr.Dataset(coords=raw.coords)
    for band in bands:
        nodata = _raster_band(items[0].assets[keys[band]]).get("nodata", 0)
        scale, offset = _scale_offset_by_time(
            raw, items, keys[band], default=(_S2_SCALE, _S2_BOA_OFFSET)
        )
        value = _to_physical(raw[band], scale, offset, nodata)
        out[band] = value.where(raw[band] < S2_SATURATED_DN)  # saturated: missing
        out[band].attrs.update(units="1", long_name=f"{band} surface reflectance")
    out["scl"] = raw["scl"].astype("uint8")
    out["scl"].attrs.update(units="1", long_name="Sentinel-2 scene classification (SCL)")
    out.attrs["source_items"] = [i.id for i in items]
    return out


def load_landsat_lst(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Landsat Collection 2 L2 surface temperature (°C) and QA_PIXEL on ``geobox``.

    ``lwir11`` (ST_B10) is converted as K = DN × scale + offset (0.00341802 and 149.0 in
    Collection 2, read from the item) and reported in °C. Read now, into memory, unless
    ``chunks`` are given or a ``dask.distributed`` cluster is connected (Dask-backed, read
    by its workers): on a city's 30 m grid the scenes are small, and building a Dask
    graph for them took longer than reading them.

    Returns
    -------
    xarray.Dataset
        ``lst``: float32 °C, NaN at nodata; ``qa_pixel``: uint16 bit flags. Dims (time, y, x).
    """
    items = _usable(items, LANDSAT, ("lwir11", "qa_pixel"))
    if not items:
        raise NoReadableItemsError("no usable Landsat items to load", problems=[], remote=False)
    keys = _asset_keys(items, LANDSAT, ("lwir11", "qa_pixel"))
    raw = _load(items, geobox, keys, chunks=_now_unless_cluster(chunks))
    nodata = _raster_band(items[0].assets[keys["lwir11"]]).get("nodata", 0)
    scale, offset = _scale_offset_by_time(raw, items, keys["lwir11"], default=(0.00341802, 149.0))
    kelvin = _to_physical(raw["lwir11"], scale, offset, nodata)
    out = xr.Dataset(coords=raw.coords)
    out["lst"] = (kelvin - KELVIN_TO_C).astype("float32")
    out["lst"].attrs.update(units="degC", long_name="land surface temperature")
    out["qa_pixel"] = raw["qa_pixel"].astype("uint16")
    out["qa_pixel"].attrs.update(units="1", long_name="Landsat QA_PIXEL bit flags")
    out.attrs["source_items"] = [i.id for i in items]
    return out


def load_viirs(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """VIIRS monthly night lights on their native EPSG:4326 grid; read now, into memory
    (a city's crop is a few thousand pixels), unless ``chunks`` are given or a
    ``dask.distributed`` cluster is connected (Dask-backed).

    Returns
    -------
    xarray.Dataset
        ``radiance``: float32 nW·cm⁻²·sr⁻¹ (NaN at nodata); ``cf_cvg``: uint16 count of
        cloud-free observations. Dims (time, y, x), y/x in degrees.
    """
    items = _usable(items, VIIRS, ("radiance", "cf_cvg"))
    if not items:
        raise NoReadableItemsError("no usable night-light items to load", problems=[], remote=False)
    keys = _asset_keys(items, VIIRS, ("radiance", "cf_cvg"))
    raw = _load(items, geobox, keys, chunks=_now_unless_cluster(chunks))
    raw = raw.rename({"latitude": "y", "longitude": "x"}) if "latitude" in raw.dims else raw
    rb = _raster_band(items[0].assets[keys["radiance"]])
    scale, offset = _scale_offset_by_time(raw, items, keys["radiance"])
    out = xr.Dataset(coords=raw.coords)
    out["radiance"] = _to_physical(raw["radiance"], scale, offset, rb.get("nodata"))
    out["radiance"].attrs.update(units="nW cm-2 sr-1", long_name="night-time radiance")
    out["cf_cvg"] = raw["cf_cvg"].astype("uint16")
    out["cf_cvg"].attrs.update(units="1", long_name="cloud-free observations")
    out.attrs["source_items"] = [i.id for i in items]
    return out
