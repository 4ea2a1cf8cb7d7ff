"""payesh benchmark: decode floor, payesh flow and the notebook peer on 6, 12 and 24 km cities.

One command, one run, same machine and thread count (``make bench``)::

    .venv/bin/python benchmarks/run.py                        # --sizes 6 12 24
    .venv/bin/python benchmarks/run.py --sizes 2 4 --threads 2  # smoke
    .venv/bin/python benchmarks/run.py --sizes 12 --scaling 1 2 4 8 16

For each size (km squares, one year, Sentinel-2 every 5 days, Landsat every 16 days,
VIIRS monthly, DEFLATE COGs) it runs, each in its own process pinned to ``--threads``
cores:

1. **decode floor** — every block of every asset the run needs, read with rasterio on
   N threads (``children.py floor``);
2. **payesh** — the full monitor flow to a committed store (``children.py flow``), with
   the share of thread time per stage sampled from the stacks (``sampler.py``);
3. **notebook peer** — ``peers/notebook_peer.py``: odc-stac + xarray + Dask, N threads;

and records wall time and peak memory of each. Each starts with the city's files in the
page cache (read once before it, untimed; ``--cold``: dropped from it instead), so that
none of them times disk reads another did not (``pagecache.py``). It prints a table and the ratios, and
appends everything, with the machine it ran on, to
``benchmarks/results/<date>-<host>-<n>cores.json``. ``--scaling`` runs the floor and
the flow at one size for each thread count instead, and reports the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import pagecache  # noqa: E402
from cities import bench_city  # noqa: E402

RESULTS = HERE / "results"  # --results
WORK = ROOT / "data" / "bench" / "runs"  # --work: stores, logs, the Prefect server's home


# ------------------------------------------------------------------ machine and children
def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load: what a figure needs next to it."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import rasterio

    return {
        "host": platform.node(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "gdal": rasterio.__gdal_version__,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpus(threads: int) -> set[int]:
    allowed = sorted(os.sched_getaffinity(0))
    return set(allowed[: max(1, min(threads, len(allowed)))])


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def spawn(
    label: str,
    argv: list[str],
    threads: int,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``argv`` pinned to ``threads`` cores; its RESULT, wall time and peak memory.

    ``max_rss_mb``: the process's own peak resident memory (``wait4``'s rusage), the
    figure compared. ``tree_peak_mb``: largest sampled sum over it and its children
    (e.g. Prefect's temporary API server), every 0.2 s.
    """
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        **os.environ,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "GDAL_NUM_THREADS": str(threads),
        # every run computes its months: none are taken from an earlier run's (monthcache)
        "PAYESH_MONTH_CACHE": "off",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **(extra_env or {}),
    }
    cpus = _cpus(threads)
    out_path, err_path = log_dir / f"{label}.out", log_dir / f"{label}.err"
    t0 = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=out,
            stderr=err,
            env=env,
            cwd=ROOT,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            ps = psutil.Process(proc.pid)
            while not done.wait(0.2):
                try:
                    peak[0] = max(peak[0], _tree_rss(ps))
                except psutil.NoSuchProcess:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    wall = time.perf_counter() - t0
    text = out_path.read_text()
    for line in text.splitlines():
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[7:])
            res.update(
                process_seconds=round(wall, 2),
                max_rss_mb=round(usage.ru_maxrss / 1024, 1),
                tree_peak_mb=round(peak[0] / 2**20, 1),
                cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
                cores=len(cpus),
            )
            return res
    raise SystemExit(
        f"{label} failed (exit {proc.returncode}); see {out_path} and {err_path}:\n"
        f"{text[-2000:]}\n{err_path.read_text()[-3000:]}"
    )


# ------------------------------------------------------------------ Prefect's server
class PrefectServer:
    """Prefect's API server in a process of its own (``prefect server start``), as the
    flow runs of a deployment find it: their process is a client of it.

    Without ``PREFECT_API_URL`` a flow run starts Prefect's temporary server itself, and
    the code that starts it (Prefect's server package, SQLAlchemy, FastAPI, … ~75 MB)
    stays imported in the flow's process; a deployment's flow run never imports it.
    ``--prefect temporary`` measures that way instead (the figures before git 69eebf4).

    The server runs on the cores of the flow it serves (:meth:`pin`), whose requests it
    answers with that flow's cores, as the temporary server did; its peak memory during
    each flow is recorded apart (``prefect_server_peak_mb``).
    """

    def __init__(self, log_dir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api"
        self.home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=log_dir))
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        env.pop("PREFECT_API_URL", None)
        self.log = (log_dir / "prefect-server.log").open("w")
        command = [sys.executable, "-m", "prefect", "server", "start"]
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self._peak = 0
        self._done = threading.Event()
        self._wait_healthy()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _wait_healthy(self, timeout: float = 180.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"prefect server exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"prefect server not up in {timeout:.0f} s; see {self.log.name}")

    def _sample(self) -> None:
        ps = psutil.Process(self.proc.pid)
        while not self._done.wait(0.2):
            try:
                self._peak = max(self._peak, _tree_rss(ps))
            except psutil.NoSuchProcess:
                return

    def pin(self, threads: int) -> None:
        """Run on the cores a flow of ``threads`` threads gets; start a new peak."""
        cpus = sorted(_cpus(threads))
        for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]:
            try:
                p.cpu_affinity(cpus)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self._peak = 0

    def peak_mb(self) -> float:
        return round(self._peak / 2**20, 1)

    def close(self) -> None:
        self._done.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


SERVER: PrefectServer | None = None  # set by main() unless --prefect temporary


def spawn_flow(label: str, argv: list[str], threads: int, log_dir: Path) -> dict[str, Any]:
    """The flow child, a client of :data:`SERVER` when there is one."""
    if SERVER is None:
        res = spawn(label, argv, threads, log_dir)
        res["prefect_api"] = "temporary server started by the flow's process"
        return res
    SERVER.pin(threads)
    res = spawn(label, argv, threads, log_dir, {"PREFECT_API_URL": SERVER.url})
    res["prefect_api"] = "server process (prefect server start)"
    res["prefect_server_peak_mb"] = SERVER.peak_mb()
    return res


# ------------------------------------------------------------------ one size
def city_for(size: float, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from payesh.synthetic import DemoSpec

    spec = DemoSpec(
        size_km=size, start=args.start, end=args.end, seed=args.seed, blocksize=args.blocksize
    )
    t0 = time.perf_counter()
    gen, info = bench_city(spec, workers=args.gen_workers)
    print(
        f"city {size:g} km: {'cached' if info['cached'] else 'generated'} in "
        f"{time.perf_counter() - t0:.1f} s ({gen.root.relative_to(ROOT)}; generation took "
        f"{info['generate_seconds']} s on {info['workers']} workers)",
        flush=True,
    )
    return gen, info


def _child_args(gen: Any, args: argparse.Namespace, threads: int) -> list[str]:
    common = ["--catalog", str(gen.catalog), "--manifest", str(gen.manifest)]
    return [*common, "--start", args.start, "--end", args.end, "--threads", str(threads)]


def warm_up(args: argparse.Namespace, threads: int) -> float:
    """One flow run on the smallest city, not recorded: numba compiles the kernels that
    changed since the last run and caches them on disk (several CPU-seconds, as in any
    first run after an install or an edit), so no measured run pays for it."""
    gen, _ = city_for(min(args.sizes), args)
    work = WORK / "warm-up"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    children = str(HERE / "children.py")
    argv = [children, "flow", *_child_args(gen, args, threads), "--store", str(work / "store")]
    res = spawn_flow("warm-up", argv, threads, work)
    shutil.rmtree(work)
    print(f"  warm-up flow  {res['seconds']:8.2f} s (not recorded)", flush=True)
    return float(res["seconds"])


def run_size(size: float, args: argparse.Namespace, threads: int, peer: bool) -> dict[str, Any]:
    """Floor, flow and (optionally) peer on the city of ``size`` km at ``threads`` threads."""
    gen, info = city_for(size, args)
    work = WORK / f"{size:g}km-{threads}t"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    common = _child_args(gen, args, threads)
    children = str(HERE / "children.py")
    files = pagecache.city_files(gen.catalog)

    def cache_ready() -> float | None:
        """The same page-cache state before each measurement (see pagecache.py)."""
        if args.cold:
            pagecache.evict(files)
        else:
            pagecache.warm(files)
        return pagecache.cached_fraction(files)

    cached = cache_ready()
    floor = spawn("floor", [children, "floor", *common], threads, work)
    floor["page_cache_before"] = cached
    print(f"  decode floor  {floor['seconds']:8.2f} s", flush=True)
    argv = [children, "flow", *common, "--store", str(work / "store")]
    cached = cache_ready()
    flow = spawn_flow("flow", argv, threads, work)
    flow["page_cache_before"] = cached
    print(f"  payesh flow   {flow['seconds']:8.2f} s", flush=True)
    row: dict[str, Any] = {
        "size_km": size,
        "threads": threads,
        "city": {
            "pixels_10m": _city_pixels(gen.manifest),
            "months": _months(args.start, args.end),
            **{k: info[k] for k in ("generate_seconds", "workers")},
        },
        "decode_floor": floor,
        "payesh": flow,
    }
    if peer:
        peer_py = str(HERE / "peers" / "notebook_peer.py")
        cached = cache_ready()
        res = spawn("peer", [peer_py, *common, "--out", str(work / "peer")], threads, work)
        res["page_cache_before"] = cached
        print(f"  notebook peer {res['seconds']:8.2f} s", flush=True)
        row["peer"] = res
    if not args.keep:
        shutil.rmtree(work / "store", ignore_errors=True)
        shutil.rmtree(work / "peer", ignore_errors=True)
    return row


def _city_pixels(manifest: Path) -> int:
    from payesh.city import load_city
    from payesh.grid import city_geobox

    h, w = city_geobox(load_city(manifest)).shape
    return int(h * w)


def _months(start: str, end: str) -> int:
    y0, m0 = map(int, start.split("-"))
    y1, m1 = map(int, end.split("-"))
    return (y1 - y0) * 12 + (m1 - m0) + 1


# ------------------------------------------------------------------ report
def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios issue #10 asks for, from the rows of one run."""
    out: dict[str, Any] = {"by_size": {}}
    for r in rows:
        mpx_month = r["city"]["pixels_10m"] / 1e6 * r["city"]["months"]
        entry = {
            "payesh_over_floor": round(r["payesh"]["seconds"] / r["decode_floor"]["seconds"], 2),
            "payesh_s_per_mpx_month": round(r["payesh"]["seconds"] / mpx_month, 3),
            "floor_s_per_mpx_month": round(r["decode_floor"]["seconds"] / mpx_month, 4),
        }
        if "peer" in r:
            entry["peer_over_payesh"] = round(r["peer"]["seconds"] / r["payesh"]["seconds"], 2)
            entry["payesh_rss_over_peer"] = round(
                r["payesh"]["max_rss_mb"] / r["peer"]["max_rss_mb"], 2
            )
        share = r["payesh"].get("stages", {}).get("share", {})
        # a stage the sampler never caught (a 2 km city's classifier takes milliseconds)
        # had no share of the samples: 0, not unknown
        entry["classify_share"] = share.get("classify", 0.0) if share else None
        out["by_size"][f"{r['size_km']:g}"] = entry
    if len(rows) > 1:
        small, big = rows[0], rows[-1]
        out["memory_largest_over_smallest"] = round(
            big["payesh"]["max_rss_mb"] / small["payesh"]["max_rss_mb"], 2
        )
        out["memory_sizes"] = [small["size_km"], big["size_km"]]
    return out


def print_table(rows: list[dict[str, Any]], rat: dict[str, Any]) -> None:
    print()
    print(
        f"{'size':>6} {'Mpx·mo':>8} {'floor s':>8} {'payesh s':>9} {'peer s':>8} "
        f"{'pay/floor':>9} {'peer/pay':>8} {'RSS floor':>9} {'RSS payesh':>10} "
        f"{'RSS peer':>9} {'payesh s/Mpx·mo':>15}"
    )
    for r in rows:
        e = rat["by_size"][f"{r['size_km']:g}"]
        mpxm = r["city"]["pixels_10m"] / 1e6 * r["city"]["months"]
        peer = r.get("peer")
        print(
            f"{r['size_km']:>4g}km {mpxm:8.1f} {r['decode_floor']['seconds']:8.2f} "
            f"{r['payesh']['seconds']:9.2f} {peer['seconds'] if peer else float('nan'):8.2f} "
            f"{e['payesh_over_floor']:8.1f}x {e.get('peer_over_payesh', float('nan')):7.2f}x "
            f"{r['decode_floor']['max_rss_mb']:7.0f}MB {r['payesh']['max_rss_mb']:8.0f}MB "
            f"{peer['max_rss_mb'] if peer else float('nan'):7.0f}MB "
            f"{e['payesh_s_per_mpx_month']:15.3f}"
        )
    for r in rows:  # CPU time is what a busy (shared) machine distorts least
        cpu = [r[k]["cpu_seconds"] for k in ("decode_floor", "payesh", "peer") if k in r]
        print(
            f"{r['size_km']:g} km CPU seconds, floor / payesh / peer: " + " / ".join(map(str, cpu))
        )
    if "memory_largest_over_smallest" in rat:
        a, b = rat["memory_sizes"]
        print(f"payesh peak memory {b:g} km / {a:g} km: {rat['memory_largest_over_smallest']:.2f}x")
    for r in rows:
        st = r["payesh"].get("stages", {}).get("share", {})
        line = ", ".join(f"{k} {v:.0%}" for k, v in sorted(st.items(), key=lambda kv: -kv[1]))
        print(f"payesh {r['size_km']:g} km, share of CPU time: {line}")
        if "peer" in r:
            ps = r["peer"]["task_seconds_by_stage"]
            tot = sum(ps.values()) or 1.0
            line = ", ".join(
                f"{k} {v / tot:.0%}" for k, v in sorted(ps.items(), key=lambda kv: -kv[1])
            )
            print(f"peer   {r['size_km']:g} km, share of Dask task time: {line}")


def record(
    entry: dict[str, Any], mach: dict[str, Any], *, folder: Path | None = None, kind: str = ""
) -> Path:
    """Append ``entry`` to the day's results file of this machine in ``folder`` (default
    :data:`RESULTS`): ``<date>-<host>-<n>cores[-<kind>].json``."""
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in mach["host"]) or "host"
    name = f"{datetime.now(UTC):%Y-%m-%d}-{host}-{mach['cpu_count']}cores"
    path = folder / f"{name}{'-' + kind if kind else ''}.json"
    history = json.loads(path.read_text()) if path.exists() else []
    history.append(entry)
    tmp = Path(tempfile.mkstemp(dir=folder, suffix=".tmp")[1])
    tmp.write_text(json.dumps(history, indent=1) + "\n")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    global SERVER, RESULTS, WORK
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[6.0, 12.0, 24.0], help="km")
    default_threads = max(1, min(4, os.cpu_count() or 1))  # as flows/monitor.py sizes Dask
    p.add_argument("--threads", type=int, default=default_threads)
    p.add_argument("--scaling", type=int, nargs="+", help="thread counts; first size only")
    p.add_argument("--start", default="2025-01")
    p.add_argument("--end", default="2025-12")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blocksize", type=int, default=512, help="COG block size, px")
    p.add_argument("--gen-workers", type=int, default=None, help="default: all cores")
    p.add_argument("--no-peer", action="store_true", help="skip the notebook peer")
    p.add_argument("--keep", action="store_true", help="keep the stores written")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder of the results files (default: benchmarks/results)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=WORK,
        help="folder of the runs' stores and logs (default: data/bench/runs)",
    )
    p.add_argument("--no-warm-up", action="store_true", help="skip the unrecorded first flow run")
    p.add_argument(
        "--cold",
        action="store_true",
        help="start each measurement with the city's files out of the page cache (disk "
        "reads included); default: every measurement starts with them all cached",
    )
    p.add_argument(
        "--prefect",
        choices=["server", "temporary"],
        default="server",
        help="Prefect's API: a server process, as deployments have (default), or the "
        "temporary server a flow run starts in its own process",
    )
    args = p.parse_args(argv)
    RESULTS, WORK = args.results.resolve(), args.work.resolve()

    mach = machine()
    print(
        f"{mach['cpu_model']}, {mach['cpus_usable']}/{mach['cpu_count']} cores, "
        f"{mach['ram_gb']} GB, load {mach['load_avg_at_start']}",
        flush=True,
    )
    entry: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": mach,
        "period": f"{args.start}..{args.end}",
        "blocksize": args.blocksize,
        "note": args.note,
        "git": _git_head(),
        "prefect": args.prefect,
        "page_cache": "cold" if args.cold else "warm",
    }
    if args.prefect == "server":
        WORK.mkdir(parents=True, exist_ok=True)
        SERVER = PrefectServer(WORK)
    try:
        _measure(args, entry)
    finally:
        if SERVER is not None:
            SERVER.close()
            SERVER = None
    mach["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = record(entry, mach)
    print(f"recorded in {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _measure(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    if not args.no_warm_up:
        entry["warm_up_seconds"] = warm_up(args, (args.scaling or [args.threads])[0])
    if args.scaling:
        size = args.sizes[0]
        runs = []
        for n in args.scaling:
            print(f"scaling {size:g} km, {n} threads", flush=True)
            runs.append(run_size(size, args, n, peer=False))
        base = runs[0]
        for r in runs:
            r["speedup_payesh"] = round(base["payesh"]["seconds"] / r["payesh"]["seconds"], 2)
            r["speedup_floor"] = round(
                base["decode_floor"]["seconds"] / r["decode_floor"]["seconds"], 2
            )
        entry.update(mode="scaling", size_km=size, runs=runs)
        print(f"\n{'threads':>7} {'floor s':>8} {'speed-up':>8} {'payesh s':>9} {'speed-up':>8}")
        for r in runs:
            print(
                f"{r['threads']:>7} {r['decode_floor']['seconds']:8.2f} "
                f"{r['speedup_floor']:7.2f}x {r['payesh']['seconds']:9.2f} "
                f"{r['speedup_payesh']:7.2f}x"
            )
    else:
        rows = [run_size(s, args, args.threads, peer=not args.no_peer) for s in args.sizes]
        rat = ratios(rows)
        entry.update(mode="sizes", threads=args.threads, rows=rows, ratios=rat)
        print_table(rows, rat)


def _git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
