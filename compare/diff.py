"""``python -m compare diff OLD.json NEW.json``: what changed between two runs.

Compares observations (status, exception, which tensors changed, per step), claim verdicts
and parity verdicts; a record present in only one file is a change too. Timings, values,
dates and versions are ignored. Exit 1 when anything changed, 0 when nothing did; a file
that cannot be read, or a record that is not what a results.json holds, is an error.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from compare.observations import Difference, differences

SCHEMAS = ("compare.results/1", "compare.results/2")
OBSERVATION_KEY = ("scenario", "engine", "init", "variant")
PARITY_KEY = ("engine", "dtype", "config", "stage", "quantity")
# Every change has these fields in --json; those that do not apply to its kind are null.
FIELDS = ("kind",) + OBSERVATION_KEY + PARITY_KEY[1:] + ("step", "label", "what", "old", "new")


class ResultsError(ValueError):
    """A file that is not a results.json this tool can read; the message is one line."""


@dataclass(frozen=True)
class Change:
    """One change: which record (``key``, the record's identifying fields) and how it differs."""

    kind: str  # "observation", "claim" or "parity"
    key: Tuple[Tuple[str, str], ...]
    difference: Difference

    @property
    def where(self) -> str:
        fields = dict(self.key)
        if self.kind == "parity":
            return "parity " + " ".join(fields[f] for f in PARITY_KEY)
        parts = [fields["scenario"], fields["engine"], f"init={fields['init']}"]
        if fields["variant"]:
            parts.append(f"variant={fields['variant']}")
        return "  ".join(parts)

    @property
    def how(self) -> str:
        return self.difference.phrase

    def line(self) -> str:
        """``scope.g_step  torch  init=constant  step 2 "optimizer_D.step()": D.conv1.kernel: moved -> did not move``"""
        return self.where + ("  " if self.difference.step is not None else ": ") + self.how

    def as_json(self) -> Dict[str, object]:
        d = self.difference
        values = dict(self.key, kind=self.kind, step=d.step, label=d.label, what=d.what, old=d.old, new=d.new)
        return {f: values.get(f) for f in FIELDS}


def _key(record: dict, fields: Tuple[str, ...]) -> Tuple[Tuple[str, str], ...]:
    """What identifies a record: (field, value) for each of ``fields``."""
    return tuple((f, record[f]) for f in fields)


def _verdict(holds: bool) -> str:
    return "holds" if holds else "does-not-hold"


def _presence(old: dict, new: dict) -> list:
    """(key, old value or None, new value or None) for every key in either, in key order."""
    return [(k, old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())]


def changes(old: dict, new: dict) -> List[Change]:
    """Every observation, claim verdict and parity verdict that changed, appeared or disappeared.
    Both files must have passed ``validate`` (``load`` does that)."""
    out: List[Change] = []
    old_obs = {_key(r, OBSERVATION_KEY): r for r in old["results"]}
    new_obs = {_key(r, OBSERVATION_KEY): r for r in new["results"]}
    for k, a, b in _presence(old_obs, new_obs):
        if a is None or b is None:
            status = (None if r is None else r["status"] for r in (a, b))
            out.append(Change("observation", k, Difference("observation", *status)))
            continue
        out += [Change("observation", k, d) for d in differences(a, b)]
        old_claims = {c["claim"]: c["verdict"] for c in a["claims"]}
        new_claims = {c["claim"]: c["verdict"] for c in b["claims"]}
        for claim, x, y in _presence(old_claims, new_claims):
            if x != y:
                out.append(Change("claim", k, Difference(f"claim {claim}", x, y)))
    old_parity = {_key(r, PARITY_KEY): _verdict(r["holds"]) for r in old["parity"]}
    new_parity = {_key(r, PARITY_KEY): _verdict(r["holds"]) for r in new["parity"]}
    for k, x, y in _presence(old_parity, new_parity):
        if x != y:
            out.append(Change("parity", k, Difference("verdict", x, y)))
    return out


def summary(found: List[Change]) -> str:
    counts = {kind: sum(c.kind == kind for c in found) for kind in ("observation", "claim", "parity")}
    return (f"{len(found)} change{'s' if len(found) != 1 else ''}: {counts['observation']} in observations, "
            f"{counts['claim']} in claim verdicts, {counts['parity']} in parity verdicts")


# Reading and checking the files.

def load(path: str) -> dict:
    """The results file at ``path``, checked; ResultsError names the file and what is wrong."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then rejects it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot open ({exc.strerror or exc})")
    try:
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise ResultsError(f"{path}: is a folder, not a results.json")
            if not stat.S_ISREG(mode):
                raise ResultsError(f"{path}: not a regular file")
            raw = f.read()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text (byte {exc.start})")
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    except RecursionError:
        raise ResultsError(f"{path}: not a results.json (JSON nested too deeply)")
    except ValueError as exc:  # e.g. an integer past the digit limit
        raise ResultsError(f"{path}: not JSON ({' '.join(str(exc).split())})")
    validate(data, path)
    return data


class _Invalid(Exception):
    """A field that is not what it should be; validate adds the file and the record."""


def _field(record: dict, name: str, types, what: str, optional: bool = False):
    """record[name], which must be one of ``types`` (None if optional and absent)."""
    if optional and name not in record:
        return None
    if name not in record or not isinstance(record[name], types):
        raise _Invalid(f"field {name!r} missing or not {what}")
    return record[name]


def _string_list(value, name: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"{name} is not a list of strings")


def _check_changed(value: Optional[dict], name: str) -> None:
    if value is None:
        return
    for net, kinds in value.items():
        if not isinstance(kinds, dict):
            raise _Invalid(f"{name}.{net} is not an object")
        for kind, names in kinds.items():
            _string_list(names, f"{name}.{net}.{kind}")


def _check_error(value: Optional[dict], name: str) -> None:
    if value is not None and not (isinstance(value.get("type"), str) and isinstance(value.get("message"), str)):
        raise _Invalid(f"{name} is not null or {{type: string, message: string}}")


def _check_observation(record: dict) -> None:
    _field(record, "status", str, "a string")
    _check_error(_field(record, "error", (dict, type(None)), "null or an object"), "error")
    _check_changed(_field(record, "changed", (dict, type(None)), "null or an object"), "changed")
    for i, step in enumerate(_field(record, "steps", list, "a list")):
        where = f"steps[{i}]"
        if not isinstance(step, dict):
            raise _Invalid(f"{where} is not an object")
        try:
            _field(step, "label", str, "a string")
            _check_changed(_field(step, "changed", dict, "an object"), "changed")
            grads = _field(step, "grads", (dict, type(None)), "null or an object", optional=True)
            if grads is not None and not all(isinstance(v, str) for v in grads.values()):
                raise _Invalid("grads has a value that is not a string")
            _check_error(_field(step, "error", (dict, type(None)), "null or an object", optional=True), "error")
        except _Invalid as exc:
            raise _Invalid(f"{where}: {exc}")
    seen = set()
    for i, claim in enumerate(_field(record, "claims", list, "a list")):
        if not (isinstance(claim, dict) and isinstance(claim.get("claim"), str)
                and isinstance(claim.get("verdict"), str)):
            raise _Invalid(f"claims[{i}] is not {{claim: string, verdict: string}}")
        if claim["claim"] in seen:
            raise _Invalid(f"claims[{i}]: claim {claim['claim']!r} appears twice")
        seen.add(claim["claim"])


def _check_records(data: dict, field: str, key_fields: Tuple[str, ...], check) -> None:
    records = data.get(field)
    if not isinstance(records, list):
        raise ResultsError(f"field {field!r} missing or not a list")
    first: Dict[object, int] = {}
    for i, record in enumerate(records):
        name = f"{field}[{i}]"
        try:
            if not isinstance(record, dict):
                raise _Invalid("not an object")
            for f in key_fields:
                _field(record, f, str, "a string")
            k = _key(record, key_fields)
            name += f" ({' '.join(v for _, v in k if v)})"
            check(record)
        except _Invalid as exc:
            raise ResultsError(f"{name}: {exc}")
        if k in first:
            raise ResultsError(f"{name}: duplicate of {field}[{first[k]}] (the same identifying fields)")
        first[k] = i


def _check_parity(record: dict) -> None:
    _field(record, "holds", bool, "true or false")


def validate(data, path: str) -> None:
    """Check every field that ``changes`` reads; ResultsError names the file and the record."""
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: not a compare results file (expected a JSON object)")
    if "schema" not in data:
        raise ResultsError(f'{path}: not a compare results file (no "schema" field)')
    if data["schema"] not in SCHEMAS:
        raise ResultsError(f"{path}: unknown schema version {json.dumps(data['schema'])} "
                           f"(this compare reads {', '.join(SCHEMAS)})")
    try:
        _check_records(data, "results", OBSERVATION_KEY, _check_observation)
        _check_records(data, "parity", PARITY_KEY, _check_parity)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}")
