"""``python -m compare diff OLD.json NEW.json``: what changed between two runs.

Compares observations (status, exception, which tensors changed), claim verdicts and
parity verdicts; timings, dates and versions are ignored. Exit 1 when anything
changed, 0 when nothing did.
"""

from __future__ import annotations

import json
from typing import List, Tuple

from compare.observations import describe_change, key

SCHEMA_PREFIX = "compare.results/"


class ResultsError(ValueError):
    """A file that is not a results.json this tool can read."""


def load(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file")
    except IsADirectoryError:
        raise ResultsError(f"{path}: is a folder, not a results.json")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not JSON ({exc})")
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise ResultsError(f"{path}: not a compare results file (no \"schema\": \"{SCHEMA_PREFIX}...\")")
    for field in ("results", "parity"):
        if not isinstance(data.get(field), list) or not all(isinstance(r, dict) for r in data[field]):
            raise ResultsError(f"{path}: malformed field {field!r}")
    return data


def changes(old: dict, new: dict) -> List[Tuple[str, str, str]]:
    """(what, where, how) for every observation, claim verdict and parity verdict that changed."""
    out = []
    try:
        old_obs = {key(r): r for r in old["results"]}
        new_obs = {key(r): r for r in new["results"]}
    except KeyError as exc:
        raise ResultsError(f"an observation lacks the field {exc}")
    for k in sorted(old_obs.keys() | new_obs.keys()):
        where = " ".join(filter(None, k))
        if k not in new_obs:
            out.append(("observation", where, "only in the old run"))
        elif k not in old_obs:
            out.append(("observation", where, "only in the new run"))
        else:
            change = describe_change(old_obs[k], new_obs[k])
            if change:
                out.append(("observation", where, change))
            old_v = {c["claim"]: c["verdict"] for c in old_obs[k].get("claims", [])}
            for claim in new_obs[k].get("claims", []):
                before = old_v.get(claim["claim"])
                if before is not None and before != claim["verdict"]:
                    out.append(("claim", f"{where}: {claim['claim']}", f"{before} -> {claim['verdict']}"))

    def parity_key(r):
        return r["engine"], r["dtype"], r["config"], r["stage"], r["quantity"]

    old_p = {parity_key(r): r["holds"] for r in old["parity"]}
    for r in new["parity"]:
        before = old_p.get(parity_key(r))
        if before is not None and before != r["holds"]:
            out.append(("parity", " ".join(parity_key(r)), f"holds {before} -> {r['holds']}"))
    return out
