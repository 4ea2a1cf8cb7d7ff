"""``make bench``'s script end to end, on a 2 km city: what it records is what the
README's table is made from, so a change that breaks one of its three measurements, the
page cache made ready before each, or the results file shows here rather than in a
10-minute benchmark run.

The figures themselves are not asserted (2 km on one core, beside other tests); their
presence, units and consistency are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_entry(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own server
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        *("--sizes", "2", "--threads", "1", "--no-warm-up", "--note", "test"),
        *("--results", str(tmp / "results"), "--work", str(tmp / "work")),
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list((tmp / "results").glob("*.json"))
    assert len(files) == 1, files
    entries = json.loads(files[0].read_text())
    assert len(entries) == 1
    assert "recorded in" in proc.stdout
    return entries[0]


def test_one_run_records_floor_flow_and_peer_with_the_machine(bench_entry: dict) -> None:
    e = bench_entry
    assert e["mode"] == "sizes" and e["threads"] == 1 and e["note"] == "test"
    assert e["prefect"] == "server" and e["page_cache"] == "warm"
    assert e["machine"]["cpus_usable"] >= 1 and e["machine"]["cpu_model"]
    assert len(e["git"]) >= 7
    (row,) = e["rows"]
    assert row["size_km"] == 2 and row["city"]["months"] == 12
    floor, flow, peer = row["decode_floor"], row["payesh"], row["peer"]
    for m in (floor, flow, peer):
        assert m["seconds"] > 0 and m["cpu_seconds"] > 0 and m["max_rss_mb"] > 50
        assert m["cores"] == 1
        # warmed just before: all of the city's files in the page cache
        assert m["page_cache_before"] == 1.0
    # every asset the run needs, of the three collections
    assert set(floor["per_collection"]) == {"sentinel-2-l2a", "landsat-c2-l2", "viirs-ntl-monthly"}
    assert floor["pixels"] > 0 and floor["assets"] > 100
    # the flow committed a store, through the server process
    assert "tiles × 12 months" in flow["summary"]
    assert flow["prefect_api"].startswith("server process")
    assert flow["prefect_server_peak_mb"] > 0
    assert flow["stages"]


def test_the_ratios_are_the_recorded_times_divided(bench_entry: dict) -> None:
    (row,) = bench_entry["rows"]
    r = bench_entry["ratios"]["by_size"]["2"]
    floor, flow, peer = (row[k]["seconds"] for k in ("decode_floor", "payesh", "peer"))
    assert r["payesh_over_floor"] == pytest.approx(flow / floor, abs=0.01)
    assert r["peer_over_payesh"] == pytest.approx(peer / flow, abs=0.01)
    assert 0 <= r["classify_share"] <= 1
