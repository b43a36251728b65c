"""A pytest plugin for a team's own CI: the ``port_check`` fixture checks a model pair file.

    def test_our_keras_port(port_check):
        port_check("models/our_gan.py", engines="keras-tensorflow,tf-keras", dtype="float32")

It runs ``compare.check`` (each engine in its own process) and fails the test with one line
per engine (verdict, first divergence, confirmed causes) unless every engine passes; it
returns the ``CheckResult``, and writes check.json, check.md and check.html to the test's
``tmp_path`` unless ``out`` is given. ``assert_port(FILE, ...)`` is the same without the
fixture. pytest loads this module through the package's ``pytest11`` entry point.
"""

from __future__ import annotations

import pytest


def assert_port(file, **options):
    """``compare.check(file, **options)``, failing the test unless its verdict is PASS."""
    from compare.check.run import CheckError, check

    try:
        result = check(file, **options)
    except CheckError as exc:
        pytest.fail(f"compare check: {exc}", pytrace=False)
    if not result.passed:
        pytest.fail(f"compare check {file}: {result.verdict}\n{result.summary()}", pytrace=False)
    return result


@pytest.fixture
def port_check(tmp_path):
    """``port_check(FILE, engines=..., dtype=..., iterations=..., out=...)``: see the module."""
    def run(file, **options):
        options.setdefault("out", str(tmp_path))
        return assert_port(file, **options)
    return run
