"""Monitoring periods: whole calendar months, given as ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from payesh.errors import PayeshError

__all__ = ["Period"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _parse_month(text: str, what: str) -> pd.Timestamp:
    m = _MONTH.match(text.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise PayeshError(f"{what} {text!r} is not a month; write it as YYYY-MM, e.g. 2025-01")
    return pd.Timestamp(int(m.group(1)), int(m.group(2)), 1)


@dataclass(frozen=True)
class Period:
    """Months ``start`` … ``end``, both inclusive (month-start timestamps, naive UTC)."""

    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def parse(cls, start: str, end: str) -> Period:
        """From ``YYYY-MM`` strings; raises :class:`PayeshError` naming a bad value."""
        s, e = _parse_month(start, "--start"), _parse_month(end, "--end")
        if e < s:
            raise PayeshError(f"--end {end} is before --start {start}")
        return cls(s, e)

    @property
    def months(self) -> pd.DatetimeIndex:
        """Month starts of the period."""
        return pd.date_range(self.start, self.end, freq="MS")

    @property
    def stop(self) -> pd.Timestamp:
        """First instant after the period (exclusive end)."""
        return self.end + pd.offsets.MonthBegin(1)

    def datetime_range(self) -> tuple[datetime, datetime]:
        """``(start, stop)`` as timezone-aware UTC datetimes, stop exclusive."""
        return (
            self.start.to_pydatetime().replace(tzinfo=UTC),
            self.stop.to_pydatetime().replace(tzinfo=UTC),
        )

    def month_of(self, times: np.ndarray) -> np.ndarray:
        """Month start of each timestamp in ``times`` (datetime64)."""
        return np.asarray(pd.DatetimeIndex(times).to_period("M").to_timestamp())

    def __str__(self) -> str:
        return f"{self.start:%Y-%m}..{self.end:%Y-%m}"
