"""How many threads payesh's own thread pools use."""

from __future__ import annotations

import os

__all__ = ["default_threads"]

MAX_THREADS = 16


def default_threads() -> int:
    """``$PAYESH_THREADS`` if set, else the machine's cores (at most 16).

    The compiled classifier and the aligned Sentinel-2 reader size their pools with
    this; set it to share a machine, or to measure scaling with cores.
    """
    value = os.environ.get("PAYESH_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"PAYESH_THREADS={value!r} is not a whole number") from None
        if n < 1:
            raise ValueError(f"PAYESH_THREADS={value!r} must be at least 1")
        return n
    return min(MAX_THREADS, os.cpu_count() or 1)
