"""Real labelled pixels for the built-up classifier (issue #6).

The only real imagery-with-labels pair in ``shared/realdata`` is the eo-learn test
EOPatch (Slovenia): five Sentinel-2 L1C scenes (13 bands, top-of-atmosphere
reflectance) on the same 10 m grid as a land-use raster (``LULC``, from the Slovenian
RABA parcels). ESA WorldCover there covers São Tomé (tile N00E006), for which no
Sentinel-2 imagery is stored, so it cannot be paired with imagery offline (see
``docs/construction.md``).

Held-out evaluation must be spatially separate: :func:`spatial_folds` cuts the grid in
horizontal strips so no test pixel has a training neighbour in the same strip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from payesh.errors import PayeshError
from payesh.features import BANDS
from payesh.sources.profiles import S2

__all__ = [
    "EOLEARN_BUILTUP_CLASSES",
    "EOLearnPatch",
    "read_eolearn_patch",
    "realdata_dir",
    "spatial_folds",
]

EOLEARN_BUILTUP_CLASSES: tuple[int, ...] = (8,)
"""eo-learn ``LULC`` classes that are built-up: 8 = artificial surface (eo-learn's
example enum: 0 no data, 1 cultivated land, 2 forest, 3 grassland, 4 shrubland, 5 water,
6 wetland, 7 tundra, 8 artificial surface, 9 bare land, 10 snow and ice)."""

# REFERENCE_SCENES holds all 13 L1C bands B01..B12 incl. B8A and B10
_L1C_ORDER = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
# payesh band -> the Sentinel-2 band name (B02 …), from the provider profile
_BAND_OF = {b: next(k for k in S2.bands[b] if k.startswith("B")) for b in BANDS}
# PROVENANCE.md: NDVI of REFERENCE_SCENES equals frames [2, 1, 4, 3, 0] of NDVI.npy
_SCENE_FRAMES = (2, 1, 4, 3, 0)


def realdata_dir() -> Path:
    """``shared/realdata`` beside the repository (``$PAYESH_REALDATA`` is not read here)."""
    return Path(__file__).resolve().parents[3] / "shared" / "realdata"


@dataclass(frozen=True)
class EOLearnPatch:
    """The eo-learn test patch as arrays.

    Attributes
    ----------
    bands
        ``(t, y, x, 6)`` float32 top-of-atmosphere reflectance (unitless) in
        :data:`payesh.features.BANDS` order, NaN where cloudy or invalid.
    labels
        ``(y, x)`` int8: 1 built-up, 0 not, -1 no label (LULC class 0).
    dates
        The ``t`` acquisition dates (ISO strings).
    crs, transform
        ``EPSG:32633`` and the affine (x0, dx, 0, y0, 0, dy) of the 10 m grid.
    """

    bands: np.ndarray
    labels: np.ndarray
    dates: tuple[str, ...]
    crs: str
    transform: tuple[float, ...]


def read_eolearn_patch(root: Path | None = None) -> EOLearnPatch:
    """Read the eo-learn Slovenia patch: L1C scenes, cloud mask, land-use labels.

    Parameters
    ----------
    root
        The ``s2_l1c_eolearn_testeopatch_slovenia`` folder (default: in
        :func:`realdata_dir`).

    Raises
    ------
    PayeshError
        Naming the file that is missing or has an unexpected shape.
    """
    root = root or realdata_dir() / "s2_l1c_eolearn_testeopatch_slovenia"
    patch = root / "TestEOPatch"
    files = {
        "scenes": root / "REFERENCE_SCENES.npy",
        "lulc": patch / "mask_timeless" / "LULC.npy",
        "clm": patch / "mask" / "CLM.npy",
        "valid": patch / "mask" / "IS_VALID.npy",
        "times": patch / "timestamps.json",
        "bbox": patch / "bbox.geojson",
    }
    for name, f in files.items():
        if not f.is_file():
            raise PayeshError(f"{f}: eo-learn patch file missing ({name})")
    scenes = np.load(files["scenes"])
    lulc = np.load(files["lulc"])[..., 0]
    if scenes.ndim != 4 or scenes.shape[-1] != len(_L1C_ORDER) or scenes.shape[1:3] != lulc.shape:
        raise PayeshError(
            f"{files['scenes']}: expected (t, y, x, 13) on the LULC grid {lulc.shape}, "
            f"got {scenes.shape}"
        )
    frames = list(_SCENE_FRAMES[: scenes.shape[0]])
    clm = np.load(files["clm"])[frames, ..., 0].astype(bool)
    valid = np.load(files["valid"])[frames, ..., 0].astype(bool)
    cols = [_L1C_ORDER.index(_BAND_OF[b]) for b in BANDS]
    bands = scenes[..., cols].astype("float32")
    bands[clm | ~valid] = np.nan
    labels = np.where(np.isin(lulc, EOLEARN_BUILTUP_CLASSES), 1, 0).astype("int8")
    labels[lulc == 0] = -1
    times = json.loads(files["times"].read_text(encoding="utf-8"))
    bbox = json.loads(files["bbox"].read_text(encoding="utf-8"))
    xs = [c[0] for c in bbox["coordinates"][0]]
    ys = [c[1] for c in bbox["coordinates"][0]]
    ny, nx = lulc.shape
    transform = (
        min(xs),
        (max(xs) - min(xs)) / nx,
        0.0,
        max(ys),
        0.0,
        -(max(ys) - min(ys)) / ny,
    )
    return EOLearnPatch(
        bands=bands,
        labels=labels,
        dates=tuple(str(times[f]) for f in frames),
        crs="EPSG:32633",
        transform=transform,
    )


def spatial_folds(shape: tuple[int, int], n_folds: int) -> np.ndarray:
    """Fold id ``(y, x)`` int: ``n_folds`` horizontal strips of equal height.

    A strip is held out whole, so test pixels are spatially separate from training
    pixels (only the strip edges touch), unlike a random pixel split where every test
    pixel has training neighbours of the same field or building.
    """
    ny, nx = shape
    if not 2 <= n_folds <= ny:
        raise PayeshError(f"need 2 <= n_folds <= {ny} rows, got {n_folds}")
    rows = np.minimum(np.arange(ny) * n_folds // ny, n_folds - 1)
    return np.broadcast_to(rows[:, None], (ny, nx)).copy()
