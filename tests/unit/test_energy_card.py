"""The electricity model card: markdown from a calibrated (or not) estimate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from payesh.indicators.electricity_card import model_card_markdown, write_model_card
from payesh.indicators.energy import electricity_estimate


def _calibrated(n_t: int = 18) -> dict[str, object]:
    rng = np.random.default_rng(7)
    months = pd.date_range("2024-01-01", periods=n_t, freq="MS")
    ntl = rng.uniform(10, 80, size=(1, 2, 2)) * (1 + 0.03 * np.arange(n_t))[:, None, None]
    lst = 20 + 14 * np.sin(2 * np.pi * np.arange(n_t) / 12)[:, None, None] + np.zeros((1, 2, 2))
    ds = xr.Dataset(
        {
            "ntl_sum": (("time", "tile_y", "tile_x"), ntl.astype("float32")),
            "lst_mean": (("time", "tile_y", "tile_x"), lst.astype("float32")),
        },
        coords={"time": months.values, "tile_y": [1500.0, 500.0], "tile_x": [500.0, 1500.0]},
    )
    heat = np.maximum(lst[:, 0, 0] - 25, 0)
    cons = pd.Series(
        500 + 3.0 * ntl.sum(axis=(1, 2)) + 40 * heat + rng.normal(0, 8, n_t), index=months
    )
    _, card = electricity_estimate(ds, cons)
    # what the store keeps and the pipeline hands to the card writer: a JSON round trip
    return json.loads(json.dumps(card, default=str))


def test_model_card_reports_skill_yardstick_and_features(tmp_path: Path) -> None:
    card = _calibrated()
    md = model_card_markdown(card, city="khoy", code_version="9.9")
    assert md.startswith("# Electricity model card — khoy")
    assert "payesh 9.9" in md and "2024-01..2025-06" in md
    # every feature with its unit, and the model's own cross-validated R² and MAPE
    assert "| `ntl_total` | nW cm-2 sr-1 (pixel-weighted sum) |" in md
    assert "| `cooling_degC` | °C |" in md
    assert f"**{card['cv_r2']:.2f}**" in md  # type: ignore[str-format]
    assert f"**{100 * card['cv_mape']:.1f} %**" in md  # type: ignore[operator]
    assert "3 consecutive months" in md
    for label in ("| lights |", "| lights + heat |"):
        assert label in md
    assert "0.85–0.87" in md and "Remote Sensing* 5:3057" in md
    assert "Why a city's model differs" in md
    assert md.count("| 2024-") + md.count("| 2025-") == 18  # the calibration months
    out = write_model_card(card, city="khoy", models_dir=tmp_path / "models")
    assert out == tmp_path / "models" / "electricity-khoy.md"
    assert out.read_text().startswith("# Electricity model card — khoy")


def test_model_card_without_calibration_says_why() -> None:
    md = model_card_markdown(
        {
            "model": "LinearRegression(positive=True)",
            "n_months": 0,
            "reason": "no reported consumption",
        },
        city="maku",
    )
    assert "no reported consumption" in md and "absent" in md
    assert "R²" not in md
