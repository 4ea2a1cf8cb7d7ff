"""The WHOLE monitor flow is SIGKILLed at seeded random points; the store survives every time.

The flow (Prefect flow + tasks, its local Dask cluster, the commit) runs on the tiny city
in a child forked from a zygote that imported everything once (see ``flow_zygote``);
every child talks to the session's one Prefect API. A store holding a committed run of
January–February is copied, and the flow re-runs February and adds March into the copy;
it is killed after a delay drawn in one of ``KILLS`` equal slices of 0 … 1.25 × the
clean run's duration (seeded), so the kills spread from start-up to after the commit.

After each kill: the store opens, its history is the base history or that plus exactly
one commit, every group (and the root attributes) equals the old version or the new one
exactly — never a mix, and a plain re-run (``force`` off, as an operator would do it)
converges to the clean run's store, value for value.
"""

from __future__ import annotations

import random
import shutil
import time
from typing import Any

import pytest
from figures import record, scale, variant
from flow_zygote import (
    FlowZygote,
    job,
    references,
    snapshot_ids,
    values,
    which,
)

pytestmark = pytest.mark.integration

SEED = 20261123
KILLS = scale(3, 50)


def test_flow_sigkilled_at_random_points(
    zygote: FlowZygote, tiny_city: Any, tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    refs = references(zygote, tiny_city, tmp_path_factory.mktemp("refs"))
    work = tmp_path_factory.mktemp("kills")
    rng = random.Random(SEED)
    landed = {"before_commit": 0, "after_commit": 0}
    reruns = {"committed": 0, "nothing new": 0}
    t_start = time.monotonic()
    for trial in range(KILLS):
        root = work / f"trial{trial:02d}"
        shutil.copytree(refs.base, root)
        delay = 1.25 * refs.run_s * (trial + rng.random()) / KILLS
        pid = zygote.start(job(tiny_city, root, hold=True))
        time.sleep(delay)
        zygote.kill(pid)

        ids = snapshot_ids(root)  # the store opens, and its history is one of two
        got = values(root)
        if ids == refs.base_ids:
            assert which(got, refs) == "old", f"trial {trial} ({delay:.1f} s)"
            landed["before_commit"] += 1
        else:
            assert ids[1:] == refs.base_ids, f"trial {trial}: history {ids} vs {refs.base_ids}"
            assert which(got, refs) == "new", f"trial {trial} ({delay:.1f} s)"
            landed["after_commit"] += 1

        # the re-run: the dead run's lock does not block, and the store converges
        status, _, _ = zygote.run(job(tiny_city, root))
        reruns[status.replace("_", " ")] += 1
        assert len(snapshot_ids(root)) == len(refs.base_ids) + 1, f"trial {trial}"
        assert which(values(root), refs) == "new", f"trial {trial}: re-run"
        shutil.rmtree(root)
    elapsed = time.monotonic() - t_start

    assert sum(landed.values()) == KILLS
    if variant() == "long":
        assert landed["before_commit"] > 0 and landed["after_commit"] > 0, landed
    per_kill = elapsed / KILLS
    print(f"\nclean run {refs.run_s:.1f} s; {landed}; re-runs {reruns}; {per_kill:.1f} s a kill")
    record(
        "crash",
        request.node.nodeid,
        kills=KILLS,
        before_commit=landed["before_commit"],
        after_commit=landed["after_commit"],
        reruns_converged=KILLS,
        reruns_nothing_new=reruns["nothing new"],
        data_lost=0,
        run_s=round(refs.run_s, 2),
        seconds_per_kill=round(per_kill, 2),
    )
