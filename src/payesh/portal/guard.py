"""What the portal service lets in and out: its fixed tables and its safety rules.

The GDAL configuration of the service (:data:`GDAL_HARDENING`), the patterns every name
taken from a request must match (months, cities, layers, sites), the fixed table of
static files and their media types, the download formats' extensions and media types,
the page's Content-Security-Policy, and :func:`_scrub`, which takes anything that looks
like a filesystem path out of a library's message before it reaches a client.
"""

import logging
import re
from importlib import resources
from pathlib import Path

# the underscored names are the service's own (payesh.portal.app, .payloads), not an API
__all__ = [
    "GDAL_HARDENING",
    "_CSP",
    "_EXT",
    "_LAYER",
    "_MIME",
    "_MONTH",
    "_NAME",
    "_SITE",
    "_scrub",
    "_static_files",
]

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
