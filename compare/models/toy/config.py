"""The toy GAN's configurations: the knobs that decide whether two engines can agree.

``PARITY`` removes every known cause of disagreement; each pitfall restores one framework
default so that its effect can be measured; ``ARTICLE`` is the first source article's setup.
``builder_args`` turns a configuration into the arguments of the toy's builders.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple


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

# the scenarios' two starting points: the article's constant weights, and seeded random ones
ARTICLE_RANDOM = dataclasses.replace(ARTICLE, name="article-random-init", init="random")
CONFIGS: Tuple[Config, ...] = (PARITY, *(config for config, _ in PITFALLS.values()), ARTICLE, ARTICLE_RANDOM)


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


def builder_args(config: Config, framework: str) -> dict:
    """The arguments of ``build_torch`` (framework "torch") or ``build_keras`` for ``config``."""
    momentum, eps = bn_settings(config, framework)
    args = {"bias_before_bn": config.bias_before_bn, "bn_momentum": momentum, "bn_eps": eps,
            "output": config.output}
    if framework != "torch":
        args["padding"] = config.padding
    return args
