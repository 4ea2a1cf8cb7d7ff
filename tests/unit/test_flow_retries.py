"""Prefect retries a network task only when payesh did not already give up."""

from __future__ import annotations

from flows.monitor import plan_task, retry_unless_final, s2_month_task
from prefect.states import Failed

from payesh.errors import ManifestError
from payesh.sources.http import SourceUnavailable


def test_payesh_errors_are_final_other_failures_are_retried() -> None:
    gave_up = Failed(data=SourceUnavailable("http://x/a.tif: gave up after 5 attempts"))
    bad_input = Failed(data=ManifestError("demo.yaml: key 'crs': required key is missing"))
    worker_died = Failed(data=OSError("connection to the Dask worker lost"))
    assert not retry_unless_final(None, None, gave_up)
    assert not retry_unless_final(None, None, bad_input)
    assert retry_unless_final(None, None, worker_died)
    # and the network tasks use it
    assert plan_task.retry_condition_fn is retry_unless_final
    assert s2_month_task.retry_condition_fn is retry_unless_final
