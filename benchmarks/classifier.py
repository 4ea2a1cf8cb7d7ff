"""Built-up classifier throughput on the demo city: pixels per second per core.

    .venv/bin/python benchmarks/classifier.py                  # the current model
    .venv/bin/python benchmarks/classifier.py --model models/builtup-X.skops --months 3

Generates (or reuses, cached under ``data/bench-classifier``) the demo city — seed 0,
4 km, 2025-01..12 — builds its monthly Sentinel-2 composites, and times on ONE thread
(BLAS and OpenMP limited with threadpoolctl):

1. ``features`` — :func:`payesh.features.feature_stack` (the spyndex formulas compiled
   once), and for comparison ``spyndex.computeIndex`` on the same pixels;
2. ``predict`` — ``estimator.predict_proba`` on the features;
3. ``builtup_probability`` — the whole call on the (time, y, x) composites, as a run
   makes it (NaN handling, features, prediction).

Prints a table in pixel-months per second and appends a JSON line to
``benchmarks/results/classifier.jsonl``. Best of ``--repeat`` timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    import spyndex

    from payesh.classifier import builtup_probability, model_bands
    from payesh.features import BANDS, SPYNDEX_BANDS, feature_stack
    from payesh.model_io import default_model_path, load_model
    from payesh.training import demo_training_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: models/ current)")
    ap.add_argument("--months", type=int, default=12, help="months of composites to time")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "data" / "bench-classifier"))
    args = ap.parse_args()

    model = load_model(args.model or default_model_path(), compiled=False)
    comps, _, _ = demo_training_data(Path(args.out), seed=0)
    cube = np.stack(comps[: args.months])  # (t, y, x, band)
    t, ny, nx, _ = cube.shape
    n = t * ny * nx
    bands = model_bands(model)
    cols = [BANDS.index(b) for b in bands]
    rows = cube[..., cols].reshape(-1, len(cols))
    rows = rows[np.isfinite(rows).all(axis=1)]
    ds = xr.Dataset(
        {b: (("time", "y", "x"), cube[..., BANDS.index(b)]) for b in bands},
        coords={"time": np.arange(t), "y": np.arange(ny), "x": np.arange(nx)},
    )
    names = tuple(model.feature_names)
    indices = [f for f in names if f not in BANDS]
    with threadpool_limits(limits=1):
        feats = feature_stack(rows, band_names=bands, feature_names=names)
        t_feat = _best(
            lambda: feature_stack(rows, band_names=bands, feature_names=names), args.repeat
        )
        params = {
            s: np.ascontiguousarray(rows[:, bands.index(b)])
            for s, b in SPYNDEX_BANDS.items()
            if b in bands
        }
        t_spx = (
            _best(lambda: spyndex.computeIndex(indices, params=params), args.repeat)
            if indices
            else 0.0
        )
        t_pred = _best(lambda: model.estimator.predict_proba(feats), args.repeat)
        t_all = _best(lambda: builtup_probability(ds, model).values, args.repeat)
    res = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "model": model.version,
        "features": len(names),
        "pixel_months": n,
        "clear_pixel_months": len(rows),
        "features_px_s": len(rows) / t_feat,
        "spyndex_computeIndex_px_s": len(rows) / t_spx if t_spx else None,
        "predict_px_s": len(rows) / t_pred,
        "builtup_probability_px_s": n / t_all,
    }
    print(f"model {model.version}: {len(names)} features, {n} pixel-months ({len(rows)} clear)")
    print("stage (1 thread)                 pixel-months/s")
    print(f"feature_stack (compiled spyndex) {res['features_px_s']:>14,.0f}")
    if t_spx:
        print(f"spyndex.computeIndex (indices)   {res['spyndex_computeIndex_px_s']:>14,.0f}")
    print(f"predict_proba                    {res['predict_px_s']:>14,.0f}")
    print(f"builtup_probability (end to end) {res['builtup_probability_px_s']:>14,.0f}")
    out = ROOT / "benchmarks" / "results" / "classifier.jsonl"
    with out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
