"""Every (scenario, engine) pair, observed now and compared with the committed observation.

These are regression tests of the frameworks: the baseline (``baseline/results.json``, a
copy of the committed ``reports/results.json`` that ships with the package) holds what the
engines did when the report was last generated. When an upgrade changes a semantic, the
failing test names the scenario, the engine and what changed; in the source checkout,
regenerate the report and copy its results.json to the baseline to accept it.
"""

from __future__ import annotations

import json
import os

import pytest

from compare.engines import ENGINES
from compare.observations import collect, describe_change
from compare.program import SCENARIO_DTYPE
from compare.scenarios import catalog
from compare.tests.locations import BASELINE, REFRESH_BASELINE
from compare.tests.plugin import require_run

PAIRS = [(s.id, e) for s in catalog().values() for e in ENGINES if e in s.implementations]


@pytest.fixture(scope="session")
def observations(engine_runs):
    return collect(list(ENGINES), engine_runs)


@pytest.fixture(scope="session")
def baseline():
    if not os.path.exists(BASELINE):
        pytest.fail(f"{BASELINE} is missing: run `python -m compare report --out reports` and {REFRESH_BASELINE}")
    with open(BASELINE) as f:
        results = json.load(f)
    return {(r["scenario"], r["engine"], r["init"], r["variant"]): r for r in results["results"]}


@pytest.mark.dtypes(SCENARIO_DTYPE)
@pytest.mark.parametrize("scenario,engine", PAIRS, ids=[f"{s}-{e}" for s, e in PAIRS])
def test_scenario_semantics_unchanged(engine_runs, observations, baseline, scenario, engine):
    require_run(engine_runs, engine, SCENARIO_DTYPE)
    fresh = [r for r in observations if r["scenario"] == scenario and r["engine"] == engine]
    assert fresh
    problems = []
    for record in fresh:
        where = f"{scenario} on {engine} (init {record['init']}{', ' + record['variant'] if record['variant'] else ''})"
        if record["status"] == "failed":
            problems.append(f"{where} failed: {record['error']}")
            continue
        old = baseline.get((scenario, engine, record["init"], record["variant"]))
        if old is None or old["status"] in ("unavailable", "failed"):
            problems.append(f"{where}: no observation in the baseline; regenerate reports/ and {REFRESH_BASELINE}")
            continue
        diff = describe_change(old, record)
        if diff:
            problems.append(f"{where}: {diff}")
    assert not problems, "\n".join(problems)


def test_every_engine_is_implemented_or_not_applicable_with_a_reason():
    """The catalog speaks about every engine: an implementation, or a stated reason why the
    idiom does not exist there (the report prints it), never both, never neither; claims
    name only the scenario's own variants and engines."""
    from compare.scenarios import ENGINE_IDS

    for scenario in catalog().values():
        for engine in ENGINE_IDS:
            implemented = engine in scenario.implementations
            reason = scenario.not_applicable.get(engine, "")
            assert implemented != bool(reason.strip()), (scenario.id, engine)
        for claim in scenario.claims:
            assert set(claim.engines) <= set(ENGINE_IDS), (scenario.id, claim.id)
            assert claim.variants is None or set(claim.variants) <= set(scenario.variants), (scenario.id, claim.id)


@pytest.mark.dtypes(SCENARIO_DTYPE)
def test_first_article_numbers_reproduced_to_four_decimals(engine_runs, observations):
    """The article prints D's BN weight 0.0110 and bias 0.0010 after one Adam step from the
    constant init; torch must reproduce both to four decimals."""
    require_run(engine_runs, "torch", SCENARIO_DTYPE)
    (record,) = [r for r in observations if r["scenario"] == "scope.g_loss_d_optimizer"
                 and r["engine"] == "torch" and r["init"] == "constant"]
    assert {round(v, 4) for v in record["values"]["D.bn.gamma"]} == {0.011}
    assert {round(v, 4) for v in record["values"]["D.bn.beta"]} == {0.001}
