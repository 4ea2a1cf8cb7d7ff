"""The monitor flow on a real Dask cluster: ``dask scheduler`` + two ``dask worker`` processes.

The cluster runs as subprocesses on loopback (one thread per worker, no nanny, so that a
SIGKILL of a worker's process is the end of that worker). The flow connects to it with
``dask_address``, as ``payesh run --dask`` and ``PAYESH_DASK_ADDRESS`` do. Its store must
equal the store of the run on the default local cluster — also when one of the two
workers is killed in the middle of the run (the scheduler recomputes what the dead
worker held on the other one).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_procs import DaskCluster, assert_same_store, dask_cluster

from payesh.city import load_city

pytestmark = pytest.mark.integration

TINY_START, TINY_END = "2025-01", "2025-08"  # the tiny_city fixture's months


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with dask_cluster(tmp_path_factory.mktemp("dask"), n_workers=2) as running:
        yield running


def _run(gen: Any, store: Path, address: str) -> dict[str, Any]:
    from flows.monitor import monitor_city

    result: dict[str, Any] = monitor_city(
        city=str(gen.manifest),
        start=TINY_START,
        end=TINY_END,
        catalog=str(gen.catalog),
        store=str(store),
        dask_address=address,
    )
    return result


def _workers(address: str) -> dict[str, dict[str, Any]]:
    """Scheduler's view: worker name → its info (with ``executing``/``processing`` counts)."""
    from distributed import Client

    with Client(address, set_as_default=False, timeout="10s") as c:
        return {str(w["name"]): w for w in c.scheduler_info(n_workers=-1)["workers"].values()}


def test_flow_on_a_dask_cluster_gives_the_local_store(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    cluster: DaskCluster,
    tmp_path: Path,
) -> None:
    from distributed import Client

    gen, ref_store, _ = monitored_tiny_city
    city = load_city(gen.manifest).name
    result = _run(gen, tmp_path / "store", cluster.address)
    assert result["status"] == "committed"
    assert_same_store(city, ref_store, tmp_path / "store")
    # the work was done by both worker processes, not in this one
    with Client(cluster.address, set_as_default=False) as c:
        done = c.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert len(done) == 2 and all(n > 0 for n in done.values()), done


def test_a_worker_killed_mid_run_changes_nothing(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]],
    cluster: DaskCluster,
    tmp_path: Path,
) -> None:
    """SIGKILL one of the two workers while it computes; the run ends with the same store."""
    from distributed import Client

    gen, ref_store, _ = monitored_tiny_city
    city = load_city(gen.manifest).name
    killed: dict[str, Any] = {}
    stop = threading.Event()

    def killer() -> None:
        with Client(cluster.address, set_as_default=False) as c:
            while not stop.is_set():
                busy = {
                    str(info["name"]): n
                    for addr, n in c.processing().items()
                    if n and (info := c.scheduler_info()["workers"].get(addr))
                }
                name = next((n for n in sorted(busy) if cluster.workers[n].poll() is None), None)
                if name:
                    killed["name"], killed["tasks"] = name, len(busy[name])
                    cluster.kill(name)
                    return
                stop.wait(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = _run(gen, tmp_path / "store", cluster.address)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert killed, "no worker was ever busy: nothing was killed"
    assert cluster.workers[killed["name"]].returncode == -9  # SIGKILL, mid-task
    assert killed["tasks"] > 0
    assert result["status"] == "committed"
    assert set(_workers(cluster.address)) == set(cluster.workers) - {killed["name"]}
    assert_same_store(city, ref_store, tmp_path / "store")
    from reliability.figures import record  # the reliability page's figures

    node = os.environ["PYTEST_CURRENT_TEST"].split(" ")[0]
    record(
        "crash", node, dask_workers_killed=1, tasks_on_killed_worker=killed["tasks"], data_lost=0
    )
