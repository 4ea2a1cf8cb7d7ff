"""The compiled trees give scikit-learn's probabilities bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier

from payesh.forest import compile_forest, predict_positive


@pytest.fixture(scope="module")
def model() -> HistGradientBoostingClassifier:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 5))
    x[rng.random(x.shape) < 0.05] = np.nan  # trees learn a side for missing values
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) ** 2 > 0.4).astype(int)
    return HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=15, random_state=0).fit(x, y)


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 150_000),
    nan_share=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 2**16),
    threads=st.sampled_from([1, 2, 3]),
)
def test_bit_identical_to_predict_proba(
    model: HistGradientBoostingClassifier, n: int, nan_share: float, seed: int, threads: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(n, 5)).astype("float32")
    x[rng.random(x.shape) < nan_share] = np.nan
    got = predict_positive(model, x, threads=threads)
    np.testing.assert_array_equal(got, model.predict_proba(x)[:, 1])


def test_unsupported_models_are_predicted_by_sklearn() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 3)), rng.integers(0, 3, 300)  # three classes
    three = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    assert compile_forest(three) is None
    np.testing.assert_array_equal(predict_positive(three, x), three.predict_proba(x)[:, 1])


def test_features_on_and_next_to_the_thresholds(model: HistGradientBoostingClassifier) -> None:
    """float32 features equal to a threshold (rounded either way) or one ulp beside it
    take the same branch as in scikit-learn, which compares in float64."""
    thresholds = np.concatenate(
        [tree.nodes["num_threshold"][tree.nodes["is_leaf"] == 0] for (tree,) in model._predictors]
    )
    t32 = thresholds.astype("float32")
    near = np.concatenate(
        [t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))]
    )
    assert not np.array_equal(t32.astype("float64"), thresholds)  # rounding really happens
    rng = np.random.default_rng(3)
    x = rng.choice(near, size=(20_000, 5)).astype("float32")
    x[rng.random(x.shape) < 0.02] = np.nan
    np.testing.assert_array_equal(predict_positive(model, x), model.predict_proba(x)[:, 1])
    x64 = x.astype("float64")  # float64 features meet the float64 thresholds
    np.testing.assert_array_equal(predict_positive(model, x64), model.predict_proba(x64)[:, 1])


def test_infinite_features_take_sklearn_s_branch(model: HistGradientBoostingClassifier) -> None:
    x = np.array([[np.inf] * 5, [-np.inf] * 5, [3e38, -3e38, 0, np.inf, np.nan]], "float32")
    np.testing.assert_array_equal(predict_positive(model, x), model.predict_proba(x)[:, 1])


@pytest.mark.parametrize(("leaves", "word"), [(15, np.uint16), (31, np.uint32), (63, np.uint64)])
def test_each_word_width_gives_predict_proba(leaves: int, word: type) -> None:
    """Trees of up to 16, 32 and 64 leaves run in 16-, 32- and 64-bit words, each giving
    scikit-learn's probabilities bit for bit (NaN included)."""
    rng = np.random.default_rng(leaves)
    x = rng.normal(size=(6000, 4))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.sin(3 * np.nan_to_num(x[:, 0])) + np.nan_to_num(x[:, 1]) * x[:, 2] > 0).astype(int)
    model = HistGradientBoostingClassifier(
        max_iter=8, max_leaf_nodes=leaves, min_samples_leaf=5, random_state=0
    ).fit(x, y)
    forest = compile_forest(model)
    assert forest is not None
    most = int(np.diff(forest.tree_start).max()) + 1
    assert most > leaves // 2 + 1  # the trees need the word: not all would fit a narrower one
    assert forest.narrow_mask.dtype == word
    xs = rng.normal(scale=2.0, size=(70_001, 4)).astype("float32")
    xs[rng.random(xs.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(predict_positive(model, xs), model.predict_proba(xs)[:, 1])
