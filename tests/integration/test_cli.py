"""The real ``payesh`` command: help, listing, and one clear line for bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration


def payesh(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("payesh")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
        check=False,
    )  # fmt: skip


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("payesh: error: ")
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_help_and_cities() -> None:
    for cmd in ([], ["run"], ["demo"], ["export"], ["cities"], ["history"], ["train-builtup"]):
        proc = payesh(*cmd, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "usage: payesh" in proc.stdout
    proc = payesh("cities")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"khorramabad", "khoy", "maku", "urmia", "demo"} <= set(names)


@pytest.fixture
def copied_store(monitored_tiny_city: tuple[Any, Path, dict[str, Any]], tmp_path: Path) -> Path:
    _, store, _ = monitored_tiny_city
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    return dst


def _snapshot(store: Path) -> dict[str, int]:
    return {
        str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()
    }


def test_bad_input_is_one_line_and_store_untouched(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], copied_store: Path, tmp_path: Path
) -> None:
    gen, _, _ = monitored_tiny_city
    before = _snapshot(copied_store)
    common = ["--start", "2025-01", "--end", "2025-08", "--store", str(copied_store)]

    # a broken manifest
    broken = tmp_path / "cities" / "broken.yaml"
    broken.parent.mkdir()
    data = yaml.safe_load(Path(gen.manifest).read_text())
    data["name"] = "broken"
    data["crs"] = "EPSG:4326"
    data.pop("permits", None)
    data.pop("consumption", None)
    broken.write_text(yaml.safe_dump(data))
    assert_one_clear_line(
        payesh("run", str(broken), "--catalog", str(gen.catalog), *common), str(broken), "'crs'"
    )
    # a catalog path that does not exist
    missing = tmp_path / "nowhere" / "catalog.json"
    assert_one_clear_line(
        payesh("run", str(gen.manifest), "--catalog", str(missing), *common), str(missing)
    )
    # a catalog with no items over the city: a real city far away
    assert_one_clear_line(
        payesh("run", "khorramabad", "--catalog", str(gen.catalog), *common),
        "items over khorramabad",
    )
    # an unknown collection
    assert_one_clear_line(
        payesh(
            "run",
            str(gen.manifest),
            "--catalog",
            str(gen.catalog),
            "--collections",
            "sentinel-2-l2a,sentinel-1-grd",
            *common,
        ),
        "unknown collection 'sentinel-1-grd'",
    )
    # a bad month
    assert_one_clear_line(
        payesh(
            "run",
            str(gen.manifest),
            "--catalog",
            str(gen.catalog),
            "--start",
            "2025-13",
            "--store",
            str(copied_store),
        ),
        "2025-13",
    )
    # Black Marble night lights without an Earthdata token: said before anything is read
    no_token = {k: v for k, v in os.environ.items() if k != "EARTHDATA_TOKEN"}
    assert_one_clear_line(
        payesh(
            "run", str(gen.manifest), "--catalog", str(gen.catalog), "--night-lights",
            "blackmarble", *common, env=no_token,
        ),
        "EARTHDATA_TOKEN is not set",
    )  # fmt: skip
    # a month cache that cannot be written
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert_one_clear_line(
        payesh(
            "run", str(gen.manifest), "--catalog", str(gen.catalog), *common,
            env={**os.environ, "PAYESH_MONTH_CACHE": str(blocker / "months")},
        ),
        "month cache", "PAYESH_MONTH_CACHE",
    )  # fmt: skip
    assert _snapshot(copied_store) == before


def test_export_from_store(
    monitored_tiny_city: tuple[Any, Path, dict[str, Any]], copied_store: Path, tmp_path: Path
) -> None:
    gen, _, _ = monitored_tiny_city
    out = tmp_path / "tiles.csv"
    proc = payesh(
        "export",
        str(gen.manifest),
        "tiles",
        "--format",
        "csv",
        "-o",
        str(out),
        "--store",
        str(copied_store),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[0].startswith("tile,time,lon,lat,")
    out = tmp_path / "sites.geojson"
    proc = payesh(
        "export",
        str(gen.manifest),
        "sites",
        "--format",
        "geojson",
        "-o",
        str(out),
        "--store",
        str(copied_store),
    )
    assert proc.returncode == 0, proc.stderr
    assert '"FeatureCollection"' in out.read_text()
    proc = payesh(
        "export",
        str(gen.manifest),
        "nosuchlayer",
        "--format",
        "csv",
        "-o",
        str(tmp_path / "x.csv"),
        "--store",
        str(copied_store),
    )
    assert_one_clear_line(proc, "nosuchlayer")
    proc = payesh(
        "export",
        "khoy",
        "tiles",
        "--format",
        "csv",
        "-o",
        str(tmp_path / "k.csv"),
        "--store",
        str(tmp_path / "empty"),
    )
    assert_one_clear_line(proc, "khoy")


def test_demo_as_the_readme_runs_it(tmp_path: Path) -> None:
    """``make demo``'s command, whole: a city generated offline, monitored through a
    Prefect flow run, committed, mapped, exported and scored against its truth."""
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = payesh("demo", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = proc.stdout
    assert "16 tiles × 12 months (2025-01..2025-12)" in text
    assert "snapshot " in text and str(out / "store") in text
    # the scenario's unregistered load is flagged, and the sites are scored against truth
    load = next(line for line in text.splitlines() if line.startswith("Unregistered load"))
    assert load.endswith("(found)"), load
    assert "sites found:" in text and "precision" in text
    assert "Electricity estimate — city total" in text and "MWh" in text
    png = out / "overview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    exports = out / "exports"
    assert (exports / "demo-tiles.csv").read_text().startswith("tile,time,")
    assert '"FeatureCollection"' in (exports / "demo-sites.geojson").read_text()
    assert any((exports / "evidence").iterdir())
    assert (out / "store" / "demo").is_dir()
