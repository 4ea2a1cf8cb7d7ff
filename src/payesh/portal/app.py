"""The portal's HTTP service (FastAPI): the map page, map tiles, legends, sites, downloads.

Every ``/api`` endpoint needs ``Authorization: Bearer <token>``; a municipality's token
reads only its own city, and another city answers 404 exactly as a city that does not
exist. Requests are rate-limited per token (429 with ``Retry-After``).

The service reads the stores only. Nothing taken from a request is ever used as a path
or URL: cities are looked up among the stores found under the root, layers among a
store's variables, months among its months, formats in a fixed list, static files in a
fixed table read at start-up. Errors say what is wrong without naming any file.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations,
some of which are local to :func:`create_app`.)
"""

import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask

from payesh.errors import PayeshError
from payesh.portal.data import CityData, Layer, Registry, site_curves, sites_geojson, window_of
from payesh.portal.tiles import (
    MAX_ZOOM,
    empty_tile,
    legend,
    render_tile,
    source_window,
)
from payesh.portal.tokens import RateLimiter, TokenRecord, TokenStore, describe

__all__ = ["GDAL_HARDENING", "create_app"]

log = logging.getLogger("payesh.portal")

#: GDAL configuration of the service: no VRT driver (a VRT can point at any file),
#: no network file systems, no directory listings next to opened files.
GDAL_HARDENING = {
    "GDAL_SKIP": "VRT",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".payesh-none",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "VSI_CACHE": "FALSE",
}

_MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
_NAME = r"^[a-z0-9_-]{1,64}$"
_LAYER = r"^[a-z0-9_]{1,64}$"
_SITE = r"^[A-Za-z0-9_.:-]{1,64}$"
_PATHLIKE = re.compile(r"(/[^\s'\"]+)+")
_TILE_CACHE = 4096
_MEDIA = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_EXT = {"cog": "tif", "netcdf": "nc", "csv": "csv", "geojson": "geojson", "parquet": "parquet"}
_MIME = {
    "cog": "image/tiff; application=geotiff; profile=cloud-optimized",
    "netcdf": "application/x-netcdf",
    "csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
    "parquet": "application/vnd.apache.parquet",
}
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; worker-src 'self' blob:; "
    "child-src blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

Format = Literal["cog", "netcdf", "csv", "geojson", "parquet"]
CityName = Annotated[str, PathParam(pattern=_NAME, description="city id")]
LayerName = Annotated[str, PathParam(pattern=_LAYER, description="layer (variable) name")]
Month = Annotated[
    str | None, Query(pattern=_MONTH, description="a month, YYYY-MM (default: latest)")
]


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The fixed table of static files (read once; requests only look names up in it)."""
    base = resources.files("payesh.portal") / "static"
    table: dict[str, tuple[bytes, str]] = {}
    for rel in (
        "index.html",
        "app.js",
        "app.css",
        "vendor/maplibre-gl.js",
        "vendor/maplibre-gl.css",
    ):
        item = base.joinpath(*rel.split("/"))
        if item.is_file():
            table[rel] = (item.read_bytes(), _MEDIA[Path(rel).suffix])
        elif rel.startswith("vendor/"):
            log.warning("portal: %s is missing; build it with `make web`", rel)
    return table


def _scrub(message: str) -> str:
    """A library message without anything that looks like a filesystem path."""
    return _PATHLIKE.sub("<…>", message)


def create_app(
    store_root: str | os.PathLike[str],
    *,
    tokens: TokenStore,
    rate: float = 50.0,
    burst: float = 200.0,
    refresh_s: float = 30.0,
) -> FastAPI:
    """The portal application over the city stores under ``store_root``.

    Parameters
    ----------
    store_root
        Local directory holding one store per city.
    tokens
        The token file of this store root.
    rate, burst
        Per-token rate limit: sustained requests per second, and burst size.
    refresh_s
        Seconds between checks for new cities and newer snapshots.
    """
    os.environ.update(GDAL_HARDENING)
    registry = Registry(store_root, refresh_s=refresh_s)
    limiter = RateLimiter(rate, burst)
    static = _static_files()
    bearer = HTTPBearer(auto_error=False, description="a portal token (`payesh tokens add`)")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Open every city once before serving: the first requests then find them ready.
        for name in sorted(registry.names()):
            try:
                registry.get(name)
            except Exception:
                log.exception("portal: cannot open the store of %s", name)
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="payesh portal",
        version="1",
        description=(
            "Indicators of a city's energy use and construction, from satellite imagery: "
            "map tiles, legends, sites and downloads. Every /api endpoint needs "
            "`Authorization: Bearer <token>`; a municipality's token sees its own city only."
        ),
        docs_url=None,  # Swagger UI loads its files from a CDN; the page works offline
        redoc_url=None,
        redirect_slashes=False,
    )

    # ------------------------------------------------------------------ plumbing

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("portal: %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)

    def caller(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> TokenRecord:
        challenge = {"WWW-Authenticate": "Bearer"}
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "send Authorization: Bearer <token>", headers=challenge)
        tid = TokenStore.token_id(creds.credentials)
        host = request.client.host if request.client else "?"
        wait = limiter.take(f"token:{tid}" if tid else f"ip:{host}")
        if wait > 0:
            raise HTTPException(
                429,
                "too many requests for this token; slow down",
                headers={"Retry-After": RateLimiter.retry_after(wait)},
            )
        rec = tokens.verify(creds.credentials)
        if rec is None:
            raise HTTPException(401, "invalid or revoked token", headers=challenge)
        return rec

    Caller = Annotated[TokenRecord, Depends(caller)]

    def city_for(rec: TokenRecord, name: str) -> CityData:
        # Out of scope and absent answer alike: a token learns nothing of other cities.
        city = registry.get(name) if rec.may_read(name) else None
        if city is None:
            raise HTTPException(404, "no such city for this token")
        return city

    def layer_of(city: CityData, name: str) -> Layer:
        layer = city.layers.get(name)
        if layer is None:
            raise HTTPException(404, f"no layer {name!r}; layers: {', '.join(city.layers)}")
        return layer

    def time_index(city: CityData, layer: Layer, month: str | None) -> int | None:
        i = city.month_index(layer, month)
        if i == -1:
            raise HTTPException(404, f"month {month} is not in the store of {city.name}")
        return i

    # ------------------------------------------------------------------ page

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> Response:
        body, media = static.get("index.html", (b"portal page missing", "text/plain"))
        return Response(body, media_type=media, headers={"Content-Security-Policy": _CSP})

    @app.get("/static/{name:path}", include_in_schema=False)
    def static_file(name: str) -> Response:
        hit = static.get(name)
        if hit is None:
            raise HTTPException(404, "no such file")
        return Response(hit[0], media_type=hit[1], headers={"Cache-Control": "max-age=3600"})

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness (no token needed, so it tells nothing about the cities)."""
        return {"status": "ok"}

    # ------------------------------------------------------------------ api

    @app.get("/api/me", tags=["access"])
    def me(rec: Caller) -> dict[str, Any]:
        """The calling token: its id and scope (a city, or admin)."""
        return describe(rec)

    @app.get("/api/cities", tags=["cities"])
    def cities(rec: Caller) -> list[dict[str, Any]]:
        """The cities this token may read."""
        out = []
        for name in sorted(registry.names()):
            if rec.may_read(name):
                city = registry.get(name)
                if city is not None:
                    out.append({"name": name, "title": city.title, "bbox": list(city.bbox)})
        return out

    @app.get("/api/cities/{city}", tags=["cities"])
    def city_info(rec: Caller, city: CityName) -> dict[str, Any]:
        """A city: title, bounding box (lon/lat), months, layers and their formats."""
        c = city_for(rec, city)
        return {
            "name": c.name,
            "title": c.title,
            "bbox": list(c.bbox),
            "snapshot": c.snapshot,
            "committed": c.committed,
            "months": c.months,
            "sites": 0 if c.sites is None else len(c.sites),
            "layers": [
                {
                    "name": lyr.name,
                    "group": lyr.group,
                    "label": lyr.label,
                    "units": lyr.units,
                    "has_time": lyr.has_time,
                    "formats": lyr.formats,
                }
                for lyr in c.layers.values()
            ],
        }

    @app.get("/api/cities/{city}/history", tags=["cities"])
    def city_history(rec: Caller, city: CityName) -> list[dict[str, Any]]:
        """The committed versions of the city's store, newest first."""
        from payesh.store import history

        c = city_for(rec, city)
        return [
            {"snapshot_id": h["snapshot_id"], "time": str(h["time"]), "message": h["message"]}
            for h in history(c.name, store=registry.root)
        ]

    @app.get("/api/cities/{city}/layers/{layer}/legend", tags=["map"])
    def layer_legend(rec: Caller, city: CityName, layer: LayerName) -> dict[str, Any]:
        """Colour map, range and units of a layer, as its tiles are drawn."""
        c = city_for(rec, city)
        lyr = layer_of(c, layer)
        return {"layer": lyr.name, **legend(c.style(lyr))}

    @app.get(
        "/api/cities/{city}/tiles/{layer}/{z}/{x}/{y}.png",
        tags=["map"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "256 px RGBA PNG"}},
    )
    def tile(
        rec: Caller,
        city: CityName,
        layer: LayerName,
        z: Annotated[int, PathParam(ge=0, le=MAX_ZOOM)],
        x: Annotated[int, PathParam(ge=0, le=2**MAX_ZOOM - 1)],
        y: Annotated[int, PathParam(ge=0, le=2**MAX_ZOOM - 1)],
        time: Month = None,
    ) -> Response:
        """An XYZ (Web Mercator) map tile of a layer for one month; missing data transparent."""
        c = city_for(rec, city)
        lyr = layer_of(c, layer)
        if x >= 2**z or y >= 2**z:
            raise HTTPException(404, f"no tile {z}/{x}/{y}")
        ti = time_index(c, lyr, time)
        key = ("tile", lyr.name, ti, z, x, y)
        png = c.cache.get(key)
        if png is None:
            png = _render(c, lyr, ti, z, x, y)
            if len(c.cache) > _TILE_CACHE:
                c.cache.clear()
            c.cache[key] = png
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
        )

    @app.get("/api/cities/{city}/sites", tags=["sites"])
    def sites(rec: Caller, city: CityName) -> dict[str, Any]:
        """Construction sites (GeoJSON, EPSG:4326) with their evidence: chip URL, curve."""
        c = city_for(rec, city)
        return sites_geojson(c, lambda sid: f"/api/cities/{c.name}/sites/{sid}/chip.png")

    @app.get(
        "/api/cities/{city}/sites/{site_id}/chip.png",
        tags=["sites"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "evidence chip"}},
    )
    def site_chip(
        rec: Caller,
        city: CityName,
        site_id: Annotated[str, PathParam(pattern=_SITE)],
    ) -> Response:
        """Evidence for one site: built-up probability before / latest, and its curve."""
        c = city_for(rec, city)
        png = c.cache.get(("chip", site_id))
        if png is None:
            png = _chip(c, site_id)
            c.cache[("chip", site_id)] = png
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
        )

    @app.get(
        "/api/cities/{city}/download/{layer}",
        tags=["downloads"],
        response_class=FileResponse,
        responses={200: {"content": {m.split(";")[0]: {} for m in _MIME.values()}}},
    )
    def download(
        rec: Caller,
        city: CityName,
        layer: LayerName,
        format: Annotated[Format, Query(description="file format")],
        time: Annotated[
            str | None, Query(pattern=_MONTH, description="one month, YYYY-MM (default: all)")
        ] = None,
    ) -> FileResponse:
        """A layer as a file: ``sites`` (geojson, parquet), ``tiles`` (csv, geojson, parquet,
        netcdf: every tile indicator) or one variable (cog, netcdf; tile variables also csv,
        geojson, parquet). Written to a temporary file and streamed from it."""
        c = city_for(rec, city)
        if layer == "sites":
            valid = ["geojson", "parquet"] if c.sites is not None else []
        elif layer == "tiles" and "tiles" in c.groups:
            valid = ["csv", "geojson", "parquet", "netcdf"]
        else:
            valid = layer_of(c, layer).formats
        if format not in valid:
            raise HTTPException(
                400, f"format {format!r} does not apply to layer {layer!r}; use {', '.join(valid)}"
            )
        if time is not None and time not in c.months:
            raise HTTPException(404, f"month {time} is not in the store of {c.name}")
        folder = tempfile.mkdtemp(prefix="payesh-portal-")
        out = Path(folder) / f"{c.name}-{layer}{'-' + time if time else ''}.{_EXT[format]}"
        try:
            _export(c, layer, format, time, out)
        except PayeshError as err:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(400, _scrub(str(err))) from err
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(
            out,
            media_type=_MIME[format],
            filename=out.name,
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    return app


# --------------------------------------------------------------------------- work


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
