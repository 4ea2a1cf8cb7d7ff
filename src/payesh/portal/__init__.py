"""The municipality portal: ``payesh serve`` (web page, map tiles, downloads) and its tokens.

:func:`serve` runs :func:`payesh.portal.app.create_app` under uvicorn; tokens are managed
with :class:`payesh.portal.tokens.TokenStore` (``payesh tokens ...``).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["app_from_env", "serve"]

_ENV = "PAYESH_PORTAL_CONFIG"


def serve(
    store_root: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    tokens: str | None = None,
    rate: float = 50.0,
    burst: float = 200.0,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve the portal over the city stores under ``store_root`` until interrupted.

    Parameters
    ----------
    store_root
        Local directory holding one store per city.
    host, port
        Where to listen.
    tokens
        The tokens file (default ``<store_root>/portal-tokens.json``).
    rate, burst
        Per-token rate limit: requests per second, and burst size.
    log_level
        uvicorn's log level.
    workers
        Server processes (map tiles are rendered in Python: more processes, more tiles
        per second). The rate limit then applies per process.
    """
    import uvicorn

    from payesh.errors import PayeshError
    from payesh.portal.app import create_app
    from payesh.portal.tokens import TokenStore, tokens_file

    if not os.path.isdir(store_root):
        raise PayeshError(f"store root {store_root!r} is not a directory; run `payesh run` first")
    store = TokenStore(tokens_file(store_root, tokens))
    if not store.list():
        raise PayeshError(
            f"no tokens in {store.path}: add one with `payesh tokens add CITY` "
            "(or `payesh tokens add --admin`)"
        )
    if workers <= 1:
        app = create_app(store_root, tokens=store, rate=rate, burst=burst)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    # Several processes: each builds its app from these variables (see app_from_env).
    os.environ[_ENV] = json.dumps(
        {"store": store_root, "tokens": str(store.path), "rate": rate, "burst": burst}
    )
    uvicorn.run(
        "payesh.portal:app_from_env",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
    )


def app_from_env() -> FastAPI:
    """The app of one worker process of :func:`serve` (``workers > 1``)."""
    from payesh.portal.app import create_app
    from payesh.portal.tokens import TokenStore

    # as in the CLI: rasterio warns on every warp of an in-memory array (not about any file)
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    cfg = json.loads(os.environ[_ENV])
    return create_app(
        cfg["store"], tokens=TokenStore(cfg["tokens"]), rate=cfg["rate"], burst=cfg["burst"]
    )
