"""The toy GAN in canonical form: tensor names, layouts, configurations, weights and data.

Every engine builds the same two networks (the first article's architecture):

    G: ConvTranspose 100->64, 6x6 | BatchNorm | ReLU | Conv 64->3, 3x3, pad 1 | tanh
    D: Conv 3->32, 3x3, stride 2, pad 1 | BatchNorm | ReLU | AvgPool 3 | Conv 32->1, 1x1 | sigmoid

Canonical names are ``<net>.<layer>.<tensor>``. Canonical layouts are PyTorch's
(Conv ``(out, in, kh, kw)``, ConvTranspose ``(in, out, kh, kw)``, images NCHW); each
engine's weight port converts to and from its own layout. This module is numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

LATENT = 100
IMAGE = (3, 6, 6)  # canonical image shape, CHW
G_FEATURES = 64
D_FEATURES = 32
BATCH = 8


@dataclasses.dataclass(frozen=True)
class Config:
    """The knobs that decide whether two engines can agree.

    ``parity`` removes every known cause of disagreement; each other named config
    restores one framework default so that its effect can be measured.
    """

    name: str
    bias_before_bn: bool = False  # a bias before BN has rounding-noise gradients
    bn: str = "matched"  # "matched": bn_momentum and eps 1e-5 set in both; "defaults"
    bn_momentum: float = 0.125  # PyTorch's convention; Keras gets 1 - 0.125, exact in float32 too
    adam_eps: str = "matched"  # "matched": 1e-20 in both; "defaults": 1e-8 torch, 1e-7 Keras
    output: str = "logits"  # "logits": D ends without sigmoid, BCE from logits; "sigmoid"
    padding: str = "explicit"  # "explicit": zero padding + valid conv in Keras; "same"
    init: str = "random"  # "random": seeded numpy weights; "constant": weights 0.01, bias 0
    # Adam constants exactly representable in float32: TensorFlow casts Python floats
    # through float32 (tf.cast(0.999, tf.float64) != 0.999), so 0.9/0.999 lose precision there.
    lr: float = 2.0 ** -10  # 0.0009765625
    beta_1: float = 0.5  # the DCGAN example's
    beta_2: float = 1 - 2.0 ** -10  # 0.9990234375

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


MATCHED_BN_EPS = 1e-5
MATCHED_ADAM_EPS = 1e-20  # small enough that where it is added no longer matters

PARITY = Config("parity")
ARTICLE = Config(
    "article", bias_before_bn=True, bn="defaults", adam_eps="defaults", output="sigmoid",
    padding="explicit", init="constant", lr=1e-3, beta_1=0.9, beta_2=0.999,
)

# One default restored at a time: the measured effect of each parity pitfall.
PITFALLS: Dict[str, Tuple[Config, str]] = {
    "bn-defaults": (
        dataclasses.replace(PARITY, name="bn-defaults", bn="defaults"),
        "BatchNorm left at each framework's defaults (momentum 0.1 vs 0.99, eps 1e-5 vs 1e-3)",
    ),
    "adam-eps-defaults": (
        dataclasses.replace(PARITY, name="adam-eps-defaults", adam_eps="defaults"),
        "Adam epsilon left at defaults (1e-8 added after bias correction vs 1e-7 before it)",
    ),
    "bias-before-bn": (
        dataclasses.replace(PARITY, name="bias-before-bn", bias_before_bn=True),
        "a bias before BatchNorm (its gradient is rounding noise that Adam scales to lr-sized steps)",
    ),
    "sigmoid-bce": (
        dataclasses.replace(PARITY, name="sigmoid-bce", output="sigmoid"),
        "D ends in a sigmoid and BCE is taken on probabilities (clamping and clipping differ)",
    ),
    "adam-constants-0.9-0.999": (
        dataclasses.replace(PARITY, name="adam-constants-0.9-0.999", lr=1e-3, beta_1=0.9, beta_2=0.999),
        "Adam's usual lr 1e-3, betas 0.9 and 0.999, which float32 cannot represent exactly",
    ),
    "bn-momentum-0.1": (
        dataclasses.replace(PARITY, name="bn-momentum-0.1", bn_momentum=0.1),
        "BatchNorm momentum 0.1 (Keras 0.9), which float32 cannot represent exactly",
    ),
    "same-padding": (
        dataclasses.replace(PARITY, name="same-padding", padding="same"),
        "Keras padding='same' for D's stride-2 conv (pads bottom/right only) vs PyTorch padding=1",
    ),
}


def bn_settings(config: Config, framework: str) -> Tuple[float, float]:
    """(momentum, epsilon) as the framework's own BatchNorm constructor takes them."""
    if config.bn == "matched":
        # Keras counts momentum the other way: its 0.875 is PyTorch's 0.125
        momentum = config.bn_momentum if framework == "torch" else 1 - config.bn_momentum
        return momentum, MATCHED_BN_EPS
    return (0.1, 1e-5) if framework == "torch" else (0.99, 1e-3)


def adam_epsilon(config: Config, framework: str) -> float:
    if config.adam_eps == "matched":
        return MATCHED_ADAM_EPS
    return 1e-8 if framework == "torch" else 1e-7


def param_shapes(config: Config) -> Dict[str, Tuple[int, ...]]:
    """Trainable tensors of G and D in canonical order and layout."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    shapes["G.deconv.kernel"] = (LATENT, G_FEATURES, 6, 6)
    if config.bias_before_bn:
        shapes["G.deconv.bias"] = (G_FEATURES,)
    shapes["G.bn.gamma"] = (G_FEATURES,)
    shapes["G.bn.beta"] = (G_FEATURES,)
    shapes["G.conv.kernel"] = (IMAGE[0], G_FEATURES, 3, 3)
    shapes["G.conv.bias"] = (IMAGE[0],)
    shapes["D.conv1.kernel"] = (D_FEATURES, IMAGE[0], 3, 3)
    if config.bias_before_bn:
        shapes["D.conv1.bias"] = (D_FEATURES,)
    shapes["D.bn.gamma"] = (D_FEATURES,)
    shapes["D.bn.beta"] = (D_FEATURES,)
    shapes["D.conv2.kernel"] = (1, D_FEATURES, 1, 1)
    shapes["D.conv2.bias"] = (1,)
    return shapes


def rounding_tensors(config: Config) -> Dict[str, str]:
    """Each bias that feeds a BatchNorm directly, with the kernel of its own layer.

    In training mode BN subtracts the batch mean, so such a bias has no effect on the
    output and its gradient is zero in exact arithmetic; what a machine computes is
    rounding noise whose value (0.0 or not) depends on the order of summation. Read from
    the layer order of ``param_shapes``: a layer with a bias followed by a layer with a gamma.
    """
    layers: List[str] = []
    for name in param_shapes(config):
        layer = name.rsplit(".", 1)[0]
        if layer not in layers:
            layers.append(layer)
    names = set(param_shapes(config))
    out = {}
    for layer, following in zip(layers, layers[1:]):
        if f"{layer}.bias" in names and f"{following}.gamma" in names and layer[0] == following[0]:
            out[f"{layer}.bias"] = f"{layer}.kernel"
    return out


def state_shapes() -> Dict[str, Tuple[int, ...]]:
    """Non-trainable state shared by every engine (BN running statistics)."""
    return {
        "G.bn.moving_mean": (G_FEATURES,),
        "G.bn.moving_variance": (G_FEATURES,),
        "D.bn.moving_mean": (D_FEATURES,),
        "D.bn.moving_variance": (D_FEATURES,),
    }


def bn_layers() -> Dict[str, int]:
    """Each BN layer and the number of values per channel in one batch's statistics."""
    return {"G.bn": BATCH * 6 * 6, "D.bn": BATCH * 3 * 3}


def initial_weights(config: Config, seed: int = 0) -> Dict[str, np.ndarray]:
    """Canonical float64 weights and state, made once here and loaded into every engine."""
    weights: Dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for name, shape in param_shapes(config).items():
        if config.init == "constant":
            value = 0.0 if name.endswith(".bias") or name.endswith(".beta") else 0.01
            weights[name] = np.full(shape, value, dtype=np.float64)
        elif name.endswith(".gamma"):
            weights[name] = rng.uniform(0.8, 1.2, shape)
        elif name.endswith(".beta") or name.endswith(".bias"):
            weights[name] = rng.uniform(-0.1, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if "deconv" not in name else shape[0]
            bound = 1.0 / np.sqrt(fan_in)
            weights[name] = rng.uniform(-bound, bound, shape)
    for name, shape in state_shapes().items():
        if config.init == "constant":
            weights[name] = np.zeros(shape) if name.endswith("mean") else np.ones(shape)
        elif name.endswith("mean"):
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
    ys, xs = np.meshgrid(np.linspace(-1, 1, IMAGE[1]), np.linspace(-1, 1, IMAGE[2]), indexing="ij")
    batches = []
    for _ in range(iterations):
        phase = rng.uniform(0, 2 * np.pi, (BATCH, IMAGE[0], 1, 1))
        freq = rng.uniform(0.5, 2.0, (BATCH, 1, 1, 1))
        real = np.sin(freq * (xs + ys)[None, None] * np.pi + phase) * 0.9
        z = rng.standard_normal((BATCH, LATENT, 1, 1))
        batches.append({"real": real, "z": z})
    return batches


# --- the bench's sizes (``compare bench``): the toy GAN above and the PyTorch DCGAN example's pair
DCGAN_NZ, DCGAN_NGF, DCGAN_NDF = 100, 64, 64  # the example's widths
DCGAN_ADAM = {"lr": 2e-4, "beta_1": 0.5, "beta_2": 0.999}  # the example's Adam
BENCH_SHAPES = {  # size -> (batch, image CHW, latent)
    "toy": (BATCH, IMAGE, LATENT),
    "dcgan64": (64, (3, 64, 64), DCGAN_NZ),
}


def bench_batch(size: str, seed: int = 1) -> Dict[str, np.ndarray]:
    """One batch for timing (values do not matter, only shapes): ``real`` NCHW uniform in
    [-1, 1], ``z`` (N, latent, 1, 1); every engine's bench gets the same numbers."""
    n, image, latent = BENCH_SHAPES[size]
    rng = np.random.default_rng(seed)
    return {"real": rng.uniform(-1, 1, (n, *image)), "z": rng.standard_normal((n, latent, 1, 1))}
