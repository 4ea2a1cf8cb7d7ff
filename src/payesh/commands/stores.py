"""The commands that read what is there: the city manifests (``cities``) and a city's
store (``export``, ``history``, ``expire``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from payesh.export_store import export_layer_any, pixels_of

__all__ = ["cmd_cities", "cmd_expire", "cmd_export", "cmd_history"]


def cmd_cities(args: argparse.Namespace) -> int:
    from payesh.city import cities_dir, list_cities
    from payesh.grid import tile_grid

    folder = Path(args.dir) / "cities" if args.dir else cities_dir()
    for city in list_cities(folder):
        rows, cols = tile_grid(city).shape
        bbox = ", ".join(f"{v:.3f}" for v in city.bbox)
        print(f"{city.name:<12} {city.title:<36} {city.crs:<11} {rows}x{cols} tiles  [{bbox}]")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from payesh.city import load_city
    from payesh.errors import ExportError
    from payesh.export import export_sites_with_evidence, export_tiles_csv
    from payesh.store import open_indicators, open_sites

    city = load_city(args.city)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.layer == "sites":
        if args.format not in ("geojson", "parquet"):
            raise ExportError(f"layer 'sites' exports as geojson or parquet, not {args.format!r}")
        # the evidence (chips from pixels/true_colour) and the sites of one snapshot
        pixels = pixels_of(city.name, args.store, args.version)
        version = args.version if pixels is None else pixels.attrs.get("snapshot_id")
        sites = open_sites(city.name, store=args.store, version=version)
        sites = export_sites_with_evidence(sites, pixels, out, format=args.format)
        if "evidence_chip" in sites.columns:
            print(f"wrote {len(sites)} site(s)' evidence in {out.parent / 'evidence'}")
    elif args.layer == "tiles" and args.format == "csv":
        tiles = open_indicators(city.name, store=args.store, version=args.version)
        export_tiles_csv(tiles, out, time=args.time)
    else:
        export_layer_any(
            city.name,
            args.layer,
            out,
            fmt=args.format,
            time=args.time,
            store=args.store,
            version=args.version,
        )
    print(f"wrote {out}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from payesh.city import load_city
    from payesh.store import history

    city = load_city(args.city)
    for entry in history(city.name, store=args.store):
        print(f"{entry['snapshot_id']}  {entry['time']}  {entry['message']}")
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from payesh.city import load_city
    from payesh.store import expire

    city = load_city(args.city)
    age = timedelta(days=args.older_than_days) if args.older_than_days is not None else None
    out = expire(city.name, store=args.store, keep=args.keep, older_than=age, dry_run=args.dry_run)
    verb = "would expire" if args.dry_run else "expired"
    print(
        f"{verb} {len(out['expired'])} version(s), kept {out['kept']}; deleted "
        f"{out['chunks_deleted']} chunk(s), {out['bytes_deleted']} bytes"
    )
    return 0
