"""The ``payesh`` command (SPEC §7).

Every command takes ``--help``. Errors are one clear line on stderr and a non-zero exit;
nothing is written to an existing store when the input is bad.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from payesh.commands.portal import cmd_serve, cmd_tokens
from payesh.commands.runs import EARTH_SEARCH, cmd_backfill, cmd_demo, cmd_run, cmd_train
from payesh.commands.stores import cmd_cities, cmd_expire, cmd_export, cmd_history
from payesh.errors import PayeshError, PayeshWarning
from payesh.export_store import export_layer_any as export_layer_any
from payesh.parallel import bound_native_memory

__all__ = ["main"]

EXPORT_FORMATS = ("cog", "netcdf", "csv", "geojson", "parquet")
NIGHT_LIGHT_CHOICES = ("stac", "blackmarble")  # payesh.plan.NIGHT_LIGHTS (not imported at start)


def _default_store() -> str:
    return os.environ.get("PAYESH_STORE", "data/store")


def _add_night_lights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--night-lights",
        choices=NIGHT_LIGHT_CHOICES,
        default=os.environ.get("PAYESH_NIGHT_LIGHTS", "stac"),
        help="night lights from the catalog's viirs-ntl-monthly items (stac, the default; "
        "$PAYESH_NIGHT_LIGHTS) or NASA Black Marble VNP46A3 from LAADS DAAC (blackmarble; "
        "needs EARTHDATA_TOKEN; Earth Search and Planetary Computer hold no night lights)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="payesh",
        description="Watch cities from space: energy-use and construction indicators per tile.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("cities", help="list city manifests")
    c.add_argument("--dir", help="a datasets folder holding cities/*.yaml (default: the repo's)")
    c.set_defaults(func=cmd_cities)

    store_help = "store root (default: $PAYESH_STORE or data/store)"

    d = sub.add_parser("demo", help="generate the demo city offline and monitor it")
    d.add_argument("--out", default="data/demo", help="where the demo city is generated")
    d.add_argument("--store", default=None, help="store root (default: <out>/store)")
    d.add_argument("--size-km", type=float, default=4.0, help="side of the square city, km")
    d.add_argument("--start", default="2025-01", help="first month, YYYY-MM")
    d.add_argument("--end", default="2025-12", help="last month, YYYY-MM")
    d.add_argument("--seed", type=int, default=0, help="random seed of the scenario")
    d.add_argument("--dask", default=None, help="address of a Dask scheduler")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="monitor a city for a period and commit to its store")
    r.add_argument("city", help="a manifest name (datasets/cities) or a manifest path")
    r.add_argument("--start", help="first month, YYYY-MM (default: January of last year)")
    r.add_argument("--end", help="last month, YYYY-MM (default: December of last year)")
    r.add_argument("--catalog", help=f"STAC API URL or catalog.json path (default: {EARTH_SEARCH})")
    r.add_argument("--store", default=_default_store(), help=store_help)
    r.add_argument(
        "--dask",
        help="address of a Dask scheduler (default: Dask's threaded scheduler in this process)",
    )
    r.add_argument("--collections", help="comma-separated collection ids to read (default: all)")
    r.add_argument("--export-dir", help="also export tiles CSV and sites GeoJSON here")
    _add_night_lights(r)
    r.add_argument(
        "--force",
        action="store_true",
        help="recompute and commit even when every product-month was already committed "
        "from the same inputs (by default such a run ends 'nothing new'); every month is "
        "made again, none taken from the month cache ($PAYESH_MONTH_CACHE)",
    )
    r.set_defaults(func=cmd_run)

    b = sub.add_parser(
        "backfill",
        help="fill a city's store for a past period, one committed run per month or year",
        description="Run the backfill flow: START..END cut into calendar years (or months), "
        "each a committed run of its own; a piece already committed from the same inputs "
        "(same STAC items, code and model) ends 'nothing new', so re-running a backfill "
        "that stopped resumes it.",
    )
    b.add_argument("city", help="a manifest name (datasets/cities) or a manifest path")
    b.add_argument("--start", required=True, help="first month, YYYY-MM")
    b.add_argument("--end", required=True, help="last month, YYYY-MM")
    b.add_argument(
        "--step",
        choices=("month", "year"),
        default="year",
        help="one run per calendar year (default) or per month",
    )
    b.add_argument("--catalog", help=f"STAC API URL or catalog.json path (default: {EARTH_SEARCH})")
    b.add_argument("--store", default=_default_store(), help=store_help)
    b.add_argument(
        "--dask",
        help="address of a Dask scheduler (default: Dask's threaded scheduler in this process)",
    )
    b.add_argument("--collections", help="comma-separated collection ids to read (default: all)")
    _add_night_lights(b)
    b.set_defaults(func=cmd_backfill)

    e = sub.add_parser("export", help="export a layer from a city's store")
    e.add_argument("city")
    e.add_argument("layer", help="'tiles', 'sites', or an indicator name")
    e.add_argument("--time", help="a month, YYYY-MM (default: all)")
    e.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    e.add_argument("-o", "--output", required=True, help="file to write")
    e.add_argument("--store", default=_default_store(), help=store_help)
    e.add_argument("--version", help="a snapshot id from `payesh history` (default: the latest)")
    e.set_defaults(func=cmd_export)

    h = sub.add_parser("history", help="list the committed versions of a city's store")
    h.add_argument("city")
    h.add_argument("--store", default=_default_store(), help=store_help)
    h.set_defaults(func=cmd_history)

    x = sub.add_parser("expire", help="forget old versions of a city's store and free space")
    x.add_argument("city")
    x.add_argument("--keep", type=int, default=10, help="newest versions to keep (default 10)")
    x.add_argument("--older-than-days", type=float, help="expire only versions older than this")
    x.add_argument("--dry-run", action="store_true", help="only list what would be expired")
    x.add_argument("--store", default=_default_store(), help=store_help)
    x.set_defaults(func=cmd_expire)

    tokens_help = "tokens file (default: $PAYESH_TOKENS or <store>/portal-tokens.json)"
    v = sub.add_parser("serve", help="serve the municipality portal (map page, tiles, downloads)")
    v.add_argument("--store", default=_default_store(), help=store_help)
    v.add_argument("--host", default="127.0.0.1", help="address to listen on")
    v.add_argument("--port", type=int, default=8000, help="port to listen on")
    v.add_argument("--tokens", default=os.environ.get("PAYESH_TOKENS"), help=tokens_help)
    v.add_argument("--rate", type=float, default=50.0, help="requests/s allowed per token")
    v.add_argument("--burst", type=float, default=200.0, help="burst size per token")
    v.add_argument("--log-level", default="info", help="uvicorn log level")
    v.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    v.set_defaults(func=cmd_serve)

    k = sub.add_parser("tokens", help="manage the portal's access tokens")
    k.add_argument("--store", default=_default_store(), help=store_help)
    k.add_argument("--tokens", default=os.environ.get("PAYESH_TOKENS"), help=tokens_help)
    ksub = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    ka = ksub.add_parser("add", help="add a token for CITY (or --admin); prints it last")
    ka.add_argument("city", nargs="?", help="the city the token may read")
    ka.add_argument("--admin", action="store_true", help="a token that reads every city")
    ka.add_argument("--label", help="who holds the token (free text)")
    ksub.add_parser("list", help="list tokens (ids, scopes, state; never the secrets)")
    kr = ksub.add_parser("revoke", help="revoke a token by its id")
    kr.add_argument("id", help="the token id shown by `tokens add` / `tokens list`")
    k.set_defaults(func=cmd_tokens)

    t = sub.add_parser("train-builtup", help="(re)train the built-up classifier into models/")
    t.add_argument("--out", default="data/training", help="where training cities are generated")
    t.add_argument("--models", default=str(Path(__file__).resolve().parents[2] / "models"))
    t.add_argument("--seed", type=int, default=101, help="seed of the training city")
    t.add_argument(
        "--real-labels",
        action="store_true",
        help="also train on the real eo-learn Slovenia labels in ../shared/realdata, report "
        "spatially held-out metrics on them and the Zagreb built-up share in the model card",
    )
    t.set_defaults(func=cmd_train)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    if issubclass(category, PayeshWarning):
        print(f"payesh: warning: {message}", file=sys.stderr)
    else:
        print(f"{category.__name__}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = _parser().parse_args(argv)
    bound_native_memory()  # before any thread starts (payesh.parallel)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", PayeshWarning)
            # raised from odc-loader's in-memory warps in Dask threads, not about any input
            warnings.filterwarnings("ignore", message="Dataset has no geotransform")
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except PayeshError as err:
        print(f"payesh: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("payesh: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
