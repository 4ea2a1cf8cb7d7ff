"""Night lights from NASA Black Marble through a LAADS DAAC server on loopback.

The server (:class:`servers.LaadsServer`) answers folder listings and files as LAADS does,
only to requests carrying the Earthdata bearer token. The files are VNP46A3 HDF5 tiles in
the real layout (:mod:`payesh.synthetic.blackmarble`): for the whole-run test, the tiny
city's own VIIRS months converted to Black Marble DN, so that a run reading them must
give the night-light indicators of the run reading the COGs, within the DN's rounding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from servers import LaadsServer, serve_laads

from payesh.city import City, load_city
from payesh.cli import NIGHT_LIGHT_CHOICES
from payesh.errors import MissingDataWarning, SourceError
from payesh.grid import ntl_geobox
from payesh.period import Period
from payesh.plan import NIGHT_LIGHTS, plan_run
from payesh.sources.blackmarble import read_tile
from payesh.sources.http import RetryPolicy
from payesh.sources.laads import (
    CACHE_ENV,
    LAADS_ENV,
    download_tile,
    earthdata_token,
    items_month,
    search_granules,
)
from payesh.store import open_indicators
from payesh.synthetic.blackmarble import DN_SCALE, uniform_layers, write_archive, write_tile

pytestmark = pytest.mark.integration

TOKEN = "eyJ-test-token"
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, read_timeout=10, seed=0)
# A city inside tile h22v05 (lon 40..50° E, lat 30..40° N), as the four first cities are.
KHOY_LIKE = City(
    name="khoyish", title="t", bbox=(44.93, 38.53, 44.99, 38.57), crs="EPSG:32638",
    tile_size=1000,
)  # fmt: skip


def folder_of(root: Path, day: date) -> Path:
    doy = day.timetuple().tm_yday
    folder = root / f"archive/allData/5200/VNP46A3/{day.year}/{doy:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def laads(tmp_path: Path) -> Iterator[LaadsServer]:
    with serve_laads(tmp_path / "laads", TOKEN) as server:
        yield server


def test_download_sends_the_earthdata_token(laads: LaadsServer, tmp_path: Path) -> None:
    folder = folder_of(laads.root, date(2025, 3, 1))
    name = "VNP46A3.A2025060.h22v05.002.2025101010101.h5"
    write_tile(folder / name, "h22v05", *uniform_layers(50))
    (folder / "VNP46A3.A2025060.h21v05.002.2025101010101.h5").write_bytes(b"other tile")

    with pytest.raises(SourceError, match="EARTHDATA_TOKEN is not set"):
        earthdata_token({})
    token = earthdata_token({"EARTHDATA_TOKEN": TOKEN})
    got = download_tile(
        "VNP46A3", "h22v05", date(2025, 3, 1), tmp_path / "dl", token=token, base=laads.url
    )
    assert got.name == name and got.read_bytes() == (folder / name).read_bytes()
    assert [a for _, a in laads.seen] == [f"Bearer {TOKEN}"] * 2
    assert float(read_tile(got)["radiance"].max()) == pytest.approx(5.0)

    with pytest.raises(SourceError, match=r"HTTP 401.*check EARTHDATA_TOKEN"):
        download_tile(
            "VNP46A3", "h22v05", date(2025, 3, 1), tmp_path / "x", token="wrong", base=laads.url
        )
    with pytest.raises(SourceError, match=r"no VNP46A3\.A2025060\.h30v05\..*file"):
        download_tile("VNP46A3", "h30v05", date(2025, 3, 1), tmp_path, token=token, base=laads.url)


def test_search_takes_the_latest_production_and_names_what_is_missing(
    laads: LaadsServer,
) -> None:
    march = folder_of(laads.root, date(2025, 3, 1))
    write_tile(
        march / "VNP46A3.A2025060.h22v05.002.2025100000000.h5", "h22v05", *uniform_layers(50)
    )
    write_tile(
        march / "VNP46A3.A2025060.h22v05.002.2025200000000.h5", "h22v05", *uniform_layers(60)
    )
    april = folder_of(laads.root, date(2025, 4, 1))  # published, but not our tile
    write_tile(
        april / "VNP46A3.A2025091.h21v05.002.2025200000000.h5", "h21v05", *uniform_layers(60)
    )
    months = list(pd.date_range("2025-03-01", "2025-05-01", freq="MS"))  # May: no folder

    items, missing = search_granules(
        KHOY_LIKE.bbox, months, token=TOKEN, base=laads.url, policy=FAST
    )

    assert [i.id for i in items] == ["VNP46A3.A2025060.h22v05.002.2025200000000"]
    assert missing == ["2025-04 h22v05", "2025-05 (not published)"]
    item = items[0]
    assert item.collection_id == "VNP46A3" and item.datetime is not None
    assert item.datetime.isoformat() == "2025-03-01T00:00:00+00:00"
    asset = item.assets["radiance"]
    assert asset.href == f"{laads.url}/archive/allData/5200/VNP46A3/2025/060/{item.id}.h5"
    assert asset.extra_fields["proj:transform"][:3] == [1 / 240, 0.0, 40.0]
    listed = march / f"{item.id}.h5"
    assert asset.extra_fields["file:size"] == listed.stat().st_size
    assert (
        asset.extra_fields["file:checksum"]
        == "d50110" + hashlib.md5(listed.read_bytes()).hexdigest()
    )
    assert [p for p, _ in laads.seen] == [  # one listing per month, no file read
        f"/archive/allData/5200/VNP46A3/2025/{d}.json" for d in ("060", "091", "121")
    ]


def test_plan_takes_night_lights_from_black_marble(
    laads: LaadsServer, tiny_city: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city = load_city(tiny_city.manifest)
    write_archive(tiny_city.catalog, laads.root)
    # the last month not published yet
    last = sorted((laads.root / "archive/allData/5200/VNP46A3/2025").iterdir())[-1]
    for f in last.iterdir():
        f.unlink()
    last.rmdir()
    monkeypatch.setenv(LAADS_ENV, laads.url)

    monkeypatch.delenv("EARTHDATA_TOKEN", raising=False)
    with pytest.raises(SourceError, match="EARTHDATA_TOKEN is not set"):
        plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-08"),
                 night_lights="blackmarble")  # fmt: skip
    with pytest.raises(SourceError, match=r"night lights 'marble'.*stac, blackmarble"):
        plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-08"),
                 night_lights="marble")  # fmt: skip

    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    with pytest.warns(MissingDataWarning, match=r"nothing on http://127\.0\.0\.1:\d+ for 2025-08"):
        plan = plan_run(city, str(tiny_city.catalog), Period.parse("2025-01", "2025-08"),
                        night_lights="blackmarble")  # fmt: skip
    ids = plan.item_ids("viirs")
    assert len(ids) == 7 and all(i.startswith("VNP46A3.A2025") for i in ids)
    assert plan.item_ids("viirs", pd.Timestamp("2025-08-01")) == []
    assert "viirs: 7 items (Black Marble)" in plan.summary()
    assert len(plan.items["s2"]) > 0  # Sentinel-2 still from the catalog
    assert plan.ntl_grid() == ntl_geobox(city)  # the 15" lattice from origin (0, 0)
    assert NIGHT_LIGHT_CHOICES == NIGHT_LIGHTS  # the CLI's choices (kept apart: fast start)


def test_a_month_downloads_once_recovers_a_spoilt_copy_and_reports_a_bad_file(
    laads: LaadsServer, tmp_path: Path
) -> None:
    folder = folder_of(laads.root, date(2025, 3, 1))
    name = "VNP46A3.A2025060.h22v05.002.2025100000000.h5"
    write_tile(folder / name, "h22v05", *uniform_layers(123))
    items, _ = search_granules(
        KHOY_LIKE.bbox, [pd.Timestamp("2025-03-01")], token=TOKEN, base=laads.url, policy=FAST
    )
    cache = tmp_path / "cache"
    gbox = ntl_geobox(KHOY_LIKE)
    month = pd.Timestamp("2025-03-01")

    laads.fail_next = [503, 502]  # an outage the retries ride out
    ds = items_month(items, gbox, month, dest=cache, token=TOKEN, policy=FAST)
    assert np.allclose(ds["radiance"].values, 12.3) and (ds["cf_cvg"].values == 7).all()
    assert ds.attrs["source_items"] == [items[0].id]
    file_gets = lambda: sum(p.endswith(".h5") for p, _ in laads.seen)  # noqa: E731
    assert file_gets() == 3  # two failed answers, then the file

    items_month(items, gbox, month, dest=cache, token=TOKEN, policy=FAST)
    assert file_gets() == 3  # kept: not downloaded again

    kept = cache / name
    kept.write_bytes(bytes(kept.stat().st_size))  # spoilt in place, same size
    again = items_month(items, gbox, month, dest=cache, token=TOKEN, policy=FAST)
    assert file_gets() == 4 and np.allclose(again["radiance"].values, 12.3)

    kept.unlink()
    laads.corrupt[name] = "zero"  # the archive serves broken bytes: reported, never zeros
    with pytest.raises(SourceError, match=rf"item '{items[0].id}'.*twice, MD5 \w+, the archive"):
        items_month(items, gbox, month, dest=cache, token=TOKEN, policy=FAST)
    assert not kept.exists() and not list(cache.glob("*.part"))
    assert file_gets() == 6

    # with neither size nor MD5 listed, a file that does not read is fetched again, then named
    laads.corrupt[name] = "cut"
    item = items[0].clone()
    del item.assets["radiance"].extra_fields["file:checksum"]
    del item.assets["radiance"].extra_fields["file:size"]
    with pytest.raises(SourceError, match=rf"item '{item.id}'.*unreadable both times"):
        items_month([item], gbox, month, dest=cache, token=TOKEN, policy=FAST)
    assert file_gets() == 8 and not kept.exists()

    laads.corrupt.clear()
    laads.fail_next = [503] * 3  # an outage longer than the retries
    with pytest.raises(SourceError, match=r"download failed.*503"):
        items_month(items, gbox, month, dest=cache, token=TOKEN, policy=FAST)


def test_a_run_with_black_marble_night_lights_matches_the_run_on_the_cogs(
    laads: LaadsServer,
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.monitor import monitor_city

    gen, cog_store, _ = monitored_tiny_city
    files = write_archive(gen.catalog, laads.root)
    monkeypatch.setenv(LAADS_ENV, laads.url)
    monkeypatch.setenv("EARTHDATA_TOKEN", TOKEN)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    store = tmp_path / "store"
    args = {"city": str(gen.manifest), "catalog": str(gen.catalog), "store": str(store),
            "start": "2025-01", "end": "2025-08", "night_lights": "blackmarble"}  # fmt: skip

    result = monitor_city(**args)

    assert result["status"] == "committed"
    name = load_city(gen.manifest).name
    ours = open_indicators(name, store=str(store)).compute()
    theirs = open_indicators(name, store=str(cog_store)).compute()
    assert ours.sizes == theirs.sizes
    # the same nights are missing; lights equal within the DN's rounding (<= 0.05 a pixel)
    for var in ("ntl_valid_fraction", "builtup_fraction", "valid_fraction"):
        xr.testing.assert_equal(ours[var], theirs[var])
    a, b = ours["ntl_sum"].values, theirs["ntl_sum"].values
    assert (np.isnan(a) == np.isnan(b)).all() and np.isfinite(a).sum() > 0
    city = load_city(gen.manifest)
    lat = np.radians(np.mean(city.bbox[1::2]))
    pixel_m2 = (6371008.8 * np.radians(1 / 240)) ** 2 * np.cos(lat)
    shares = (city.tile_size**2 / pixel_m2) * 1.5  # night-light pixels a tile overlaps, at most
    assert np.nanmax(np.abs(a - b)) <= DN_SCALE / 2 * shares
    assert np.nanmax(np.abs(a - b)) > 0  # really read from the HDF5 files, not the COGs
    np.testing.assert_allclose(ours["ntl_mean"], theirs["ntl_mean"], atol=DN_SCALE / 2, rtol=0)

    prov = ours.attrs
    ids = sorted(f.name.removesuffix(".h5") for f in files)
    assert json.loads(prov["source_items"])["viirs"] == ids
    source = "blackmarble: NASA Black Marble VNP46A3 (LAADS DAAC) "
    assert prov["night_lights"] == source + laads.url + "/archive/allData/5200"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(f.name for f in files)

    # the same files again: nothing new, nothing downloaded
    gets = sum(p.endswith(".h5") for p, _ in laads.seen)
    again = monitor_city(**{**args, "store": str(store)})
    assert again["status"] == "nothing new"
    assert sum(p.endswith(".h5") for p, _ in laads.seen) == gets
