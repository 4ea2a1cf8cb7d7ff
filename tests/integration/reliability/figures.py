"""Figures for the reliability page (docs/reliability.md), recorded by the tests themselves.

Every reliability test calls :func:`record` with what it did (faults injected, kills
survived, inputs tried, data lost). Records are appended, one JSON object per line, to
``data/reliability/figures-<variant>.jsonl``; ``make reliability`` runs the long variant
and renders the page from them (``tests/integration/reliability/render.py``).

The variant is ``short`` in ``make test`` and ``long`` when ``PAYESH_RELIABILITY=long``
(``make reliability``): tests size their campaigns with :func:`scale`, so the same test
runs in both, only with more trials in the long one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "data" / "reliability"


def variant() -> str:
    """``long`` under ``make reliability`` (``PAYESH_RELIABILITY=long``), else ``short``."""
    return "long" if os.environ.get("PAYESH_RELIABILITY", "").lower() == "long" else "short"


def scale(short: int, long: int) -> int:
    """The campaign size for this variant: ``short`` in ``make test``, ``long`` otherwise."""
    return long if variant() == "long" else short


def record(guarantee: str, test: str, **figures: Any) -> None:
    """Append one record: the guarantee checked, the test's node id, its figures."""
    OUT.mkdir(parents=True, exist_ok=True)
    row = {
        "guarantee": guarantee,
        "test": test,
        "variant": variant(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **figures,
    }
    with (OUT / f"figures-{variant()}.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
