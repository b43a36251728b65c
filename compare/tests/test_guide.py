"""The migration guide, rendered from the committed results.json and from a torch-only
subset of it: every sentence's evidence is in the results, an engine that did not run is
named as such, the code is a user's, and the HTML version has the Markdown's headings."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

from compare.tests.locations import BASELINE

from compare import guide

RESULTS = BASELINE  # the committed results.json, shipped with the package


@pytest.fixture(scope="module")
def committed() -> dict:
    with open(RESULTS) as f:
        return json.load(f)


def torch_only(results: dict) -> dict:
    """The results as a run with --engines torch would give them."""
    out = copy.deepcopy(results)
    out["engines"] = {"torch": out["engines"]["torch"]}
    out["results"] = [r for r in out["results"] if r["engine"] == "torch"]
    out["parity"] = [r for r in out["parity"] if r["engine"] == "torch"]
    out["pitfalls"] = [r for r in out["pitfalls"] if r["engine"] == "torch"]
    return out


def resolve(results: dict, ev: dict) -> bool:
    """Whether one cited piece of evidence is in the results."""
    if ev["kind"] == "matrix":  # a pair of adjacent points (named by the later one), a point, or a line
        view = results.get("matrix") or {}
        return ev["name"] in ({p["new"] for p in view.get("pairs", [])} | {p["id"] for p in view.get("points", [])}
                              | {p["line"] for p in view.get("points", [])})
    engine = ev["engine"]
    if ev["kind"] == "engine":
        return (engine not in results["engines"]) if ev.get("absent") else engine in results["engines"]
    if ev["kind"] == "pitfall":
        return any(p["pitfall"] == ev["name"] and p["engine"] == engine and p["dtype"] == ev["dtype"]
                   for p in results["pitfalls"])
    if ev["kind"] == "run":
        run = results["engines"].get(engine, {}).get("runs", {}).get(ev["dtype"], {})
        return ev["name"] in run and ("item" not in ev or ev["item"] in (run[ev["name"]] or {}))
    assert ev["kind"] == "record", ev
    record = next((r for r in results["results"] if r["scenario"] == ev["scenario"] and r["engine"] == engine
                   and r["init"] == ev["init"] and r["variant"] == ev.get("variant", "")), None)
    if record is None or record["status"] not in ("ok", "raised"):
        return False
    if "step" in ev and not any(s["label"] == ev["step"] for s in record["steps"]):
        return False
    return all(key in record["values"] for key in ev.get("values", ()))


@pytest.mark.parametrize("subset", ["all", "torch-only"])
def test_every_sentence_cites_evidence_that_is_in_the_results(committed, subset):
    results = committed if subset == "all" else torch_only(committed)
    cited = guide.guide_evidence(results)
    assert cited
    unresolved = [(text, ev) for text, evidence in cited for ev in evidence if not resolve(results, ev)]
    assert not unresolved, unresolved[:5]
    assert all(evidence for _, evidence in cited), [text for text, evidence in cited if not evidence][:5]


def test_every_cited_sentence_is_in_the_guide(committed):
    text = guide.render_guide(committed)
    for sentence, _ in guide.guide_evidence(committed):
        assert sentence in text, sentence


def test_scenario_links_use_the_report_anchors(committed):
    text = guide.render_guide(committed, "../reports/REPORT.md")
    anchors = set(re.findall(r"\(\.\./reports/REPORT\.md#([^)]+)\)", text))
    assert anchors
    ids = {r["scenario"] for r in committed["results"]}
    assert anchors <= {guide.anchor(i) for i in ids}
    assert guide.anchor("freeze.classic_recipe") == "scenario-freeze-classic_recipe"


def test_a_torch_only_guide_says_keras_did_not_run(committed):
    text = guide.render_guide(torch_only(committed))
    keras = guide.join_names(("keras-tensorflow", "keras-jax", "keras-torch", "tf-keras"))
    assert f"{keras} did not run (not selected for this run): this section says nothing about them." in text
    assert "None in this run" not in text
    assert "No Keras engine ran" in text
    assert "agreed on every scenario" not in text


def test_the_code_shown_is_a_users_not_the_harness(committed):
    for results in (committed, torch_only(committed)):
        blocks = re.findall(r"```python\n(.*?)```", guide.render_guide(results), re.S)
        assert blocks
        assert not [b for b in blocks if "ctx." in b or "ctx)" in b]


def test_the_html_guide_has_the_same_headings(committed):
    markdown_text = guide.render_guide(committed)
    page = guide.render_guide_html(committed)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    headings = re.findall(r"^#{1,3} (.+)$", markdown_text, re.M)
    html_headings = re.findall(r"<h[1-3][^>]*>(.*?)</h[1-3]>", page)
    unescape = lambda h: re.sub(r"<[^>]+>", "", h).replace("&amp;", "&").replace("&#x27;", "'").replace("&quot;", '"')
    assert [unescape(h) for h in html_headings] == [h.replace("`", "") for h in headings]
