"""The real store against an in-memory model (a Hypothesis ``RuleBasedStateMachine``).

Rules drive :mod:`payesh.store` on a local directory the way runs and operators do:
commit a run of random months and values, re-run the months of the last run (they are
replaced), re-run with nothing new (the run keys in the history say so and nothing is
committed), try a run with bad input (refused, nothing written), read the latest
version, read a remembered version by snapshot id, read an expired one (refused), expire
old versions, and open the whole tree. The model is a dict of months -> values per
commit. After every step the invariants hold: the history (ids, order, messages) is the
model's, and the latest read equals the model's latest state: no month lost, none
added, none half-written. Every remembered, unexpired snapshot id reads back its exact
values whenever it is drawn.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from payesh import store
from payesh.errors import StoreError
from payesh.runkeys import KEYS_ATTR, changed_months, committed_keys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "reliability"))
import figures

CITY = "fsm"
MONTHS = pd.date_range("2025-01-01", periods=6, freq="MS")
NY, NX = 2, 3
CRS = "EPSG:32638"

State = dict[str, np.ndarray]  # "YYYY-MM" -> (NY, NX) float32 ntl_sum; "trend" -> ntl_trend


def _month(i: int) -> str:
    return MONTHS[i].strftime("%Y-%m")


def _values(seed: int, month: str) -> np.ndarray:
    rng = np.random.default_rng([seed, int(month.replace("-", ""))])
    v = rng.random((NY, NX)).astype("float32") * 100
    v[rng.random((NY, NX)) < 0.2] = np.nan  # missing tiles are NaN and must stay NaN
    return v


def _trend(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((NY, NX))


def _tiles(months: list[str], seed: int) -> xr.Dataset:
    times = pd.DatetimeIndex([pd.Timestamp(f"{m}-01") for m in months])
    return xr.Dataset(
        {
            "ntl_sum": (
                ("time", "tile_y", "tile_x"),
                np.stack([_values(seed, m) for m in months]),
                {"units": "nW cm-2 sr-1"},
            ),
            "ntl_trend": (("tile_y", "tile_x"), _trend(seed), {"units": "1 a-1"}),
        },
        coords={
            "time": times,
            "tile_y": 4_270_000.0 - (np.arange(NY) + 0.5) * 1000,
            "tile_x": 500_000.0 + (np.arange(NX) + 0.5) * 1000,
        },
        attrs={"crs": CRS},
    )


def _key(seed: int, month: str) -> str:
    return f"{seed}:{month}"


class StoreMachine(RuleBasedStateMachine):
    """payesh.store on a temporary directory, checked against a list of commits."""

    base: Path = Path(tempfile.gettempdir())
    steps = 0
    snapshots_checked = 0

    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="store-fsm-", dir=self.base))
        # the model: commits oldest first, each (snapshot id, message, run keys, state after)
        self.commits: list[tuple[str, str, dict[str, str], State]] = []
        self.expired: set[str] = set()
        self.last_months: list[str] = []

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    @property
    def latest(self) -> State:
        return self.commits[-1][3] if self.commits else {}

    def _commit(self, months: list[str], seed: int) -> str:
        keys = {m: _key(seed, m) for m in months}
        message = f"run {seed} {','.join(months)}"
        sid = store.write_run(
            CITY,
            {"tiles": _tiles(months, seed)},
            store=self.root,
            message=message,
            provenance={KEYS_ATTR: {"tiles": keys}, "seed": seed},
        )
        state = dict(self.latest)
        state.update({m: _values(seed, m) for m in months})
        state["trend"] = _trend(seed)  # time-less variables are replaced whole
        assert sid not in {c[0] for c in self.commits}  # a new snapshot every commit
        self.commits.append((sid, message, keys, state))
        self.last_months = months
        return sid

    def _check(self, ds: xr.Dataset, state: State, sid: str) -> None:
        months = sorted(k for k in state if k != "trend")
        got = [pd.Timestamp(t).strftime("%Y-%m") for t in ds["time"].values]
        assert got == months, (got, months)  # no month lost, none added, in order
        values = ds["ntl_sum"].values
        for i, m in enumerate(months):
            np.testing.assert_array_equal(values[i], state[m], err_msg=f"month {m}")
        np.testing.assert_array_equal(ds["ntl_trend"].values, state["trend"])
        assert ds.attrs[store.SNAPSHOT_ATTR] == sid
        type(self).snapshots_checked += 1

    # ------------------------------------------------------------------ rules

    @rule(
        target=snapshots,
        months=st.lists(st.integers(0, len(MONTHS) - 1), min_size=1, max_size=3, unique=True),
        seed=st.integers(0, 2**16),
    )
    def commit_run(self, months: list[int], seed: int) -> str:
        type(self).steps += 1
        return self._commit(sorted(_month(i) for i in months), seed)

    @precondition(lambda self: bool(self.commits))
    @rule(target=snapshots, seed=st.integers(0, 2**16))
    def rerun_same_months(self, seed: int) -> str:
        type(self).steps += 1
        return self._commit(list(self.last_months), seed)

    @precondition(lambda self: bool(self.commits))
    @rule()
    def rerun_with_nothing_new(self) -> None:
        """The months' committed run keys match: the flow would end without a commit."""
        type(self).steps += 1
        committed = committed_keys(CITY, str(self.root))
        model: dict[str, str] = {}
        for sid, _, keys, _ in self.commits:
            if sid not in self.expired:
                model.update(keys)
        assert committed == ({"tiles": model} if model else {})
        planned = {"tiles": {m: model[m] for m in self.last_months if m in model}}
        assert changed_months(planned, committed) == {}
        # and a month whose inputs changed is seen as new
        changed = {"tiles": {self.last_months[0]: "another-input"}}
        assert changed_months(changed, committed) == {"tiles": [self.last_months[0]]}

    @rule(bad=st.sampled_from(["duplicate_month", "no_units", "mid_month", "other_grid"]))
    def bad_run_is_refused(self, bad: str) -> None:
        """Bad input raises a StoreError; the invariants then show nothing was written."""
        type(self).steps += 1
        ds = _tiles([_month(0), _month(1)], 7)
        if bad == "duplicate_month":
            ds = ds.assign_coords(time=[MONTHS[0], MONTHS[0]])
        elif bad == "no_units":
            ds["ntl_sum"].attrs.pop("units")
        elif bad == "mid_month":
            ds = ds.assign_coords(time=MONTHS[:2] + pd.Timedelta(days=14))
        else:
            if not self.commits:
                return  # a first run defines the grid: nothing to differ from yet
            ds = ds.assign_coords(tile_x=ds["tile_x"].values + 1000.0)
        with pytest.raises(StoreError):
            store.write_run(CITY, {"tiles": ds}, store=self.root, message="bad", provenance={})

    @precondition(lambda self: bool(self.commits))
    @rule()
    def read_latest(self) -> None:
        type(self).steps += 1
        ds = store.open_indicators(CITY, store=self.root)
        self._check(ds, self.latest, self.commits[-1][0])

    @rule(sid=snapshots)
    def read_snapshot(self, sid: str) -> None:
        type(self).steps += 1
        if sid in self.expired:
            with pytest.raises(StoreError, match="no version"):
                store.open_indicators(CITY, store=self.root, version=sid)
            return
        state = next(c[3] for c in self.commits if c[0] == sid)
        self._check(store.open_indicators(CITY, store=self.root, version=sid), state, sid)

    @precondition(lambda self: len(self.commits) > 1)
    @rule(keep=st.integers(1, 3))
    def expire_old_versions(self, keep: int) -> None:
        type(self).steps += 1
        alive = [c[0] for c in self.commits if c[0] not in self.expired]
        result = store.expire(CITY, store=self.root, keep=keep)
        want = list(reversed(alive))[keep:]  # all but the `keep` newest, newest first
        assert sorted(result["expired"]) == sorted(want)
        assert result["kept"] == min(keep, len(alive))
        self.expired.update(want)

    @precondition(lambda self: bool(self.commits))
    @rule()
    def open_tree(self) -> None:
        type(self).steps += 1
        tree = store.open_tree(CITY, store=self.root)
        sid = self.commits[-1][0]
        assert tree.attrs[store.SNAPSHOT_ATTR] == sid
        assert set(tree.children) == {"tiles"}
        ds = tree["tiles"].to_dataset()
        ds.attrs[store.SNAPSHOT_ATTR] = sid
        self._check(ds, self.latest, sid)

    @rule(sid=consumes(snapshots))
    def forget_a_snapshot_id(self, sid: str) -> None:
        """A user stops remembering an id (keeps the bundle small)."""

    # ------------------------------------------------------------------ invariants

    @invariant()
    def history_matches_the_model(self) -> None:
        if not self.commits:
            with pytest.raises(StoreError, match="no store"):
                store.history(CITY, store=self.root)
            return
        got = store.history(CITY, store=self.root)
        want = [(c[0], c[1]) for c in reversed(self.commits) if c[0] not in self.expired]
        assert [(h["snapshot_id"], h["message"]) for h in got] == want
        times = [h["time"] for h in got]
        assert times == sorted(times, reverse=True)  # newest first
        keys = json.loads(got[0]["metadata"]["provenance"][KEYS_ATTR])
        assert keys == {"tiles": self.commits[-1][2]}


def test_store_against_model(tmp_path: Path) -> None:
    StoreMachine.base = tmp_path
    StoreMachine.steps = StoreMachine.snapshots_checked = 0
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=figures.scale(6, 100),
            stateful_step_count=figures.scale(15, 40),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    assert StoreMachine.snapshots_checked > 0
    figures.record(
        "stateful",
        "tests/unit/test_store_stateful.py::test_store_against_model",
        steps=StoreMachine.steps,
        snapshots_checked=StoreMachine.snapshots_checked,
    )
