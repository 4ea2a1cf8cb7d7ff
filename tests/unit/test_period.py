from __future__ import annotations

import pandas as pd
import pytest

from payesh.errors import PayeshError
from payesh.period import Period


def test_months_inclusive_and_stop_exclusive() -> None:
    p = Period.parse("2024-11", "2025-02")
    assert list(p.months.strftime("%Y-%m")) == ["2024-11", "2024-12", "2025-01", "2025-02"]
    assert p.stop == pd.Timestamp("2025-03-01")
    start, stop = p.datetime_range()
    assert start.tzinfo is not None and stop.month == 3


@pytest.mark.parametrize(
    ("s", "e", "text"),
    [
        ("2025-13", "2025-12", "--start"),
        ("2025", "2025-12", "--start"),
        ("2025-05", "2025-01", "before"),
    ],
)
def test_bad_months(s: str, e: str, text: str) -> None:
    with pytest.raises(PayeshError, match=text):
        Period.parse(s, e)
