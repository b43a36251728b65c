"""Observations belong to the framework versions, not to the thread count: the scenarios run
again with two threads per framework must give exactly the observations of the session's
one-thread run (status, exceptions, which tensors moved at each step, gradient slots, claim
verdicts).

A thread count changes the order of summation, so only rounding noise; where it shows is a
bias before a training BatchNorm, whose gradient is rounding noise by construction. The
scope and detach families step G and D through such biases in every engine's own gradient
idiom, in a fraction of a second each, and run again here, but for scope.zero_grad_then_step,
whose four variants clear gradients before steps that scope.g_step takes and cost more than
the rest of the family together. The freeze family asks what `trainable` and `compile`
decide, which no thread count touches, and is most of the scenario time: it runs with one
thread only."""

from __future__ import annotations

import pytest

from compare.engines import ENGINES
from compare.observations import collect, describe_change, key
from compare.program import SCENARIO_DTYPE
from compare.runner import run_engines
from compare.scenarios import catalog
from compare.tests.plugin import require_run

pytestmark = pytest.mark.slow
THREADED = [s for s in catalog() if not s.startswith("freeze.") and s != "scope.zero_grad_then_step"]


@pytest.fixture(scope="module")
def two_thread_observations(tmp_path_factory, engine_runs):
    engines = [e for e in ENGINES if engine_runs[(e, SCENARIO_DTYPE)].status == "ok"]
    runs = run_engines(engines, [SCENARIO_DTYPE], str(tmp_path_factory.mktemp("threads")), parity=False, threads=2,
                       scenarios=THREADED)
    return runs, collect(engines, runs, only=THREADED)


@pytest.mark.dtypes(SCENARIO_DTYPE)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_two_threads_give_the_observations_of_one(engine_runs, two_thread_observations, engine):
    require_run(engine_runs, engine, SCENARIO_DTYPE)
    runs, observations = two_thread_observations
    run = runs[(engine, SCENARIO_DTYPE)]
    assert run.status == "ok", f"{run.reason}\n" + "\n".join(run.stderr_tail)
    # it really ran with another thread setting, as the framework itself reports it
    assert run.facts["threads"] != engine_runs[(engine, SCENARIO_DTYPE)].facts["threads"]
    one = {key(r): r for r in collect(list(ENGINES), engine_runs, only=THREADED) if r["engine"] == engine}
    two = {key(r): r for r in observations if r["engine"] == engine}
    assert one.keys() == two.keys()
    problems = [f"{' '.join(k)}: {describe_change(one[k], two[k])}" for k in one if describe_change(one[k], two[k])]
    problems += [f"{' '.join(k)}: claim {a['claim']} {a['verdict']} -> {b['verdict']}"
                 for k in one for a, b in zip(one[k]["claims"], two[k]["claims"]) if a != b]
    assert not problems, "\n".join(problems)
