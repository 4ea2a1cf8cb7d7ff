"""The notebook API of the store: lazy on open, one snapshot across groups."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from test_store import PROV, make_tiles
from test_store_expire import version_pixels

import payesh
from payesh import store as st


def test_open_reads_no_chunk_until_computed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    times = pd.date_range("2025-01-01", periods=2, freq="MS")
    groups = {"tiles": make_tiles(times), "pixels": version_pixels(3)}
    st.write_run("demo", groups, store=root, message="m", provenance=PROV)
    shutil.rmtree(root / "demo" / "chunks")  # every chunk object is gone

    # opening reads metadata only: it still works, and every variable is a Dask array
    px = payesh.open_indicators("demo", store=root, group="pixels")
    tree = payesh.open_tree("demo", store=root)
    for ds in (px, tree["pixels"].to_dataset()):
        assert isinstance(ds["builtup_prob"].data, da.Array)
        assert ds["builtup_prob"].shape == (2, 48, 48)
        assert ds["builtup_prob"].attrs["units"] == "1"
    with pytest.raises(Exception, match=r"(?i)not found|no such|missing|does not exist"):
        px["builtup_prob"].values  # noqa: B018  (only now are chunks read)


def test_snapshot_id_pins_one_version_across_groups(tmp_path: Path) -> None:
    root = tmp_path / "store"
    times = pd.date_range("2025-01-01", periods=2, freq="MS")
    first = st.write_run("demo", {"tiles": make_tiles(times, 1), "pixels": version_pixels(1)},
                         store=root, message="1", provenance=PROV)  # fmt: skip
    tiles = payesh.open_indicators("demo", store=root)
    assert tiles.attrs["snapshot_id"] == first
    st.write_run("demo", {"tiles": make_tiles(times, 2), "pixels": version_pixels(2)},
                 store=root, message="2", provenance=PROV)  # fmt: skip
    # a run committed in between: pinning reads the pixels of the same version
    px = payesh.open_indicators("demo", store=root, group="pixels",
                                version=tiles.attrs["snapshot_id"])  # fmt: skip
    np.testing.assert_array_equal(px["builtup_prob"].values, version_pixels(1)["builtup_prob"])
    latest = payesh.open_tree("demo", store=root)
    assert latest.attrs["snapshot_id"] == st.history("demo", store=root)[0]["snapshot_id"]
    assert latest.attrs["code_version"] == "0.1.0"
    assert set(latest.children) == {"tiles", "pixels"}
    np.testing.assert_array_equal(
        latest["tiles"]["ntl_sum"].values, make_tiles(times, 2)["ntl_sum"].values
    )
    old = payesh.open_tree("demo", store=root, version=first)
    np.testing.assert_array_equal(
        old["pixels"]["builtup_prob"].values, version_pixels(1)["builtup_prob"].values
    )
    # writing back what was read does not store the read snapshot id as data
    st.write_run("demo", {"tiles": tiles.drop_vars("spatial_ref")}, store=root,
                 message="3", provenance=PROV)  # fmt: skip
    again = payesh.open_indicators("demo", store=root)
    assert again.attrs["snapshot_id"] == st.history("demo", store=root)[0]["snapshot_id"]
