"""The monitor flow through a real STAC API and HTTP assets gives the static catalog's store.

``stac_api`` is ``rustac serve`` holding the tiny city's items, their asset hrefs pointing
at a range-request HTTP server on loopback: the path Earth Search takes, end to end.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from servers import FaultyServer

from payesh.city import load_city
from payesh.store import history, open_indicators, open_sites

pytestmark = pytest.mark.integration

TINY_START, TINY_END = "2025-01", "2025-08"  # the period monitored_tiny_city ran


def _task_spans(state: Any, kinds: tuple[str, ...]) -> dict[str, list[tuple[Any, Any]]]:
    """(start, end) of the flow run's task runs whose names begin with each of ``kinds``,
    in order of start."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return {
        kind: sorted(
            (r.start_time, r.end_time)
            for r in runs
            if r.name.startswith(kind) and r.start_time is not None and r.end_time is not None
        )
        for kind in kinds
    }


def test_flow_through_the_stac_api_equals_the_static_store(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    stac_api: str,
    assets: FaultyServer,
    tmp_path: Path,
) -> None:
    from flows.monitor import monitor_city

    gen, static_store, _ = monitored_tiny_city
    name = load_city(gen.manifest).name
    api_store = tmp_path / "store"
    state = monitor_city(
        city=str(gen.manifest),
        catalog=stac_api,
        start=TINY_START,
        end=TINY_END,
        store=str(api_store),
        return_state=True,
    )
    assert state.result()["status"] == "committed"
    # it really went over HTTP: the asset server saw range requests for COGs
    cog_reads = [h for h in assets.take_hits() if h.path.endswith(".tif") and h.range]
    assert cog_reads, "no range request reached the asset server"

    for group in ("tiles", "pixels", "ntl"):
        via_api = open_indicators(name, store=str(api_store), group=group).load()
        static = open_indicators(name, store=str(static_store), group=group).load()
        xr.testing.assert_equal(via_api.drop_attrs(), static.drop_attrs())
    api_sites = open_sites(name, store=str(api_store))
    static_sites = open_sites(name, store=str(static_store))
    assert api_sites.drop(columns="geometry").equals(static_sites.drop(columns="geometry"))
    assert api_sites.geometry.geom_equals(static_sites.geometry).all()

    # the same STAC items behind every value; only the catalog named differs
    def provenance(store: Path) -> dict[str, Any]:
        return dict(open_indicators(name, store=str(store), group="tiles").attrs)

    api_prov, static_prov = provenance(api_store), provenance(static_store)
    assert json.loads(api_prov["source_items"]) == json.loads(static_prov["source_items"])
    assert api_prov["catalog"] == stac_api != static_prov["catalog"]
    assert len(history(name, store=str(api_store))) == 1

    # remote items wait on round trips, not on the cores: Landsat's and VIIRS's months are
    # made several at a time (parallel.REMOTE_SIDE_MONTHS), all queued at the start (not
    # paced by Sentinel-2's)
    spans = _task_spans(state, ("landsat-month", "viirs-month"))
    (l_start, l_end), (v_start, v_end) = spans["landsat-month"][0], spans["viirs-month"][0]
    assert l_start < v_end and v_start < l_end, "the first Landsat and VIIRS months did not overlap"


def test_months_made_at_once_give_the_same_store(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three Sentinel-2 months in flight, Landsat and VIIRS alongside: the same store as
    the fixture's run, made with the default (one month at a time below 8 cores)."""
    from flows.monitor import monitor_city, s2_months_at_once

    gen, static_store, _ = monitored_tiny_city
    name = load_city(gen.manifest).name
    monkeypatch.setenv("PAYESH_S2_MONTHS_AT_ONCE", "3")
    assert s2_months_at_once() == 3
    store = tmp_path / "store"
    state = monitor_city(
        city=str(gen.manifest),
        catalog=str(gen.catalog),
        start=TINY_START,
        end=TINY_END,
        store=str(store),
        return_state=True,
    )
    assert state.is_completed()
    for group in ("tiles", "pixels", "ntl"):
        xr.testing.assert_equal(
            open_indicators(name, store=str(store), group=group).load().drop_attrs(),
            open_indicators(name, store=str(static_store), group=group).load().drop_attrs(),
        )
    sites = open_sites(name, store=str(store))
    assert sites.drop(columns="geometry").equals(
        open_sites(name, store=str(static_store)).drop(columns="geometry")
    )

    # and they were made at once: Sentinel-2 month tasks overlap, Landsat's run among them
    spans = _task_spans(state, ("s2-month", "landsat-month"))
    s2 = spans["s2-month"]
    assert len(s2) == 8
    assert any(b[0] < a[1] for a, b in itertools.pairwise(s2)), "no two S2 months overlapped"
    first_landsat = spans["landsat-month"][0][0]
    assert first_landsat < s2[-1][1], "Landsat waited for every Sentinel-2 month"
    # paced: Landsat's month k + 1 starts once Sentinel-2's month k is made (one beside
    # each, not all beside the first); both are taken up in the order of their months
    # (months in flight at once may start in any order: by the time Landsat's month k + 1
    # starts, k + 1 Sentinel-2 months have ended, whichever they are)
    landsat = spans["landsat-month"]
    assert len(landsat) == len(s2)
    ends = sorted(end for _, end in s2)
    for k in range(len(s2) - 1):
        assert landsat[k + 1][0] >= ends[k], f"Landsat month {k + 1} ran ahead of its turn"
