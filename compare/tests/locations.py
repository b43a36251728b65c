"""Where the tests find the package, their baseline and, in a source checkout, the repository.

The baseline (``baseline/results.json``) ships with the package, so the regression tests run
against an installed wheel; in the source checkout it is a copy of ``reports/results.json``,
and test_reports checks that the two are identical.
"""

from __future__ import annotations

import os

import pytest

import compare

# the folder holding the package these tests import: child processes import the same one
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(compare.__file__)))
BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline", "results.json")
REFRESH_BASELINE = "cp reports/results.json compare/tests/baseline/results.json"


def _checkout():
    markers = ("pyproject.toml", "README.md", os.path.join("reports", "results.json"))
    return PACKAGE_PARENT if all(os.path.exists(os.path.join(PACKAGE_PARENT, m)) for m in markers) else None


CHECKOUT = _checkout()


def repository() -> str:
    """The source checkout's root, or a skip: an installed package has no reports/, docs/ or README."""
    if CHECKOUT is None:
        pytest.skip("needs the source checkout (reports/, docs/, README.md): this is an installed package")
    return CHECKOUT


def child_env(**variables) -> dict:
    """The caller's environment, with the package these tests import first on the path."""
    return dict(os.environ, PYTHONPATH=PACKAGE_PARENT, **variables)
