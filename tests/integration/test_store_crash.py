"""A run of the store is SIGKILLed at random points; the store survives every time.

A "zygote" Python process imports payesh once, then forks one writer per trial (so a
trial does not pay for the imports); the test SIGKILLs the writer after a seeded random
delay that spans the whole run, from before its first chunk to after its commit. After
each kill: the store opens, its history is unchanged or gained exactly one commit, every
group equals the previous version or the new one exactly (never a mix), the dead
writer's lock does not block, and a re-run gives the same store as an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from reliability.figures import record, scale
from test_store import PROV, make_ntl, make_pixels, make_sites, make_tiles

from payesh import store as st
from payesh.errors import StoreError
from payesh.store.layout import _prepare_raster, chunked
from payesh.store.repo import _city_lock

pytestmark = pytest.mark.integration

KILLS = scale(12, 50)  # `make test` / `make reliability`
SEED = 20261122
BASE_MONTHS = ("2025-01-01", 4)
RUN_MONTHS = ("2025-03-01", 4)  # re-runs March and April, adds May and June


def run_groups(start: str, n: int, seed: int) -> dict[str, Any]:
    """The groups of one synthetic run (imported by the writer process too)."""
    times = pd.date_range(start, periods=n, freq="MS")
    return {
        "tiles": make_tiles(times, seed),
        "pixels": make_pixels(times, seed),
        "ntl": make_ntl(times),
        "sites": make_sites(),
    }


def warm_up() -> None:
    """Run the writer's code paths once in memory, starting no thread pool or runtime.

    A forked writer then starts warm (lazy imports, codec registries), so the random
    kill times spread over the write itself, not over one-time start-up costs.
    """
    import dask
    import zarr

    from payesh.sites_io import prepare_sites

    groups = run_groups(*RUN_MONTHS, seed=5)
    with dask.config.set(scheduler="synchronous"):
        mem = zarr.storage.MemoryStore()
        for name, obj in groups.items():
            ds = prepare_sites(obj) if name == "sites" else _prepare_raster(name, obj)
            ds, encoding = chunked(ds)
            ds.to_zarr(mem, group=name, mode="w", zarr_format=3, consolidated=False,
                       encoding=encoding)  # fmt: skip
            xr.open_zarr(mem, group=name, consolidated=False, chunks={}).load()


_ZYGOTE = """
import os, sys, time
sys.path.insert(0, {unit!r})
sys.path.insert(0, {here!r})
from test_store_crash import RUN_MONTHS, PROV, run_groups, warm_up
from payesh import store as st
import threading
warm_up()
# only zarr's IO loop and its executor run (zarr resets them in a forked child); no
# thread of dask or of Icechunk's runtime, which would not survive a fork
names = [t.name for t in threading.enumerate()]
assert all(n == "MainThread" or n == "zarr_io" or n.startswith("asyncio_") for n in names), names
tasks = [open(f"/proc/self/task/{{t}}/comm").read() for t in os.listdir("/proc/self/task")]
assert not any("tokio" in t for t in tasks), tasks
print("ready", flush=True)
for line in sys.stdin:
    root = line.strip()
    pid = os.fork()
    if pid == 0:
        try:
            sid = st.write_run("demo", run_groups(*RUN_MONTHS, seed=5), store=root,
                               message="run", provenance=PROV)
            print("committed", sid, flush=True)
            time.sleep(3600)  # wait to be killed, after the commit
        finally:
            os._exit(70)
    print("pid", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    print("exit", pid, sig, flush=True)
"""


class Zygote:
    def __init__(self, log: Path) -> None:
        here = Path(__file__).resolve().parent
        code = _ZYGOTE.format(unit=str(here.parent / "unit"), here=str(here))
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._ready = False

    def wait_ready(self) -> None:
        if not self._ready:
            assert self._line() == "ready"
            self._ready = True

    def _line(self) -> str:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        assert line, f"the writer process died: {self._log.name}"
        return line.strip()

    def start(self, root: Path) -> int:
        """Fork a writer into ``root``; its pid."""
        self.wait_ready()
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(f"{root}\n")
        stdin.flush()
        kind, pid = self._line().split()
        assert kind == "pid"
        return int(pid)

    def wait_committed(self) -> str:
        kind, sid = self._line().split()
        assert kind == "committed"
        return sid

    def kill(self, pid: int) -> bool:
        """SIGKILL the writer; whether it had committed."""
        os.kill(pid, signal.SIGKILL)
        committed = False
        while True:
            words = self._line().split()
            if words[0] == "committed":
                committed = True
            elif words[0] == "exit":
                assert words[1:] == [str(pid), str(int(signal.SIGKILL))], words
                return committed

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(30)
        self._log.close()


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path / "writer.log")
    try:
        yield z
    finally:
        z.close()


def _values(root: Path) -> dict[str, xr.Dataset]:
    out = {}
    for g in st.GROUPS:
        ds = st.open_indicators("demo", store=root, group=g).load()
        ds.attrs.pop("created")
        ds.attrs.pop(st.SNAPSHOT_ATTR)  # which commit was read: differs between stores
        out[g] = ds
    return out


def _equal(a: dict[str, xr.Dataset], b: dict[str, xr.Dataset]) -> bool:
    return all(a[g].identical(b[g]) for g in st.GROUPS)


def _ids(root: Path) -> list[str]:
    return [h["snapshot_id"] for h in st.history("demo", store=root)]


def test_sigkill_at_random_points(zygote: Zygote, tmp_path: Path) -> None:
    base = tmp_path / "base"
    st.write_run("demo", run_groups(*BASE_MONTHS, seed=0), store=base, message="base",
                 provenance=PROV)  # fmt: skip
    base_ids, before = _ids(base), _values(base)

    # the uninterrupted run, in a writer like the killed ones
    ref = tmp_path / "ref"
    shutil.copytree(base, ref)
    zygote.wait_ready()
    t0 = time.monotonic()
    pid = zygote.start(ref)
    zygote.wait_committed()
    duration = time.monotonic() - t0
    zygote.kill(pid)
    after = _values(ref)
    assert len(_ids(ref)) == len(base_ids) + 1
    assert not _equal(before, after)

    rng = random.Random(SEED)
    landed = {"before commit": 0, "after commit": 0, "of which before it was reported": 0}
    for trial in range(KILLS):
        root = tmp_path / f"trial{trial:02d}"
        shutil.copytree(base, root)
        share = rng.uniform(0.0, 1.25)  # of the run's time to its commit
        t_start = time.monotonic()
        pid = zygote.start(root)
        if trial == 1:
            # one kill surely after the commit; its time to commit also rescales the
            # delays (a writer forked into a trial store takes longer than the reference)
            zygote.wait_committed()
            duration = max(duration, time.monotonic() - t_start)
            zygote.kill(pid)
            committed = True
        else:  # the first surely before it (at once); the others anywhere in the run
            time.sleep(0.0 if trial == 0 else share * duration)
            committed = zygote.kill(pid)

        ids = _ids(root)
        got = _values(root)
        if ids == base_ids:
            assert _equal(got, before), f"trial {trial}: uncommitted data is visible"
            landed["before commit"] += 1
        else:
            assert ids[1:] == base_ids, f"trial {trial}: history {ids} vs {base_ids}"
            assert _equal(got, after), f"trial {trial}: the commit differs from the run"
            landed["after commit"] += 1
            landed["of which before it was reported"] += not committed
        assert (root / "demo.lock").exists()

        # the dead writer's lock does not block, and a re-run completes the run
        st.write_run("demo", run_groups(*RUN_MONTHS, seed=5), store=root, message="re-run",
                     provenance=PROV, lock_timeout=1)  # fmt: skip
        assert _equal(_values(root), after), f"trial {trial}: re-run differs"
        shutil.rmtree(root)

    print(f"\nrun {duration:.2f} s; SIGKILL landed {landed}")
    assert landed["before commit"] + landed["after commit"] == KILLS
    assert landed["before commit"] > 0 and landed["after commit"] > 0
    record(
        "crash",
        "tests/integration/test_store_crash.py::test_sigkill_at_random_points",
        store_writer_kills=KILLS,
        before_commit=landed["before commit"],
        after_commit=landed["after commit"],
        reruns_converged=KILLS,
        data_lost=0,
    )


def test_lock_of_a_killed_holder_never_blocks(tmp_path: Path) -> None:
    """A process killed while holding the city lock leaves the file, not the lock."""
    # the same kernel lock `_city_lock` takes, held by a lean process that starts fast
    code = (
        "import fcntl, os, time\n"
        f"fd = os.open({str(tmp_path / 'demo.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(3600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="locked by another writer"):
            with _city_lock(str(tmp_path), "demo", timeout=0.2):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "demo.lock").exists()
    t0 = time.monotonic()
    with _city_lock(str(tmp_path), "demo", timeout=0.5):
        pass
    assert time.monotonic() - t0 < 0.5
