"""The built-in model pairs, one folder each (``compare/models/<id>/``).

A pair's package gives ``build_torch(...)`` -> (G, D) as torch modules, ``build_keras(keras,
...)`` -> (G, D) as Keras models (one function for Keras 3 on every backend and for Keras 2: it
receives the keras module), and ``LATENT_SHAPE`` and ``IMAGE_SHAPE`` in PyTorch layout; a pair
whose weights the engines port also gives ``torch_variants()``: the builder arguments of each
named variant whose tensors are needed.

The tensors (names, kinds, layouts) are derived from the torch builder by ``compare.port``, never
written by hand. A process that has imported torch derives them itself; any other (a Keras
engine, the parent) reads them as JSON that one small torch process writes per version of the
model sources, the port and torch, kept beside the result cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List

MODELS = os.path.dirname(os.path.abspath(__file__))
SPEC_TIMEOUT = 300.0


def pair(model: str):
    """The package of a built-in pair ("toy", "dcgan64")."""
    return importlib.import_module(f"compare.models.{model}")


def bench_batch(model: str, seed: int = 1) -> dict:
    """One batch of the pair's size for timing (values do not matter, only shapes): ``real``
    NCHW uniform in [-1, 1], ``z`` (N, *LATENT_SHAPE); every engine's bench gets the same numbers."""
    import numpy as np

    models = pair(model)
    rng = np.random.default_rng(seed)
    n = models.BATCH
    return {"real": rng.uniform(-1, 1, (n, *models.IMAGE_SHAPE)), "z": rng.standard_normal((n, *models.LATENT_SHAPE))}


def derive(model: str) -> Dict[str, List[dict]]:
    """{variant: [TensorSpec JSON of G, then of D]} from the model's torch builder (imports torch)."""
    from compare import port

    import torch

    models = pair(model)
    out = {}
    with torch.random.fork_rng(devices=[]):  # building modules draws from torch's generator, not the caller's
        for variant, kwargs in models.torch_variants().items():
            G, D = models.build_torch(**kwargs)
            specs = port.torch_specs("G", G, torch.zeros((2, *models.LATENT_SHAPE))) + \
                port.torch_specs("D", D, torch.zeros((2, *models.IMAGE_SHAPE)))
            out[variant] = [spec.to_json() for spec in specs]
    return out


def source_digest(model: str) -> str:
    """What the derived spec depends on: the model's sources, the port's, and torch's version."""
    h = hashlib.sha256()
    package = os.path.dirname(MODELS)
    files = [os.path.join(package, "port.py")] + sorted(
        os.path.join(root, name) for root, _, names in os.walk(os.path.join(MODELS, model))
        for name in names if name.endswith(".py"))
    for file in files:
        with open(file, "rb") as f:
            h.update(os.path.relpath(file, package).encode() + b"\0" + f.read())
    try:
        h.update(importlib.metadata.version("torch").encode())
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"the {model} model's tensors are derived from its torch builder: torch is not installed")
    return h.hexdigest()[:24]


def write_spec(model: str, path: str) -> None:
    """Derive the spec in a fresh torch process and write it to ``path`` whole or not at all."""
    from compare.runner import child_environment

    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        done = subprocess.run([sys.executable, "-m", "compare.models", model, tmp],
                              env=child_environment("torch", "float64"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              errors="replace", timeout=SPEC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"deriving the {model} model's tensors from torch took over {SPEC_TIMEOUT:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"deriving the {model} model's tensors from torch failed: {last}")
    os.replace(tmp, path)


@functools.lru_cache(maxsize=None)
def spec_document(model: str) -> Dict[str, List[dict]]:
    """The model's derived spec, per variant (see the module's docstring for where it comes from)."""
    if sys.modules.get("torch") is not None:  # already imported here: derive it directly
        return derive(model)
    from compare.cache import folder

    name = f"spec-{model}-{source_digest(model)}.json"
    try:
        store = os.path.join(folder(), "specs")
        os.makedirs(store, exist_ok=True)
        return _stored(model, os.path.join(store, name))
    except OSError:  # no writable cache: derive into a folder of our own
        scratch = tempfile.mkdtemp(prefix="compare-spec-")
        try:
            return _stored(model, os.path.join(scratch, name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _stored(model: str, path: str) -> Dict[str, List[dict]]:
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # engines starting together derive it once
        if not os.path.exists(path):
            write_spec(model, path)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tensor_specs(model: str, variant: str) -> list:
    """The ``TensorSpec`` list (G's, then D's) of one variant of a built-in model."""
    from compare.port import TensorSpec

    return [TensorSpec.from_json(spec) for spec in spec_document(model)[variant]]
