"""The committed reports/ and docs/migration-guide.md are generated, and stay true.

- Their verdicts must match what the engines say now (observations, claim verdicts,
  parity verdicts; timings, dates and version strings are ignored), read from the baseline
  that ships with the package, which is the committed results.json.
- REPORT.md, report.html and the guide must be exactly what the renderer makes of the
  committed results.json: a hand edit fails.
- report.html opens in headless Chromium without console errors and is not blank.

The tests of committed files need the source checkout and skip in an installed package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from compare import report
from compare.diff import changes
from compare.engines import ENGINES
from compare.observations import collect
from compare.tests.locations import BASELINE, PACKAGE_PARENT, REFRESH_BASELINE, child_env, repository
from compare.tests.plugin import DTYPES

REGENERATE = f"regenerate with: python -m compare report --out reports --guide docs/migration-guide.md && {REFRESH_BASELINE}"


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def committed_files() -> tuple:
    """The committed reports/ folder and guide, in the source checkout."""
    root = repository()
    return os.path.join(root, "reports"), os.path.join(root, "docs", "migration-guide.md")


def test_baseline_says_what_the_committed_results_say():
    """The shipped baseline and reports/results.json hold the same observations and verdicts
    (a report regenerated on the same versions differs from it only in timings and dates)."""
    reports, _ = committed_files()
    found = changes(load(BASELINE), load(os.path.join(reports, "results.json")))
    assert not found, f"{BASELINE} and reports/results.json disagree: {REFRESH_BASELINE}\n" + "\n".join(
        change.line() for change in found[:20])


def test_committed_verdicts_match_what_the_engines_say_now(engine_runs, parity_records):
    unavailable = sorted({e for (e, _), run in engine_runs.items() if run.status != "ok"})
    if unavailable:
        pytest.skip(f"not every engine ran ({', '.join(unavailable)}): the committed report covers all")
    fresh = report.build_results(list(ENGINES), list(DTYPES), engine_runs, parity_records,
                                 collect(list(ENGINES), engine_runs))
    found = changes(load(BASELINE), json.loads(json.dumps(fresh)))
    assert not found, f"{len(found)} committed verdicts no longer hold ({REGENERATE}):\n" + "\n".join(
        change.line() for change in found[:20])


@pytest.fixture(scope="module")
def rendered():
    reports, guide = committed_files()
    return report.render_all(load(os.path.join(reports, "results.json")), guide, reports)


@pytest.mark.parametrize("name", ["REPORT.md", "report.html", "guide", "guide.html", "scenario pages"])
def test_rendered_files_are_what_the_committed_results_give(rendered, name):
    reports, guide = committed_files()
    paths = report.output_paths(reports, guide)
    names = [n for n in rendered if n.startswith("scenarios/")] if name == "scenario pages" else [name]
    for key in names:
        path = paths.get(key) or os.path.join(reports, *key.split("/"))
        with open(path, encoding="utf-8") as f:
            committed = f.read()
        fresh = rendered[key]
        if key.endswith(".html"):  # plot pixels depend on the matplotlib release; the page around them must not
            committed, fresh = without_images(committed), without_images(fresh)
        assert committed == fresh, f"{path} differs from what results.json renders to: edited by hand? {REGENERATE}"
    if name == "scenario pages":  # and no page is left of a scenario that is gone
        on_disk = {f"scenarios/{n}" for n in os.listdir(os.path.join(reports, "scenarios"))}
        assert on_disk == set(names), f"stale or missing scenario pages; {REGENERATE}"


def without_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,...", html)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("COMPARE_REQUIRE_BROWSER"):
        pytest.fail("chromium is not installed")
    pytest.skip("chromium is not installed (Debian package: chromium)")


def test_html_report_renders_in_headless_chromium_without_errors(tmp_path):
    browser = chromium()
    page = os.path.join(committed_files()[0], "report.html")
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--enable-logging=stderr", "--v=0",
             "--window-size=1280,2000"]
    out = subprocess.run([browser, *flags, f"--screenshot={shot}", f"file://{page}"], capture_output=True,
                         text=True, timeout=120)
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    assert shot.exists(), out.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert not_white > 0.02, f"screenshot is nearly blank ({not_white:.1%} of pixels drawn)"
    assert pixels.std() > 0.05
    # self-contained: no fetch of anything at view time
    with open(page) as f:
        html = f.read()
    assert "http://" not in html.replace("http://www.w3.org", "") and "src=\"http" not in html


def test_rendering_does_not_depend_on_hash_order(tmp_path):
    """The same results render to the same text whatever PYTHONHASHSEED is: a set's order
    must never leak into the report (the staleness check would then fail at random)."""
    code = ("import json, re, sys; from compare import report; "
            f"r = json.load(open({BASELINE!r})); "
            f"t = report.render_all(r, {str(tmp_path / 'guide.md')!r}, {str(tmp_path)!r}); "
            "t['report.html'] = re.sub(r'base64,[A-Za-z0-9+/=]+', '', t['report.html']); "
            "sys.stdout.write(json.dumps(t))")
    outputs = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=child_env(PYTHONHASHSEED=seed), cwd=PACKAGE_PARENT)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
