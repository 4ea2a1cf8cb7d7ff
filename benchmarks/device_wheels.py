"""Wheels for running the monitor flow on a lent machine with no package registry.

The lent 16-core machines (see README.md, "Scaling with cores") run Python 3.12 with
numpy, scipy, pandas, scikit-learn, numba, pyarrow and matplotlib already installed,
and nothing can be fetched there. This downloads cp312 manylinux wheels of the rest of
payesh's runtime dependencies, at the versions of ``requirements.lock``, into folders
of at most ``--max-mb`` each (a call to that machine carries 64 MiB with the working
tree), for ``benchmarks/device.sh``::

    .venv/bin/python benchmarks/device_wheels.py          # -> .whl-1/ .whl-2/ .whl-3/
    benchmarks/device.sh install .whl-1                    # one call each, same machine
    benchmarks/device.sh install .whl-2
    THREADS="1 2 4 8 16" benchmarks/device.sh scale .whl-3

Add the folders to ``.git/info/exclude``. The dependency closure is read from this
environment's installed metadata, markers evaluated for CPython 3.12 on Linux x86-64.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

ON_DEVICE = {
    # compiled and heavy, already on the lent machines' image (KINDS.md of the device
    # tool); their versions differ a little from the lock and are recorded with results
    "numpy", "scipy", "pandas", "scikit-learn", "numba", "llvmlite", "pyarrow",
    "matplotlib", "contourpy", "fonttools", "kiwisolver", "pillow", "h5py", "psutil",
    "pyyaml", "markupsafe", "charset-normalizer", "msgpack", "pyzmq", "regex",
}  # fmt: skip
MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "payesh") -> set[str]:
    """Normalised names of ``root`` and everything it needs at run time."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            req = Requirement(raw)
            wanted = req.marker is None or req.marker.evaluate(MARKER_ENV)
            if name == "dask" and req.marker is not None and "array" in str(req.marker):
                wanted = True  # payesh needs dask[array]
            if wanted:
                stack.append(_norm(req.name))
    return seen - {root}


def locked_versions(lock: Path) -> dict[str, str]:
    out = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if m:
            out[_norm(m.group(1))] = m.group(2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--max-mb", type=float, default=58.0, help="per folder")
    ap.add_argument("--prefix", default=".whl-", help="folders <prefix>1, <prefix>2, ...")
    args = ap.parse_args()

    versions = locked_versions(ROOT / "requirements.lock")
    need = sorted(n for n in runtime_closure() if n not in ON_DEVICE and n in versions)
    dl = ROOT / "data" / "device-wheels"
    dl.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dl)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *(f"{n}=={versions[n]}" for n in need)], check=True)

    wanted = {(n, versions[n]) for n in need}
    wheels = [
        w for w in dl.glob("*.whl") if (_norm(w.name.split("-")[0]), w.name.split("-")[1]) in wanted
    ]
    missing = wanted - {(_norm(w.name.split("-")[0]), w.name.split("-")[1]) for w in wheels}
    if missing:
        sys.exit(f"no wheel downloaded for {sorted(missing)}")
    # first fit, largest first
    bins: list[list[Path]] = []
    sizes: list[int] = []
    limit = int(args.max_mb * 1e6)
    for w in sorted(wheels, key=lambda w: -w.stat().st_size):
        size = w.stat().st_size
        for i, used in enumerate(sizes):
            if used + size <= limit:
                bins[i].append(w)
                sizes[i] += size
                break
        else:
            bins.append([w])
            sizes.append(size)
    for i, (group, used) in enumerate(zip(bins, sizes, strict=True), start=1):
        folder = ROOT / f"{args.prefix}{i}"
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.whl"):
            old.unlink()
        for w in group:
            (folder / w.name).write_bytes(w.read_bytes())
        print(f"{folder.name}: {len(group)} wheels, {used / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
