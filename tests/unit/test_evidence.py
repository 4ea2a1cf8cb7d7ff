"""Evidence chips and probability curves for construction sites."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from PIL import Image

from payesh.errors import PayeshError
from payesh.evidence import site_window, true_colour, write_evidence

X0, Y0, RES, N = 500000.0, 4270000.0, 10.0, 40
MONTHS = pd.date_range("2025-01-01", periods=8, freq="MS")


def _scene() -> tuple[xr.Dataset, xr.DataArray, gpd.GeoDataFrame]:
    """A bright roof (pixels 10..19 × 12..21) appears in month 4 on vegetation."""
    x = X0 + RES * np.arange(N) + RES / 2
    y = Y0 - RES * np.arange(N) - RES / 2
    veg = {"red": 0.04, "green": 0.07, "blue": 0.03}
    roof = {"red": 0.25, "green": 0.22, "blue": 0.20}
    data = {b: np.full((len(MONTHS), N, N), v, dtype="float32") for b, v in veg.items()}
    for b, v in roof.items():
        data[b][4:, 10:20, 12:22] = v
    data["red"][2] = np.nan  # an all-cloudy month
    prob = np.full((len(MONTHS), N, N), 0.1, dtype="float32")
    prob[4:, 10:20, 12:22] = 0.9
    prob[2] = np.nan
    dims = ("time", "y", "x")
    coords = {"time": MONTHS, "y": y, "x": x}
    comp = xr.Dataset({b: (dims, a) for b, a in data.items()}, coords=coords)
    pr = xr.DataArray(prob, dims=dims, coords=coords, name="builtup_prob")
    poly = shapely.box(X0 + 120, Y0 - 200, X0 + 220, Y0 - 100)
    sites = gpd.GeoDataFrame(
        {"site_id": ["r000c000-01"], "first_seen": [MONTHS[4]]},
        geometry=[poly],
        crs="EPSG:32638",
    )
    return comp, pr, sites


def test_true_colour_scales_and_greys_missing() -> None:
    red = np.array([[0.0, 0.3], [0.6, np.nan]])
    img = true_colour(red, red, red)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[0, 0, 0] == 0 and img[0, 1, 0] == 255 and img[1, 0, 0] == 255
    assert (img[1, 1] == 128).all()


def test_write_evidence_chips_and_curves(tmp_path: Path) -> None:
    comp, prob, sites = _scene()
    out = write_evidence(sites, comp, prob, tmp_path)
    row = out.iloc[0]
    assert row["evidence_chip"] == "evidence/r000c000-01-chip.png"
    assert row["evidence_curve"] == "evidence/r000c000-01-curve.png"
    for key in ("evidence_chip", "evidence_curve"):
        with Image.open(tmp_path / row[key]) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
            rgb = np.asarray(im.convert("RGB"))
        assert rgb.std() > 5  # something was drawn, not a blank canvas
    # the chip shows the roof only in its right (after) half: the left half is darker
    with Image.open(tmp_path / row["evidence_chip"]) as im:
        rgb = np.asarray(im.convert("RGB")).astype(float)
    h, w, _ = rgb.shape
    left, right = rgb[h // 4 : 3 * h // 4, : w // 2], rgb[h // 4 : 3 * h // 4, w // 2 :]
    assert right.mean() > left.mean() + 5


def test_site_window_and_bad_input(tmp_path: Path) -> None:
    comp, prob, sites = _scene()
    x, y = prob["x"].values, prob["y"].values
    ys, xs = site_window(sites.geometry.iloc[0].bounds, x, y, margin_m=50)
    assert (xs.start, xs.stop) == (7, 27) and (ys.start, ys.stop) == (5, 25)
    with pytest.raises(PayeshError, match="outside the pixel grid"):
        site_window((0, 0, 1, 1), x, y, margin_m=10)
    with pytest.raises(PayeshError, match="blue"):
        write_evidence(sites, comp.drop_vars("blue"), prob, tmp_path)
