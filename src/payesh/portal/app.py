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
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask

from payesh.errors import PayeshError
from payesh.portal.data import CityData, Layer, Registry, sites_geojson
from payesh.portal.guard import (
    _CSP,
    _EXT,
    _LAYER,
    _MIME,
    _MONTH,
    _NAME,
    _SITE,
    GDAL_HARDENING,
    _scrub,
    _static_files,
)
from payesh.portal.payloads import _chip, _export, _render
from payesh.portal.tiles import MAX_ZOOM, legend
from payesh.portal.tokens import RateLimiter, TokenRecord, TokenStore, describe

__all__ = ["GDAL_HARDENING", "create_app"]

log = logging.getLogger("payesh.portal")

_TILE_CACHE = 4096

Format = Literal["cog", "netcdf", "csv", "geojson", "parquet"]
CityName = Annotated[str, PathParam(pattern=_NAME, description="city id")]
LayerName = Annotated[str, PathParam(pattern=_LAYER, description="layer (variable) name")]
Month = Annotated[
    str | None, Query(pattern=_MONTH, description="a month, YYYY-MM (default: latest)")
]


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
