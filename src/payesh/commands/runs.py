"""The commands that compute: ``run``, ``backfill`` and ``demo`` (monitoring runs that
start the Prefect flows) and ``train-builtup``, with the progress bar they share.

Heavy modules are imported inside each command, so that ``payesh --help`` starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from payesh.city import City

__all__ = ["EARTH_SEARCH", "cmd_backfill", "cmd_demo", "cmd_run", "cmd_train"]

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"


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


def cmd_run(args: argparse.Namespace) -> int:
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


def cmd_backfill(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
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


def cmd_train(args: argparse.Namespace) -> int:
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
