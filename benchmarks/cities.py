"""Benchmark cities: generated once by ``payesh.synthetic``, cached under ``data/bench/``.

A city is keyed by everything that changes its files (size, seed, period, COG block
size); a folder is reused only when its ``bench-city.json`` says generation finished
with exactly that key, so an interrupted generation is never mistaken for a city.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from payesh.synthetic import DemoSpec, GeneratedCity, generate_city

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "data" / "bench"
MARKER = "bench-city.json"


def city_key(spec: DemoSpec) -> str:
    """Folder name of a cached city, e.g. ``6km-2025-01-2025-12-seed0-deflate512``."""
    return (
        f"{spec.size_km:g}km-{spec.start}-{spec.end}-seed{spec.seed}-"
        f"{spec.compress.lower()}{spec.blocksize}"
    )


def _paths(root: Path, spec: DemoSpec) -> GeneratedCity:
    return GeneratedCity(
        root=root,
        manifest=root / "cities" / f"{spec.name}.yaml",
        catalog=root / "catalog" / "catalog.json",
        permits=root / "permits" / f"{spec.name}.geojson",
        consumption=root / "consumption" / f"{spec.name}.csv",
        truth_dir=root / "truth",
    )


def bench_city(
    spec: DemoSpec, *, workers: int | None = None, cache: Path = CACHE
) -> tuple[GeneratedCity, dict[str, Any]]:
    """The city of ``spec``, generated now (in ``workers`` processes) or taken from the cache.

    Returns
    -------
    (GeneratedCity, dict)
        Its paths, and what the marker records: ``generate_seconds`` (wall time of the
        generation that made it), ``workers``, ``cached`` (True when reused now).
    """
    root = cache / city_key(spec)
    marker = root / MARKER
    key = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("spec") == key:
            return _paths(root, spec), {**info, "cached": True}
    if root.exists():
        shutil.rmtree(root)
    n = workers or max(1, os.cpu_count() or 1)
    t0 = time.perf_counter()
    gen = generate_city(root, spec, workers=n)
    info = {"spec": key, "generate_seconds": round(time.perf_counter() - t0, 2), "workers": n}
    marker.write_text(json.dumps(info, indent=1) + "\n")
    return gen, {**info, "cached": False}
