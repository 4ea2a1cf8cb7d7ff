"""Built-up classifier: features, training, skops round trip, trust checks, prediction."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import spyndex
import xarray as xr

from payesh.classifier import builtup_probability
from payesh.errors import ModelError
from payesh.features import (
    BANDS,
    FEATURE_NAMES,
    INDICES,
    RGBN_FEATURE_NAMES,
    SPYNDEX_BANDS,
    feature_stack,
    required_bands,
    spectral_features,
)
from payesh.forest import CompiledClassifier, compile_forest, forest_arrays, forest_from_arrays
from payesh.model import BuiltupModel, train_builtup
from payesh.model_io import (
    compiled_path,
    default_model_path,
    load_model,
    save_model,
    write_compiled,
)


def _raise_if_computes(dsk, keys, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("a Dask graph was computed while building the prediction")


# reflectance signatures (blue, green, red, nir, swir16, swir22)
ROOF = np.array([0.12, 0.14, 0.16, 0.22, 0.30, 0.27])
VEG = np.array([0.03, 0.07, 0.04, 0.40, 0.20, 0.10])
SOIL = np.array([0.10, 0.14, 0.20, 0.26, 0.34, 0.30])


def _samples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    base = np.stack([ROOF, VEG, SOIL])[kind]
    bands = np.clip(base + rng.normal(0, 0.015, size=base.shape), 0.001, 1)
    return feature_stack(bands), (kind == 0).astype(int)


@pytest.fixture(scope="module")
def model() -> BuiltupModel:
    x, y = _samples(3000, seed=0)
    return train_builtup(x, y, seed=0, version="0.0.1-test", training="synthetic roofs/veg/soil")


def test_feature_stack_indices_bounded_and_nan_safe() -> None:
    rng = np.random.default_rng(1)
    bands = rng.uniform(0, 1, size=(500, 6))
    bands[0] = 0.0  # all zero: indices undefined, no warning
    bands[1, 2] = np.nan
    f = feature_stack(bands)
    assert f.shape == (500, len(FEATURE_NAMES)) and f.dtype == np.float32
    assert np.isnan(f[0, len(BANDS) :]).all()
    for name in INDICES:  # normalised differences in [-1, 1]; DBSI is a difference of two
        v = f[2:, FEATURE_NAMES.index(name)]
        bound = 2 if name == "DBSI" else 1
        assert np.all((v >= -bound - 1e-6) & (v <= bound + 1e-6)), name
    ndvi = f[:, FEATURE_NAMES.index("NDVI")]
    np.testing.assert_allclose(
        ndvi[2:],
        (bands[2:, 3] - bands[2:, 2]) / (bands[2:, 3] + bands[2:, 2]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_indices_are_spyndex_formulas() -> None:
    rng = np.random.default_rng(2)
    bands = rng.uniform(0.01, 0.6, size=(200, 6))
    f = feature_stack(bands)
    params = {sym: bands[:, BANDS.index(b)] for sym, b in SPYNDEX_BANDS.items()}
    expected = spyndex.computeIndex(list(INDICES), params=params)
    np.testing.assert_allclose(f[:, len(BANDS) :].T, expected, rtol=2e-5, atol=1e-6)
    # the reduced set needs no SWIR; a thermal index cannot be made from Sentinel-2
    assert required_bands(RGBN_FEATURE_NAMES) == ("blue", "green", "red", "nir")
    with pytest.raises(ModelError, match="EBBI"):
        required_bands(("EBBI",))
    rgbn = feature_stack(bands[:, :4], band_names=BANDS[:4], feature_names=RGBN_FEATURE_NAMES)
    assert rgbn.shape == (200, len(RGBN_FEATURE_NAMES))


def test_rgbn_model_predicts_without_swir() -> None:
    rng = np.random.default_rng(3)
    kind = rng.integers(0, 3, 3000)
    base = np.stack([ROOF, VEG, SOIL])[kind][:, :4]
    bands = np.clip(base + rng.normal(0, 0.015, size=base.shape), 0.001, 1)
    x = feature_stack(bands, band_names=BANDS[:4], feature_names=RGBN_FEATURE_NAMES)
    m = train_builtup(x, (kind == 0).astype(int), feature_names=RGBN_FEATURE_NAMES)
    comp = _composite().drop_vars(["swir16", "swir22"])
    prob = builtup_probability(comp, m)
    kinds = _composite().attrs["kind"]
    assert float(np.nanmean(prob[0].values[kinds == 0])) > 0.5


def test_train_reports_held_out_metrics(model: BuiltupModel) -> None:
    assert model.metrics["f1"] > 0.95
    assert model.metrics["n_test"] == 750
    assert set(model.metrics) >= {"precision", "recall", "f1", "accuracy"}
    assert model.feature_names == FEATURE_NAMES


def test_skops_round_trip(model: BuiltupModel, tmp_path: Path) -> None:
    path = save_model(model, tmp_path)
    assert path.name == "builtup-0.0.1-test.skops"
    card = path.with_suffix(".md").read_text(encoding="utf-8")
    assert "0.0.1-test" in card and "synthetic roofs" in card and "f1" in card
    x, _ = _samples(200, seed=5)
    for compiled in (True, False):
        loaded = load_model(path, compiled=compiled)
        assert isinstance(loaded.estimator, CompiledClassifier) is compiled
        assert loaded.version == model.version
        assert loaded.metrics == model.metrics
        assert loaded.feature_names == model.feature_names
        assert loaded.training == model.training and loaded.created == model.created
        np.testing.assert_array_equal(
            loaded.estimator.predict_proba(x), model.estimator.predict_proba(x)
        )
    assert default_model_path(tmp_path) == path


def test_compiled_trees_are_the_model_bit_for_bit(model: BuiltupModel, tmp_path: Path) -> None:
    """The model read from its .trees.npz predicts what scikit-learn predicts, NaN too."""
    path = save_model(model, tmp_path)
    assert compiled_path(path) == tmp_path / "builtup-0.0.1-test.trees.npz"
    fast = load_model(path)
    assert isinstance(fast.estimator, CompiledClassifier)
    x, _ = _samples(5000, seed=9)
    x[::11, 2] = np.nan
    x[::13] = np.nan
    for dtype in ("float64", "float32"):
        np.testing.assert_array_equal(
            fast.estimator.predict_proba(x.astype(dtype)),
            model.estimator.predict_proba(x.astype(dtype)),
        )
    with pytest.raises(ValueError, match="takes"):
        fast.estimator.predict_proba(x[:, :3])
    with pytest.raises(ModelError, match="compiled trees"):
        save_model(fast, tmp_path / "again")


def test_compiled_trees_used_only_for_the_bytes_they_were_written_from(
    model: BuiltupModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = save_model(model, tmp_path)
    side = compiled_path(path)
    with np.load(side) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array(
        str(arrays["meta"]).replace('"skops_sha256": "', '"skops_sha256": "0')
    )
    np.savez(side, **arrays)  # written for other bytes: the .skops file is loaded
    assert not isinstance(load_model(path).estimator, CompiledClassifier)
    side.write_bytes(b"not an npz")  # unreadable: logged, and the .skops file is loaded
    with caplog.at_level("WARNING"):
        loaded = load_model(path)
    assert not isinstance(loaded.estimator, CompiledClassifier)
    assert str(side) in caplog.text
    side.unlink()
    assert not isinstance(load_model(path).estimator, CompiledClassifier)
    assert write_compiled(model, path) == side
    assert isinstance(load_model(path).estimator, CompiledClassifier)


def test_forest_arrays_checked_when_read(model: BuiltupModel) -> None:
    forest = compile_forest(model.estimator)
    assert forest is not None
    arrays = forest_arrays(forest)
    back = forest_from_arrays(arrays)
    np.testing.assert_array_equal(back.mask, forest.mask)
    assert back.baseline == forest.baseline and back.n_features == forest.n_features
    bad = dict(arrays, feature=arrays["feature"].astype("int64"))
    with pytest.raises(ValueError, match="feature"):
        forest_from_arrays(bad)
    bad = dict(arrays, feature=arrays["feature"] + np.int32(forest.n_features))
    with pytest.raises(ValueError, match="forest"):
        forest_from_arrays(bad)
    bad = {k: v for k, v in arrays.items() if k != "mask"}
    with pytest.raises(ValueError, match="mask"):
        forest_from_arrays(bad)


def test_shipped_models_have_their_compiled_trees() -> None:
    """Every model in models/ has trees written from its current bytes; loading the
    current one imports neither scikit-learn nor skops (about 3 s of every run)."""
    import subprocess
    import sys

    folder = default_model_path().parent
    for path in sorted(folder.glob("builtup-*.skops")):
        assert isinstance(load_model(path).estimator, CompiledClassifier), path
    code = (
        "import sys; from payesh.classifier import load_model, default_model_path; "
        "m = load_model(default_model_path()); "
        "print(type(m.estimator).__name__, 'sklearn' in sys.modules, 'skops' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["CompiledClassifier", "False", "False"]


class Payload:
    """Not a scikit-learn type: must not be trusted."""

    def __init__(self) -> None:
        self.command = "echo pwned"


def test_load_rejects_untrusted_and_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "builtup-evil.skops"
    sio.dump({"estimator": Payload(), "version": "evil"}, bad)
    with pytest.raises(ModelError, match="untrusted") as err:
        load_model(bad)
    assert str(bad) in str(err.value)
    func = tmp_path / "builtup-func.skops"
    sio.dump({"estimator": np.load, "version": "func"}, func)
    with pytest.raises(ModelError, match=r"numpy\.load"):
        load_model(func)
    junk = tmp_path / "builtup-junk.skops"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match=str(junk)):
        load_model(junk)
    with pytest.raises(ModelError, match="payesh train-builtup"):
        load_model(tmp_path / "missing.skops")


def test_default_model_path_newest_or_error(model: BuiltupModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="payesh train-builtup"):
        default_model_path(tmp_path)
    old = save_model(BuiltupModel(model.estimator, FEATURE_NAMES, "1"), tmp_path)
    new = save_model(BuiltupModel(model.estimator, FEATURE_NAMES, "2"), tmp_path)
    os.utime(old, (1_000_000, 1_000_000))
    assert default_model_path(tmp_path) == new


def _composite(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    n_t, ny, nx = 3, 8, 10
    kind = rng.integers(0, 3, size=(ny, nx))
    base = np.stack([ROOF, VEG, SOIL])[kind]  # (y, x, band)
    data = base[None] + rng.normal(0, 0.01, size=(n_t, ny, nx, 6))
    data[1, :3, :4, :] = np.nan  # cloudy corner
    data[2, 5, 5, 2] = np.nan  # one band missing
    ds = xr.Dataset(
        {b: (("time", "y", "x"), data[..., i].astype("float32")) for i, b in enumerate(BANDS)},
        coords={
            "time": pd.date_range("2024-01-01", periods=n_t, freq="MS"),
            "y": 4268000.0 - 10 * np.arange(ny) - 5,
            "x": 496500.0 + 10 * np.arange(nx) + 5,
        },
    )
    ds.attrs["kind"] = kind
    return ds


def test_builtup_probability_numpy_dask_and_nan(model: BuiltupModel) -> None:
    comp = _composite()
    kind = comp.attrs["kind"]
    prob = builtup_probability(comp, model)
    assert prob.name == "builtup_prob" and prob.dims == ("time", "y", "x")
    assert prob.dtype == np.float32 and prob.attrs["units"] == "1"
    assert np.isnan(prob[1, :3, :4]).all() and np.isnan(prob[2, 5, 5])
    vals = prob.values[np.isfinite(prob.values)]
    assert ((vals >= 0) & (vals <= 1)).all()
    assert (prob[0].values[kind == 0] > 0.5).all() and (prob[0].values[kind != 0] < 0.5).all()
    with dask.config.set(scheduler=_raise_if_computes):
        lazy = builtup_probability(comp.chunk({"time": 1, "y": 4, "x": 5}), model)
        feats = spectral_features(comp.chunk({"y": 4}))
    assert isinstance(lazy.data, dsa.Array)
    xr.testing.assert_allclose(prob, lazy.compute())
    assert feats.dims == ("time", "y", "x", "feature")
    assert list(feats["feature"].values) == list(FEATURE_NAMES)


def test_builtup_probability_rejects_other_features(model: BuiltupModel) -> None:
    other = BuiltupModel(model.estimator, ("a", "b"), "x")
    with pytest.raises(ModelError, match="retrain"):
        builtup_probability(_composite(), other)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_probability_from_band_planes_is_predict_proba_on_stacked_features(
    model: BuiltupModel, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bands are classified plane by plane, in runs of pixels: the values are those
    of the stacked features through scikit-learn, whatever the runs cut (all valid, some,
    none) and whether the composite is in memory or Dask's; the coordinates are the bands'."""
    from payesh import classifier

    comp = _composite().astype(dtype)
    blue = comp["blue"].values
    blue[0, 6, :] = np.inf  # a row with no finite value in a run of its own
    comp["swir22"].values[0, 7, 3] = np.nan
    monkeypatch.setattr(classifier, "_FEATURE_BLOCK_PX", 7)  # runs across rows
    stacked = np.stack([comp[b].values for b in BANDS], axis=-1)
    ok = np.isfinite(stacked).all(axis=-1)
    want = np.full(ok.shape, np.nan, dtype="float32")
    want[ok] = model.estimator.predict_proba(feature_stack(stacked[ok]))[:, 1].astype("float32")
    assert (~ok).any() and ok.any()
    for source in (comp, comp.chunk({"time": 1, "y": 5, "x": 4})):
        prob = builtup_probability(source, model).compute()
        np.testing.assert_array_equal(prob.values, want)  # bit for bit, NaN where NaN
        assert prob.dims == comp["blue"].dims
        xr.testing.assert_identical(prob.coords.to_dataset(), comp["blue"].coords.to_dataset())


def test_classifier_keeps_its_public_names() -> None:
    """``payesh.classifier`` still gives every public name it had, now defined in
    payesh.features, payesh.model and payesh.model_io: the very same objects."""
    from payesh import classifier, features, model, model_io

    homes = (features, model, model_io)
    own = {"builtup_probability", "model_bands"}  # defined in payesh.classifier itself
    internal = {"fill_features", "SPYNDEX_BANDS", "CURRENT"}  # reachable, not listed
    moved = {name for home in homes for name in home.__all__}
    assert set(classifier.__all__) == own | (moved - internal)
    for name in classifier.__all__:
        assert hasattr(classifier, name), name
    for home in (features, model, model_io):
        for name in home.__all__:
            assert getattr(classifier, name) is getattr(home, name), name
    assert classifier.SPYNDEX_BANDS is features.SPYNDEX_BANDS
    assert classifier.CURRENT == model_io.CURRENT == "builtup-current.txt"
