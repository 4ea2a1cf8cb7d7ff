"""payesh.monthcache: what a kept month's key depends on, and keeping, finding, pruning."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from payesh import monthcache
from payesh.city import City
from payesh.errors import PayeshError

CITY = City(
    name="kept", title="t", bbox=(44.93, 38.53, 44.99, 38.57), crs="EPSG:32638",
    tile_size=1000,
)  # fmt: skip
MARCH = pd.Timestamp("2025-03-01")


def key(**kw: object) -> str:
    args: dict = {"city": CITY, "item_ids": ["a", "b"], "model_version": "m1"} | kw
    product = str(args.pop("product", "s2"))
    month = args.pop("month", MARCH)
    return monthcache.month_key(product, month, **args)  # type: ignore[arg-type]


def test_the_key_changes_with_every_input_and_only_them() -> None:
    base = key()
    assert key(item_ids=["b", "a"]) == base  # the items' order does not matter
    assert (
        key(city=CITY.model_copy(update={"title": "other", "permits": Path("p.geojson")})) == base
    )
    changed = [
        key(item_ids=["a"]),
        key(item_ids=["a", "b", "c"]),
        key(month=pd.Timestamp("2025-04-01")),
        key(product="landsat"),
        key(model_version="m2"),
        key(city=CITY.model_copy(update={"bbox": (44.93, 38.53, 44.99, 38.58)})),
        key(city=CITY.model_copy(update={"tile_size": 500.0})),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_the_code_fingerprint_covers_the_sources(tmp_path: Path) -> None:
    fp = monthcache.code_fingerprint()
    package = Path(monthcache.__file__).parent
    assert len(fp) == 64 and monthcache.source_fingerprint(package) == fp
    copy = tmp_path / "payesh"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert monthcache.source_fingerprint(copy) == fp
    nanops = copy / "nanops.py"
    nanops.write_text(nanops.read_text() + "\n# a change\n")
    assert monthcache.source_fingerprint(copy) != fp


def test_cache_dir_from_the_environment() -> None:
    assert monthcache.cache_dir({}) == Path("data/cache/months")
    assert monthcache.cache_dir({"PAYESH_MONTH_CACHE": "/x/y"}) == Path("/x/y")
    for off in ("off", "OFF", "0", "false", "no"):
        assert monthcache.cache_dir({"PAYESH_MONTH_CACHE": off}) is None


def month(value: float) -> xr.Dataset:
    data = np.full((1, 30, 40), value, dtype="float32")
    data[0, 3, 4] = np.nan
    ds = xr.Dataset(
        {"lst": (("time", "y", "x"), data, {"units": "degC"}),
         "lst_count": (("time", "y", "x"), np.full((1, 30, 40), 2, dtype="uint16"))},
        coords={"time": [MARCH], "y": np.arange(30.0), "x": np.arange(40.0)},
        attrs={"source_items": ["L1", "L2"]},
    )  # fmt: skip
    return ds


def test_put_then_get_gives_the_same_month_and_prune_keeps_what_is_used(tmp_path: Path) -> None:
    assert monthcache.get(tmp_path, CITY, "landsat", MARCH, "k1") is None
    kept = monthcache.put(tmp_path, CITY, "landsat", MARCH, "k1", month(21.5), tile_pixels=10)
    xr.testing.assert_identical(kept.compute(), month(21.5))
    again = monthcache.get(tmp_path, CITY, "landsat", MARCH, "k1")
    assert again is not None
    xr.testing.assert_identical(again.compute(), month(21.5))
    assert again.attrs["source_items"] == ["L1", "L2"]
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["landsat-2025-03-k1.stage"]

    # a month whose writing did not finish is not a month
    half = tmp_path / "kept" / "landsat-2025-04-k2.stage"
    half.mkdir()
    assert monthcache.get(tmp_path, CITY, "landsat", pd.Timestamp("2025-04-01"), "k2") is None

    monthcache.put(tmp_path, CITY, "landsat", MARCH, "k3", month(1.0), tile_pixels=10)
    assert monthcache.prune(tmp_path, CITY, ["k1"]) == []  # k3, k2: used less than a day ago
    old = time.time() - 2 * monthcache.KEEP_UNUSED_S
    for p in (half, tmp_path / "kept" / "landsat-2025-03-k3.stage"):
        os.utime(p, (old, old))
    removed = monthcache.prune(tmp_path, CITY, ["k1"])
    assert sorted(p.name for p in removed) == [
        "landsat-2025-03-k3.stage",
        "landsat-2025-04-k2.stage",
    ]
    assert monthcache.get(tmp_path, CITY, "landsat", MARCH, "k1") is not None


def test_a_month_kept_under_a_key_stays_while_others_read_it(tmp_path: Path) -> None:
    first = monthcache.put(tmp_path, CITY, "viirs", MARCH, "k", month(1.0), tile_pixels=10)
    # made again under the same key (a forced run beside one still reading the first)
    again = monthcache.put(tmp_path, CITY, "viirs", MARCH, "k", month(1.0), tile_pixels=10)
    xr.testing.assert_identical(first.compute(), again.compute())  # the first still reads
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["viirs-2025-03-k.stage"]
    # a folder left half-written by a crash is replaced
    half = tmp_path / "kept" / "viirs-2025-04-k.stage"
    half.mkdir()
    (half / "0.npy").write_bytes(b"partial")
    april = month(3.0).assign_coords(time=[pd.Timestamp("2025-04-01")])
    kept = monthcache.put(tmp_path, CITY, "viirs", pd.Timestamp("2025-04-01"), "k", april,
                          tile_pixels=10)  # fmt: skip
    assert float(kept["lst"].max()) == pytest.approx(3.0)
    assert not [p for p in (tmp_path / "kept").iterdir() if p.name.startswith("tmp-")]


def test_a_cache_folder_that_cannot_be_written_is_said_at_once(tmp_path: Path) -> None:
    assert monthcache.writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PayeshError, match=r"month cache .*file.*PAYESH_MONTH_CACHE.*'off'"):
        monthcache.writable(blocker / "months")
