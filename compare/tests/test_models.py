"""The built-in model pairs: their builders' defaults, and the derived tensor spec reaching a
process that has no torch. No engine runs here."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

from compare.models import pair
from compare.models.toy import CONFIGS, PARITY, builder_args
from compare.runner import PACKAGE_ROOT


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_toy_builders_default_to_the_parity_configuration():
    """The bench builds every pair at its defaults: for the toy GAN, that is the parity pair."""
    toy = pair("toy")
    assert defaults(toy.build_torch) == builder_args(PARITY, "torch")
    assert defaults(toy.build_keras) == builder_args(PARITY, "keras")


def test_a_process_without_torch_reads_the_spec_a_torch_process_derived(tmp_path):
    """A process that cannot import torch gets every configuration's spec from one small torch
    process, stored once and then read; it equals what torch derives in-process."""
    torch = pytest.importorskip("torch")  # noqa: F841 (the in-process derivation needs it)
    from compare.models import derive

    code = ("import sys, json; sys.modules['torch'] = None; "  # any import of torch now fails
            "from compare.models import spec_document; print(json.dumps(spec_document('toy')))")
    env = dict(os.environ, COMPARE_CACHE_DIR=str(tmp_path), PYTHONPATH=PACKAGE_ROOT)
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    stored = [name for name in os.listdir(tmp_path / "specs") if name.endswith(".json")]
    assert len(stored) == 1
    stamp = os.stat(tmp_path / "specs" / stored[0]).st_mtime_ns
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert os.stat(tmp_path / "specs" / stored[0]).st_mtime_ns == stamp  # read, not derived again
    derived = derive("toy")
    assert json.loads(first.stdout) == json.loads(second.stdout) == json.loads(json.dumps(derived))
    assert sorted(derived) == sorted(config.name for config in CONFIGS)


def test_a_spec_that_cannot_be_derived_is_one_clear_error(tmp_path):
    code = ("import sys; sys.modules['torch'] = None; "
            "from compare.models import spec_document; spec_document('no_such_model')")
    env = dict(os.environ, COMPARE_CACHE_DIR=str(tmp_path), PYTHONPATH=PACKAGE_ROOT)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "RuntimeError: deriving the no_such_model model's tensors from torch failed: " in done.stderr
