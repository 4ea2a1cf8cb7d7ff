"""``prefect.yaml`` deploys what exists: real flows, parameters they accept, valid schedules.

No server is started here: the file is parsed as ``prefect deploy`` would read it, each
entrypoint is imported, and every deployment's parameters are checked against the
flow's signature and validated by the flow itself.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
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
ENTRYPOINTS = {
    "monitor": "flows/monitor.py:monitor_city",
    "backfill": "flows/monitor.py:backfill_city",
}
#: cron schedules: slug → (day-of-month, day-of-week), the sensor's cadence
SENSOR_CRON = {"landsat": ("*", "3"), "viirs": ("10", "*")}
#: interval schedules: slug → seconds
SENSOR_INTERVAL_S = {"sentinel-2": 5 * 86400}


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


def test_every_seed_city_is_monitored_and_can_be_backfilled(
    deployments: list[dict[str, Any]],
) -> None:
    names = [d["name"] for d in deployments]
    assert len(names) == len(set(names)), f"duplicate deployment names: {names}"
    assert {f"monitor-{c}" for c in SEED_CITIES} <= set(names)
    assert {f"backfill-{c}" for c in SEED_CITIES} <= set(names)
    for dep in deployments:
        kind = dep["name"].split("-")[0]
        assert dep["entrypoint"] == ENTRYPOINTS[kind], dep["name"]


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
        assert dep["name"].endswith(f"-{city}")
        assert params["catalog"] == EARTH_SEARCH
        # Earth Search holds no night lights: they come from NASA Black Marble
        assert params["night_lights"] == "blackmarble"
        assert params["store"]


def test_monitor_runs_a_rolling_window_and_backfill_a_fixed_period(
    deployments: list[dict[str, Any]],
) -> None:
    from payesh.period import Period
    from payesh.runkeys import backfill_periods, run_period

    for dep in deployments:
        params = dep["parameters"]
        if dep["name"].startswith("monitor-"):
            assert "start" not in params and "end" not in params, dep["name"]
            period = run_period(None, None, params["months_back"])
            assert len(period.months) == params["months_back"] == 12
        else:
            pieces = backfill_periods(Period.parse(params["start"], params["end"]), params["step"])
            assert len(pieces) == 5, dep["name"]  # 2021..2025, one run per year


def test_work_pool(deployments: list[dict[str, Any]]) -> None:
    for dep in deployments:
        assert dep["work_pool"]["name"] == WORK_POOL, dep["name"]


def test_schedules_follow_the_sensors(deployments: list[dict[str, Any]]) -> None:
    """Monitors: one valid cron per sensor at its cadence; backfills: started by hand."""
    hours: list[str] = []
    for dep in deployments:
        schedules = dep.get("schedules") or []
        if dep["name"].startswith("backfill-"):
            assert not schedules, f"{dep['name']} is started by hand, not scheduled"
            continue
        assert {s.get("slug") for s in schedules} == set(SENSOR_CRON) | set(SENSOR_INTERVAL_S)
        for item in schedules:
            assert item["active"] is True
            if item["slug"] in SENSOR_INTERVAL_S:
                assert item["interval"] == SENSOR_INTERVAL_S[item["slug"]], dep["name"]
                assert item["anchor_date"], dep["name"]
                continue
            cron = item["cron"]
            # Prefect's own validation: the cron string and the time zone
            CronSchedule(cron=cron, timezone=item.get("timezone"))
            minute, hour, dom, month, dow = cron.split()
            assert (dom, dow) == SENSOR_CRON[item["slug"]], f"{dep['name']}: {cron!r}"
            assert month == "*" and minute.isdigit() and hour.isdigit(), f"{dep['name']}: {cron!r}"
            hours.append(hour)
    assert len(hours) == len(set(hours)) * 2, f"cities are not staggered: hours {hours}"


#: schedule slug → (shortest, longest) gap between runs over a year, days
SENSOR_GAPS_DAYS = {"sentinel-2": (5, 5), "landsat": (7, 7), "viirs": (28, 31)}


def test_schedules_fire_at_the_sensors_pace(deployments: list[dict[str, Any]]) -> None:
    """The server's own schedule arithmetic: gaps between a year of scheduled runs."""
    from datetime import UTC, datetime, timedelta

    from prefect.server.schemas.schedules import CronSchedule as ServerCron
    from prefect.server.schemas.schedules import IntervalSchedule as ServerInterval

    start = datetime(2025, 1, 1, tzinfo=UTC)
    for dep in deployments:
        for item in dep.get("schedules") or []:
            if "interval" in item:
                sched: Any = ServerInterval(
                    interval=timedelta(seconds=item["interval"]),
                    anchor_date=datetime.fromisoformat(item["anchor_date"]),
                    timezone=item["timezone"],
                )
            else:
                sched = ServerCron(cron=item["cron"], timezone=item["timezone"])
            fires = sched.get_dates(n=400, start=start, end=datetime(2026, 1, 1, tzinfo=UTC))
            if inspect.iscoroutine(fires):  # sync-compatible: a coroutine when a loop runs
                fires = asyncio.run(fires)
            gaps = [(b - a).total_seconds() / 86400 for a, b in itertools.pairwise(fires)]
            lo, hi = SENSOR_GAPS_DAYS[item["slug"]]
            assert lo <= min(gaps) and max(gaps) <= hi, (dep["name"], item["slug"], gaps)
            if item["slug"] == "sentinel-2":
                assert len(fires) == 73, len(fires)  # 365 / 5
