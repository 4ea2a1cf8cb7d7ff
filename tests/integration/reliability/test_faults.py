"""Fault injection: the monitor flow through a STAC API and an asset server that misbehave.

Real processes on loopback: ``rustac serve`` behind a fault-injecting proxy, its items'
assets on the session's range server (``asset_server``), both drawing faults from one
seeded mix (:func:`servers.fault_mix`: 429, 500/502/503, stalls longer than the client
timeout, resets, truncated bodies, bit-flipped COG tile bytes).

* at 20 % the flow commits a store identical to the clean run's (no item skipped: a
  skipped item is a ``BadItemWarning``, an error under ``filterwarnings = error``);
* range reads without checksums survive the same mix, bit flips included (payesh fetches
  and checks the tiles itself: see the docs);
* at 100 % ``payesh run`` stops with one ``payesh: error:`` line naming the URL and the
  attempts, in bounded time, and the store it was pointed at keeps its history and values;
  a dead asset server is an error, never a skipped item.

Each campaign gets its own URL prefix on the asset server, so neither GDAL's process-wide
``/vsicurl/`` cache nor payesh's verified-checksum cache answers for the network.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import xarray as xr
from figures import record, scale
from servers import (
    FaultyServer,
    Hit,
    fault_mix,
    serve_proxy,
    start_rustac,
    write_api_items,
)

from payesh.city import load_city
from payesh.cli import main
from payesh.errors import SourceError
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.sources.checksum import configure_checksums
from payesh.sources.http import RetryPolicy, configure_retries
from payesh.store import history, open_indicators

pytestmark = pytest.mark.integration

TINY_START, TINY_END = "2025-01", "2025-08"
#: Client side: 1 s timeouts, short backoff; 6 tries lose a request at 20 % with p = 6e-5.
POLICY = RetryPolicy(
    attempts=6, backoff=0.02, max_backoff=0.2, connect_timeout=1.0, read_timeout=1.0, seed=0
)
STALL_S = 2.5  # longer than the client's 1 s timeout
MIX = fault_mix(stall_s=STALL_S)
INJECTED = {f.label for f in MIX}
GROUPS = ("tiles", "pixels", "ntl")
#: The API gets few requests (landing page, collections, a few search pages): seeds whose
#: first four draws hold two faults, so that every campaign really hits it.
API_SEEDS = (1, 14, 18, 21, 28)
BANDS = ("red", "nir")  # (and scl): enough to read three assets per item


@pytest.fixture(scope="module", autouse=True)
def _patient_client() -> Iterator[None]:
    """Process-wide: the test's retry policy, and reads from verified bytes."""
    configure_retries(POLICY)
    configure_checksums(read_verified_mib=256)
    yield
    configure_retries(None)
    configure_checksums()


@contextmanager
def api_for(tiny_city: Any, assets: FaultyServer, prefix: str, tmp: Path) -> Iterator[FaultyServer]:
    """``rustac serve`` whose items point at ``assets`` under ``/prefix``, behind a proxy."""
    hrefs = write_api_items(tiny_city.catalog, tmp, f"{assets.url}/{prefix}")
    with start_rustac(hrefs, log_file=tmp / "rustac.log") as url, serve_proxy(url) as proxy:
        yield proxy


def injected(hits: list[Hit]) -> Counter[str]:
    return Counter(str(h.status) for h in hits if str(h.status) in INJECTED)


def assert_same_store(name: str, store: Path, reference: Path) -> None:
    for group in GROUPS:
        got = open_indicators(name, store=str(store), group=group).load()
        want = open_indicators(name, store=str(reference), group=group).load()
        xr.testing.assert_equal(got.drop_attrs(), want.drop_attrs())


@pytest.mark.parametrize("seed", range(scale(1, 5)))
def test_a_20_percent_fault_mix_on_both_servers_changes_nothing(
    seed: int,
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    assets: FaultyServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    from flows.monitor import monitor_city

    gen, clean_store, _ = monitored_tiny_city
    name = load_city(gen.manifest).name
    with api_for(gen, assets, f"mix20-{seed}", tmp_path / "api") as api:
        api.faults.rate(0.2, seed=API_SEEDS[seed], mix=MIX)
        # the API sees few requests, and a bit flip drawn for JSON is no fault: its first
        # two fail whatever the seed draws, so every campaign really hits the API
        api.faults.next(1, status=503)
        api.faults.next(1, kind="reset")
        assets.faults.rate(0.2, seed=1000 + seed, mix=MIX)
        t0 = time.monotonic()
        result = monitor_city(
            city=str(gen.manifest),
            catalog=api.url,
            start=TINY_START,
            end=TINY_END,
            store=str(tmp_path / "store"),
        )
        seconds = time.monotonic() - t0
        api_hits, asset_hits = api.take_hits(), assets.take_hits()
    assert result["status"] == "committed"
    on_api, on_assets = injected(api_hits), injected(asset_hits)
    assert sum(on_api.values()) > 0 and sum(on_assets.values()) > 0, (on_api, on_assets)
    assert on_assets["bitflip"] > 0  # damaged bytes reached the client and were fetched again
    assert_same_store(name, tmp_path / "store", clean_store)
    assert len(history(name, store=str(tmp_path / "store"))) == 1
    faults = on_api + on_assets
    record(
        "faults",
        request.node.nodeid,
        fault_rate=0.2,
        seed=seed,
        requests=len(api_hits) + len(asset_hits),
        faults_injected=dict(sorted(faults.items())),
        retries=sum(faults.values()),
        seconds=round(seconds, 1),
        output_identical=True,
        data_lost=0,
    )


def test_range_reads_without_checksums_survive_the_mix(
    tiny_city: Any, assets: FaultyServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Range reads (no ``file:checksum`` to read whole files against) under 20 % of
    every fault, bit flips included: payesh fetches the tiles itself and libdeflate's
    checks catch a flipped bit (GDAL, which stops inflating before the stream's
    Adler-32, would mostly decode it into wrong pixels); the header is GDAL's read.
    Whether a drawn flip lands in tile bytes depends on the order of the requests in
    flight; ``test_remote_tiles.py`` flips one for sure."""
    month = pd.Timestamp("2025-04-01")
    city = load_city(tiny_city.manifest)
    gbox = city_geobox(city)
    period = Period.parse("2025-04", "2025-04")
    static = plan_run(city, str(tiny_city.catalog), period)
    with api_for(tiny_city, assets, "ranges", tmp_path / "api") as api:
        plan = plan_run(city, api.url, period)
    items = [i.clone() for i in plan.month_items("s2", month)]
    for item in items:
        for asset in item.assets.values():
            asset.extra_fields.pop("file:checksum", None)
    assets.faults.rate(0.2, seed=7, mix=MIX)
    over_http = s2_month(items, gbox, month, bands=BANDS).compute()
    hits = assets.take_hits()
    want = s2_month(static.month_items("s2", month), gbox, month, bands=BANDS).compute()
    xr.testing.assert_identical(over_http, want)
    faults = injected(hits)
    assert sum(faults.values()) > 0 and any(h.range for h in hits)
    record(
        "faults",
        request.node.nodeid,
        fault_rate=0.2,
        requests=len(hits),
        faults_injected=dict(sorted(faults.items())),
        retries=sum(faults.values()),
        output_identical=True,
        data_lost=0,
    )


def test_a_dead_asset_server_is_an_error_never_a_skipped_item(
    tiny_city: Any, assets: FaultyServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    month = pd.Timestamp("2025-06-01")
    city = load_city(tiny_city.manifest)
    with api_for(tiny_city, assets, "dead", tmp_path / "api") as api:
        plan = plan_run(city, api.url, Period.parse("2025-06", "2025-06"))
    assets.faults.rate(1.0, seed=3, mix=MIX)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:  # a BadItemWarning would fail the test first
        s2_month(plan.month_items("s2", month), city_geobox(city), month)
    seconds = time.monotonic() - t0
    message = str(info.value)
    assert f"gave up after {POLICY.attempts} attempts" in message
    assert assets.url in message and "item '" in message
    assert seconds < 60
    hits = assets.take_hits()
    record(
        "faults",
        request.node.nodeid,
        fault_rate=1.0,
        requests=len(hits),
        faults_injected=dict(sorted(injected(hits).items())),
        seconds=round(seconds, 1),
        clear_error=True,
        data_lost=0,
    )


def test_100_percent_faults_fail_the_cli_run_once_and_leave_the_store_untouched(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    assets: FaultyServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    gen, clean_store, _ = monitored_tiny_city
    name = load_city(gen.manifest).name
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    before = history(name, store=str(store))
    with api_for(gen, assets, "dead-api", tmp_path / "api") as api:
        api.faults.rate(1.0, seed=5, mix=MIX)
        assets.faults.rate(1.0, seed=6, mix=MIX)
        capsys.readouterr()
        t0 = time.monotonic()
        code = main(
            [
                "run",
                str(gen.manifest),
                "--start",
                TINY_START,
                "--end",
                TINY_END,
                "--catalog",
                api.url,
                "--store",
                str(store),
            ]
        )
        seconds = time.monotonic() - t0
        hits = api.take_hits() + assets.take_hits()
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("payesh: error: "), err
    assert api.url in lines[0] and f"gave up after {POLICY.attempts} attempts" in lines[0]
    assert "Traceback" not in err
    # bounded: attempts x (1 s timeout) + backoff, not the stalls' length or GDAL's defaults
    assert seconds < POLICY.attempts * (POLICY.read_timeout + POLICY.max_backoff) + 10
    assert history(name, store=str(store)) == before
    assert_same_store(name, store, clean_store)
    record(
        "faults",
        request.node.nodeid,
        fault_rate=1.0,
        requests=len(hits),
        faults_injected=dict(sorted(injected(hits).items())),
        seconds=round(seconds, 1),
        clear_error=True,
        store_untouched=True,
        data_lost=0,
    )
