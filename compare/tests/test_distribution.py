"""How the package is installed: its name, the install commands it prints and the README
shows, and what its wheel ships (the tests, their baseline, the licence, the pytest plugin)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from compare import DISTRIBUTION
from compare.engines import ENGINES
from compare.tests.locations import PACKAGE_PARENT, child_env, repository


def read(*parts) -> str:
    with open(os.path.join(repository(), *parts), encoding="utf-8") as f:
        return f.read()


def test_pyproject_names_the_distribution_the_install_commands_use():
    project = read("pyproject.toml").split("[project]", 1)[1]
    assert re.search(r'^name = "([^"]+)"', project, re.M).group(1) == DISTRIBUTION
    for engine, spec in ENGINES.items():
        assert spec.install.startswith(f"pip install '{DISTRIBUTION}["), engine


def test_readme_installs_the_distribution_and_shows_each_engines_command():
    readme = read("README.md")
    commands = [name for name in re.findall(r"pip install (?:-\S+ )*'([^'\[]+)\[", readme)
                if name != "."]  # the checkout's own editable install
    assert commands and set(commands) == {DISTRIBUTION}, commands
    for engine, spec in ENGINES.items():
        assert f"| `{engine}` |" in readme and f"`{spec.install}` |" in readme, engine


def test_ci_runs_the_readme_test_command():
    ci = read(".ci", "run").splitlines()
    command = ci[ci.index("# The README's test command, verbatim:") + 1]
    assert f"\n{command}\n" in read("README.md")


@pytest.mark.slow
def test_plugin_loads_once_from_any_folder(tmp_path):
    """``-p compare.tests.plugin`` (what pyproject's addopts says) and the installed entry
    point name the same plugin: pytest loads it once, and --engines works outside the checkout."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "compare.tests.plugin", "--pyargs",
                          "compare.tests.test_package", "-k", "test_list_names_every_engine", "--engines", "torch",
                          "-q", "-p", "no:cacheprovider"], capture_output=True, text=True, env=child_env(),
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_wheel_ships_the_tests_baseline_licence_and_plugin(tmp_path):
    root = repository()
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed: the wheel is built without network, from the installed one")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the 77 pyproject.toml asks for")
    source = tmp_path / "source"  # a copy: an in-tree build leaves build/ and egg-info behind
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").iterdir()
    assert wheel.name.startswith(DISTRIBUTION.replace("-", "_") + "-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    shipped_tests = {n for n in names if n.startswith("compare/tests/")}
    in_checkout = {f"compare/tests/{n}" for n in os.listdir(os.path.join(PACKAGE_PARENT, "compare", "tests"))
                   if n.endswith(".py")} | {"compare/tests/baseline/results.json"}
    assert in_checkout <= shipped_tests, in_checkout - shipped_tests
    assert f"{info}/licenses/LICENSE" in names
    assert {f"compare/matrix_{n}.json" for n in ("points", "smoke", "links")} <= names  # compare matrix's defaults
    assert f"Name: {DISTRIBUTION}\n" in metadata and "License-Expression: MIT\n" in metadata
    pytest11 = entry_points.split("[pytest11]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sorted(pytest11) == ["compare.pytest_plugin = compare.pytest_plugin",
                                "compare.tests.plugin = compare.tests.plugin"]
    assert "[console_scripts]\ncompare = compare.cli:main\n" in entry_points
