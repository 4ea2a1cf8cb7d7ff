"""The ``payesh`` command (SPEC §7).

Every command takes ``--help``. Errors are one clear line on stderr and a non-zero exit;
nothing is written to an existing store when the input is bad.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from payesh.errors import PayeshError, PayeshWarning
from payesh.parallel import bound_native_memory

if TYPE_CHECKING:
    import xarray as xr

    from payesh.city import City

__all__ = ["main"]

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
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


def _last_year() -> tuple[str, str]:
    year = date.today().year - 1
    return f"{year}-01", f"{year}-12"


@contextmanager
def _progress() -> Iterator[None]:
    """A rich progress bar fed by :mod:`payesh.progress` while the block runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from payesh.progress import use_reporter

    bars: dict[str, object] = {}
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        disable=not sys.stderr.isatty() and os.environ.get("PAYESH_PROGRESS") != "1",
    ) as bar:

        def reporter(step: str, done: int, total: int) -> None:
            if step not in bars:
                bars[step] = bar.add_task(step, total=total)
            bar.update(bars[step], completed=done, total=total)  # type: ignore[arg-type]

        with use_reporter(reporter):
            yield


def _cmd_cities(args: argparse.Namespace) -> int:
    from payesh.city import cities_dir, list_cities
    from payesh.grid import tile_grid

    folder = Path(args.dir) / "cities" if args.dir else cities_dir()
    for city in list_cities(folder):
        rows, cols = tile_grid(city).shape
        bbox = ", ".join(f"{v:.3f}" for v in city.bbox)
        print(f"{city.name:<12} {city.title:<36} {city.crs:<11} {rows}x{cols} tiles  [{bbox}]")
    return 0


def _run(
    city: str,
    *,
    start: str,
    end: str,
    catalog: str,
    store: str,
    dask: str | None,
    collections: list[str] | None,
    export_dir: str | None,
    force: bool = False,
    night_lights: str = "stac",
) -> dict[str, object]:
    from payesh.city import load_city
    from payesh.period import Period
    from payesh.plan import plan_run

    # Pre-flight, before Prefect starts: bad input fails here with one line, and
    # nothing has touched the store. The records are read now, not after the months
    # are loaded: a broken permits or consumption file is found in seconds.
    the_city = load_city(city)
    _check_records(the_city)
    plan = plan_run(
        the_city,
        catalog,
        Period.parse(start, end),
        collections=collections,
        night_lights=night_lights,
    )
    print(plan.summary())
    from payesh import monthcache

    if (kept := monthcache.cache_dir()) is not None:
        monthcache.writable(kept)

    # Without a Prefect server configured, Prefect starts a temporary one; its first start
    # migrates a fresh SQLite database, which can take longer than Prefect's 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The CLI is the entry point that starts flows; the library itself never imports them.
    from flows.monitor import monitor_city

    with _progress():
        return monitor_city(
            city=city,
            start=start,
            end=end,
            catalog=catalog,
            store=store,
            dask_address=dask,
            collections=collections,
            export_dir=export_dir,
            force=force,
            night_lights=night_lights,
        )


def _check_records(city: City) -> None:
    """Read the permits and consumption ``city`` points to; raises ``ManifestError`` if bad."""
    from payesh.records import read_consumption, read_permits

    if city.permits is not None:
        read_permits(city.permits)
    if city.consumption is not None:
        read_consumption(city.consumption)


def _cmd_run(args: argparse.Namespace) -> int:
    from payesh.city import load_city
    from payesh.period import Period

    load_city(args.city)  # validate before anything starts
    start, end = args.start, args.end
    if start is None or end is None:
        d_start, d_end = _last_year()
        start, end = start or d_start, end or d_end
    Period.parse(start, end)
    result = _run(
        args.city,
        start=start,
        end=end,
        catalog=args.catalog or os.environ.get("PAYESH_CATALOG", EARTH_SEARCH),
        store=args.store,
        dask=args.dask or os.environ.get("PAYESH_DASK_ADDRESS"),
        collections=args.collections.split(",") if args.collections else None,
        export_dir=args.export_dir,
        force=args.force,
        night_lights=args.night_lights,
    )
    if result.get("status") == "nothing new":
        print(f"nothing new: {result['store']} already holds this run ({result['snapshot']})")
    else:
        print(f"committed {result['snapshot']} to {result['store']}")
    for kind, path in dict(result.get("exports", {})).items():  # type: ignore[call-overload]
        print(f"exported {kind}: {path}")
    return 0


def _cmd_backfill(args: argparse.Namespace) -> int:
    from payesh.city import load_city
    from payesh.period import Period
    from payesh.runkeys import backfill_periods

    _check_records(load_city(args.city))  # validate before anything starts
    pieces = backfill_periods(Period.parse(args.start, args.end), args.step)
    print(f"backfill {args.city} {args.start}..{args.end}: {len(pieces)} run(s) of one {args.step}")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.monitor import backfill_city

    with _progress():
        results = backfill_city(
            city=args.city,
            catalog=args.catalog or os.environ.get("PAYESH_CATALOG", EARTH_SEARCH),
            start=args.start,
            end=args.end,
            store=args.store,
            step=args.step,
            dask_address=args.dask or os.environ.get("PAYESH_DASK_ADDRESS"),
            collections=args.collections.split(",") if args.collections else None,
            night_lights=args.night_lights,
        )
    for result in results:
        if result.get("status") == "nothing new":
            print(f"{result['period']}: nothing new ({result['snapshot']})")
        else:
            print(f"{result['period']}: committed {result['snapshot']}")
    print(f"store: {results[-1]['store']}" if results else "nothing to run")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from payesh.city import load_city
    from payesh.progress import report
    from payesh.records import read_consumption, read_permits
    from payesh.report import overview_png, summary_text
    from payesh.store import open_indicators, open_sites
    from payesh.synthetic import DemoSpec, generate_city, load_truth

    out = Path(args.out)
    store = args.store or str(out / "store")
    spec = DemoSpec(size_km=args.size_km, start=args.start, end=args.end, seed=args.seed)
    print(f"Generating the demo city ({spec.size_km:g} km, {spec.start}..{spec.end}) in {out} ...")
    with _progress():
        gen = generate_city(out, spec, progress=lambda step, i, n: report(f"generate {step}", i, n))
    result = _run(
        str(gen.manifest),
        start=spec.start,
        end=spec.end,
        catalog=str(gen.catalog),
        store=store,
        dask=args.dask,
        collections=None,
        export_dir=str(out / "exports"),
    )
    city = load_city(gen.manifest)
    tiles = open_indicators(city.name, store=store).compute()
    pixels = open_indicators(city.name, store=store, group="pixels")
    sites = open_sites(city.name, store=store)
    png = overview_png(
        pixels,
        tiles,
        sites,
        out / "overview.png",
        title=f"payesh — {city.title}",
        permits=read_permits(city.permits) if city.permits else None,
        consumption=read_consumption(city.consumption) if city.consumption else None,
    )
    print()
    print(
        summary_text(
            tiles,
            sites,
            title=f"payesh demo — {city.title}: snapshot {result['snapshot']} in {result['store']}",
            truth=load_truth(gen.truth_dir),
            png=png,
        )
    )
    for kind, path in dict(result.get("exports", {})).items():  # type: ignore[call-overload]
        print(f"Exported {kind}: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
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
        pixels = _pixels_of(city.name, args.store, args.version)
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


def _pixels_of(city: str, store: str, version: str | None) -> xr.Dataset | None:
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


def _cmd_history(args: argparse.Namespace) -> int:
    from payesh.city import load_city
    from payesh.store import history

    city = load_city(args.city)
    for entry in history(city.name, store=args.store):
        print(f"{entry['snapshot_id']}  {entry['time']}  {entry['message']}")
    return 0


def _cmd_expire(args: argparse.Namespace) -> int:
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


def _cmd_train(args: argparse.Namespace) -> int:
    from payesh.training import train_builtup_from_demo

    with _progress():
        path = train_builtup_from_demo(
            out_dir=Path(args.out),
            models_dir=Path(args.models),
            seed=args.seed,
            real_labels=args.real_labels,
        )
    print(f"wrote {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from payesh.portal import serve

    print(f"payesh portal on http://{args.host}:{args.port}/ (stores under {args.store})")
    serve(
        args.store,
        host=args.host,
        port=args.port,
        tokens=args.tokens,
        rate=args.rate,
        burst=args.burst,
        log_level=args.log_level,
        workers=args.workers,
    )
    return 0


def _cmd_tokens(args: argparse.Namespace) -> int:
    from payesh.portal.tokens import TokenStore, describe, tokens_file

    store = TokenStore(tokens_file(args.store, args.tokens))
    if args.action == "add":
        if args.admin == (args.city is not None):
            raise PayeshError("tokens add: name one CITY, or --admin for a token that sees all")
        city = None
        if args.city is not None:
            city = _known_city(args.city, args.store)
        rec, token = store.add(city, label=args.label or "")
        print(f"added token {rec.id} for {'every city (admin)' if rec.admin else rec.city}")
        print(f"store it now, it is not shown again ({store.path} keeps only its hash):")
        print(token)
    elif args.action == "list":
        recs = store.list()
        if not recs:
            print(f"no tokens in {store.path}")
        for rec in recs:
            d = describe(rec)
            state = f"revoked {d['revoked']}" if d["revoked"] else "active"
            print(f"{d['id']}  {d['scope']:<14} {d['created']}  {state:<33} {d['label']}")
    else:
        rec = store.revoke(args.id)
        print(f"revoked token {rec.id} ({'admin' if rec.admin else rec.city})")
    return 0


def _known_city(city: str, store: str) -> str:
    """A city name checked against the stores under ``store`` and the manifests."""
    from payesh.city import cities_dir, load_city

    if city.endswith((".yaml", ".yml")):
        return load_city(city).name
    if (Path(store) / city).is_dir():
        return city
    if (cities_dir() / f"{city}.yaml").is_file():
        return load_city(city).name
    raise PayeshError(
        f"unknown city {city!r}: no store {city!r} under {store} and no manifest "
        f"{city}.yaml in {cities_dir()}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="payesh",
        description="Watch cities from space: energy-use and construction indicators per tile.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("cities", help="list city manifests")
    c.add_argument("--dir", help="a datasets folder holding cities/*.yaml (default: the repo's)")
    c.set_defaults(func=_cmd_cities)

    store_help = "store root (default: $PAYESH_STORE or data/store)"

    d = sub.add_parser("demo", help="generate the demo city offline and monitor it")
    d.add_argument("--out", default="data/demo", help="where the demo city is generated")
    d.add_argument("--store", default=None, help="store root (default: <out>/store)")
    d.add_argument("--size-km", type=float, default=4.0, help="side of the square city, km")
    d.add_argument("--start", default="2025-01", help="first month, YYYY-MM")
    d.add_argument("--end", default="2025-12", help="last month, YYYY-MM")
    d.add_argument("--seed", type=int, default=0, help="random seed of the scenario")
    d.add_argument("--dask", default=None, help="address of a Dask scheduler")
    d.set_defaults(func=_cmd_demo)

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
    r.set_defaults(func=_cmd_run)

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
    b.set_defaults(func=_cmd_backfill)

    e = sub.add_parser("export", help="export a layer from a city's store")
    e.add_argument("city")
    e.add_argument("layer", help="'tiles', 'sites', or an indicator name")
    e.add_argument("--time", help="a month, YYYY-MM (default: all)")
    e.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    e.add_argument("-o", "--output", required=True, help="file to write")
    e.add_argument("--store", default=_default_store(), help=store_help)
    e.add_argument("--version", help="a snapshot id from `payesh history` (default: the latest)")
    e.set_defaults(func=_cmd_export)

    h = sub.add_parser("history", help="list the committed versions of a city's store")
    h.add_argument("city")
    h.add_argument("--store", default=_default_store(), help=store_help)
    h.set_defaults(func=_cmd_history)

    x = sub.add_parser("expire", help="forget old versions of a city's store and free space")
    x.add_argument("city")
    x.add_argument("--keep", type=int, default=10, help="newest versions to keep (default 10)")
    x.add_argument("--older-than-days", type=float, help="expire only versions older than this")
    x.add_argument("--dry-run", action="store_true", help="only list what would be expired")
    x.add_argument("--store", default=_default_store(), help=store_help)
    x.set_defaults(func=_cmd_expire)

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
    v.set_defaults(func=_cmd_serve)

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
    k.set_defaults(func=_cmd_tokens)

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
    t.set_defaults(func=_cmd_train)
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
