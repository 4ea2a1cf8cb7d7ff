"""Housekeeping: ``payesh.store.expire`` forgets old versions and deletes their data."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_store_integrity import fingerprint

from payesh import store as st
from payesh.cli import main
from payesh.errors import StoreError

N = 48  # 9 KiB of noise per month and version: real chunk objects, not inlined


def version_pixels(k: int, start: str = "2025-01-01") -> xr.Dataset:
    times = pd.date_range(start, periods=2, freq="MS")
    rng = np.random.default_rng(k)
    return xr.Dataset(
        {
            "builtup_prob": (
                ("time", "y", "x"),
                rng.random((2, N, N), dtype="float32"),
                {"units": "1"},
            )
        },
        coords={
            "time": times,
            "y": 4_270_000.0 - (np.arange(N) + 0.5) * 10,
            "x": 500_000.0 + (np.arange(N) + 0.5) * 10,
        },
        attrs={"crs": "EPSG:32638"},
    )


def write_versions(root: Path, n: int) -> list[str]:
    return [
        st.write_run(
            "demo", {"pixels": version_pixels(k)}, store=root, message=f"v{k}", provenance={"k": k}
        )
        for k in range(n)
    ]


def chunk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "demo" / "chunks").iterdir())


def test_expire_keeps_the_newest_and_deletes_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ids = write_versions(root, 6)
    before = chunk_bytes(root)

    unchanged = fingerprint(root)
    dry = st.expire("demo", store=root, keep=2, dry_run=True)
    assert dry["expired"] == ids[3::-1] and dry["kept"] == 2
    assert fingerprint(root) == unchanged

    out = st.expire("demo", store=root, keep=2)
    assert sorted(out["expired"]) == sorted(ids[:4])
    assert out["kept"] == 2
    assert out["chunks_deleted"] == 4 * 2  # two months of each expired version
    assert out["snapshots_deleted"] == 4
    assert chunk_bytes(root) < before / 2
    assert [h["snapshot_id"] for h in st.history("demo", store=root)] == ids[:3:-1]
    for k in (4, 5):  # the kept versions read back exactly
        got = st.open_indicators("demo", store=root, group="pixels", version=ids[k])
        np.testing.assert_array_equal(
            got["builtup_prob"].values, version_pixels(k)["builtup_prob"].values
        )
    with pytest.raises(StoreError, match=f"no version '{ids[0]}'"):
        st.open_indicators("demo", store=root, group="pixels", version=ids[0])

    # the store goes on: a re-run of February merges with the kept January
    st.write_run("demo", {"pixels": version_pixels(9, "2025-02-01").isel(time=[0])},
                 store=root, message="feb", provenance={})  # fmt: skip
    got = st.open_indicators("demo", store=root, group="pixels")
    np.testing.assert_array_equal(
        got["builtup_prob"].values[0], version_pixels(5)["builtup_prob"].values[0]
    )
    np.testing.assert_array_equal(
        got["builtup_prob"].values[1], version_pixels(9)["builtup_prob"].values[0]
    )
    # nothing left to expire: a no-op
    assert st.expire("demo", store=root, keep=5)["expired"] == []


def test_expire_older_than(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    ids = write_versions(root, 4)
    times = {h["snapshot_id"]: h["time"] for h in st.history("demo", store=root)}
    # older than version 2's commit: versions 0 and 1 go, however many `keep` allows
    out = st.expire("demo", store=root, keep=1, older_than=times[ids[2]])
    assert sorted(out["expired"]) == sorted(ids[:2])
    assert [h["snapshot_id"] for h in st.history("demo", store=root)] == [ids[3], ids[2]]
    # an age: nothing is a day old
    assert st.expire("demo", store=root, keep=1, older_than=timedelta(days=1))["expired"] == []
    assert st.expire("demo", store=root, keep=1, older_than=datetime.now(UTC))["kept"] == 1

    with pytest.raises(StoreError, match="keep=0"):
        st.expire("demo", store=root, keep=0)
    with pytest.raises(StoreError, match="no store for city demo"):
        st.expire("demo", store=tmp_path / "empty")

    # the CLI
    assert main(["expire", "demo", "--keep", "1", "--store", str(root)]) == 0
    assert "expired 0 version(s)" in capsys.readouterr().out
    code = main(["expire", "demo", "--keep", "0", "--store", str(root)])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("payesh: error: ") and "keep=0" in err and "\n" not in err
    assert os.listdir(root / "demo" / "chunks")
