"""What changed between adjacent version points of a matrix (``compare matrix``'s folder).

Built on ``compare.diff``: two adjacent points of one line (keras, tf_keras, torch) are
compared as ``compare diff`` compares two runs (observations, claim verdicts, parity
verdicts). Beside that, the parity stages' largest differences per point, so that a
numerical change shows where no verdict moved. Each change is matched with the links in
``compare/matrix_links.json`` (release notes, changelog entries, PRs, issues); a change
that none matches says so. The view is computed once, when the report is made, and kept in
its results.json (``"matrix"``), from which the report and the guide render it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Tuple

from compare.diff import ResultsError, changes, load

LINKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "matrix_links.json")
PARITY_CONFIG = "parity"
# a stage's largest difference "changed" between points when it moved by this factor or more
# (or between exactly 0 and not): run-to-run rounding moves it by far less
NUMERIC_FACTOR = 10.0


def load_matrix(folder: str) -> Tuple[dict, Dict[str, dict]]:
    """The summary and every point's results (checked as ``compare diff`` checks them)."""
    from compare.matrix import SCHEMA, SUMMARY

    path = os.path.join(folder, SUMMARY)
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})")
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON ({' '.join(str(exc).split())})")
    if not isinstance(summary, dict) or summary.get("schema") != SCHEMA or not isinstance(summary.get("points"), list):
        raise ResultsError(f"{path}: not a {SCHEMA} summary")
    results = {}
    for entry in summary["points"]:
        if entry.get("results"):
            results[entry["id"]] = load(os.path.join(folder, entry["results"]))
    return summary, results


def load_links(path: str = LINKS) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["links"]


def stage_differences(results: dict) -> Dict[str, float]:
    """``engine dtype stage`` -> the largest difference from the reference over its quantities
    (the parity configuration), after the named rules, as the verdict judged it."""
    out: Dict[str, float] = {}
    for r in results["parity"]:
        if r["config"] != PARITY_CONFIG or r.get("judged_diff") is None:
            continue
        value = float(r["judged_diff"]) if not isinstance(r["judged_diff"], str) else math.inf
        key = f"{r['engine']} {r['dtype']} {r['stage']}"
        out[key] = max(out.get(key, 0.0), value)
    return out


def numeric_moves(old: Dict[str, float], new: Dict[str, float]) -> List[dict]:
    moves = []
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        if (a == 0) != (b == 0) or (a and b and max(a, b) / min(a, b) >= NUMERIC_FACTOR):
            engine, dtype, stage = key.split(" ")
            moves.append({"engine": engine, "dtype": dtype, "stage": stage, "old": a, "new": b})
    return moves


def matching_links(links: List[dict], line: str, old: str, new: str, change: dict) -> List[dict]:
    """The links recorded for this change: same line and versions, its engine, and its scenario
    or parity stage where the link names one."""
    found = []
    for link in links:
        if (link["line"], link["from"], link["to"]) != (line, old, new):
            continue
        if link.get("engines") and change.get("engine") not in link["engines"]:
            continue
        if link.get("kind") and link["kind"] != change["kind"]:
            continue
        subject = change.get("scenario") or change.get("stage") or ""
        if link.get("subject") and not subject.startswith(link["subject"]):
            continue
        found.append({"url": link["url"], "title": link["title"]})
    return found


def build_view(summary: dict, results: Dict[str, dict], links: Optional[List[dict]] = None) -> dict:
    """The points (with their versions and status), each line's adjacent pairs with what changed
    between them, and each point's parity stage differences."""
    from compare.matrix import LINES

    links = load_links() if links is None else links
    points = [{k: e.get(k) for k in ("id", "line", "version", "pins", "engines", "installed", "status", "reason")}
              for e in summary["points"]]
    pairs = []
    for line in LINES:
        ran = [p for p in points if p["line"] == line and p["id"] in results]
        for a, b in zip(ran, ran[1:]):
            found = []
            for change in changes(results[a["id"]], results[b["id"]]):
                item = change.as_json()
                item = {k: v for k, v in item.items() if v is not None}
                item["line"] = change.line()
                found.append(item)
            numeric = [dict(m, kind="numeric") for m in numeric_moves(stage_differences(results[a["id"]]),
                                                                       stage_differences(results[b["id"]]))]
            for item in found + numeric:
                item["links"] = matching_links(links, line, a["version"], b["version"], item)
            pairs.append({"line": line, "old": a["id"], "new": b["id"], "old_version": a["version"],
                          "new_version": b["version"], "changes": found, "numeric": numeric})
    stages = {p["id"]: stage_differences(results[p["id"]]) for p in points if p["id"] in results}
    return {"points": points, "pairs": pairs, "stages": stages, "numeric_factor": NUMERIC_FACTOR}


def view_of(folder: str) -> dict:
    summary, results = load_matrix(folder)
    return build_view(summary, results)


# --- rendering ---------------------------------------------------------------------------

PAGE = "versions.md"
SHOWN = 3  # changes listed per scenario and engine on the page
KINDS = ("observation", "claim", "parity", "numeric")


def line_name(line: str) -> str:
    from compare.matrix import LINES

    return LINES[line]["name"]


def pair_name(pair: dict) -> str:
    return f"{line_name(pair['line'])} {pair['old_version']} -> {pair['new_version']}"


def subject(change: dict) -> Tuple[str, str, str]:
    """What a change is about, for the "changed in" table: (scenario or stage, engine, what)."""
    if change["kind"] == "observation":
        return change["scenario"], change["engine"], "observation"
    if change["kind"] == "claim":
        return change["scenario"], change["engine"], change["what"]
    config = "" if change["kind"] == "numeric" else f" ({change['config']})"
    return f"parity {change['stage']}{config}", f"{change['engine']} {change['dtype']}", \
        "verdict" if change["kind"] == "parity" else f"largest difference ({NUMERIC_FACTOR:g}x or more)"


def changed_in(view: dict) -> List[dict]:
    """Per (line, subject): the adjacent pairs where it changed, in the order of the points."""
    found: Dict[tuple, dict] = {}
    for pair in view["pairs"]:
        for change in pair["changes"] + pair["numeric"]:
            key = (pair["line"],) + subject(change)
            item = found.setdefault(key, {"line": pair["line"], "subject": key[1], "engine": key[2], "what": key[3],
                                          "pairs": []})
            if not item["pairs"] or item["pairs"][-1]["new"] != pair["new"]:
                item["pairs"].append({"old": pair["old"], "new": pair["new"], "old_version": pair["old_version"],
                                      "new_version": pair["new_version"], "links": []})
            links = item["pairs"][-1]["links"]
            links += [link for link in change["links"] if link not in links]
    return list(found.values())


def link_text(links: List[dict]) -> str:
    return ", ".join(f"[{link['title']}]({link['url']})" for link in links) or "no release note, changelog entry, PR or issue found"


def fmt_diff(value: float) -> str:
    return "0" if value == 0 else "inf" if math.isinf(value) else f"{value:.1e}"


def versions_cell(point: dict) -> str:
    installed = point.get("installed") or {}
    return ", ".join(f"{name} {installed.get(name) or version}" for name, version in sorted(point["pins"].items()))


def counts(pair: dict) -> str:
    parts = [f"{sum(c['kind'] == kind for c in pair['changes'])} {kind}" for kind in ("observation", "claim", "parity")]
    return ", ".join(parts + [f"{len(pair['numeric'])} numeric"])


def render_page(view: dict, report_link: str = "REPORT.md") -> str:
    """The matrix page: the points, what changed where, every change with its links, and the
    parity stages per point."""
    from tabulate import tabulate

    points = {p["id"]: p for p in view["points"]}
    out = ["# compare across framework versions", "",
           f"The committed version matrix (`compare matrix`): each point is a set of pinned packages in an environment "
           f"of its own, where the scenarios and the parity stages of [the report]({report_link}) ran. Adjacent points "
           "of one line are compared as `compare diff` compares two runs: observations (status, exception, which "
           "tensors changed and gradients, step by step), claim verdicts and parity verdicts. Parity stages also "
           f"count as changed where their largest difference from PyTorch moved by {NUMERIC_FACTOR:g}x or more, or "
           "between exactly 0 and not.", "", "## Points", ""]
    rows = [[p["id"], p["line"], versions_cell(p), p["status"] + (f": {p['reason']}" if p.get("reason") else "")]
            for p in view["points"]]
    out += [tabulate(rows, ["point", "line", "versions", "status"], tablefmt="github", disable_numparse=True), ""]
    out += ["## Changed in", "",
            "For each scenario, engine and claim (and each parity stage), the versions between which the "
            "observation or the verdict changed; the links are where the change is documented.", ""]
    table = changed_in(view)
    if table:
        rows = [[item["subject"], item["engine"], item["what"],
                 "; ".join(f"{line_name(item['line'])} {p['old_version']} -> {p['new_version']}" for p in item["pairs"]),
                 "; ".join(link_text(p["links"]) for p in item["pairs"])] for item in table]
        out += [tabulate(rows, ["scenario or stage", "engine", "what", "changed between", "documented in"],
                         tablefmt="github"), ""]
    else:
        out += ["Nothing changed between any two adjacent points that ran.", ""]
    out += ["## Every change, pair by pair", ""]
    for pair in view["pairs"]:
        out += [f"### {pair_name(pair)}", "", f"`{pair['old']}` against `{pair['new']}`: {counts(pair)}.", ""]
        grouped: Dict[tuple, List[dict]] = {}
        for change in pair["changes"]:
            grouped.setdefault(subject(change), []).append(change)
        for found in grouped.values():  # a few of each scenario and engine's changes; the rest counted
            out += [f"- `{change['line']}` ({link_text(change['links'])})" for change in found[:SHOWN]]
            if len(found) > SHOWN:
                out.append(f"- ... and {len(found) - SHOWN} more of `{found[0]['line'].split('  ')[0]}` on "
                           f"{found[0]['engine']} (`compare diff {pair['old']}/results.json "
                           f"{pair['new']}/results.json` lists them)")
        for m in pair["numeric"]:
            out.append(f"- parity {m['engine']} {m['dtype']} {m['stage']}: largest difference {fmt_diff(m['old'])} "
                       f"-> {fmt_diff(m['new'])} ({link_text(m['links'])})")
        out.append("")
    not_ran = [p for p in view["points"] if p["id"] not in view["stages"]]
    if not_ran:
        out += ["Points without results (not compared): "
                + "; ".join(f"{p['id']} ({p['status']}: {p.get('reason')})" for p in not_ran) + ".", ""]
    out += ["## Parity stages per point", "",
            "The largest difference from PyTorch per stage of the parity configuration (after the named rules, "
            f"as the verdict judged it); * marks a value that moved {NUMERIC_FACTOR:g}x or more from the point "
            "before it.", ""]
    for line in dict.fromkeys(p["line"] for p in view["points"]):
        ids = [p["id"] for p in view["points"] if p["line"] == line and p["id"] in view["stages"]]
        if not ids:
            continue
        moved = {(pair["new"], f"{m['engine']} {m['dtype']} {m['stage']}") for pair in view["pairs"]
                 for m in pair["numeric"]}
        keys = sorted({k for pid in ids for k in view["stages"][pid]})
        rows = [[key] + [fmt_diff(view["stages"][pid][key]) + ("*" if (pid, key) in moved else "")
                         if key in view["stages"][pid] else "" for pid in ids] for key in keys]
        out += [f"### {line_name(line)}", "",
                tabulate(rows, ["engine dtype stage"] + [points[pid]["version"] for pid in ids], tablefmt="github",
                         disable_numparse=True), ""]
    return "\n".join(out).rstrip() + "\n"


def report_section(view: dict) -> List[str]:
    """The report's short section: the points, and the pairs where something changed."""
    total = sum(len(p["changes"]) + len(p["numeric"]) for p in view["pairs"])
    lines = ["## Across versions", "",
             f"The committed version matrix ran {len(view['stages'])} of its {len(view['points'])} points ("
             + ", ".join(f"{line_name(line)} {', '.join(p['version'] for p in view['points'] if p['line'] == line)}"
                         for line in dict.fromkeys(p["line"] for p in view["points"]))
             + f"). Between adjacent points, {total} changes in observations, claim verdicts, parity verdicts or "
             f"parity differences; [the versions page]({PAGE}) has each, with its link, and the parity stages per "
             "point.", ""]
    lines += [f"- {pair_name(pair)}: {counts(pair)}" for pair in view["pairs"] if pair["changes"] or pair["numeric"]]
    return lines + [""]


def short(line: str, width: int = 240) -> str:
    """A change's line for inline code: no backticks, at most ``width`` characters."""
    line = line.replace("`", "'")
    return line if len(line) <= width else line[:width - 3] + "..."


def guide_items(view: dict) -> List[Tuple[str, dict]]:
    """The guide's sentences across versions, each with what it rests on (the pair of points
    and the change's subject): "since Keras 3.x", "until tf_keras 2.y"."""
    from compare.guide import ENGINE_NAMES

    items: List[Tuple[str, dict]] = []
    for p in view["points"]:
        if p["id"] not in view["stages"]:
            items.append((f"The point {p['id']} ({versions_cell(p)}) did not run ({p['status']}: {p.get('reason')}); "
                          "nothing here speaks of it.", {"point": p["id"]}))
    for pair in view["pairs"]:
        name = line_name(pair["line"])
        span = f"until {name} {pair['old_version']}, since {name} {pair['new_version']}"
        observed: Dict[str, List[dict]] = {}
        checks: Dict[tuple, List[dict]] = {}
        for change in pair["changes"]:
            if change["kind"] == "observation":
                observed.setdefault(change["engine"], []).append(change)
            elif change["kind"] == "claim":
                where = f"{change['init']} init" + (f", {change['variant']}" if change.get("variant") else "")
                items.append((f"On {ENGINE_NAMES.get(change['engine'], change['engine'])}, {change['what']} of "
                              f"`{change['scenario']}` ({where}): {change['old']} until {name} {pair['old_version']}, "
                              f"{change['new']} since {name} {pair['new_version']}.",
                              {"pair": pair["new"], "subject": change["scenario"], "engine": change["engine"]}))
            else:
                checks.setdefault((change["engine"], change["dtype"], change["old"], change["new"]), []).append(change)
        for engine, found in observed.items():  # one sentence per engine: which scenarios, and one example
            scenarios = list(dict.fromkeys(c["scenario"] for c in found))
            items.append((f"On {ENGINE_NAMES.get(engine, engine)}, {len(scenarios)} scenario"
                          f"{'s do' if len(scenarios) > 1 else ' does'} not do the same {span} "
                          f"({', '.join(f'`{x}`' for x in scenarios)}; {len(found)} differences), for example "
                          f"`{short(found[0]['line'])}`.", {"pair": pair["new"], "subject": scenarios[0], "engine": engine}))
        for (engine, dtype, old, new), found in checks.items():
            configs = list(dict.fromkeys(c["config"] for c in found))
            items.append((f"On {engine} {dtype}, {len(found)} parity checks (configs {', '.join(configs)}): {old} "
                          f"until {name} {pair['old_version']}, {new} since {name} {pair['new_version']}.",
                          {"pair": pair["new"], "subject": "parity", "engine": engine}))
        by_engine: Dict[str, List[dict]] = {}
        for m in pair["numeric"]:
            by_engine.setdefault(m["engine"], []).append(m)
        for engine, moves in by_engine.items():
            stages = ", ".join(f"{m['stage']} {m['dtype']} {fmt_diff(m['old'])} -> {fmt_diff(m['new'])}" for m in moves)
            items.append((f"On {ENGINE_NAMES.get(engine, engine)}, the largest parity differences from PyTorch moved "
                          f"{NUMERIC_FACTOR:g}x or more between {name} {pair['old_version']} and {pair['new_version']}: "
                          f"{stages}.", {"pair": pair["new"], "subject": "numeric", "engine": engine}))
    for line in dict.fromkeys(p["line"] for p in view["points"]):
        ids = [p["version"] for p in view["points"] if p["line"] == line and p["id"] in view["stages"]]
        quiet = [pair for pair in view["pairs"] if pair["line"] == line and not any(
            c["kind"] == "claim" for c in pair["changes"])]
        if len(ids) > 1 and len(quiet) == len([p for p in view["pairs"] if p["line"] == line]):
            items.append((f"No claim verdict changed between adjacent {line_name(line)} points "
                          f"({', '.join(ids)}).", {"line": line}))
    return items
