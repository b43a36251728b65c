"""The toy GAN: the first source article's pair, the one every report stage and scenario runs.

Its builders (``nets``), its configurations (``config``) and its data (``data``: derived
tensors, seeded weights, batches) live in this folder and nowhere else.
"""

from compare.models.toy.config import (  # noqa: F401
    ARTICLE, ARTICLE_RANDOM, CONFIGS, MATCHED_ADAM_EPS, MATCHED_BN_EPS, PARITY, PITFALLS, Config, adam_epsilon,
    bn_settings, builder_args,
)
from compare.models.toy.data import (  # noqa: F401
    BATCH, bn_layers, initial_weights, make_batches, rounding_tensors, specs, torch_variants,
)
from compare.models.toy.nets import D_FEATURES, G_FEATURES, IMAGE_SHAPE, LATENT_SHAPE, build_keras, build_torch  # noqa: F401
