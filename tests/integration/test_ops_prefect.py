"""A deployment from prefect.yaml, run by a real Prefect server and a process worker.

``prefect server start`` (SQLite, its own PREFECT_HOME, a free port) and ``prefect worker
start`` run as subprocesses; the deployment is made by ``prefect deploy`` from the
repository's own ``prefect.yaml``; a run of it on the tiny city is created through the
API, picked up by the worker and executed in a process of its own. The test reads the
flow run's state and logs back from the API and compares the store it wrote with the
store of an in-process run of the same flow (what ``payesh run`` does).
"""

from __future__ import annotations

import time
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


def test_deployment_run_by_the_worker_writes_the_store_payesh_run_writes(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
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
            }
            with temporary_settings(updates={PREFECT_API_URL: api}):
                with get_client(sync_client=True) as client:
                    # limit and sort given: Prefect 3.8.8 sends nulls the server rejects
                    listed = client.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC)
                    deployed = {d.name for d in listed}
                    assert deployed == set(DEPLOYMENTS_IN_YAML), deployed
                    dep = client.read_deployment_by_name(DEPLOYMENT)
                    assert dep.work_pool_name == POOL
                    assert {s.slug for s in dep.schedules} == {"sentinel-2", "landsat", "viirs"}
                    run = client.create_flow_run_from_deployment(dep.id, parameters=params)
                deadline = time.monotonic() + RUN_TIMEOUT_S
                while not (state := _read_run(api, run.id).state).is_final():
                    assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"run still {state.type} after timeout"
                    time.sleep(0.5)
                # the run's last logs reach the server shortly after its final state
                messages = wait_for(
                    lambda: _final_logs(api, run.id), timeout=60, what="the run's final logs"
                )
            flow_run = _read_run(api, run.id)
    worker_log = (tmp_path / "worker.log").read_text()
    assert state.is_completed(), f"{state.type}: {state.message}\n{messages[-3000:]}"
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
