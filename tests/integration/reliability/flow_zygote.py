"""Whole monitor-flow runs in forked processes, cheaply, for the crash and concurrency tests.

A "zygote" Python process imports payesh, ``flows.monitor`` and Prefect once, then forks
one child per run: a child starts in milliseconds instead of paying the imports, and
talks to the session's one Prefect API (``PREFECT_API_URL`` of the ``prefect_harness``
fixture) instead of starting its own. The zygote itself starts no thread and no
runtime before it forks (checked at start-up), so every child begins clean: the flow's
Dask cluster, Prefect's API client and Icechunk's runtime are all born in the child.

``serve <json>`` (``root``, ``port``, ``refresh_s``) forks a child serving the portal
(``payesh.portal.app.create_app`` under uvicorn, as ``payesh serve`` does, but with a
short ``refresh_s`` so that a new commit is picked up within the test).

Protocol (one line each way): the test writes ``run <json>`` (``store``, ``start``,
``end``, ``hold``); the zygote answers ``pid <n>``. The child runs ``monitor_city``
on the tiny city and reports ``done <pid> <status> <snapshot>`` (or ``failed <pid> ...``);
with ``hold`` it then waits to be SIGKILLed, else it exits. ``wait <pid>`` answers
``exit <pid> <signal> <code>`` when the child is gone. Children's own output (Prefect's
logs) goes to the zygote's log file, never into the protocol.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import xarray as xr

REPO = Path(__file__).resolve().parents[3]

_CODE = r"""
import json, os, sys, threading, time, traceback
proto = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # anything printed by the flow or libraries goes to the log, not the protocol
sys.path.insert(0, {repo!r})
import payesh.store, payesh.pipeline  # noqa: the imports are what the zygote is for
import flows.monitor
import uvicorn
import payesh.portal.app
from flows.monitor import monitor_city
names = [t.name for t in threading.enumerate()]
assert names == ["MainThread"], names
tasks = [open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task")]
assert not any("tokio" in t or "asyncio" in t for t in tasks), tasks
proto.write("ready\n")
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "wait":
        pid = int(arg)
        _, status = os.waitpid(pid, 0)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        proto.write(f"exit {{pid}} {{sig}} {{code}}\n")
        continue
    assert cmd in ("run", "serve"), line
    job = json.loads(arg)
    pid = os.fork()
    if pid == 0 and cmd == "serve":
        try:
            from payesh.portal.app import create_app
            from payesh.portal.tokens import TokenStore, tokens_file
            app = create_app(job["root"], tokens=TokenStore(tokens_file(job["root"])),
                             rate=1e6, burst=1e6, refresh_s=job["refresh_s"])
            uvicorn.run(app, host="127.0.0.1", port=job["port"], log_level="warning")
        finally:
            os._exit(0)
    if pid == 0:
        try:
            me = os.getpid()
            try:
                res = monitor_city(city=job["city"], catalog=job["catalog"], start=job["start"],
                                   end=job["end"], store=job["store"])
                proto.write(f"done {{me}} {{res['status'].replace(' ', '_')}} {{res['snapshot']}}\n")
            except BaseException as err:
                traceback.print_exc()
                proto.write(f"failed {{me}} {{type(err).__name__}}\n")
                os._exit(1)
            if job.get("hold"):
                time.sleep(3600)  # wait to be killed, after the commit
            os._exit(0)
        finally:
            os._exit(70)
    proto.write(f"pid {{pid}}\n")
"""


class FlowZygote:
    """The zygote process and a reader of its answers (see the module doc)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CODE.format(repo=str(REPO))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=REPO,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._events: dict[int, list[tuple[float, str]]] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._ready = False
        self._send_lock = threading.Lock()

    def _read(self) -> None:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        for line in out:
            words = line.split()
            now = time.monotonic()
            if words and words[0] in ("done", "failed", "exit"):
                with self._cond:
                    self._events.setdefault(int(words[1]), []).append((now, line.strip()))
                    self._cond.notify_all()
            else:
                self._lines.put(line.strip())
        self._lines.put("")  # end of output: the zygote died
        with self._cond:
            self._cond.notify_all()

    def _answer(self, timeout: float = 600) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the zygote did not answer: {self.tail()}") from None
        assert line, f"the zygote died: {self.tail()}"
        return line

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 600) -> None:
        if not self._ready:
            assert self._answer(timeout) == "ready"
            self._ready = True

    def start(self, job: dict[str, Any]) -> int:
        """Fork a child running the flow for ``job``; its pid."""
        self.wait_ready()
        with self._send_lock:
            self._send(f"run {json.dumps(job)}")
            kind, pid = self._answer().split()
        assert kind == "pid"
        return int(pid)

    def serve(self, root: Path, port: int, refresh_s: float) -> int:
        """Fork a child serving the portal (``create_app`` + uvicorn) over ``root``; its pid."""
        self.wait_ready()
        job = {"root": str(root), "port": port, "refresh_s": refresh_s}
        with self._send_lock:
            self._send(f"serve {json.dumps(job)}")
            kind, pid = self._answer().split()
        assert kind == "pid"
        return int(pid)

    def _send(self, line: str) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def event(self, pid: int, kind: str, timeout: float = 600) -> tuple[float, list[str]]:
        """Wait for the child's ``done``/``failed``/``exit`` line: (when, its words)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for when, line in self._events.get(pid, []):
                    words = line.split()
                    if words[0] == kind or (kind == "done" and words[0] == "failed"):
                        assert words[0] == kind, f"child {pid}: {line}\n{self.tail()}"
                        return when, words
                left = deadline - time.monotonic()
                assert left > 0, f"child {pid}: no {kind!r} in {timeout} s\n{self.tail()}"
                assert self.proc.poll() is None, f"the zygote died: {self.tail()}"
                self._cond.wait(min(left, 1.0))

    def has(self, pid: int, kind: str) -> bool:
        with self._cond:
            return any(line.split()[0] == kind for _, line in self._events.get(pid, []))

    def reap(self, pid: int) -> tuple[int, int]:
        """Wait until the child is gone: (signal that ended it or 0, exit code or -1)."""
        with self._send_lock:
            self._send(f"wait {pid}")
        _, words = self.event(pid, "exit")
        return int(words[2]), int(words[3])

    def kill(self, pid: int) -> None:
        """SIGKILL the child (and reap it); it must die of that signal."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone: it must have failed
            pass
        sig, code = self.reap(pid)
        assert sig == signal.SIGKILL, f"child {pid} ended with code {code}: {self.tail()}"

    def run(self, job: dict[str, Any], timeout: float = 600) -> tuple[str, str, float]:
        """Run the flow to its end in a child: (status, snapshot id, seconds)."""
        t0 = time.monotonic()
        pid = self.start(job)
        when, words = self.event(pid, "done", timeout)
        assert self.reap(pid) == (0, 0), self.tail()
        return words[2], words[3], when - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


_ZYGOTE: FlowZygote | None = None


def flow_zygote(log_dir: Path) -> FlowZygote:
    """The session's one zygote (started on first use, pointed at the Prefect API in use)."""
    global _ZYGOTE
    if _ZYGOTE is None or _ZYGOTE.proc.poll() is not None:
        from prefect.settings import PREFECT_API_URL

        api = PREFECT_API_URL.value()
        assert api, "no Prefect API: use the prefect_harness fixture"
        env = {**os.environ, "PREFECT_API_URL": str(api)}
        _ZYGOTE = FlowZygote(env, log_dir / "flow-zygote.log")
    return _ZYGOTE


def close_zygote() -> None:
    global _ZYGOTE
    if _ZYGOTE is not None:
        _ZYGOTE.close()
        _ZYGOTE = None


# --------------------------------------------------------------------------- the runs

CITY = "demo"  # the tiny city's name
#: The base store holds one committed run of these months ...
BASE_MONTHS = ("2025-01", "2025-02")
#: ... and the run under test re-runs February and adds March (as a scheduled
#: run with an overlap does): it merges with stored months, so all of write_run is used.
RUN_MONTHS = ("2025-02", "2025-03")


@dataclass
class References:
    """The base store, the store after one clean run on it, and what they hold."""

    base: Path
    clean: Path
    run_s: float  # the clean run, fork to "done"
    base_ids: list[str]
    before: dict[str, xr.Dataset]
    after: dict[str, xr.Dataset]


_REFS: References | None = None


def job(
    gen: Any, store: Path, months: tuple[str, str] = RUN_MONTHS, **extra: Any
) -> dict[str, Any]:
    return {"city": str(gen.manifest), "catalog": str(gen.catalog), "start": months[0],
            "end": months[1], "store": str(store), **extra}  # fmt: skip


def references(z: FlowZygote, gen: Any, folder: Path) -> References:
    """Made once per session: the base run, then the clean run on a copy of it."""
    global _REFS
    if _REFS is None:
        base, clean = folder / "base", folder / "clean"
        status, _, _ = z.run(job(gen, base, BASE_MONTHS))
        assert status == "committed"
        shutil.copytree(base, clean)
        status, _, run_s = z.run(job(gen, clean))
        assert status == "committed"
        _REFS = References(base, clean, run_s, snapshot_ids(base), values(base), values(clean))
        assert len(snapshot_ids(clean)) == len(_REFS.base_ids) + 1
        assert not same(_REFS.before, _REFS.after)
    return _REFS


def snapshot_ids(root: Path) -> list[str]:
    from payesh import store as st

    return [h["snapshot_id"] for h in st.history(CITY, store=root)]


def values(root: Path, version: str | None = None) -> dict[str, xr.Dataset]:
    """Every group of one snapshot (all from the same one), loaded, without the attributes
    that differ between two runs of the same inputs (when it was made, which snapshot)."""
    from payesh import store as st

    tree = st.open_tree(CITY, store=root, version=version)
    out = {}
    for g in ["/", *sorted(tree.children)]:
        ds = tree[g].to_dataset().load()
        ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ("created", st.SNAPSHOT_ATTR)}
        out[g] = ds
    return out


def same(a: dict[str, xr.Dataset], b: dict[str, xr.Dataset]) -> bool:
    return set(a) == set(b) and all(a[g].identical(b[g]) for g in a)


def which(got: dict[str, xr.Dataset], refs: References) -> str:
    """``old`` or ``new`` when every group equals that version, else a description of the mix
    (a group the two versions share, e.g. no sites in either, counts as both)."""
    seen = {
        g: {v for v, ref in (("old", refs.before), ("new", refs.after)) if got[g].identical(ref[g])}
        for g in sorted(got)
    }
    common = set.intersection({"old", "new"}, *seen.values())
    if set(got) == set(refs.before) == set(refs.after) and len(common) == 1:
        return common.pop()
    return f"MIXED {seen}"
