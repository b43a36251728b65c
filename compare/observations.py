"""Observation records for results.json: one per (scenario, engine, init, variant).

Engines that ran contribute what they observed; the rest get a record that says why
there is none (not applicable, unavailable, failed). Claim verdicts are computed here,
from the records, after every engine has reported.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from compare.program import SCENARIO_DTYPE
from compare.scenarios import catalog, verdicts


def placeholder(scenario, engine: str, init: str, variant: str, status: str, reason: str) -> dict:
    return {"scenario": scenario.id, "engine": engine, "init": init, "variant": variant,
            "dtype": scenario.dtype, "status": status, "reason": reason, "error": None,
            "changed": None, "steps": [], "values": {}}


def collect(engines: List[str], runs: Dict, only: Optional[List[str]] = None) -> List[dict]:
    records: List[dict] = []
    for scenario in catalog().values():
        if only is not None and scenario.id not in only:
            continue
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


Key = Tuple[str, str, str, str]


def key(record: dict) -> Key:
    return record["scenario"], record["engine"], record["init"], record["variant"]


def message_fragment(message: str) -> str:
    """The stable part of an exception message: memory addresses removed, length capped."""
    return re.sub(r"0x[0-9a-f]+", "0x?", message)[:200]


def semantics(record: dict) -> dict:
    """What counts as the observed behaviour: status, exception, and which tensors changed,
    overall and per step (with gradient slots where the framework keeps them). Timings,
    losses and other values are left out: they are measurements, not semantics."""
    error = record.get("error")
    return {
        "status": record["status"],
        "error": None if not error else (error["type"], message_fragment(error.get("message", ""))),
        "changed": record.get("changed"),
        "steps": [(s["label"], s["changed"], s.get("grads"),
                   None if "error" not in s else (s["error"]["type"], message_fragment(s["error"]["message"])))
                  for s in record.get("steps", [])],
    }


def describe_change(old: dict, new: dict) -> Optional[str]:
    """One line saying how two observations of the same thing differ; None if they agree."""
    a, b = semantics(old), semantics(new)
    lines = []
    for field in ("status", "error", "changed"):
        if a[field] != b[field]:
            lines.append(f"{field}: was {a[field]}, now {b[field]}")
    for i, (x, y) in enumerate(zip(a["steps"], b["steps"])):
        if x != y:
            lines.append(f"step {i} ({y[0]}): was {x[1:]}, now {y[1:]}")
    if len(a["steps"]) != len(b["steps"]):
        lines.append(f"{len(a['steps'])} steps before, {len(b['steps'])} now")
    return "; ".join(lines) or None
