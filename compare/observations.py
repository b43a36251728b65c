"""Observation records for results.json: one per (scenario, engine, init, variant).

Engines that ran contribute what they observed; the rest get a record that says why
there is none (not applicable, unavailable, failed). Claim verdicts are computed here,
from the records, after every engine has reported.
"""

from __future__ import annotations

from typing import Dict, List

from compare.program import SCENARIO_DTYPE
from compare.scenarios import catalog, verdicts


def placeholder(scenario, engine: str, init: str, variant: str, status: str, reason: str) -> dict:
    return {"scenario": scenario.id, "engine": engine, "init": init, "variant": variant,
            "dtype": scenario.dtype, "status": status, "reason": reason, "error": None,
            "changed": None, "steps": [], "values": {}}


def collect(engines: List[str], runs: Dict) -> List[dict]:
    records: List[dict] = []
    for scenario in catalog().values():
        for engine in engines:
            run = runs.get((engine, SCENARIO_DTYPE))
            observed = {}
            if run is not None and run.status == "ok":
                observed = {(o["init"], o["variant"]): o for o in run.facts.get("observations", [])
                            if o["scenario"] == scenario.id}
            for init in scenario.inits:
                for variant in scenario.variants:
                    reason = scenario.status_without_run(engine)
                    if reason is not None:
                        records.append(placeholder(scenario, engine, init, variant, "not-applicable", reason))
                    elif run is None:
                        records.append(placeholder(scenario, engine, init, variant, "unavailable",
                                                   f"scenarios run in {SCENARIO_DTYPE}; this run had none"))
                    elif run.status != "ok":
                        status = "unavailable" if run.status == "unavailable" else "failed"
                        records.append(placeholder(scenario, engine, init, variant, status, run.reason))
                    elif (init, variant) not in observed:
                        records.append(placeholder(scenario, engine, init, variant, "failed",
                                                   "the engine reported no observation"))
                    else:
                        records.append(observed[(init, variant)])
    by_id = catalog()
    for record in records:
        record["claims"] = verdicts(by_id[record["scenario"]], record, records)
    return records
