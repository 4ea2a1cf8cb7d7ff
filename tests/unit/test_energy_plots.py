"""The energy figures: a tile's night-light series and the trend map."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from payesh.errors import PayeshError
from payesh.indicators.energy import ntl_anomaly, ntl_trend
from payesh.plots import plot_ntl_series, plot_trend_map


def _tiles() -> xr.Dataset:
    rng = np.random.default_rng(5)
    n_t = 30
    t = np.arange(n_t)
    x = 50 + 10 * np.sin(2 * np.pi * t / 12)[:, None, None] + rng.normal(0, 1, (n_t, 2, 3))
    x[:, 0, 1] += 3.0 * t  # a steady climb: a significant trend
    x[20:, 1, 2] += 60  # a jump: anomalies
    vf = np.ones_like(x)
    vf[7] = 0.2  # a cloudy month, city-wide
    x[7] = np.nan
    time = pd.date_range("2022-01-01", periods=n_t, freq="MS").values
    ds = xr.Dataset(
        {
            "ntl_sum": (("time", "tile_y", "tile_x"), x.astype("float32"), {"units": "nW"}),
            "ntl_valid_fraction": (("time", "tile_y", "tile_x"), vf.astype("float32")),
        },
        coords={
            "time": time,
            "tile_y": ("tile_y", [4266500.0, 4265500.0], {"crs": "EPSG:32638"}),
            "tile_x": ("tile_x", [495500.0, 496500.0, 497500.0], {"crs": "EPSG:32638"}),
            "tile": (
                ("tile_y", "tile_x"),
                [["r000c000", "r000c001", "r000c002"], ["r001c000", "r001c001", "r001c002"]],
            ),
        },
    )
    ds["ntl_anomaly"] = ntl_anomaly(ds["ntl_sum"], valid_fraction=ds["ntl_valid_fraction"])
    return ds.merge(ntl_trend(ds["ntl_sum"]))


def test_plot_ntl_series_marks_anomalies_and_low_coverage(tmp_path: Path) -> None:
    tiles = _tiles()
    fig = plot_ntl_series(tiles, "r001c002")
    ax, axv = fig.axes
    z = tiles["ntl_anomaly"].values[:, 1, 2]
    up = [ln for ln in ax.lines if ln.get_marker() == "^"]
    assert len(up) == 1 and len(up[0].get_xdata()) == int((z >= 3).sum()) > 0
    labels = ax.get_legend().get_texts()
    assert any("low coverage" in t.get_text() for t in labels)
    assert "r001c002" in ax.get_title() and "nW" in ax.get_ylabel()
    assert len(axv.patches) >= 30  # one valid-fraction bar per month
    fig.savefig(tmp_path / "series.png")
    assert (tmp_path / "series.png").stat().st_size > 10_000
    plt.close(fig)
    with pytest.raises(PayeshError, match="no tile named 'r009c009'"):
        plot_ntl_series(tiles, "r009c009")
    same = plot_ntl_series(tiles, (1, 2))
    assert same.axes[0].get_title() == ax.get_title()
    plt.close(same)


def test_plot_trend_map_hatches_non_significant_tiles(tmp_path: Path) -> None:
    tiles = _tiles()
    # the store hands tile names back as numpy's variable-width strings
    names = np.asarray(tiles["tile"].values, dtype=np.dtypes.StringDType())
    tiles = tiles.assign_coords(tile=(("tile_y", "tile_x"), names))
    p = tiles["ntl_trend_p"].values
    assert (p < 0.05).any() and (p >= 0.05).any()
    fig = plot_trend_map(tiles)
    ax = fig.axes[0]
    hatched = [a for a in ax.patches if a.get_gid() == "not-significant"]
    assert len(hatched) == int((p >= 0.05).sum())
    assert ax.get_xlabel() == "easting, km (EPSG:32638)"
    assert f"{int((p < 0.05).sum())} of 6 tiles significant" in ax.get_title()
    assert "per year" in fig.axes[1].get_ylabel()  # the colour bar has units
    fig.savefig(tmp_path / "trend.png")
    plt.close(fig)
    labelled = [t.get_text() for t in ax.texts]
    assert any(t.startswith("r001c002") for t in labelled)
    with pytest.raises(PayeshError, match="ntl_trend"):
        plot_trend_map(tiles.drop_vars(["ntl_trend", "ntl_trend_p"]))
