"""The toy GAN's own data: its tensors (derived from the torch builder), seeded weights and batches.

Canonical names are ``<net>.<torch module path>.<role>`` and canonical layouts PyTorch's (see
``compare.port``); each engine's port converts to and from its own layout. Numpy only.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from compare.models.toy.config import CONFIGS, Config, builder_args
from compare.models.toy.nets import IMAGE_SHAPE, LATENT_SHAPE

BATCH = 8


def torch_variants() -> Dict[str, dict]:
    """The torch builder's arguments per configuration: the variants whose tensors are derived."""
    return {config.name: builder_args(config, "torch") for config in CONFIGS}


def specs(config: Config) -> list:
    """The ``TensorSpec`` list of G and D under ``config``, in layer order."""
    from compare.models import tensor_specs

    return tensor_specs("toy", config.name)


def rounding_tensors(config: Config) -> Dict[str, str]:
    """Each bias that feeds a BatchNorm directly, with the kernel of its own layer.

    In training mode BN subtracts the batch mean, so such a bias has no effect on the
    output and its gradient is zero in exact arithmetic; what a machine computes is
    rounding noise whose value (0.0 or not) depends on the order of summation. Read from
    the spec's layer order: a layer with a bias followed, in its network, by a layer with a gamma.
    """
    layers: List[tuple] = []
    roles: Dict[tuple, set] = {}
    for spec in specs(config):
        if spec.kind != "param":
            continue
        layer = (spec.net, spec.layer)
        if layer not in roles:
            layers.append(layer)
            roles[layer] = set()
        roles[layer].add(spec.role)
    return {f"{net}.{layer}.bias": f"{net}.{layer}.kernel"
            for (net, layer), following in zip(layers, layers[1:])
            if "bias" in roles[(net, layer)] and "gamma" in roles[following] and following[0] == net}


def bn_layers() -> Dict[str, int]:
    """Each BN layer and the number of values per channel in one batch's statistics."""
    return {"G.bn": BATCH * IMAGE_SHAPE[1] * IMAGE_SHAPE[2], "D.bn": BATCH * 3 * 3}


def initial_weights(config: Config, seed: int = 0) -> Dict[str, np.ndarray]:
    """Canonical float64 weights and state, made once here and loaded into every engine."""
    weights: Dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    tensors = specs(config)
    for spec in (s for s in tensors if s.kind == "param"):
        name, shape = spec.name, spec.shape
        if config.init == "constant":
            value = 0.0 if spec.role in ("bias", "beta") else 0.01
            weights[name] = np.full(shape, value, dtype=np.float64)
        elif spec.role == "gamma":
            weights[name] = rng.uniform(0.8, 1.2, shape)
        elif spec.role in ("beta", "bias"):
            weights[name] = rng.uniform(-0.1, 0.1, shape)
        else:
            # a transposed conv's kernel is (in, out, kh, kw); the toy counts its fan-in as `in`
            fan_in = shape[0] if spec.layer_type.startswith("ConvTranspose") else int(np.prod(shape[1:]))
            bound = 1.0 / np.sqrt(fan_in)
            weights[name] = rng.uniform(-bound, bound, shape)
    for spec in (s for s in tensors if s.kind == "state"):
        name, shape = spec.name, spec.shape
        if config.init == "constant":
            weights[name] = np.zeros(shape) if spec.role == "moving_mean" else np.ones(shape)
        elif spec.role == "moving_mean":
            weights[name] = rng.uniform(-0.2, 0.2, shape)
        else:
            weights[name] = rng.uniform(0.5, 1.5, shape)
    return weights


def make_batches(iterations: int, seed: int = 1) -> List[Dict[str, np.ndarray]]:
    """Per iteration: ``real`` images (NCHW, in [-1, 1]) and latent ``z`` (N, 100, 1, 1).

    Real images are smooth colour gradients with random phase: structured enough
    that D has something to learn, made here so that nothing is downloaded.
    """
    rng = np.random.default_rng(seed)
    channels, height, width = IMAGE_SHAPE
    ys, xs = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    batches = []
    for _ in range(iterations):
        phase = rng.uniform(0, 2 * np.pi, (BATCH, channels, 1, 1))
        freq = rng.uniform(0.5, 2.0, (BATCH, 1, 1, 1))
        real = np.sin(freq * (xs + ys)[None, None] * np.pi + phase) * 0.9
        z = rng.standard_normal((BATCH, *LATENT_SHAPE))
        batches.append({"real": real, "z": z})
    return batches
