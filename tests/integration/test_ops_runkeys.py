"""Idempotent re-runs: run keys, and a second run of the same inputs that does nothing.

The pure parts (:mod:`payesh.runkeys`) are checked on a plan of the tiny city; the flow is
run twice on one store (the second time through the Prefect API of ``prefect_harness``)
and the second run must load nothing, commit nothing, and say so.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import payesh
from payesh import runkeys
from payesh.city import load_city
from payesh.errors import PayeshError
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.store import history, open_indicators

pytestmark = pytest.mark.integration

TINY_START, TINY_END = "2025-01", "2025-08"  # the tiny_city fixture's months


@pytest.fixture(scope="module")
def plan(tiny_city: Any) -> RunPlan:
    return plan_run(
        load_city(tiny_city.manifest), str(tiny_city.catalog), Period.parse(TINY_START, TINY_END)
    )


def test_keys_name_every_product_month_and_change_with_each_input(plan: RunPlan) -> None:
    keys = runkeys.plan_keys(plan, model_version="m1")
    assert set(keys) == set(plan.items) == {"s2", "landsat", "viirs"}
    for months in keys.values():
        assert list(months) == [f"2025-{m:02d}" for m in range(1, 9)]
    assert runkeys.plan_keys(plan, model_version="m1") == keys  # deterministic
    assert runkeys.changed_months(keys, keys) == {}
    # another model: every month changes; no stored keys: every month is to compute
    other = runkeys.plan_keys(plan, model_version="m2")
    assert runkeys.changed_months(other, keys) == {p: list(m) for p, m in keys.items()}
    assert runkeys.changed_months(keys, {}) == {p: list(m) for p, m in keys.items()}
    # one item less in one month: only that product-month changes
    dropped = plan.items["s2"][0]
    fewer = RunPlan(
        city=plan.city,
        period=plan.period,
        catalog=plan.catalog,
        items={**plan.items, "s2": plan.items["s2"][1:]},
    )
    month = f"{pd.Timestamp(dropped.datetime.replace(tzinfo=None)):%Y-%m}"  # type: ignore[union-attr]
    assert runkeys.changed_months(runkeys.plan_keys(fewer, model_version="m1"), keys) == {
        "s2": [month]
    }
    # the same months in a run of another period are other data (baselines, first seen)
    shorter = RunPlan(
        city=plan.city,
        period=Period.parse("2025-02", TINY_END),
        catalog=plan.catalog,
        items=plan.items,
    )
    assert (
        runkeys.plan_keys(shorter, model_version="m1")["viirs"]["2025-05"]
        != keys["viirs"]["2025-05"]
    )
    # the code is the version and a hash of the modules: a fix changes every key
    inputs = "permits={};consumption={}".format(
        *(runkeys._file_digest(p) for p in (plan.city.permits, plan.city.consumption))
    )
    june = pd.Timestamp("2025-06-01")

    def expected(code: str) -> str:
        return runkeys.month_key(
            "s2", june, period=plan.period, item_ids=plan.item_ids("s2", june),
            code_version=code, model_version="m1", inputs=inputs,
        )  # fmt: skip

    fingerprint = runkeys.code_fingerprint()
    assert keys["s2"]["2025-06"] == expected(f"{payesh.__version__}+{fingerprint[:16]}")
    assert keys["s2"]["2025-06"] != expected(payesh.__version__)


def test_default_model_version_is_the_model_file_hash() -> None:
    version = runkeys.model_fingerprint()
    name, _, digest = version.partition(":")
    assert name and len(digest) == 12


def test_rolling_and_backfill_periods() -> None:
    assert str(runkeys.rolling_period(12, date(2026, 3, 15))) == "2025-04..2026-03"
    assert str(runkeys.rolling_period(1, date(2026, 1, 31))) == "2026-01..2026-01"
    assert str(runkeys.run_period("2025-01", "2025-03", 12)) == "2025-01..2025-03"
    for bad in (0, -1, True):
        with pytest.raises(PayeshError, match="months_back"):
            runkeys.rolling_period(bad)
    with pytest.raises(PayeshError, match="start and end"):
        runkeys.run_period("2025-01", None, None)
    with pytest.raises(PayeshError, match="months_back"):
        runkeys.run_period(None, None, None)
    period = Period.parse("2023-11", "2025-02")
    years = runkeys.backfill_periods(period, "year")
    assert [str(p) for p in years] == ["2023-11..2023-12", "2024-01..2024-12", "2025-01..2025-02"]
    months = runkeys.backfill_periods(period, "month")
    assert len(months) == 16 and all(p.start == p.end for p in months)
    with pytest.raises(PayeshError, match="'week'"):
        runkeys.backfill_periods(period, "week")


def test_second_run_of_the_same_inputs_loads_and_commits_nothing(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], tmp_path: Path
) -> None:
    from flows.monitor import NOTHING_NEW, monitor_city
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    gen, ref_store, _ = monitored_tiny_city
    city = load_city(gen.manifest).name
    store = tmp_path / "store"
    shutil.copytree(ref_store, store)
    # the first run recorded its keys: in the commit's provenance and the store's attrs
    before = history(city, store=str(store))
    recorded = runkeys.keys_of(before[0]["metadata"]["provenance"])
    assert set(recorded) == {"s2", "landsat", "viirs"}
    assert json.loads(open_indicators(city, store=str(store)).attrs[runkeys.KEYS_ATTR]) == recorded

    state = monitor_city(
        city=str(gen.manifest),
        start=TINY_START,
        end=TINY_END,
        catalog=str(gen.catalog),
        store=str(store),
        return_state=True,
    )
    result = state.result()
    assert result["status"] == NOTHING_NEW
    assert result["snapshot"] == before[0]["snapshot_id"]
    assert history(city, store=str(store)) == before  # no commit
    with get_client(sync_client=True) as client:
        run_id = state.state_details.flow_run_id
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=50,
        )
    names = sorted(t.name for t in tasks)  # task run names: "<task>-<n>"
    assert [n.rsplit("-", 1)[0] for n in names] == ["changed-months", "plan"], names


def test_cli_backfill_commits_each_step_once_and_run_force_recomputes(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from payesh.cli import main

    gen, _, _ = monitored_tiny_city
    city = load_city(gen.manifest).name
    store = str(tmp_path / "store")
    common = ["--catalog", str(gen.catalog), "--store", store]
    backfill = ["backfill", str(gen.manifest), "--start", "2025-07", "--end", "2025-08"]
    backfill += ["--step", "month", *common]

    # each step a committed run of its own, in order
    assert main(backfill) == 0
    out = capsys.readouterr().out
    after_fill = history(city, store=store)
    first, second = after_fill[1]["snapshot_id"], after_fill[0]["snapshot_id"]
    assert "2 run(s) of one month" in out
    assert f"2025-07..2025-07: committed {first}" in out
    assert f"2025-08..2025-08: committed {second}" in out
    tiles = open_indicators(city, store=store)
    assert [f"{t:%Y-%m}" for t in pd.DatetimeIndex(tiles["time"].values)] == ["2025-07", "2025-08"]
    keys = runkeys.keys_of(after_fill[0]["metadata"]["provenance"])
    assert {month for months in keys.values() for month in months} == {"2025-08"}

    # the same backfill again: every step "nothing new", no commit
    assert main(backfill) == 0
    out = capsys.readouterr().out
    assert f"2025-07..2025-07: nothing new ({second})" in out
    assert f"2025-08..2025-08: nothing new ({second})" in out
    assert history(city, store=store) == after_fill

    # `payesh run` of a committed step: nothing new; with --force: recomputed and committed
    run = ["run", str(gen.manifest), "--start", "2025-08", "--end", "2025-08", *common]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "nothing new: " in out and f"already holds this run ({second})" in out
    assert history(city, store=store) == after_fill
    assert main([*run, "--force"]) == 0
    forced = history(city, store=store)
    assert len(forced) == len(after_fill) + 1
    assert f"committed {forced[0]['snapshot_id']} to " in capsys.readouterr().out
    # the same inputs give the same data and the same keys
    assert runkeys.keys_of(forced[0]["metadata"]["provenance"]) == keys
    old = open_indicators(city, store=store, version=second).sel(time="2025-08").compute()
    new = open_indicators(city, store=store).sel(time="2025-08").compute()
    assert set(new.data_vars) == set(old.data_vars)
    for name in old.data_vars:
        np.testing.assert_array_equal(new[name].values, old[name].values, err_msg=name)


def test_cli_backfill_rejects_a_bad_step_and_period(capsys: pytest.CaptureFixture[str]) -> None:
    from payesh.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["backfill", "khoy", "--start", "2025-01", "--end", "2025-02", "--step", "week"])
    assert exit_.value.code == 2
    assert "invalid choice: 'week'" in capsys.readouterr().err
    assert main(["backfill", "khoy", "--start", "2025-05", "--end", "2025-02"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("payesh: error: ") and "2025-05" in err
