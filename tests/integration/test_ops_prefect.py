"""A deployment from prefect.yaml, run on its schedule by a real Prefect server and worker.

``prefect server start`` (SQLite, its own PREFECT_HOME, a free port, the scheduler
service on) and ``prefect worker start`` run as subprocesses; the deployments are made by
``prefect deploy`` from the repository's own ``prefect.yaml``. The test adds one more
schedule to a deployment — every SLOT_S seconds, with the tiny city as its parameters —
and creates no run itself: the server's scheduler makes the run, the worker executes it
in a process of its own when it falls due, and the schedule is switched off once that run
has started (so it stays the only run). The test reads the
flow run's origin, states and logs back from the API and compares the store it wrote
with the store of an in-process run of the same flow (what ``payesh run`` does).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from ops_procs import (
    REPO,
    assert_same_store,
    prefect_cli,
    prefect_server,
    prefect_worker,
    wait_for,
)

from payesh.city import load_city
from payesh.store import history

TINY_START, TINY_END = "2025-01", "2025-08"  # the tiny_city fixture's months

pytestmark = pytest.mark.integration

POOL = "payesh-process"  # the work pool prefect.yaml names
DEPLOYMENT = "monitor-city/monitor-khoy"
RUN_TIMEOUT_S = 300
#: The test schedule's interval (s). Its first run is for the first slot after the
#: scheduler (1 s loop) sees it: on average SLOT_S / 2 s away. A slot that passes before the
#: scheduler has seen the schedule (a slow machine) is followed by another, not lost.
SLOT_S = 20
TEST_SCHEDULE = "tiny-city"
DEPLOYMENTS_IN_YAML = [
    d["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
]


def _read_run(api: str, run_id: UUID) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        return c.read_flow_run(run_id)


def _pool_exists(api: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        try:
            return c.read_work_pool(POOL).type == "process"
        except ObjectNotFound:
            return False


def _final_logs(api: str, run_id: UUID) -> str:
    """The flow run's log messages, once its commit (or failure) has been logged."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        # limit and offset given: Prefect 3.8.8 sends nulls the server rejects
        logs = c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), 200, 0)
    text = "\n".join(log.message for log in logs)
    return text if "committed snapshot" in text or "Traceback" in text else ""


def _scheduled_runs(api: str, deployment_id: UUID) -> list[Any]:
    """Every flow run on the server, once the deployment has one (the test makes none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        runs = c.read_flow_runs(limit=50, sort=FlowRunSort.EXPECTED_START_TIME_ASC, offset=0)
        mine = c.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            ),
            limit=50,
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            offset=0,
        )
    return runs if mine else []


def test_scheduled_deployment_run_by_the_worker_writes_the_store_payesh_run_writes(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolUpdate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.client.schemas.sorting import DeploymentSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    gen, ref_store, _ = monitored_tiny_city
    city = load_city(gen.manifest).name
    store = tmp_path / "store"
    with prefect_server(tmp_path / "prefect-home") as env:
        env["PAYESH_HOME"] = str(REPO)
        api = env["PREFECT_API_URL"]
        # the worker creates its `process` pool, as `make prefect-worker` does
        with prefect_worker(env, POOL, tmp_path / "worker.log") as worker:
            wait_for(lambda: _pool_exists(api), timeout=120, what=f"work pool {POOL}")
            out = prefect_cli(env, "deploy", "--all")  # every deployment of prefect.yaml
            assert DEPLOYMENT in out, out
            params = {
                "city": str(gen.manifest),
                "catalog": str(gen.catalog),
                "store": str(store),
                "start": TINY_START,
                "end": TINY_END,
                "night_lights": "stac",  # the tiny city's catalog has its VIIRS months
            }
            with temporary_settings(updates={PREFECT_API_URL: api}):
                with get_client(sync_client=True) as client:
                    # limit and sort given: Prefect 3.8.8 sends nulls the server rejects
                    listed = client.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC)
                    deployed = {d.name for d in listed}
                    assert deployed == set(DEPLOYMENTS_IN_YAML), deployed
                    dep = client.read_deployment_by_name(DEPLOYMENT)
                    assert dep.work_pool_name == POOL
                    assert not dep.paused
                    assert {s.slug for s in dep.schedules} == {"sentinel-2", "landsat", "viirs"}
                    assert all(s.active for s in dep.schedules)
                    # a slot every SLOT_S s, on whole minutes; the tiny city's parameters
                    made = datetime.now(UTC)
                    anchor = made.replace(second=0, microsecond=0)
                    (schedule,) = client.create_deployment_schedules(
                        dep.id,
                        [
                            DeploymentScheduleCreate(
                                schedule=IntervalSchedule(
                                    interval=timedelta(seconds=SLOT_S), anchor_date=anchor
                                ),
                                active=True,
                                parameters=params,
                                slug=TEST_SCHEDULE,
                            )
                        ],
                    )
                # the scheduler makes the run; nothing else makes one
                try:
                    runs = wait_for(
                        lambda: _scheduled_runs(api, dep.id),
                        timeout=SLOT_S + 40,
                        what="a run made by the scheduler",
                    )
                except TimeoutError as err:
                    server_log = (tmp_path / "prefect-home" / "server.log").read_text()
                    raise AssertionError(f"{err}; the server said: {server_log[-3000:]}") from err
                assert len(runs) == 1, [(r.name, r.created_by, r.expected_start_time) for r in runs]
                run = runs[0]
                # Once the run has left "Scheduled", the scheduler makes one for the next
                # slot, which the worker would take SLOT_S - 5 s later: switch the schedule
                # off at once (one open client, no delay), which deletes that run.
                with get_client(sync_client=True) as client:
                    wait_for(
                        lambda: not client.read_flow_run(run.id).state.is_scheduled(),
                        timeout=SLOT_S + 60,
                        what="the worker to take the run",
                        poll=0.1,
                    )
                    # and pause the pool: a next-slot run the scheduler queued before the
                    # switch (seen under load) is then never taken by the worker
                    client.update_work_pool(POOL, WorkPoolUpdate(is_paused=True))
                    client.update_deployment_schedule(dep.id, schedule.id, active=False)
                deadline = time.monotonic() + RUN_TIMEOUT_S
                while not (state := _read_run(api, run.id).state).is_final():
                    assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"run still {state.type} after timeout"
                    time.sleep(0.5)
                # the run's last logs reach the server shortly after its final state
                messages = wait_for(
                    lambda: _final_logs(api, run.id), timeout=60, what="the run's final logs"
                )
                with get_client(sync_client=True) as client:
                    states = client.read_flow_run_states(run.id)
            flow_run = _read_run(api, run.id)
            every_run = _scheduled_runs(api, dep.id)
    worker_log = (tmp_path / "worker.log").read_text()
    assert state.is_completed(), f"{state.type}: {state.message}\n{messages[-3000:]}"
    # made by the server's scheduler from the test schedule, for its first slot
    assert flow_run.auto_scheduled is True
    assert "auto-scheduled" in flow_run.tags
    assert flow_run.created_by is not None
    assert flow_run.created_by.type == "SCHEDULE"
    assert flow_run.created_by.id == schedule.id
    assert flow_run.created_by.display_value == TEST_SCHEDULE
    start = flow_run.expected_start_time
    assert start is not None and start >= made
    assert (start - anchor).total_seconds() % SLOT_S == 0, (start, anchor)  # one of its slots
    # the only run that ran, start to end; under load the scheduler may have queued the
    # next slot's run before the schedule was switched off: it must never have started
    assert run.id in [r.id for r in every_run]
    others = [r for r in every_run if r.id != run.id]
    assert all(r.state is not None and r.state.is_scheduled() for r in others), [
        (r.name, r.state_type) for r in others
    ]
    assert all(r.expected_start_time > start for r in others), others
    assert {**flow_run.parameters} == {**dep.parameters, **params}
    names = [s.name for s in sorted(states, key=lambda s: s.timestamp)]
    assert names[0] == "Scheduled" and names[-1] == "Completed", names
    assert "Running" in names, names
    # executed by the worker, in a process of its own, from the deployment
    assert flow_run.deployment_id == dep.id
    assert flow_run.work_pool_name == POOL
    assert flow_run.infrastructure_pid
    assert str(run.id) in worker_log
    # what the run did, as its logs on the server tell it
    assert f"{city} {TINY_START}..{TINY_END} from" in messages  # the plan
    assert "to compute: landsat 2025-01, " in messages and "; s2 2025-01, " in messages
    snapshot = history(city, store=str(store))[0]["snapshot_id"]
    assert f"committed snapshot {snapshot}" in messages
    assert_same_store(city, ref_store, store)
