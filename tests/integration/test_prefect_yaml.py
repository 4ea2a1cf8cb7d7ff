"""``prefect.yaml`` deploys what exists: real flows, parameters they accept, valid schedules.

No server is started here: the file is parsed as ``prefect deploy`` would read it, each
entrypoint is imported, and every deployment's parameters are checked against the
flow's signature and validated by the flow itself.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

from payesh.city import cities_dir, load_city
from payesh.cli import EARTH_SEARCH

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SEED_CITIES = {"khorramabad", "khoy", "urmia", "maku"}
WORK_POOL = "payesh-process"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def deployments(config: dict[str, Any]) -> list[dict[str, Any]]:
    deps = config.get("deployments")
    assert isinstance(deps, list) and deps, "prefect.yaml declares no deployment"
    return deps


def _flow_of(entrypoint: str) -> Flow[Any, Any]:
    path, _, name = entrypoint.partition(":")
    assert name, f"entrypoint {entrypoint!r} is not 'path/to/file.py:function'"
    file = REPO / path
    assert file.is_file(), f"entrypoint {entrypoint!r}: {file} does not exist"
    module = importlib.import_module(".".join(Path(path).with_suffix("").parts))
    obj = getattr(module, name, None)
    assert isinstance(obj, Flow), f"entrypoint {entrypoint!r} is not a @flow"
    return obj


def test_project_steps(config: dict[str, Any]) -> None:
    assert not config.get("build"), "no build steps: the worker runs the checkout"
    assert not config.get("push"), "no push steps: the worker runs the checkout"
    pull = config.get("pull")
    assert isinstance(pull, list) and len(pull) == 1
    (step,) = pull
    assert list(step) == ["prefect.deployments.steps.set_working_directory"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"]


def test_prefect_reads_it(config: dict[str, Any]) -> None:
    """Prefect's own model of prefect.yaml accepts it, and ignores none of our keys."""
    models = pytest.importorskip("prefect.cli.deploy._models")
    parsed = models.PrefectYamlModel.model_validate(config)
    assert len(parsed.deployments) == len(config["deployments"])
    known = set(models.DeploymentConfig.model_fields)
    for dep in config["deployments"]:
        assert set(dep) <= known, f"{dep['name']}: keys Prefect ignores: {set(dep) - known}"


def test_every_seed_city_is_monitored(deployments: list[dict[str, Any]]) -> None:
    names = [d["name"] for d in deployments]
    assert len(names) == len(set(names)), f"duplicate deployment names: {names}"
    assert {f"monitor-{c}" for c in SEED_CITIES} <= set(names)


def test_entrypoints_are_flows_and_accept_the_parameters(
    deployments: list[dict[str, Any]],
) -> None:
    for dep in deployments:
        flow = _flow_of(dep["entrypoint"])
        params = dep.get("parameters") or {}
        signature = inspect.signature(flow.fn).parameters
        unknown = set(params) - set(signature)
        assert not unknown, f"{dep['name']}: {flow.name} takes no parameter {sorted(unknown)}"
        required = {n for n, p in signature.items() if p.default is inspect.Parameter.empty}
        missing = required - set(params)
        assert not missing, f"{dep['name']}: required parameters missing: {sorted(missing)}"
        flow.validate_parameters(params)  # the types, as the worker will check them


def test_monitor_deployments_target_real_cities(deployments: list[dict[str, Any]]) -> None:
    for dep in deployments:
        params = dep.get("parameters") or {}
        if "city" not in params:
            continue
        city = params["city"]
        assert (cities_dir() / f"{city}.yaml").is_file(), f"{dep['name']}: no manifest {city}"
        assert load_city(city).name == city
        assert dep["name"] == f"monitor-{city}"
        assert params["catalog"] == EARTH_SEARCH
        assert params["store"]


def test_work_pool(deployments: list[dict[str, Any]]) -> None:
    for dep in deployments:
        assert dep["work_pool"]["name"] == WORK_POOL, dep["name"]


def test_schedules_are_valid_weekly_crons(deployments: list[dict[str, Any]]) -> None:
    for dep in deployments:
        schedules = dep.get("schedules")
        assert schedules, f"{dep['name']} has no schedule"
        for item in schedules:
            cron = item["cron"]
            # Prefect's own validation: the cron string and the time zone
            CronSchedule(cron=cron, timezone=item.get("timezone"))
            minute, hour, dom, month, dow = cron.split()
            assert (dom, month) == ("*", "*"), f"{dep['name']}: {cron!r} is not weekly"
            assert dow.isdigit() and 0 <= int(dow) <= 6, f"{dep['name']}: {cron!r} not weekly"
            assert minute.isdigit() and hour.isdigit(), f"{dep['name']}: {cron!r} not weekly"
