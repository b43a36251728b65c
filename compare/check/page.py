"""check.json, check.md and check.html: what a check found, every sentence from its runs."""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

from compare.html import markdown_page


def number(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def place(d: dict) -> str:
    """Where a divergence is: stage, iteration, net, layer (both names) and tensor."""
    parts = [f"stage `{d['stage']}`"]
    if d.get("iteration") is not None:
        parts.append(f"iteration {d['iteration']}")
    if d.get("net"):
        parts.append(f"net {d['net']}")
    if d.get("layer"):
        keras = f" (Keras `{d['keras_layer']}`)" if d.get("keras_layer") else ""
        parts.append(f"layer `{d['layer']}`{keras}")
    parts.append(f"{d['quantity']} `{d['tensor']}`")
    return ", ".join(parts)


def engine_line(engine: str, entry: dict) -> str:
    """One line: the engine's verdict and, where it fails, where and the confirmed causes."""
    if entry.get("status") != "ok":
        return f"{engine}: {entry['verdict']} ({entry.get('status')}: {entry.get('reason')})"
    d = entry.get("first_divergence")
    if not d:
        return f"{engine}: {entry['verdict']} (tolerance {number(entry['tolerance'])}){under_rules(entry)}"
    causes = [c["id"] for c in entry.get("causes", []) if c.get("confirmed")]
    why = f"; confirmed: {', '.join(causes)}" if causes else ("; unexplained" if "explained" in entry else "")
    return (f"{engine}: {entry['verdict']} at {place(d).replace('`', '')}: max |diff| {number(d['max_abs_diff'])} "
            f"> {number(d['tolerance'])}{why}")


def under_rules(entry: dict) -> str:
    """", under the rule X (residual r; without it, ...)" for an engine that passes under a check rule."""
    applied = entry.get("rules_applied")
    if not applied:
        return ""
    residual = max(c["residual"] for c in entry["causes"] if c["id"] in applied)
    d = entry["first_divergence_without_rules"]
    return (f", under the rule {', '.join(applied)} (residual {number(residual)}; without it, "
            f"{place(d).replace('`', '')}: max |diff| {number(d['max_abs_diff'])})")


def cause_sentence(c: dict) -> str:
    if c.get("residual") is None and not c.get("not_run"):
        return f"- **{c['id']}** ({c['title']}): suspected; not switched off (no diagnosis was asked for)"
    if c.get("not_run"):
        return f"- **{c['id']}** ({c['title']}): suspected; the counterfactual could not run: {c['not_run']}"
    verb = "removes the divergence" if c["confirmed"] else "does not remove the divergence"
    at = c.get("at")
    where = f" at {at['stage']} {at['net']}.{at['layer'] or ''} {at['tensor']}" if at and c.get("with") else ""
    kept = f", with {', '.join(c['with'])} switched off too," if c.get("with") else ""
    return f"- **{c['id']}** ({c['title']}): {c['switch']}{kept} {verb}{where} (residual {number(c['residual'])})"


def settings(c: dict) -> str:
    return f"torch `{json.dumps(c['torch'], sort_keys=True)}`; keras `{json.dumps(c['keras'], sort_keys=True)}`"


def engine_section(engine: str, entry: dict) -> List[str]:
    lines = [f"## {engine}", ""]
    if entry.get("status") != "ok":
        return lines + [f"{entry['verdict']}: {entry.get('status')}, {entry.get('reason')}", ""]
    rule = f", under the rule {entry['rule']}" if entry.get("rule") else ""
    lines += [f"Verdict: **{entry['verdict']}** (tolerance {number(entry['tolerance'])}{rule}).", ""]
    d = entry.get("first_divergence")
    if d:
        lines += [f"First divergence: {place(d)}: max |diff| {number(d['max_abs_diff'])}, tolerance "
                  f"{number(d['tolerance'])}.", ""]
    if entry.get("rules_applied"):
        raw = entry["first_divergence_without_rules"]
        lines += [f"Passes under {', '.join(entry['rules_applied'])}: without it the first divergence is at "
                  f"{place(raw)} (max |diff| {number(raw['max_abs_diff'])}); the table is the run with PyTorch given "
                  "the constants the Keras ops apply.", ""]
        tried = [c for c in entry["causes"] if c["suspect"] and c.get("residual") is not None]
        lines += [cause_sentence(c) for c in tried] + [""]
    lines += ["| stage | max abs diff | after the named rules | tolerance | worst tensor | rules |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in entry["stages"]:
        verdict = "ok" if s["holds"] else "FAILS"
        lines.append(f"| {s['stage']} | {number(s['max_abs_diff'])} | {number(s['judged_diff'])} {verdict} | "
                     f"{number(s['tolerance'])} | `{s['worst']}` | {', '.join(s['rules']) or '-'} |")
    lines.append("")
    causes = entry.get("causes", [])
    tried = [c for c in causes if c["suspect"]]
    if d and tried:
        lines += ["Suspected causes, each switched off in a run of its own:", ""] + [cause_sentence(c) for c in tried]
        lines.append("")
    if d and not any(c["confirmed"] for c in causes):
        lines += [f"No known cause explains it: unexplained, first at `{d['tensor']}`.", ""]
    if causes:
        lines += ["<details><summary>Each cause's settings, as read on both sides</summary>", "",
                  "| cause | suspect | settings |", "| --- | --- | --- |"]
        lines += [f"| {c['id']} | {'yes' if c['suspect'] else 'no'} | {settings(c)} |" for c in causes]
        lines += ["", "</details>", ""]
    return lines


def render_markdown(data: dict) -> str:
    ref = data["reference"]
    reproduces = ref.get("reproduces")
    lines = [f"# compare check: {os.path.basename(data['file'])}", "",
             f"Verdict: **{data['verdict']}**. {data['dtype']}, {data['iterations']} iterations; every tensor "
             f"compared with PyTorch's (tolerance {number(data['tolerances'][data['dtype']])} in {data['dtype']}).", ""]
    if reproduces:
        lines += [f"The reference, run twice, differs from itself by at most {number(reproduces['max_abs_diff'])}.", ""]
    else:
        lines += [f"The reference did not run: {ref['status']}, {ref['reason']}.", ""]
    lines += ["| engine | verdict | first divergence | max abs diff | confirmed causes |", "| --- | --- | --- | --- | --- |"]
    for engine, entry in data["engines"].items():
        d = entry.get("first_divergence")
        confirmed = ", ".join(c["id"] for c in entry.get("causes", []) if c.get("confirmed"))
        lines.append(f"| {engine} | {entry['verdict']} | {place(d) if d else '-'} | "
                     f"{number(d['max_abs_diff']) if d else '-'} | {confirmed or '-'} |")
    lines.append("")
    for engine, entry in data["engines"].items():
        lines += engine_section(engine, entry)
    return "\n".join(lines)


def plain(value):
    """``value`` as strict JSON allows it: an infinite or NaN difference becomes its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def render(data: dict) -> Dict[str, str]:
    """File name -> text, everything rendered before anything is written."""
    text = render_markdown(data)
    return {"check.json": json.dumps(plain(data), indent=1, allow_nan=False, default=float) + "\n", "check.md": text,
            "check.html": markdown_page(f"compare check: {os.path.basename(data['file'])}", text)}


def write_pages(out: str, data: dict) -> List[str]:
    """Replace the three files as one set (none half-written)."""
    from compare.report import replace_all

    texts = render(data)
    os.makedirs(out, exist_ok=True)
    paths = {os.path.join(out, name): text for name, text in texts.items()}
    replace_all(paths)
    return list(paths)
