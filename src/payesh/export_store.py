"""Exports straight from a city's store: a layer from whichever group holds it, and
the ``pixels`` group of a snapshot when the store has one.

The file formats themselves are :mod:`payesh.export`'s; this module only finds the
group (of one snapshot) to export from. Its imports are deferred, so that the
``payesh`` command, which uses it, starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["export_layer_any", "pixels_of"]


def pixels_of(city: str, store: str, version: str | None) -> xr.Dataset | None:
    """The ``pixels`` group (lazy) of ``version``, or None when the store has none."""
    from payesh.errors import StoreError
    from payesh.store import open_indicators

    try:
        return open_indicators(city, store=store, group="pixels", version=version)
    except StoreError:
        return None


def export_layer_any(
    city: str,
    layer: str,
    out: Path,
    *,
    fmt: str,
    time: str | None,
    store: str,
    version: str | None = None,
) -> None:
    """Export ``layer`` from whichever store group holds it (of one snapshot)."""
    from payesh.errors import ExportError, StoreError
    from payesh.export import export_layer
    from payesh.store import open_indicators

    known: list[str] = []
    for group in ("tiles", "pixels", "ntl"):
        try:
            ds = open_indicators(city, store=store, group=group, version=version)
        except StoreError:
            if group == "tiles":
                raise
            continue
        version = ds.attrs.get("snapshot_id", version)  # every group from one snapshot
        if layer in ds.data_vars:
            export_layer(ds, layer, out, format=fmt, time=time)
            return
        known += [str(v) for v in ds.data_vars if v != "spatial_ref"]
    raise ExportError(
        f"no layer {layer!r} in the store of {city} (layers: tiles, sites, {', '.join(known)})"
    )
