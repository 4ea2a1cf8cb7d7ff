"""A sampling profiler that tells where a multi-threaded run spends its CPU time, by stage.

Every ``interval`` seconds a background thread reads the Python stack of every other
thread (``sys._current_frames``) and the CPU time each thread used since the last look,
and files that CPU time under the stack's stage: the innermost frame that belongs to a
known module decides (``payesh/masking.py`` → mask, ``sklearn`` → classify, ``rasterio``
→ load, ...). Waiting threads use no CPU and so count for nothing. Because it looks at
stacks and CPU clocks, not at task names or log lines, it needs no change to the code it
measures and works across Prefect, Dask and plain thread pools alike; code that releases
the GIL (GDAL, numpy) is seen in the Python frame that called it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from types import FrameType
from typing import Any

#: (stage, path fragments); the innermost frame matching any fragment decides.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mask", ("payesh/masking.py",)),
    # truecolour.py: the month's true-colour layer, made with the composite (evidence.py held it)
    (
        "composite",
        ("payesh/composite.py", "payesh/nanops.py", "payesh/evidence.py", "payesh/truecolour.py"),
    ),
    (
        "classify",
        (
            "payesh/classifier.py",
            "payesh/features.py",
            "payesh/model.py",
            "payesh/model_io.py",
            "payesh/forest.py",
            "/sklearn/",
            "/skops/",
        ),
    ),
    (
        "write",
        (
            "payesh/store/",
            "payesh/staging.py",
            "/icechunk/",
            "/zarr/",
            "payesh/export.py",
            "payesh/export_tables.py",
            "payesh/export_rasters.py",
        ),
    ),
    (
        "aggregate",
        (
            "payesh/indicators/",
            "payesh/pipeline.py",
            "payesh/rundata.py",
            "payesh/s2months.py",
            "payesh/keptmonths.py",
            "payesh/run_indicators.py",
            "payesh/sites_io.py",
            "/shapely/",
        ),
    ),
    ("load", ("payesh/sources/", "payesh/monthly.py", "/rasterio/", "/odc/", "/pystac")),
    ("search", ("payesh/plan.py", "payesh/city.py", "payesh/records.py")),
    ("orchestration", ("/prefect/", "/distributed/", "/dask/", "/tornado/", "flows/monitor.py")),
    ("payesh (other)", ("payesh/",)),  # a module not named above: add it to its stage
)
#: Frames that sit on top of whatever code triggered them (Python's GC callbacks).
_TRANSPARENT = ("distributed/gc.py",)
_IDLE_FILES = ("threading.py", "queue.py", "selectors.py", "asyncio/", "concurrent/futures/")
_IDLE_FUNCS = frozenset(
    {"wait", "sleep", "select", "poll", "acquire", "_wait_for_tstate_lock", "get", "join"}
)


def classify_stack(frame: FrameType | None) -> str:
    """Stage of one thread's stack (innermost frame first).

    ``wait`` when the thread is blocked in a wait (lock, queue, selector) at the sample:
    the CPU it used since the last sample went mostly to event loops (Prefect's, Dask's).
    """
    if frame is None:
        return "wait"
    code = frame.f_code
    if code.co_name in _IDLE_FUNCS and any(p in code.co_filename for p in _IDLE_FILES):
        return "wait"
    if code.co_filename.startswith("<frozen importlib"):
        return "import"
    f: FrameType | None = frame
    while f is not None:
        name = f.f_code.co_filename.replace("\\", "/")
        if any(p in name for p in _TRANSPARENT):
            f = f.f_back
            continue
        for stage, fragments in RULES:
            if any(p in name for p in fragments):
                return stage
        f = f.f_back
    return "other"


def _idle(seen: tuple[str, str]) -> bool:
    """Whether a thread seen as (stage, innermost frame) was waiting: in a wait, or a
    pool's worker between jobs (its queue's get is C code: the worker's own frame shows)."""
    return seen[0] == "wait" or seen[1] == "futures/thread.py:_worker"


class StageSampler:
    """Context manager: ``with StageSampler() as s: ...; s.report()``.

    Every ``interval`` seconds, each Python thread's CPU time since the last look
    (``pthread_getcpuclockid``) is filed under the stage of its stack now, or, when it is
    idle now (a wait, a pool worker between jobs) and was busy at the last look, under
    the stage it was busy in (the end of a job that finished in between). CPU time of
    threads Python does not know (GDAL's, OpenMP's) is the process's CPU time less the
    Python threads': reported as ``native threads``.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.cpu: Counter[str] = Counter()
        self.frames: Counter[tuple[str, str]] = Counter()  # (stage, innermost file:function)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stage-sampler", daemon=True)
        self._last: dict[int, float] = {}
        self._seen: dict[int, tuple[str, str]] = {}  # (stage, innermost frame) at the last look
        self.wall = 0.0

    @staticmethod
    def _thread_cpu(ident: int) -> float | None:
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (OSError, OverflowError):
            return None  # the thread has ended

    def _look(self, me: int) -> float:
        seen = 0.0
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            cpu = self._thread_cpu(ident)
            if cpu is None:
                continue
            delta = cpu - self._last.get(ident, 0.0)  # a new thread: all its CPU so far
            self._last[ident] = cpu
            if delta <= 0:
                continue
            seen += delta
            c = frame.f_code
            now = (classify_stack(frame), f"{'/'.join(c.co_filename.split('/')[-2:])}:{c.co_name}")
            before = self._seen.get(ident)
            self._seen[ident] = now
            # idle now, busy at the last look: the CPU went to the job it was running then
            # (a pool job that ended between two looks), not to the wait it sits in now
            filed = before if _idle(now) and before is not None and not _idle(before) else now
            self.cpu[filed[0]] += delta
            self.frames[filed] += delta
        return seen

    def _run(self) -> None:
        me = threading.get_ident()
        proc = time.process_time()
        mine = time.thread_time()
        while not self._stop.wait(self.interval):
            seen = self._look(me)
            now, now_mine = time.process_time(), time.thread_time()
            self.cpu["native threads"] += max(0.0, (now - proc) - (now_mine - mine) - seen)
            proc, mine = now, now_mine

    def __enter__(self) -> StageSampler:
        for ident in sys._current_frames():  # what threads used before now is not ours
            cpu = self._thread_cpu(ident)
            if cpu is not None:
                self._last[ident] = cpu
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self._t0

    def report(self) -> dict[str, Any]:
        """CPU seconds and share of CPU time per stage, and the busiest innermost frames."""
        total = sum(self.cpu.values()) or 1.0
        return {
            "interval_s": self.interval,
            "wall_s": round(self.wall, 2),
            "cpu_seconds": {k: round(v, 2) for k, v in sorted(self.cpu.items())},
            "share": {k: round(v / total, 4) for k, v in sorted(self.cpu.items())},
            "top_frames": [
                [stage, where, round(sec, 2)] for (stage, where), sec in self.frames.most_common(15)
            ],
        }
