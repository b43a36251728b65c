"""Observation records for results.json: one per (scenario, engine, init, variant).

Engines that ran contribute what they observed; the rest get a record that says why
there is none (not applicable, unavailable, failed). Claim verdicts are computed here,
from the records, after every engine has reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    """The stable part of an exception message: one line, memory addresses removed, length capped."""
    return re.sub(r"0x[0-9a-fA-F]+", "0x?", " ".join(message.split()))[:200]


def _exception(error: Optional[dict]) -> Optional[Tuple[str, str]]:
    return None if not error else (error["type"], message_fragment(error.get("message", "")))


def _tensor_kinds(changed: Optional[dict]) -> Optional[Dict[str, Dict[str, frozenset]]]:
    """{net: {kind: tensors}}, empty kinds dropped, so that a file without a kind (an older
    schema) reads the same as one where it is empty."""
    if changed is None:
        return None
    return {net: {kind: frozenset(names) for kind, names in kinds.items() if names}
            for net, kinds in changed.items()}


def semantics(record: dict) -> dict:
    """What counts as the observed behaviour: status, exception, and which tensors changed,
    overall and per step (with gradient slots where the framework keeps them). Timings,
    losses and other values are left out: they are measurements, not semantics."""
    return {
        "status": record["status"],
        "error": _exception(record.get("error")),
        "changed": _tensor_kinds(record.get("changed")),
        "steps": [{"label": s["label"], "changed": _tensor_kinds(s["changed"]), "grads": s.get("grads"),
                   "error": _exception(s.get("error"))} for s in record.get("steps", [])],
    }


# What a difference's phrase starts with where it is not "WHAT: ": "status ok -> raised", and
# nothing where the record named before it is the thing that differs.
BARE = {"status": "status ", "verdict": "", "observation": "", "step": ""}


@dataclass(frozen=True)
class Difference:
    """One way two observations of the same thing differ. ``old`` or ``new`` is None where
    the thing (the step) exists in only one of them; ``step`` counts from 1."""

    what: str
    old: Optional[str]
    new: Optional[str]
    step: Optional[int] = None
    label: Optional[str] = None

    @property
    def how(self) -> str:
        prefix = BARE.get(self.what, f"{self.what}: ")
        if self.old is None:
            return prefix + "only in the new run"
        if self.new is None:
            return prefix + "only in the old run"
        return f"{prefix}{self.old} -> {self.new}"

    @property
    def phrase(self) -> str:
        return self.how if self.step is None else f'step {self.step} "{self.label}": {self.how}'


# How a tensor listed under each kind of changed[net] reads, and how it reads when not listed.
MOVED = {"params": ("moved", "did not move"), "state": ("changed", "did not change"),
         "rounding": ("moved by rounding", "did not move")}


def _moved(kind: str) -> Tuple[str, str]:
    return MOVED.get(kind, (f"listed under {kind}", f"not listed under {kind}"))


def _kind_phrase(kinds: List[str], other: List[str]) -> str:
    if kinds:
        return " and ".join(_moved(k)[0] for k in kinds)
    return " and ".join(dict.fromkeys(_moved(k)[1] for k in other))


def _unrecorded(what: str, a, b, where: dict) -> Optional[List[Difference]]:
    """The differences when either side recorded nothing (None); None when both recorded something."""
    if a is not None and b is not None:
        return None
    if a is b:
        return []
    return [Difference(what, "not recorded" if a is None else "recorded",
                       "not recorded" if b is None else "recorded", **where)]


def _tensor_differences(a, b, where: dict) -> List[Difference]:
    missing = _unrecorded("tensor changes", a, b, where)
    if missing is not None:
        return missing
    out = []
    for net in sorted(a.keys() | b.keys()):
        old, new = a.get(net, {}), b.get(net, {})
        for tensor in sorted(set().union(*old.values(), *new.values())):
            was = sorted(k for k, names in old.items() if tensor in names)
            now = sorted(k for k, names in new.items() if tensor in names)
            if was != now:
                out.append(Difference(tensor, _kind_phrase(was, now), _kind_phrase(now, was), **where))
    return out


def _grad_differences(a: Optional[dict], b: Optional[dict], where: dict) -> List[Difference]:
    missing = _unrecorded("gradients", a, b, where)
    if missing is not None:
        return missing
    return [Difference(f"{t} gradient", a.get(t, "not recorded"), b.get(t, "not recorded"), **where)
            for t in sorted(a.keys() | b.keys()) if a.get(t) != b.get(t)]


def _exception_phrase(error: Optional[Tuple[str, str]]) -> str:
    return "none" if error is None else f"{error[0]}: {error[1]}"


def _outcome(s: dict) -> str:
    return s["status"] + (f" ({_exception_phrase(s['error'])})" if s["error"] else "")


def differences(old: dict, new: dict) -> List[Difference]:
    """How two observations of the same thing differ, in semantics (claims aside); [] if they agree."""
    a, b = semantics(old), semantics(new)
    out = []
    if _outcome(a) != _outcome(b):
        out.append(Difference("status", _outcome(a), _outcome(b)))
    out += _tensor_differences(a["changed"], b["changed"], {})
    if len(a["steps"]) != len(b["steps"]):
        out.append(Difference("step count", str(len(a["steps"])), str(len(b["steps"]))))
    for i, (x, y) in enumerate(zip(a["steps"], b["steps"]), 1):
        where = {"step": i, "label": y["label"]}
        if x["label"] != y["label"]:
            out.append(Difference("label", f'"{x["label"]}"', f'"{y["label"]}"', **where))
        out += _tensor_differences(x["changed"], y["changed"], where)
        out += _grad_differences(x["grads"], y["grads"], where)
        if x["error"] != y["error"]:
            out.append(Difference("exception", _exception_phrase(x["error"]), _exception_phrase(y["error"]),
                                  **where))
    common = min(len(a["steps"]), len(b["steps"]))
    for i, step in enumerate(a["steps"][common:], common + 1):
        out.append(Difference("step", step["label"], None, step=i, label=step["label"]))
    for i, step in enumerate(b["steps"][common:], common + 1):
        out.append(Difference("step", None, step["label"], step=i, label=step["label"]))
    return out


def describe_change(old: dict, new: dict) -> Optional[str]:
    """How two observations of the same thing differ, one phrase per difference; None if they agree."""
    return "; ".join(d.phrase for d in differences(old, new)) or None
