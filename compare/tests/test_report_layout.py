"""The report's layout, rendered from the committed results.json (no engine runs): the
answers come first, the main page stays small, every link and anchor resolves, and in
headless Chromium the first screen of report.html shows the answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile

import numpy as np
import pytest

from compare.tests.locations import BASELINE

from compare import report
from compare.answers import ANSWERS
from compare.scenarios import catalog
from compare.tests.test_reports import chromium

COMMITTED = BASELINE  # the committed results.json, shipped with the package
ANSWER_COLOUR = (0xFF, 0xF3, 0xCD)  # section.answers' background in compare/html.py


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    with open(COMMITTED, encoding="utf-8") as f:
        results = json.load(f)
    folder = str(tmp_path_factory.mktemp("layout"))
    return report.render_all(results, os.path.join(folder, "migration-guide.md"), folder)


def ids(text: str) -> set:
    return set(re.findall(r'id="([^"]+)"', text))


def github_slug(heading: str) -> str:
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def markdown_anchors(text: str) -> set:
    return ids(text) | {github_slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_main_page_is_small_and_answers_come_first(texts):
    main = texts["REPORT.md"]
    assert len(main.encode("utf-8")) <= 60 * 1024
    headings = re.findall(r"^(#{2,3}) (.*)$", main, flags=re.M)
    assert headings[0] == ("##", "Answers")
    questions = [re.sub(r"<[^>]+>", "", h) for _, h in headings[1:1 + len(ANSWERS)]]
    assert questions == [q for _, q, _ in ANSWERS]
    assert len(ANSWERS) == 5


def test_no_long_prose_lines(texts):
    long = [line for line in texts["REPORT.md"].splitlines() if len(line) > 300 and not line.startswith("|")]
    assert not long, long[:3]


def test_every_scenario_and_claim_has_an_anchor(texts):
    main, html = ids(texts["REPORT.md"]), ids(texts["report.html"])
    for scenario in catalog().values():
        assert scenario.id in main and scenario.id in html
        assert report.detail_anchor(scenario.id) in ids(texts[report.page_name(scenario.id)])
        assert report.detail_anchor(scenario.id) in html
        for claim in scenario.claims:
            assert report.claim_anchor(scenario.id, claim.id) in main
            assert report.claim_anchor(scenario.id, claim.id) in html


def test_every_markdown_link_resolves(texts):
    pages = {name: text for name, text in texts.items() if name.endswith(".md")}
    # the report, a page per scenario, and the versions page where a matrix was rendered
    expected = {"REPORT.md"} | {report.page_name(s) for s in catalog()}
    assert expected <= set(pages) and set(pages) - expected <= {"versions.md"}, sorted(pages)
    for name, text in pages.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            page = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
            assert page in pages, f"{name} links to {target}: no such page in the set"
            if fragment:
                assert fragment in markdown_anchors(pages[page]), f"{name} links to {target}: no such anchor"


def test_every_html_link_resolves_and_verdicts_are_coloured(texts):
    html = texts["report.html"]
    found = ids(html)
    for target in re.findall(r'href="([^"]+)"', html):
        if not target.startswith("#"):  # only to a page of the same output set (the versions page)
            assert target in texts and target.endswith(".md"), f"report.html links outside its set: {target}"
            continue
        assert target[1:] in found, f"report.html links to {target}: no such anchor"
    assert len(re.findall(r'id="([^"]+)"', html)) == len(found), "an id appears twice"
    assert '<td class="holds">' in html and '<td class="na">' in html
    assert html.index('class="answers"') < html.index('id="plots"') < html.index('id="scenarios"')
    assert re.search(r'<nav class="toc">.*href="#answers"', html)


def first_screen(html: str, tmp_path):
    """The first 1280x900 screen of ``html`` in headless Chromium, as RGB pixels 0-255."""
    browser = chromium()
    page = tmp_path / "page.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "first-screen.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
             "--hide-scrollbars", "--window-size=1280,900"]
    out = subprocess.run([browser, *flags, f"--screenshot={shot}", f"file://{page}"], capture_output=True,
                         text=True, timeout=120)
    assert shot.exists(), out.stderr[-2000:]
    import matplotlib.image

    pixels = np.round(matplotlib.image.imread(str(shot))[..., :3] * 255)
    assert pixels.shape[:2] == (900, 1280)
    return pixels


def test_first_screen_shows_the_answers(texts, tmp_path):
    pixels = first_screen(texts["report.html"], tmp_path)
    answers = (np.abs(pixels - ANSWER_COLOUR) <= 2).all(axis=-1)
    rows = np.flatnonzero(answers.mean(axis=1) > 0.5)  # rows mostly covered by the answers' background
    assert rows.size, "the answers are not on the first screen"
    assert answers.mean() > 0.3, f"the answers cover {answers.mean():.0%} of the first screen"
    assert rows[0] < 300, "the answers start below the top of the page"
    assert rows[-1] < 895, "the answers do not fit on the first screen"
    text = answers[rows[0]:rows[-1]]
    assert (~text).mean() > 0.05, "the answers' box is empty"


def test_guide_first_screen_is_readable_and_starts_with_the_engines_and_the_finding(texts, tmp_path):
    """The guide's HTML page: text on its first screen, in a column of readable width, and its
    first sections are the engines that ran and the biggest finding."""
    html = texts["guide.html"]
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", html)
    assert headings[:2] == ["Engines in this run", "The biggest finding: D.trainable = False and D's own train_on_batch"]
    pixels = first_screen(html, tmp_path)
    ink = (pixels < 200).any(axis=-1)  # anything darker than the page's background
    assert ink.mean() > 0.03, "the guide's first screen is nearly blank"
    columns = np.flatnonzero(ink.any(axis=0))
    assert columns[0] > 40 and columns[-1] < 1240 and columns[-1] - columns[0] <= 1000, (
        f"text spans columns {columns[0]}-{columns[-1]}: not a readable width")
