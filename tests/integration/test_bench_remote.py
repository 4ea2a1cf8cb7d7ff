"""``benchmarks/remote.py`` end to end on a 2 km city (three months, the months part on
the first), one core, a server 10 ms away: what it records is what benchmarks/README.md's
"Remote imagery" table is made from. The figures are not asserted (one core, beside
other tests); what must hold whatever the timing is: every remote month equals the local
one, payesh keeps more requests in flight than it has cores, and the flows ran against
the STAC API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_remote_benchmark_records_payesh_the_peer_and_the_flows(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PAYESH_IO_THREADS")}
    argv = [sys.executable, str(ROOT / "benchmarks" / "remote.py")]
    argv += ["--size", "2", "--months", "1", "--end", "2025-03", "--threads", "1", "--flow"]
    argv += ["--latency-ms", "10"]
    argv += ["--results", str(tmp_path / "results"), "--work", str(tmp_path / "work" / "new")]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = (tmp_path / "results").glob("*-remote.json")
    (entry,) = json.loads(path.read_text())
    assert entry["size_km"] == 2 and entry["threads"] == 1 and entry["s2_scenes"] >= 1
    (row,) = entry["rows"]
    assert row["latency_ms"] == 10
    cores, payesh = row["payesh_io_cores"], row["payesh"]
    assert cores["same_as_local"] and payesh["same_as_local"]
    assert cores["io_threads"] == 1 and payesh["io_threads"] > 1
    assert cores["most_in_flight"] <= 2 < payesh["most_in_flight"]
    assert cores["requests"] > 0 and payesh["requests"] > 0
    for peer in (row["peer_load_s2"], row["peer_load_s2_io"]):
        assert peer["seconds"] > 0 and peer["requests"] > 0
    local, remote = entry["flows"]
    assert local["latency_ms"] is None and local["local"]["seconds"] > 0
    assert remote["latency_ms"] == 10
    for flow in (remote["io_cores"], remote["default"]):
        assert flow["seconds"] > 0 and flow["max_rss_mb"] > 50
        assert flow["requests"] > 0  # it read through the latency server, not the files
    # the whole flow, Sentinel-2, Landsat and VIIRS months at once: io_threads requests at most
    assert remote["io_cores"]["most_in_flight"] <= 1
    assert remote["default"]["most_in_flight"] > 2
