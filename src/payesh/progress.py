"""Progress of long steps, shown by whoever runs payesh (the CLI shows a bar).

Library and flow code call :func:`report`; by default nothing is shown. The CLI installs
a reporter with :func:`use_reporter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Reporter", "report", "use_reporter"]

Reporter = Callable[[str, int, int], None]
"""``(step description, done, total)``."""

_reporter: Reporter | None = None


def report(step: str, done: int, total: int) -> None:
    """Tell the current reporter that ``done`` of ``total`` units of ``step`` are finished."""
    if _reporter is not None:
        _reporter(step, done, total)


@contextmanager
def use_reporter(reporter: Reporter | None) -> Iterator[None]:
    """Install ``reporter`` for the duration of the block."""
    global _reporter
    previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        _reporter = previous
