"""Real operations components as subprocesses on loopback, for tests/integration/test_ops_*.

* :func:`prefect_server` — ``prefect server start`` as ``make prefect-server`` starts it
  (SQLite in its own PREFECT_HOME, a free port, the scheduler looping every second); yields the environment that points a
  CLI, a worker or a client at it.
* :func:`prefect_worker` — ``prefect worker start`` on a ``process`` work pool.
* :func:`dask_cluster` — ``dask scheduler`` and N ``dask worker`` processes (no nanny,
  so that killing a worker's process kills the worker).
* :func:`assert_same_store` — two stores of a city hold the same tiles and sites.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from servers import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: The test server's scheduler makes runs only this far ahead (s): see prefect_server.
SCHEDULER_HORIZON_S = 120


def _stop(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """``prefect server start`` with its own home and SQLite database; yields its env."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # The scheduler runs, on a short leash: every second (default 60 s) it turns the
        # active schedules into runs, but only runs due within the next 2 minutes (default
        # 100 days) and one per schedule (default 3). A test schedule due seconds from now
        # gets its run in time; the sensors' schedules of prefect.yaml, hours or days
        # away, get none (a test fails loudly should one ever fall due inside its window).
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT0S",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME": f"PT{SCHEDULER_HORIZON_S}S",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    log = home / "server.log"
    prefect = str(Path(sys.executable).with_name("prefect"))
    cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        try:
            wait_until_ready(f"{api}/health", timeout=120, proc=proc)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"{err}; the server said: {_tail(log)}") from err
        yield env
    finally:
        _stop(proc)


@contextmanager
def prefect_worker(env: dict[str, str], pool: str, log: Path) -> Iterator[subprocess.Popen[Any]]:
    """``prefect worker start`` on ``pool`` (a ``process`` pool, created if missing)."""
    cmd = [
        str(BIN / "prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--prefetch-seconds",
        "5",
    ]
    # poll for due runs every second (default 10 s)
    worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=worker_env)
    try:
        yield proc
    finally:
        _stop(proc)


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run the ``prefect`` CLI against the server of ``env``; its output (fails loudly)."""
    cmd = [str(BIN / "prefect"), "--no-prompt", *args]
    done = subprocess.run(
        cmd,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class DaskCluster:
    """A running scheduler and its workers (``pids``: worker name → process)."""

    address: str
    workers: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)

    def kill(self, name: str) -> None:
        """SIGKILL one worker: no goodbye to the scheduler, its memory is lost."""
        self.workers[name].send_signal(signal.SIGKILL)
        self.workers[name].wait()


@contextmanager
def dask_cluster(folder: Path, n_workers: int = 2) -> Iterator[DaskCluster]:
    """``dask scheduler`` + ``n_workers`` × ``dask worker --nthreads 1`` on loopback."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "false"}
    with ExitStack() as stack:
        logs = {"scheduler": stack.enter_context((folder / "scheduler.log").open("wb"))}
        sched = subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=logs["scheduler"],
            stderr=subprocess.STDOUT,
            env=env,
        )
        stack.callback(_stop, sched)
        cluster = DaskCluster(address)
        for i in range(n_workers):
            name = f"w{i}"
            out = stack.enter_context((folder / f"{name}.log").open("wb"))
            cluster.workers[name] = subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "worker",
                    address,
                    "--name",
                    name,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-nanny",
                    "--memory-limit",
                    "1.5GiB",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--local-directory",
                    str(folder / name),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
            stack.callback(_stop, cluster.workers[name])
        from distributed import Client

        with Client(address, timeout="60s") as client:
            try:
                client.wait_for_workers(n_workers, timeout=90)
            except TimeoutError as err:
                logs_text = {p.name: _tail(p, 800) for p in folder.glob("*.log")}
                raise RuntimeError(f"dask workers did not join: {logs_text}") from err
        yield cluster


def wait_for(predicate: Any, *, timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll ``predicate()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what}: not after {timeout} s")


def assert_same_store(city: str, store_a: Path | str, store_b: Path | str) -> None:
    """The latest tiles (every variable, every value) and sites of two stores are equal."""
    from payesh.store import open_indicators, open_sites

    a = open_indicators(city, store=str(store_a)).compute()
    b = open_indicators(city, store=str(store_b)).compute()
    assert set(a.data_vars) == set(b.data_vars)
    assert a.sizes == b.sizes
    np.testing.assert_array_equal(a["time"].values, b["time"].values)
    for name in a.data_vars:
        va, vb = a[name].values, b[name].values
        if va.dtype.kind in "fc":
            np.testing.assert_allclose(va, vb, rtol=1e-6, atol=0, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(va, vb, err_msg=name)
    assert a.attrs["source_items"] == b.attrs["source_items"]
    sa, sb = open_sites(city, store=str(store_a)), open_sites(city, store=str(store_b))
    assert len(sa) > 0
    assert list(sa.columns) == list(sb.columns)
    assert sa.drop(columns="geometry").equals(sb.drop(columns="geometry"))
    assert sa.geometry.geom_equals_exact(sb.geometry, tolerance=1e-6).all()
