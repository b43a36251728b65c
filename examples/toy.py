"""The toy GAN the report runs (compare/models/toy), as a model pair for ``compare check``:
a faithful port, so every Keras engine passes.

    python -m compare check examples/toy.py --engines keras-torch
"""

from compare.models.toy import IMAGE_SHAPE, LATENT_SHAPE, build_keras, build_torch  # noqa: F401
