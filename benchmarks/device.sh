#!/usr/bin/env bash
# Core scaling of the whole monitor flow on a lent 16-core machine with no package registry.
#
# Such a machine has Python 3.12 with numpy, scipy, pandas, scikit-learn, numba, xarray
# and pyarrow, and nothing of ours; wheels for the rest travel with the working tree, at
# most 64 MiB a call, which is less than they take (~160 MB: rasterio 35, pyogrio 33,
# icechunk 18). So it runs in several calls on the same warm machine (it is given back
# 30 s after a call), each carrying a folder of at most ~58 MB of wheels, made here by
# `benchmarks/device_wheels.py` (.whl-1, .whl-2, ...):
#
#   benchmarks/device.sh install .whl-1                 # install a part
#   benchmarks/device.sh install .whl-2                 # another
#   THREADS="1 2 4 8 16" benchmarks/device.sh scale .whl-3   # the rest, run.py --scaling
#
# `scale` generates the city (SIZE km, default 12) if it is not there yet; `prepare`
# only installs and generates it.
# Everything is installed under data/devsite, which stays on the machine between calls.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$1
wheels=$2
size=${SIZE:-12}
site=$PWD/data/devsite
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
python3 -m compileall -q -j 0 "$site" src flows benchmarks >/dev/null 2>&1 || true
export PYTHONPATH=$PWD/src:$site
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
nproc
python3 - <<'EOF'
import importlib, sys
print(sys.version.split()[0])
for m in ["numpy", "scipy", "pandas", "sklearn", "numba", "xarray", "pyarrow", "rasterio",
          "pyproj", "dask", "zarr", "icechunk", "prefect", "distributed", "pydantic"]:
    try:
        print(f"  {m} {importlib.import_module(m).__version__}")
    except Exception as e:  # noqa: BLE001 - a report of what is there
        print(f"  {m} MISSING ({type(e).__name__}: {e})")
EOF
case $stage in
install) ;;
prepare)
    python3 - "$size" <<'EOF'
import argparse, sys
sys.path.insert(0, "benchmarks")
import run
a = argparse.Namespace(start="2025-01", end="2025-12", seed=0, blocksize=512, gen_workers=None)
run.city_for(float(sys.argv[1]), a)
EOF
    ;;
scale)
    python3 -c "import flows.monitor" && echo "flow imports"
    python3 benchmarks/run.py --sizes "$size" --scaling ${THREADS:-1 2 4 8 16} --no-peer \
        --note "${NOTE:-device}"
    ;;
esac
