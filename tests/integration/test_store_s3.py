"""The indicator store on S3: a real S3-compatible server (moto) on loopback.

Write, open, re-run a month, history and old versions, all through ``s3://`` URIs with
the endpoint and credentials from the environment; and two runs of one city committing
at the same time: one wins, the other fails clearly, the store never mixes them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3server import MotoS3, moto_s3
from test_store import PROV, make_ntl, make_pixels, make_sites, make_tiles

from payesh import store as st
from payesh.errors import StoreError
from payesh.store import write as st_write
from payesh.store.repo import open_repo

pytestmark = pytest.mark.integration


def _months(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="MS")


@pytest.fixture(scope="module")
def s3_server() -> Iterator[MotoS3]:
    with moto_s3() as server:
        yield server


@pytest.fixture
def s3_root(
    s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """``s3://<bucket>/<test name>``, with the environment pointing at the server."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return f"s3://{s3_server.bucket}/stores/{request.node.name}"


def _groups(times: pd.DatetimeIndex, seed: int) -> dict[str, Any]:
    return {
        "tiles": make_tiles(times, seed),
        "pixels": make_pixels(times, seed),
        "ntl": make_ntl(times),
        "sites": make_sites(),
    }


def test_settings_from_env() -> None:
    s = st.S3Settings.from_env(
        {"AWS_ENDPOINT_URL": "http://a:1", "PAYESH_S3_ENDPOINT": "http://b:2", "AWS_REGION": ""}
    )
    assert s.endpoint_url == "http://b:2"
    assert s.region == "us-east-1"
    assert s.access_key_id is None
    s = st.S3Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k"})
    assert (s.endpoint_url, s.region, s.access_key_id) == (None, "eu-west-1", "k")


def test_write_open_rerun_history_on_s3(s3_root: str, s3_server: MotoS3) -> None:
    first = st.write_run(
        "demo", _groups(_months("2025-01-01", 3), 0), store=s3_root, message="jan-mar",
        provenance=PROV,
    )  # fmt: skip
    keys = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="stores/")  # type: ignore[attr-defined]
    assert any("/demo/" in o["Key"] for o in keys["Contents"])

    got = st.open_indicators("demo", store=s3_root)
    assert got["ntl_sum"].chunks is not None  # lazy, read from S3 on compute
    np.testing.assert_array_equal(
        got["ntl_sum"].values, make_tiles(_months("2025-01-01", 3), 0)["ntl_sum"].values
    )
    assert got.attrs["code_version"] == "0.1.0"
    assert got["ntl_sum"].attrs["grid_mapping"] == "spatial_ref"

    # re-run one month (and add the next): March replaced, January and February kept
    second = st.write_run(
        "demo", {"tiles": make_tiles(_months("2025-03-01", 2), 7)}, store=s3_root,
        message="mar-apr", provenance=PROV,
    )  # fmt: skip
    got = st.open_indicators("demo", store=s3_root)
    old = make_tiles(_months("2025-01-01", 3), 0)
    new = make_tiles(_months("2025-03-01", 2), 7)
    np.testing.assert_array_equal(got["time"].values, _months("2025-01-01", 4).values)
    np.testing.assert_array_equal(got["ntl_sum"].values[:2], old["ntl_sum"].values[:2])
    np.testing.assert_array_equal(got["ntl_sum"].values[2:], new["ntl_sum"].values)
    assert st.open_indicators("demo", store=s3_root, group="pixels").sizes["time"] == 3

    hist = st.history("demo", store=s3_root)
    assert [h["snapshot_id"] for h in hist] == [second, first]
    assert [h["message"] for h in hist] == ["mar-apr", "jan-mar"]
    v1 = st.open_indicators("demo", store=s3_root, version=first)
    np.testing.assert_array_equal(v1["ntl_sum"].values, old["ntl_sum"].values)
    sites = st.open_sites("demo", store=s3_root, version=first)
    assert list(sites["site_id"]) == ["s1", "s2"]

    session = open_repo("demo", s3_root).readonly_session(branch="main")
    codecs = zarr.open_group(session.store, mode="r")["tiles/ntl_sum"].metadata.codecs
    assert codecs[-1].to_dict()["name"] == "crc32c"


def test_bad_s3_locations(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match=r"no store for city demo at s3://.*payesh run demo"):
        st.open_indicators("demo", store=s3_root)
    with pytest.raises(StoreError, match="no store"):
        st.history("demo", store=s3_root)
    with pytest.raises(StoreError, match="unsupported scheme 'gs'"):
        st.open_indicators("demo", store="gs://bucket/x")
    with pytest.raises(StoreError, match="names no bucket"):
        st.history("demo", store="s3:///x")
    with pytest.raises(StoreError, match="cannot open the store of demo at s3://no-such-bucket"):
        st.open_indicators("demo", store="s3://no-such-bucket/x")
    st.write_run(
        "demo", {"tiles": make_tiles(_months("2025-01-01", 1))}, store=s3_root, message="m",
        provenance=PROV,
    )  # fmt: skip
    with pytest.raises(StoreError, match="no version"):
        st.open_indicators("demo", store=s3_root, version="0" * 20)
    with pytest.raises(StoreError, match="no group 'pixels'"):
        st.open_indicators("demo", store=s3_root, group="pixels")


def _store_values(store: str, version: str | None = None) -> dict[str, xr.Dataset]:
    return {
        g: st.open_indicators("demo", store=store, group=g, version=version).load()
        for g in st.GROUPS
    }


def test_concurrent_runs_on_s3_one_wins(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base = st.write_run(
        "demo", _groups(_months("2025-01-01", 2), 0), store=s3_root, message="base",
        provenance=PROV,
    )  # fmt: skip
    # Both runs open their session on `base` before either writes a chunk, then race to
    # commit: a true concurrent commit, not two runs that happen to follow each other.
    started = threading.Barrier(2, timeout=30)
    real = st_write._write_group
    first_write: set[int] = set()

    def synchronized(session: Any, name: str, ds: xr.Dataset) -> None:
        me = threading.get_ident()
        if me not in first_write:
            first_write.add(me)
            started.wait()
        real(session, name, ds)

    monkeypatch.setattr(st_write, "_write_group", synchronized)
    times = _months("2025-02-01", 2)
    outcome: dict[int, str | BaseException] = {}

    def run(seed: int) -> None:
        try:
            outcome[seed] = st.write_run(
                "demo", _groups(times, seed), store=s3_root, message=f"run {seed}",
                provenance=PROV,
            )  # fmt: skip
        except BaseException as err:
            outcome[seed] = err

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    monkeypatch.setattr(st_write, "_write_group", real)
    assert len(first_write) == 2, "both runs went through the synchronized _write_group"

    winners = [s for s, o in outcome.items() if isinstance(o, str)]
    losers = [s for s, o in outcome.items() if isinstance(o, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, outcome
    err = outcome[losers[0]]
    assert isinstance(err, StoreError), repr(err)
    assert "another run of demo committed" in str(err) and "re-run" in str(err)
    assert "\n" not in str(err)

    hist = st.history("demo", store=s3_root)
    assert [h["snapshot_id"] for h in hist] == [outcome[winners[0]], base]
    # the store is exactly the winner's run: written alone into a fresh store, it is equal
    alone = f"{s3_root}-alone"
    st.write_run("demo", _groups(_months("2025-01-01", 2), 0), store=alone, message="base",
                 provenance=PROV)  # fmt: skip
    st.write_run("demo", _groups(times, winners[0]), store=alone, message="w", provenance=PROV)
    got, want = _store_values(s3_root), _store_values(alone)
    for g in st.GROUPS:
        xr.testing.assert_equal(got[g], want[g])

    # the loser re-runs and now wins on top of the winner
    monkeypatch.setattr(st_write, "_write_group", real)
    st.write_run("demo", _groups(times, losers[0]), store=s3_root, message="again",
                 provenance=PROV)  # fmt: skip
    assert len(st.history("demo", store=s3_root)) == 3
    np.testing.assert_array_equal(
        st.open_indicators("demo", store=s3_root)["ntl_sum"].values[1:],
        make_tiles(times, losers[0])["ntl_sum"].values,
    )


def test_expire_on_s3(s3_root: str, s3_server: MotoS3) -> None:
    ids = [
        st.write_run(
            "demo",
            {"tiles": make_tiles(_months("2025-01-01", 2), seed)},
            store=s3_root,
            message=f"v{seed}",
            provenance=PROV,
        )
        for seed in range(3)
    ]
    prefix = s3_root.removeprefix(f"s3://{s3_server.bucket}/") + "/demo/"

    def n_objects() -> int:
        listing = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)  # type: ignore[attr-defined]
        return int(listing.get("KeyCount", 0))

    before = n_objects()
    out = st.expire("demo", store=s3_root, keep=1)
    assert sorted(out["expired"]) == sorted(ids[:2])
    assert out["snapshots_deleted"] == 2
    assert n_objects() < before
    assert [h["snapshot_id"] for h in st.history("demo", store=s3_root)] == [ids[2]]
    np.testing.assert_array_equal(
        st.open_indicators("demo", store=s3_root)["ntl_sum"].values,
        make_tiles(_months("2025-01-01", 2), 2)["ntl_sum"].values,
    )
    with pytest.raises(StoreError, match="no version"):
        st.open_indicators("demo", store=s3_root, version=ids[0])
