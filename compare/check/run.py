"""``compare check``: the reference and each Keras engine in processes of their own (the
runner's controlled environment, guardian and timeouts), compared stage by stage; for an
engine that fails, each suspected cause is switched off in a counterfactual run, and only a
run that removes the divergence confirms it."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from compare.check.child import ABANDONED
from compare.check.pairfile import PairError, inspect_file
from compare.check.diagnose import RULES
from compare.check.verdict import compare_side, residual_at
from compare.engines import ENGINES, REFERENCE, parse_engines
from compare.parity import TOLERANCE
from compare.runner import DEFAULT_TIMEOUT, child_environment, in_parallel, run_process, workspace

DTYPES = ("float32", "float64")
ITERATIONS = 10
SCHEMA = 1


class CheckError(ValueError):
    """A usage error: a file that is not a model pair, an unknown engine, a bad option."""


@dataclasses.dataclass
class Child:
    """What one engine process left: its facts and arrays, or why there are none."""

    engine: str
    status: str  # ok, usage, failed, timeout
    reason: str = ""
    folder: str = ""
    facts: Optional[dict] = None
    seconds: float = 0.0

    def arrays(self):
        return np.load(os.path.join(self.folder, "arrays.npz"))


def run_child(engine: str, dtype: str, file: str, folder: str, iterations: int, timeout: float,
              progress: Callable[[str], None], live=None, ref: Optional[str] = None,
              switches: Optional[List[dict]] = None) -> Child:
    """One engine process; a Keras one (``ref`` given) may start before the reference ends:
    it waits for the reference's result, so its limit is the reference's and its own."""
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, "-m", "compare.check.child", engine, dtype, os.path.abspath(file), folder,
               "--iterations", str(iterations)]
    if ref:
        command += ["--ref", ref]
        timeout *= 2
    if switches:
        with open(os.path.join(folder, "switch.json"), "w") as f:
            json.dump(switches, f)
        command += ["--switch", os.path.join(folder, "switch.json")]
    started = time.monotonic()
    code, tail = run_process(command, child_environment(engine, dtype), timeout, f"[{engine} ", progress, live)
    seconds = time.monotonic() - started
    if code is None:
        return Child(engine, "timeout", f"no result within {timeout:.0f} s", folder, seconds=seconds)
    error = os.path.join(folder, "error.json")
    if code == 2 and os.path.exists(error):
        with open(error) as f:
            return Child(engine, "usage", json.load(f)["error"], folder, seconds=seconds)
    facts_path = os.path.join(folder, "facts.json")
    if code != 0 or not os.path.exists(facts_path):
        last = next((line for line in reversed(tail) if line.strip()), "")
        reason = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        return Child(engine, "failed", f"{reason}: {last.strip()}" if last else reason, folder, seconds=seconds)
    with open(facts_path) as f:
        return Child(engine, "ok", folder=folder, facts=json.load(f), seconds=seconds)


def with_reference(engines: Sequence[str], dtype: str, file: str, folder: str, iterations: int, timeout: float,
                   progress: Callable[[str], None], live=None, switches: Optional[List[dict]] = None,
                   jobs: Optional[int] = None):
    """The reference and the Keras engines' processes (``jobs`` at a time beside it), started
    together: a Keras process imports its framework and builds its pair while the reference
    runs, then waits for the reference's result, or ends when told none will come. Returns the
    reference's Child and, where it gave a result, each engine's."""
    ref_folder = os.path.join(folder, REFERENCE)
    os.makedirs(ref_folder, exist_ok=True)
    done: Dict[str, Child] = {}

    def work(engine: str, live) -> None:
        if engine == REFERENCE:
            try:
                done[engine] = run_child(REFERENCE, dtype, file, ref_folder, iterations, timeout, progress, live,
                                         switches=switches)
            finally:
                if done.get(engine) is None or done[engine].status != "ok":
                    open(os.path.join(ref_folder, ABANDONED), "w").close()
            return
        spec = ENGINES[engine]
        if spec.missing():
            done[engine] = Child(engine, "unavailable", f"not installed; install with: {spec.install}")
            return
        if not switches:
            progress(f"[{engine} {dtype}] starting")
        done[engine] = run_child(engine, dtype, file, os.path.join(folder, engine), iterations, timeout, progress,
                                 live, ref=ref_folder, switches=switches)

    in_parallel([REFERENCE, *engines], (jobs or os.cpu_count() or 1) + 1, work, live)
    ref = done[REFERENCE]
    return ref, ({e: done[e] for e in engines if e in done} if ref.status == "ok" else {})


def weights_of(ref: Child):
    return np.load(os.path.join(ref.folder, "weights.npz"))


def judge(ref: Child, child: Child, iterations: int) -> dict:
    return compare_side(child.facts["dtype"], iterations, ref.facts, ref.arrays(), child.facts, child.arrays(),
                        weights_of(ref))


@dataclasses.dataclass
class CheckResult:
    """What ``compare.check`` found: ``verdict`` (PASS, FAIL or ABSTAIN), and per engine its
    verdict, first divergence and causes (``engines``); ``data`` is check.json's content."""

    data: dict

    @property
    def verdict(self) -> str:
        return self.data["verdict"]

    @property
    def engines(self) -> Dict[str, dict]:
        return self.data["engines"]

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def first_divergence(self, engine: str) -> Optional[dict]:
        return self.engines[engine].get("first_divergence")

    def confirmed(self, engine: str) -> List[str]:
        """The ids of the causes a counterfactual run confirmed for ``engine``."""
        return [c["id"] for c in self.engines[engine].get("causes", []) if c.get("confirmed")]

    def summary(self) -> str:
        """One line per engine: its verdict and, where it fails, where and why."""
        from compare.check.page import engine_line

        return "\n".join(engine_line(engine, entry) for engine, entry in self.engines.items())


def keras_engines(engines: Union[None, str, Sequence[str]]) -> List[str]:
    """The Keras engines asked for (torch, the reference, always runs). Raises CheckError."""
    try:
        wanted = parse_engines(engines if engines is None or isinstance(engines, str) else ",".join(engines))
    except ValueError as exc:
        raise CheckError(str(exc))
    wanted = [e for e in wanted if e != REFERENCE]
    if not wanted:
        raise CheckError(f"no Keras engine given; valid: {', '.join(e for e in ENGINES if e != REFERENCE)}")
    return wanted


def validate(file: str, engines, dtype: str, iterations: int) -> List[str]:
    """Everything that can be checked before a process starts. Raises CheckError."""
    if dtype not in DTYPES:
        raise CheckError(f"dtype {dtype!r}: choose {' or '.join(DTYPES)}")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise CheckError(f"iterations {iterations!r}: give a whole number of at least 1")
    try:
        inspect_file(file)
    except PairError as exc:
        raise CheckError(str(exc))
    return keras_engines(engines)


def diagnose(engine: str, dtype: str, file: str, work: str, iterations: int, timeout: float, child: Child,
             result: dict, progress: Callable[[str], None], only: Optional[Sequence[str]] = None,
             jobs: Optional[int] = None) -> List[dict]:
    """Each cause with both sides' settings; each suspect re-run with it switched off. A cause
    is confirmed only where that run brings the first divergence within tolerance.

    The suspects of a round run ``jobs`` at a time (each its reference, then its Keras side).
    Where a confirmed cause's run still fails, the suspects left are tried again with the
    confirmed causes kept off, at the divergence that run found first: two mistakes (BN's
    epsilon and its momentum) are each confirmed where each is the first difference."""
    entries = [{"id": c["id"], "title": c["title"], "switch": c["switch"], "torch": c["torch"], "keras": c["keras"],
                "suspect": c["suspect"], "confirmed": False, "residual": None} for c in child.facts.get("causes", [])]
    switch_of = {c["id"]: c for c in child.facts.get("causes", [])}
    first, kept = result["first_divergence"], []

    def counterfactual(entry: dict, live) -> None:
        cause = switch_of[entry["id"]]
        progress(f"[{engine} {dtype}] switching off {cause['id']} ({cause['switch']})"
                 + (f" with {', '.join(kept)} off" if kept else ""))
        switches = [{"id": i, "torch": switch_of[i]["torch"], "keras": switch_of[i]["keras"]}
                    for i in kept + [cause["id"]]]
        folder = os.path.join(work, f"switch-{len(kept)}-{cause['id']}-{engine}")
        ref, others = with_reference([engine], dtype, file, folder, iterations, timeout, progress, live, switches)
        other = others.get(engine, ref)
        if other.status != "ok":
            entry["not_run"] = other.reason or other.status
            return
        again = judge(ref, other, iterations)
        residual = residual_at(again, first)
        entry.update({"residual": residual, "confirmed": bool(residual <= again["tolerance"]),
                      "switch": cause["switch"], "with": list(kept), "at": first,
                      "verdict_after": again["verdict"], "first_divergence_after": again["first_divergence"],
                      "stages_after": again["stages"]})

    while first is not None:
        suspects = [e for e in entries if e["suspect"] and not e["confirmed"] and (only is None or e["id"] in only)]
        if not suspects:
            break
        in_parallel(suspects, jobs, counterfactual)
        found = next((e for e in suspects if e["confirmed"]), None)  # the first in the causes' order
        if found is None:
            break
        kept.append(found["id"])
        first = found["first_divergence_after"]
    return entries


def rule_suspected(child: Child) -> bool:
    return any(c["suspect"] and c["id"] in RULES for c in child.facts.get("causes", []))


def passes_under_rules(entry: dict) -> None:
    """An engine whose confirmed causes are all framework rules, the last of whose runs is
    within tolerance at every stage, passes under those rules: its first divergence without
    them is kept as ``first_divergence_without_rules``, its stages become that run's."""
    confirmed = [c for c in entry["causes"] if c["confirmed"]]
    if not confirmed or any(c["id"] not in RULES for c in confirmed):
        return
    last = confirmed[-1]
    if last["verdict_after"] != "PASS":
        return
    entry.update({"verdict": "PASS", "rules_applied": [c["id"] for c in confirmed],
                  "first_divergence_without_rules": entry["first_divergence"], "first_divergence": None,
                  "stages_without_rules": entry["stages"], "stages": last["stages_after"]})


def check(file: str, engines=None, dtype: str = "float32", iterations: int = ITERATIONS, out: Optional[str] = None,
          progress: Optional[Callable[[str], None]] = None, timeout: float = DEFAULT_TIMEOUT,
          jobs: Optional[int] = None, diagnosis: bool = True) -> CheckResult:
    """Check the model pair in ``file`` on each Keras engine against PyTorch; with ``out``,
    write check.json, check.md and check.html there. Raises CheckError for a usage error."""
    progress = progress or (lambda line: None)
    wanted = validate(file, engines, dtype, iterations)
    started = time.monotonic()
    entries: Dict[str, dict] = {}
    with workspace("compare-check-") as work:
        progress(f"[{REFERENCE} {dtype}] starting (the reference, run twice)")
        ref, children = with_reference(wanted, dtype, file, work, iterations, timeout, progress, jobs=jobs)
        if ref.status == "usage":
            raise CheckError(ref.reason)
        reference = {"status": ref.status, "reason": ref.reason, "seconds": ref.seconds}
        if ref.status == "ok":
            reference.update({"reproduces": ref.facts["reproduces"], "versions": ref.facts["versions"],
                              "dtype": ref.facts["dtype"]})
        usage = next((c for c in children.values() if c.status == "usage"), None)
        if usage:
            raise CheckError(usage.reason)
        reproduces = ref.status == "ok" and ref.facts["reproduces"]["max_abs_diff"] <= TOLERANCE[ref.facts["dtype"]]
        for engine in wanted:
            child = children.get(engine)
            if child is None:
                entries[engine] = {"status": "not run", "reason": f"the reference {ref.status}: {ref.reason}",
                                   "verdict": "ABSTAIN"}
                continue
            entry = {"status": child.status, "reason": child.reason, "seconds": child.seconds}
            if child.status != "ok":
                entries[engine] = {**entry, "verdict": "ABSTAIN"}
                continue
            result = judge(ref, child, iterations)
            entry.update({k: v for k, v in result.items() if k != "records"})
            entry.update({"versions": child.facts["versions"], "dtype": child.facts["dtype"],
                          "keras_layers": child.facts["keras_layers"], "layer_outputs": child.facts["layer_outputs"],
                          "tensors": result["records"]})
            if not reproduces:
                entry["verdict"] = "ABSTAIN"
            elif result["verdict"] == "FAIL" and (diagnosis or rule_suspected(child)):
                entry["causes"] = diagnose(engine, dtype, file, work, iterations, timeout, child, result, progress,
                                           only=None if diagnosis else RULES, jobs=jobs)
                entry["explained"] = any(c["confirmed"] for c in entry["causes"])
                passes_under_rules(entry)
            else:
                entry["causes"] = [{"id": c["id"], "title": c["title"], "switch": c["switch"], "torch": c["torch"],
                                    "keras": c["keras"], "suspect": c["suspect"], "confirmed": False, "residual": None}
                                   for c in child.facts.get("causes", [])]
            entries[engine] = entry
            progress(f"[{engine} {dtype}] {entry['verdict']}")
    ran = [e for e in entries.values() if e["status"] != "unavailable"]
    verdicts = {e["verdict"] for e in ran}
    verdict = ("ABSTAIN" if not reproduces or not ran else "FAIL" if "FAIL" in verdicts
               else "ABSTAIN" if "ABSTAIN" in verdicts else "PASS")
    data = {"schema": SCHEMA, "file": os.path.abspath(file), "dtype": dtype, "iterations": iterations,
            "verdict": verdict, "reference": reference, "engines": entries,
            "tolerances": dict(TOLERANCE), "seconds": time.monotonic() - started}
    result = CheckResult(data)
    if out:
        from compare.check.page import write_pages

        write_pages(out, data)
    return result
