"""Run keys: what a run's product-months were computed from, to skip unchanged re-runs.

A *run key* names the inputs of one product-month of a run:

    sha256(product, month, run period, STAC item ids, code version, model version,
           contents of the city's permits and consumption files)

The code version is ``payesh.__version__`` and :func:`code_fingerprint` (a hash of every
payesh module and of the versions of the libraries that decode and resample): the
version string alone stays the same across commits, so a fix in the code would not
count as a change.

It is recorded per product and month in the provenance of every commit
(``provenance["run_keys"]``, a JSON string ``{"s2": {"2025-01": "<key>", ...}, ...}``),
so :func:`payesh.store.history` shows what each commit was made from. Before loading
anything, the monitor flow compares the keys it plans with the keys committed last for
the same product-months (:func:`committed_keys`); when all are equal, the run has
nothing new to compute and ends without a commit.

The run period is part of the key because the tile indicators of a month depend on the
months computed with it (night-light baseline and trend, first-seen construction): a
month computed in a run of 2025-01..12 is not the same data as that month computed in
a run of 2025-06..12, so such a run is never skipped.

Also here: :func:`rolling_period`, the months a scheduled run keeps up to date.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

import payesh
from payesh.errors import PayeshError, StoreError
from payesh.period import Period
from payesh.plan import RunPlan

__all__ = [
    "KEYS_ATTR",
    "RunKeys",
    "backfill_periods",
    "changed_months",
    "code_fingerprint",
    "committed_keys",
    "model_fingerprint",
    "plan_keys",
    "rolling_period",
    "run_period",
    "source_fingerprint",
]

#: Name of the provenance entry (and store root attribute) holding a run's keys.
KEYS_ATTR = "run_keys"

#: ``{product: {"YYYY-MM": key}}``
RunKeys = dict[str, dict[str, str]]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path | str | None) -> str:
    if path is None:
        return ""
    p = Path(path)
    return _sha(p.read_bytes())[:16] if p.is_file() else f"missing:{p.name}"


@cache
def _model_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    p = Path(path)
    return f"{p.stem.removeprefix('builtup-')}:{_sha(p.read_bytes())[:12]}"


def model_fingerprint(path: str | Path | None = None) -> str:
    """The built-up model a run uses by default, as ``<version>:<sha256 of the file>``.

    The file's hash, not only its name: a model retrained under the same version name
    still changes the keys.
    """
    from payesh.model_io import default_model_path

    p = Path(path) if path is not None else default_model_path()
    st = p.stat()
    return _model_fingerprint(str(p.resolve()), st.st_size, st.st_mtime_ns)


#: Libraries whose versions can change a month's numbers (decoding, resampling, medians).
LIBRARIES = ("numpy", "numba", "rasterio", "odc-stac", "odc-geo", "xarray", "pandas", "h5py")


@cache
def code_fingerprint() -> str:
    """sha256 of every payesh module's source and of :data:`LIBRARIES`' versions."""
    return source_fingerprint(Path(__file__).resolve().parent)


def source_fingerprint(root: Path) -> str:
    """sha256 of the ``.py`` files under ``root`` and of :data:`LIBRARIES`' versions."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for lib in LIBRARIES:
        try:
            version = metadata.version(lib)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{lib}={version}\0".encode())
    import rasterio

    digest.update(f"gdal={rasterio.__gdal_version__}".encode())
    return digest.hexdigest()


def month_key(
    product: str,
    month: pd.Timestamp,
    *,
    period: Period | None,
    item_ids: Iterable[str],
    code_version: str,
    model_version: str,
    inputs: str = "",
) -> str:
    """The key of one product-month (a hex sha256); see the module doc. ``period=None``
    for what does not depend on the run's other months (the month cache's keys)."""
    payload = {
        "product": product,
        "month": f"{month:%Y-%m}",
        "period": "" if period is None else str(period),
        "items": sorted(item_ids),
        "code": code_version,
        "model": model_version,
        "inputs": inputs,
    }
    return _sha(json.dumps(payload, sort_keys=True).encode())


def plan_keys(plan: RunPlan, *, model_version: str | None = None) -> RunKeys:
    """The key of every product-month a run of ``plan`` computes.

    Parameters
    ----------
    plan
        The run (its STAC items per product and month).
    model_version
        The built-up model's version; default :func:`model_fingerprint` of the model
        the run loads by default.
    """
    model = model_version if model_version is not None else model_fingerprint()
    city = plan.city
    inputs = f"permits={_file_digest(city.permits)};consumption={_file_digest(city.consumption)}"
    return {
        product: {
            f"{month:%Y-%m}": month_key(
                product,
                month,
                period=plan.period,
                item_ids=plan.item_ids(product, month),
                # the version says little (0.1.0 for every commit): the sources' hash
                # makes a fix in the code a reason to compute the months again
                code_version=f"{payesh.__version__}+{code_fingerprint()[:16]}",
                model_version=model,
                inputs=inputs,
            )
            for month in plan.months
        }
        for product in sorted(plan.items)
    }


def keys_of(provenance: Mapping[str, Any]) -> RunKeys:
    """The run keys recorded in a commit's provenance (``{}`` for a commit without)."""
    raw = provenance.get(KEYS_ATTR)
    if not raw:
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, dict):
        raise StoreError(f"provenance {KEYS_ATTR!r} is not a mapping: {raw!r}")
    return {str(p): {str(m): str(k) for m, k in months.items()} for p, months in data.items()}


def committed_keys(city_name: str, store: str) -> RunKeys:
    """Per product-month, the key of the newest commit of the city's store that wrote it.

    ``{}`` when the city has no store yet.
    """
    from payesh.store import history

    try:
        entries = history(city_name, store=store)
    except StoreError as err:
        if "no store for city" in str(err):
            return {}
        raise
    out: RunKeys = {}
    for entry in reversed(entries):  # oldest first: newer commits overwrite
        for product, months in keys_of(entry["metadata"].get("provenance", {})).items():
            out.setdefault(product, {}).update(months)
    return out


def changed_months(planned: RunKeys, committed: RunKeys) -> dict[str, list[str]]:
    """The product-months of ``planned`` whose committed key differs (or is missing)."""
    out: dict[str, list[str]] = {}
    for product, months in planned.items():
        stored = committed.get(product, {})
        diff = [m for m, key in sorted(months.items()) if stored.get(m) != key]
        if diff:
            out[product] = diff
    return out


def rolling_period(months_back: int, today: date | datetime | None = None) -> Period:
    """The last ``months_back`` months ending with the current month (UTC).

    The current month is included: its composite improves with every new scene, and a
    run whose items did not change is skipped by its run keys.
    """
    if isinstance(months_back, bool) or not isinstance(months_back, int) or months_back < 1:
        raise PayeshError(f"months_back must be a whole number of months >= 1, got {months_back!r}")
    now = today or datetime.now(UTC)
    end = pd.Timestamp(now.year, now.month, 1)
    start = end - pd.DateOffset(months=months_back - 1)
    return Period(pd.Timestamp(start), end)


def run_period(start: str | None, end: str | None, months_back: int | None) -> Period:
    """The months of a run: ``start``…``end`` if both are given, else the rolling window.

    Raises :class:`PayeshError` when neither (or only one of ``start``/``end``) is given.
    """
    if start is not None and end is not None:
        return Period.parse(start, end)
    if start is not None or end is not None:
        raise PayeshError(
            f"give both start and end (got start={start!r}, end={end!r}), or months_back alone"
        )
    if months_back is None:
        raise PayeshError("a run needs start and end (YYYY-MM), or months_back (a rolling window)")
    return rolling_period(months_back)


def backfill_periods(period: Period, step: str) -> list[Period]:
    """``period`` cut into runs of one calendar ``month`` or ``year`` each (in order)."""
    if step not in ("month", "year"):
        raise PayeshError(f"backfill step {step!r} is not 'month' or 'year'")
    months = period.months
    groups = months.year if step == "year" else months.year * 12 + months.month
    out = []
    for key in pd.unique(groups):
        chunk = months[groups == key]
        out.append(Period(chunk[0], chunk[-1]))
    return out
