"""Evidence chips and probability curves for construction sites."""

from __future__ import annotations

from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from PIL import Image
from pyproj import CRS

from payesh import truecolour
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


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype="float64")


def _raise_if_computes(dsk, keys, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("building the true-colour layer computed")


def _stored(comp: xr.Dataset, prob: xr.DataArray) -> xr.Dataset:
    """A ``pixels`` group as a run stores it: probability and true colour."""
    from payesh.evidence import true_colour_layer

    crs = xr.DataArray(0, attrs={"crs_wkt": CRS.from_epsg(32638).to_wkt()})
    return xr.Dataset(
        {"builtup_prob": prob, "true_colour": true_colour_layer(comp)},
        coords={"spatial_ref": crs},
    )


def test_true_colour_layer_is_true_colour_per_month_and_lazy() -> None:
    from payesh.evidence import true_colour_layer

    comp, _, _ = _scene()
    layer = true_colour_layer(comp)
    assert layer.name == "true_colour" and layer.dtype == np.uint8
    assert layer.dims == ("time", "band", "y", "x")
    assert list(layer["band"].values) == ["red", "green", "blue"]
    assert layer.attrs["units"] == "1" and "B04" in layer.attrs["long_name"]
    for i in (0, 2, 5):
        want = true_colour(*(comp[b].values[i] for b in ("red", "green", "blue")))
        np.testing.assert_array_equal(layer.isel(time=i).transpose("y", "x", "band"), want)
    assert (layer.isel(time=2) == 128).all()  # the all-cloudy month is grey
    with dask.config.set(scheduler=_raise_if_computes):
        lazy = true_colour_layer(comp.chunk({"time": 4, "y": 20, "x": 20}))
    xr.testing.assert_identical(lazy.compute(), layer)
    with pytest.raises(PayeshError, match="green"):
        true_colour_layer(comp.drop_vars("green"))


def test_chips_from_the_store_equal_chips_from_the_composites(tmp_path: Path) -> None:
    from payesh.evidence import write_store_evidence

    comp, prob, sites = _scene()
    a = write_evidence(sites, comp, prob, tmp_path / "a")
    b = write_store_evidence(sites, _stored(comp, prob), tmp_path / "b")
    assert list(b["evidence_chip"]) == list(a["evidence_chip"])
    for key in ("evidence_chip", "evidence_curve"):
        np.testing.assert_array_equal(
            _rgb(tmp_path / "a" / a[key].iloc[0]), _rgb(tmp_path / "b" / b[key].iloc[0])
        )
    # a store without true colour (written before it was kept): the probability is shown
    c = write_store_evidence(sites, prob.to_dataset(), tmp_path / "c")
    with_rgb = _rgb(tmp_path / "b" / b["evidence_chip"].iloc[0])
    without = _rgb(tmp_path / "c" / c["evidence_chip"].iloc[0])
    assert without.shape == with_rgb.shape and np.abs(without - with_rgb).mean() > 5
    with pytest.raises(PayeshError, match="builtup_prob"):
        write_store_evidence(sites, comp, tmp_path)


def test_exported_sites_carry_the_evidence_paths(tmp_path: Path) -> None:
    from payesh.export import export_sites_with_evidence

    comp, prob, sites = _scene()
    sites = sites.assign(
        area_m2=[1e4],
        tile=["r000c000"],
        status=["unauthorized"],
        permit_id=[None],
        confidence=[0.9],
    ).to_crs("EPSG:4326")  # any CRS: drawn on the pixel grid's
    for fmt, name in (("geojson", "s.geojson"), ("parquet", "s.parquet")):
        out = tmp_path / fmt / name
        out.parent.mkdir()
        export_sites_with_evidence(sites, _stored(comp, prob), out, format=fmt)
        back = gpd.read_file(out) if fmt == "geojson" else gpd.read_parquet(out)
        assert list(back.columns)[-3:] == ["evidence_chip", "evidence_curve", "geometry"]
        for rel in (back["evidence_chip"].iloc[0], back["evidence_curve"].iloc[0]):
            with Image.open(out.parent / rel) as im:
                assert im.format == "PNG"
    plain = tmp_path / "plain.geojson"
    export_sites_with_evidence(sites, None, plain)
    assert "evidence_chip" not in gpd.read_file(plain).columns


def test_portal_chip_shows_true_colour_when_stored() -> None:
    import io

    from affine import Affine

    from payesh.portal.chips import render_chip, true_colour_window

    comp, prob, sites = _scene()
    pixels = _stored(comp, prob)
    rows, cols = slice(0, N), slice(0, N)
    rgb = true_colour_window(pixels, rows, cols, flip_y=False)
    assert rgb is not None and rgb.shape == (len(MONTHS), N, N, 3) and rgb.dtype == np.uint8
    flipped = true_colour_window(pixels, rows, cols, flip_y=True)
    assert flipped is not None
    np.testing.assert_array_equal(flipped[:, ::-1], rgb)
    assert true_colour_window(prob.to_dataset(), rows, cols, flip_y=False) is None
    args = (prob.values, Affine(RES, 0, X0, 0, -RES, Y0), [f"{m:%Y-%m}" for m in MONTHS])
    kw = {"site_id": "S1", "first_seen": MONTHS[4], "curve": [0.1] * len(MONTHS)}
    pngs = [
        render_chip(*args, sites.geometry.iloc[0], **kw, rgb=colours) for colours in (None, rgb)
    ]
    imgs = [np.asarray(Image.open(io.BytesIO(p)).convert("RGB"), dtype=float) for p in pngs]
    assert imgs[0].shape == imgs[1].shape
    assert np.abs(imgs[0] - imgs[1]).mean() > 5  # true colour, not the probability


def test_true_colour_by_thresholds_equals_the_definition_bit_for_bit() -> None:
    """The fast kernel (level looked up from the float32's bits) gives the bytes of the
    float64 definition on every float32 within 3000 ulps of each level's threshold, on
    random reflectances and on the special values."""
    thresholds = truecolour.level_thresholds(truecolour.MAX_REFLECTANCE)
    assert thresholds.dtype == np.float32 and np.all(np.diff(thresholds) > 0)
    bits = thresholds.view(np.uint32).astype(np.int64)
    near = (bits[:, None] + np.arange(-3000, 3001)[None, :]).ravel()
    near = near[near >= 0].astype(np.uint32).view(np.float32)
    rng = np.random.default_rng(7)
    special = np.array([0.0, -0.0, -1e-30, 1e-45, np.nan, np.inf, -np.inf, 3.4e38], "float32")
    red = np.concatenate([near, rng.uniform(-0.1, 0.8, 200_000).astype("float32"), special])
    green = rng.permutation(red)
    blue = np.full_like(red, 0.07)
    fast = truecolour._true_colour_kernel(red, green, blue, truecolour.MAX_REFLECTANCE)
    exact = truecolour._true_colour_exact(red, green, blue, truecolour.MAX_REFLECTANCE)
    np.testing.assert_array_equal(fast, exact)
    assert set(np.unique(fast[:, 0])) == set(range(256))  # every level was reached
    # 2-D input keeps its shape; float64 input takes the definition itself
    img = rng.uniform(0, 0.4, (3, 40, 50)).astype("float32")
    out = truecolour._true_colour_kernel(*img, 0.3)
    assert out.shape == (40, 50, 3)
    np.testing.assert_array_equal(out, truecolour._true_colour_exact(*img, 0.3))
    np.testing.assert_array_equal(
        truecolour._true_colour_kernel(*img.astype("float64"), 0.3),
        truecolour._true_colour_exact(*img, 0.3),
    )
