"""The built-up classifier's trees, compiled: the same probabilities, several times faster.

scikit-learn's ``HistGradientBoostingClassifier.predict_proba`` walks its trees one at a
time from Python, each over every sample, branching at every node: most of its time goes
to mispredicted branches. Here the fitted trees are evaluated the QuickScorer way
(Lucchese et al., SIGIR 2015): a tree's leaves, in left-to-right order, are the bits of a
word (16, 32 or 64 bits: the narrowest that holds every tree's leaves, so that the
vectorised ANDs are as wide as can be); every split node whose test sends a pixel right
clears the bits of the leaves in its left subtree, and the pixel's leaf is the lowest bit
left set (read from the exponent of that bit as a float64). Every node of a tree is then
tested for a block of pixels in one branch-free loop over the block, which the compiler
vectorises (numba, ``nogil``, on a pool of threads over row blocks).

Leaf values are summed in scikit-learn's order onto its baseline and passed through the
same logistic function, and float32 features are compared with each float64 threshold
rounded down to float32 (for a float32 ``x``, ``x <= t`` exactly when ``x <= t32``), so the
probabilities are bit for bit those of ``predict_proba`` (tests hold them equal, NaN
handling and values on the thresholds included). Models this cannot reproduce exactly
(categorical splits, a feature preprocessor, more than two classes, a tree with more than
64 leaves) are predicted by scikit-learn itself.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit
from scipy.special import expit

from payesh.parallel import shared_pool

__all__ = [
    "CompiledClassifier",
    "CompiledForest",
    "compile_forest",
    "forest_arrays",
    "forest_from_arrays",
    "predict_positive",
]

_ROWS_PER_TASK = 65536
_BLOCK = 512  # pixels tested together per node: in L1 with their features
_MAX_LEAVES = 64


@dataclass(frozen=True)
class CompiledForest:
    """A binary HistGradientBoosting model as QuickScorer arrays (split nodes tree by tree)."""

    feature: np.ndarray  # int32, per split node
    threshold64: np.ndarray  # float64, scikit-learn's threshold: go left when x <= t
    threshold32: np.ndarray  # float32, the same test for float32 x (t rounded down)
    nan_right: np.ndarray  # bool: a missing value goes right
    mask: np.ndarray  # uint64: leaves kept when the test goes right (left subtree cleared)
    tree_start: np.ndarray  # int32, first split node of each tree; one more at the end
    leaf_value: np.ndarray  # float64 (trees, max leaves), leaves left to right
    baseline: float
    n_features: int

    @cached_property
    def narrow_mask(self) -> np.ndarray:
        """``mask`` in the narrowest unsigned word holding every tree's leaves (uint16 for
        up to 16 leaves): the block's words are ANDed 2–4 times as wide as uint64's."""
        leaves = int(np.diff(self.tree_start).max(initial=0)) + 1  # a tree's splits + 1
        for dtype in (np.uint16, np.uint32):
            if leaves <= np.iinfo(dtype).bits:
                return (self.mask & np.uint64(np.iinfo(dtype).max)).astype(dtype)
        return self.mask


def _round_down32(t: float) -> np.float32:
    """The largest float32 not above ``t`` (so float32 ``x <= t`` iff ``x <= result``)."""
    with np.errstate(over="ignore"):
        t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


def _tree_arrays(nodes: np.ndarray) -> tuple[list[tuple[int, float, bool, int]], list[float]]:
    """One tree's split nodes (feature, threshold, NaN goes right, mask) and leaf values."""
    leaves: list[int] = []
    under: dict[int, tuple[int, int]] = {}  # node -> its leaves' range [first, last)
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:  # in-order leaves without recursion: (node, children done)
        k, done = stack.pop()
        if nodes["is_leaf"][k]:
            under[k] = (len(leaves), len(leaves) + 1)
            leaves.append(k)
        elif done:
            under[k] = (under[int(nodes["left"][k])][0], under[int(nodes["right"][k])][1])
        else:
            stack += [(k, True), (int(nodes["right"][k]), False), (int(nodes["left"][k]), False)]
    splits = []
    full = (1 << 64) - 1
    for k in range(len(nodes)):
        if nodes["is_leaf"][k]:
            continue
        lo, hi = under[int(nodes["left"][k])]
        left_bits = ((1 << hi) - 1) ^ ((1 << lo) - 1)
        splits.append(
            (
                int(nodes["feature_idx"][k]),
                float(nodes["num_threshold"][k]),
                not bool(nodes["missing_go_to_left"][k]),
                full ^ left_bits,
            )
        )
    return splits, [float(nodes["value"][k]) for k in leaves]


def compile_forest(estimator: Any) -> CompiledForest | None:
    """Flatten a fitted binary ``HistGradientBoostingClassifier``; ``None`` if unsupported."""
    predictors = getattr(estimator, "_predictors", None)
    if predictors is None or getattr(estimator, "_preprocessor", None) is not None:
        return None
    if len(getattr(estimator, "classes_", [])) != 2 or any(len(p) != 1 for p in predictors):
        return None
    baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).ravel()
    if baseline.size != 1:
        return None
    splits: list[tuple[int, float, bool, int]] = []
    starts = [0]
    values: list[list[float]] = []
    for (tree,) in predictors:
        nodes = tree.nodes
        if "is_categorical" in nodes.dtype.names and nodes["is_categorical"].any():
            return None
        if int(nodes["is_leaf"].sum()) > _MAX_LEAVES:
            return None
        tree_splits, leaf_values = _tree_arrays(nodes)
        splits += tree_splits
        starts.append(len(splits))
        values.append(leaf_values)
    leaf_value = np.zeros((len(values), max(len(v) for v in values)), dtype=np.float64)
    for t, v in enumerate(values):
        leaf_value[t, : len(v)] = v
    return CompiledForest(
        feature=np.asarray([s[0] for s in splits], dtype=np.int32),
        threshold64=np.asarray([s[1] for s in splits], dtype=np.float64),
        threshold32=np.asarray([_round_down32(s[1]) for s in splits], dtype=np.float32),
        nan_right=np.asarray([s[2] for s in splits], dtype=np.bool_),
        mask=np.asarray([s[3] for s in splits], dtype=np.uint64),
        tree_start=np.asarray(starts, dtype=np.int32),
        leaf_value=leaf_value,
        baseline=float(baseline[0]),
        n_features=int(estimator.n_features_in_),
    )


_ARRAY_DTYPES = {
    "feature": np.int32,
    "threshold64": np.float64,
    "threshold32": np.float32,
    "nan_right": np.bool_,
    "mask": np.uint64,
    "tree_start": np.int32,
    "leaf_value": np.float64,
}


def forest_arrays(forest: CompiledForest) -> dict[str, np.ndarray]:
    """``forest`` as plain arrays (for ``np.savez``; read back by :func:`forest_from_arrays`)."""
    out = {name: getattr(forest, name) for name in _ARRAY_DTYPES}
    out["baseline"] = np.float64(forest.baseline)
    out["n_features"] = np.int64(forest.n_features)
    return out


def forest_from_arrays(arrays: Any) -> CompiledForest:
    """The forest :func:`forest_arrays` wrote, checked (a mapping of arrays, e.g. an npz).

    Raises
    ------
    ValueError
        A missing array, a wrong dtype, or shapes that do not make a forest.
    """
    got: dict[str, np.ndarray] = {}
    for name, dtype in _ARRAY_DTYPES.items():
        if name not in arrays:
            raise ValueError(f"no array {name!r}")
        a = np.asarray(arrays[name])
        if a.dtype != dtype:
            raise ValueError(f"array {name!r} is {a.dtype}, not {np.dtype(dtype)}")
        got[name] = a
    n_features = int(arrays["n_features"])
    nodes = got["feature"].shape
    if any(got[k].shape != nodes for k in ("threshold64", "threshold32", "nan_right", "mask")):
        raise ValueError("split-node arrays of different lengths")
    starts, leaves = got["tree_start"], got["leaf_value"]
    if (
        starts.ndim != 1
        or leaves.ndim != 2
        or starts.size != leaves.shape[0] + 1
        or leaves.shape[1] > _MAX_LEAVES
        or starts[0] != 0
        or starts[-1] != nodes[0]
        or (np.diff(starts) < 0).any()
        or (nodes[0] and not 0 <= got["feature"].min() <= got["feature"].max() < n_features)
    ):
        raise ValueError("tree arrays do not make a forest")
    return CompiledForest(**got, baseline=float(arrays["baseline"]), n_features=n_features)


class CompiledClassifier:
    """A binary classifier that is its compiled trees alone: ``predict_proba`` as the
    scikit-learn model it was compiled from gives, without importing scikit-learn."""

    def __init__(self, forest: CompiledForest) -> None:
        self.forest = forest
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = forest.n_features

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features of shape {x.shape}: the model takes (n, {self.n_features_in_})"
            )
        p = predict_positive(self, x)
        return np.column_stack([1.0 - p, p])  # as scikit-learn: class 0 is 1 - P(class 1)


@njit(nogil=True, cache=True)
def _raw_predict(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    nan_right: np.ndarray,
    mask: np.ndarray,
    tree_start: np.ndarray,
    leaf_value: np.ndarray,
    baseline: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    nf, n = x.shape  # one row per feature: a block's features are contiguous reads
    block = np.empty((nf, _BLOCK), dtype=x.dtype)  # features of a block, one row each
    bits = np.empty(_BLOCK, dtype=mask.dtype)  # the narrowest word holding a tree's leaves
    lowest = np.empty(_BLOCK, dtype=np.float64)  # a pixel's leaf bit, 2**leaf exactly
    exponent = lowest.view(np.int64)
    acc = np.empty(_BLOCK, dtype=np.float64)
    ones = ~mask.dtype.type(0)
    one = mask.dtype.type(1)
    for lo in range(0, n, _BLOCK):
        m = min(n, lo + _BLOCK) - lo
        for f in range(nf):
            for i in range(m):
                block[f, i] = x[f, lo + i]
        for i in range(m):
            acc[i] = baseline
        for t in range(tree_start.shape[0] - 1):
            for i in range(m):
                bits[i] = ones
            for k in range(tree_start[t], tree_start[t + 1]):
                row = block[feature[k]]
                th = threshold[k]
                mk = mask[k]
                # branch-free, vectorised over the block; a missing value (NaN) fails
                # every comparison, so it goes right where "not x <= t" is tested
                if nan_right[k]:
                    for i in range(m):
                        bits[i] &= ones if row[i] <= th else mk
                else:
                    for i in range(m):
                        bits[i] &= mk if row[i] > th else ones
            for i in range(m):  # the lowest bit left, as a float: its exponent is the leaf
                b = bits[i]
                lowest[i] = np.float64(b & (~b + one))
            values = leaf_value[t]
            for i in range(m):
                acc[i] += values[(exponent[i] >> 52) - 1023]
        for i in range(m):
            out[lo + i] = acc[i]


_cache: dict[int, tuple[Any, CompiledForest | None]] = {}
_cache_lock = threading.Lock()


def _compiled(estimator: Any) -> CompiledForest | None:
    if isinstance(estimator, CompiledClassifier):
        return estimator.forest
    with _cache_lock:
        hit = _cache.get(id(estimator))
        if hit is not None and hit[0] is estimator:
            return hit[1]
        forest = compile_forest(estimator)
        _cache[id(estimator)] = (estimator, forest)
        return forest


def predict_positive(estimator: Any, features: np.ndarray, *, threads: int | None = None) -> Any:
    """P(class 1) of ``features`` (n, n_features), float64, as ``predict_proba(...)[:, 1]``.

    Row blocks run on a process-wide pool of ``threads`` threads (default: the machine's
    cores, at most 16); the compiled loop releases the GIL.
    """
    forest = _compiled(estimator)
    x = np.asarray(features)
    if forest is None or x.ndim != 2 or x.shape[1] != forest.n_features:
        return estimator.predict_proba(np.ascontiguousarray(x))[:, 1]
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    # one row per feature, as the kernel reads them: no copy for features made as planes
    # (payesh.features.feature_stack's (n, n_features) is the transpose of its planes)
    planes = np.ascontiguousarray(x.T)
    # float32 features meet thresholds rounded down to float32: the same tests, and the
    # block's compares run twice as wide
    threshold = forest.threshold32 if x.dtype == np.float32 else forest.threshold64
    raw = np.empty(x.shape[0], dtype=np.float64)
    f = forest

    def run(lo: int) -> None:
        hi = min(x.shape[0], lo + _ROWS_PER_TASK)
        _raw_predict(
            planes[:, lo:hi],
            f.feature,
            threshold,
            f.nan_right,
            f.narrow_mask,
            f.tree_start,
            f.leaf_value,
            f.baseline,
            raw[lo:hi],
        )

    starts = range(0, x.shape[0], _ROWS_PER_TASK)
    if threads == 1 or len(starts) <= 1:
        for lo in starts:
            run(lo)
    else:
        list(_pool(threads).map(run, starts))
    return expit(raw)


def _pool(threads: int | None) -> ThreadPoolExecutor:
    """The process's forest pool (:func:`payesh.parallel.shared_pool`)."""
    return shared_pool("forest", threads)
