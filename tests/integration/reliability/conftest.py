"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flow_zygote import FlowZygote, close_zygote, flow_zygote


@pytest.fixture(scope="session")
def zygote(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowZygote]:
    """The process-wide flow zygote (imports once, forks a child per run), on the
    session's Prefect API; shared by the crash and the concurrency tests."""
    z = flow_zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    close_zygote()
