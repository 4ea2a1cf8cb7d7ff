"""Bad input never modifies a store, and a damaged chunk never reads back silently.

Each bad-input case (a store location that is not a store, a version that does not
exist, a layer or a month that is not in the store) must raise ONE clear
``StoreError``/``ExportError`` naming the value — through the API and through the CLI
(one line on stderr, non-zero exit) — and leave the store byte-for-byte and
version-for-version as it was.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_store import PROV, make_pixels, make_sites, make_tiles

from payesh import store as st
from payesh.cli import main
from payesh.errors import ExportError, StoreError
from payesh.export import export_layer

TIMES = pd.date_range("2025-01-01", periods=2, freq="MS")


def fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the lock file included), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    groups = {"tiles": make_tiles(TIMES), "pixels": make_pixels(TIMES), "sites": make_sites()}
    st.write_run("demo", groups, store=root, message="run", provenance=PROV)
    return root


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of a one-commit store of city ``demo``."""
    dst = tmp_path / "store"
    shutil.copytree(pristine, dst)
    return dst


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI, expect failure, and return its single stderr line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("payesh: error: ")
    return lines[0]


# --------------------------------------------------------------------------- locations


def test_a_directory_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "random"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "notes.txt").write_text("my notes\n")
    before = fingerprint(root)
    where = str(root / "demo")
    for call in (
        lambda: st.open_indicators("demo", store=root),
        lambda: st.history("demo", store=root),
        lambda: st.write_run(
            "demo", {"tiles": make_tiles(TIMES)}, store=root, message="m", provenance=PROV
        ),
    ):
        with pytest.raises(StoreError, match="is not a payesh store") as err:
            call()
        assert where in str(err.value) and "\n" not in str(err.value)
    assert "not a payesh store" in cli_error(capsys, "history", "demo", "--store", str(root))
    out = tmp_path / "t.csv"
    line = cli_error(
        capsys, "export", "demo", "tiles", "--format", "csv", "-o", str(out), "--store", str(root)
    )
    assert where in line
    assert fingerprint(root) == before  # no lock file, no repository, notes untouched
    assert not out.exists()


def test_a_file_as_store_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store.txt"
    root.write_text("not a store\n")
    with pytest.raises(StoreError, match=r"store root .*store\.txt is a file"):
        st.open_indicators("demo", store=root)
    with pytest.raises(StoreError, match="is a file"):
        st.write_run("demo", {"tiles": make_tiles(TIMES)}, store=root, message="m", provenance={})
    assert "is a file" in cli_error(capsys, "history", "demo", "--store", str(root))
    assert root.read_text() == "not a store\n"
    # the city's own path is a file
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "demo").write_text("x")
    with pytest.raises(StoreError, match=r"r/demo is a file, not a payesh store"):
        st.history("demo", store=tmp_path / "r")


def test_a_city_store_given_as_the_root(store: Path) -> None:
    before = fingerprint(store)
    with pytest.raises(StoreError, match=r"store/demo is itself a city's store — give its parent"):
        st.open_indicators("demo", store=store / "demo")
    assert fingerprint(store) == before


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("version", ["0" * 20, "not-a-snapshot"])
def test_a_version_that_does_not_exist(
    store: Path, version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, hist = fingerprint(store), st.history("demo", store=store)
    out = tmp_path / "x.tif"
    for layer, fmt in (("ntl_sum", "cog"), ("sites", "geojson"), ("tiles", "csv")):
        line = cli_error(capsys, "export", "demo", layer, "--format", fmt, "-o", str(out),
                         "--store", str(store), "--version", version)  # fmt: skip
        assert f"no version {version!r}" in line
    assert not out.exists()
    for call in (
        lambda: st.open_indicators("demo", store=store, version=version),
        lambda: st.open_sites("demo", store=store, version=version),
    ):
        with pytest.raises(StoreError, match="no version") as err:
            call()
        assert repr(version) in str(err.value) and "\n" not in str(err.value)
    assert fingerprint(store) == before
    assert st.history("demo", store=store) == hist


# --------------------------------------------------------------------------- layers, times


def test_a_layer_or_month_not_in_the_store(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, hist = fingerprint(store), st.history("demo", store=store)
    ds = st.open_indicators("demo", store=store)
    out = tmp_path / "out" / "x.tif"
    with pytest.raises(ExportError, match="unknown layer 'heat'"):
        export_layer(ds, "heat", out, format="cog")
    with pytest.raises(ExportError, match=r"month 2024-12 is not in the store \(months: 2025-01"):
        export_layer(ds, "ntl_sum", out, format="cog", time="2024-12")
    with pytest.raises(ExportError, match="invalid month '2025-13'"):
        export_layer(ds, "ntl_sum", out, format="cog", time="2025-13")
    with pytest.raises(StoreError, match="no group 'ntl'"):
        st.open_indicators("demo", store=store, group="ntl")

    common = ["-o", str(out), "--store", str(store)]
    line = cli_error(capsys, "export", "demo", "heat", "--format", "cog", *common)
    assert "'heat'" in line and "ntl_sum" in line  # names the value and what exists
    line = cli_error(
        capsys, "export", "demo", "ntl_sum", "--format", "cog", "--time", "2024-12", *common
    )
    assert "2024-12" in line
    line = cli_error(capsys, "export", "demo", "builtup_prob", "--format", "csv", *common)
    assert "'csv'" in line and "builtup_prob" in line
    line = cli_error(capsys, "export", "demo", "sites", "--format", "cog", *common)
    assert "'cog'" in line
    assert not out.exists()
    assert fingerprint(store) == before
    assert st.history("demo", store=store) == hist

    # and the good request works on the same store, read-only
    assert main(["export", "demo", "ntl_sum", "--format", "cog", "--time", "2025-02", *common]) == 0
    assert out.exists()
    assert fingerprint(store) == before


def test_cli_history_and_export_of_a_version(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = st.history("demo", store=store)[0]["snapshot_id"]
    later = pd.date_range("2025-02-01", periods=1, freq="MS")
    st.write_run("demo", {"tiles": make_tiles(later, seed=8)}, store=store, message="feb again",
                 provenance=PROV)  # fmt: skip
    assert main(["history", "demo", "--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[0] == first and lines[1].endswith("run")
    assert lines[0].endswith("feb again")

    # exporting the first version gives its February, not the re-run's
    out = tmp_path / "feb.csv"
    common = ["--format", "csv", "--time", "2025-02", "-o", str(out), "--store", str(store)]
    assert main(["export", "demo", "ntl_sum", *common, "--version", first]) == 0
    old = pd.read_csv(out)["ntl_sum"].to_numpy()
    np.testing.assert_allclose(old, make_tiles(TIMES)["ntl_sum"].values[1].ravel())
    assert main(["export", "demo", "ntl_sum", *common]) == 0
    new = pd.read_csv(out)["ntl_sum"].to_numpy()
    np.testing.assert_allclose(new, make_tiles(later, seed=8)["ntl_sum"].values[0].ravel())


# --------------------------------------------------------------------------- checksums


def test_a_flipped_byte_in_a_chunk_fails_the_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 64  # 16 KiB of noise per month: stored as a chunk object, not inlined
    px = xr.Dataset(
        {
            "builtup_prob": (
                ("time", "y", "x"),
                rng.random((len(TIMES), n, n), dtype="float32"),
                {"units": "1"},
            )
        },
        coords={
            "time": TIMES,
            "y": 4_270_000.0 - (np.arange(n) + 0.5) * 10,
            "x": 500_000.0 + (np.arange(n) + 0.5) * 10,
        },
        attrs={"crs": "EPSG:32638"},
    )
    root = tmp_path / "store"
    st.write_run("demo", {"pixels": px}, store=root, message="m", provenance=PROV)
    good = st.open_indicators("demo", store=root, group="pixels")
    np.testing.assert_array_equal(good["builtup_prob"].values, px["builtup_prob"].values)

    chunks = sorted((root / "demo" / "chunks").iterdir(), key=lambda p: p.stat().st_size)
    victim = chunks[-1]  # the biggest: a month of builtup_prob
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = st.open_indicators("demo", store=root, group="pixels")
    with pytest.raises(Exception, match=r"(?i)checksum") as err:
        bad["builtup_prob"].values  # noqa: B018  (reading is the test)
    assert not isinstance(err.value, AssertionError)
    assert isinstance(bad, xr.Dataset)
