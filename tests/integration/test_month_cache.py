"""The month cache: a run computes only the product-months whose inputs changed, and
stores what a run without the cache stores."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from payesh import monthcache
from payesh.city import load_city
from payesh.period import Period
from payesh.plan import plan_run
from payesh.runkeys import model_fingerprint
from payesh.store import open_indicators, open_sites

pytestmark = pytest.mark.integration

START, END = "2025-01", "2025-06"


def _catalog_copy(tiny_city: Any, dst: Path) -> Path:
    """The tiny city's catalog, files hard-linked, that a test may change."""
    src = Path(tiny_city.catalog).parent
    shutil.copytree(src, dst, copy_function=os.link)
    for meta in dst.rglob("*.json"):  # the JSON is edited: real copies, not links
        text = meta.read_text()
        meta.unlink()
        meta.write_text(text)
    return dst / "catalog.json"


def _drop_s2_item(catalog: Path, month: str) -> str:
    """Take one Sentinel-2 item of ``month`` (YYYY-MM) out of the catalog; its id."""
    collection = catalog.parent / "sentinel-2-l2a" / "collection.json"
    data = json.loads(collection.read_text())
    stamp = month.replace("-", "")
    link = next(lk for lk in data["links"] if lk["rel"] == "item" and f"_{stamp}" in lk["href"])
    data["links"].remove(link)
    collection.write_text(json.dumps(data))
    return Path(link["href"]).stem


def _run(monitor_city: Any, tiny_city: Any, catalog: Path, store: Path, **kw: Any) -> Any:
    return monitor_city(
        city=str(tiny_city.manifest), catalog=str(catalog), store=str(store),
        start=START, end=END, **kw,
    )  # fmt: skip


def test_a_run_makes_only_the_months_that_changed_and_stores_the_same(
    tiny_city: Any, prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.monitor import monitor_city

    cache = tmp_path / "cache"
    catalog = _catalog_copy(tiny_city, tmp_path / "catalog")
    city = load_city(tiny_city.manifest)
    monkeypatch.setenv(monthcache.CACHE_ENV, str(cache))

    cold = _run(monitor_city, tiny_city, catalog, tmp_path / "a")
    assert cold["months_from_cache"] == {"s2": 0, "landsat": 0, "viirs": 0}
    kept = sorted(p.name for p in (cache / city.name).iterdir())
    assert len(kept) == 18 and all(n.endswith(".stage") for n in kept)  # 3 products × 6

    # a scene leaves the catalog: only its month is read and made again
    gone = _drop_s2_item(catalog, "2025-03")
    warm = _run(monitor_city, tiny_city, catalog, tmp_path / "b")
    assert warm["status"] == "committed"
    assert warm["months_from_cache"] == {"s2": 5, "landsat": 6, "viirs": 6}

    # the same run without the cache stores the same values
    monkeypatch.setenv(monthcache.CACHE_ENV, "off")
    plain = _run(monitor_city, tiny_city, catalog, tmp_path / "c")
    assert "months_from_cache" in plain and plain["months_from_cache"] == {}
    ours = open_indicators(city.name, store=str(tmp_path / "b"))
    theirs = open_indicators(city.name, store=str(tmp_path / "c"))
    for var in theirs.data_vars:
        xr.testing.assert_identical(ours[var].compute(), theirs[var].compute())
    assert gone not in json.loads(ours.attrs["source_items"])["s2"]
    assert json.loads(ours.attrs["source_items"]) == json.loads(theirs.attrs["source_items"])
    for group in ("pixels", "ntl"):
        a = open_indicators(city.name, store=str(tmp_path / "b"), group=group)
        b = open_indicators(city.name, store=str(tmp_path / "c"), group=group)
        for ds in (a, b):  # the commit's own: snapshot id, time
            ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ("snapshot_id", "created")}
        xr.testing.assert_identical(a.compute(), b.compute())
    sites_a = open_sites(city.name, store=str(tmp_path / "b"))
    sites_b = open_sites(city.name, store=str(tmp_path / "c"))
    pd.testing.assert_frame_equal(
        sites_a.drop(columns="geometry"), sites_b.drop(columns="geometry")
    )
    assert np.all(sites_a.geometry.geom_equals(sites_b.geometry))

    # the replaced March month is deleted once no run has used it for a day
    assert len(list((cache / city.name).iterdir())) == 19
    used = [n.removesuffix(".stage").rsplit("-", 1)[-1] for n in kept if "s2-2025-03" not in n]
    march_month = pd.Timestamp("2025-03-01")
    plan = plan_run(city, str(catalog), Period.parse(START, END))
    march = monthcache.month_key(
        "s2", march_month, city=city, item_ids=plan.item_ids("s2", march_month),
        model_version=model_fingerprint(),
    )  # fmt: skip
    removed = monthcache.prune(cache, city, [*used, march], keep_unused_s=0)
    assert [p.name for p in removed] == [n for n in kept if "s2-2025-03" in n]
    assert len(list((cache / city.name).iterdir())) == 18

    # forced, a run makes every month again (and keeps them)
    monkeypatch.setenv(monthcache.CACHE_ENV, str(cache))
    forced = _run(monitor_city, tiny_city, catalog, tmp_path / "d", force=True)
    assert forced["months_from_cache"] == {"s2": 0, "landsat": 0, "viirs": 0}


def test_a_month_with_an_unreadable_item_is_made_again_by_the_next_run(
    tiny_city: Any, tmp_path: Path
) -> None:
    from payesh import pipeline

    city = load_city(tiny_city.manifest)
    plan = plan_run(city, str(tiny_city.catalog), Period.parse(START, END))
    june = pd.Timestamp("2025-06-01")
    made: list[str] = []

    def make(skipped: list[str]) -> xr.Dataset:
        made.append("x")
        ds = xr.Dataset(
            {"radiance": (("time", "y", "x"), np.ones((1, 4, 5), "float32"))},
            coords={"time": [june], "y": np.arange(4.0), "x": np.arange(5.0)},
            attrs={"source_items": ["a"], "skipped_items": skipped},
        )
        return ds

    def once(skipped: list[str]) -> xr.Dataset:
        return pipeline.kept_month(plan, "viirs", june, lambda: make(skipped), cache=tmp_path)

    first = once(["bad-item"])
    assert first.attrs[pipeline.CACHE_ATTR].endswith(":made") and len(made) == 1
    again = once([])  # the next run reads it again; this time it is whole, and kept
    assert again.attrs[pipeline.CACHE_ATTR].endswith(":made") and len(made) == 2
    third = once([])
    assert third.attrs[pipeline.CACHE_ATTR].endswith(":hit") and len(made) == 2
    xr.testing.assert_identical(third.drop_attrs(), again.drop_attrs())
    # the unreadable month's folder is this run's only: pruned with the rest later
    names = sorted(p.name for p in (tmp_path / city.name).iterdir())
    assert len(names) == 2 and sum(n.count(".") == 2 for n in names) == 1
