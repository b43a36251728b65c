"""The PyTorch DCGAN example's architecture at 64x64x3 (compare/models/dcgan64) with its
faithful Keras port: every Keras engine passes in float32, and in float64 within 1e-9 where
the backend really computes in float64.

    python -m compare check examples/dcgan64.py

``WIDTHS`` set through the environment runs a small version of the same architecture
(the tests do: ``COMPARE_DCGAN_WIDTHS=8,8``).
"""

import os

from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE
NGF, NDF = (int(n) for n in os.environ.get("COMPARE_DCGAN_WIDTHS", f"{dcgan64.NGF},{dcgan64.NDF}").split(","))


def build_torch():
    return dcgan64.build_torch(NGF, NDF)


def build_keras(keras):
    return dcgan64.build_keras(keras, NGF, NDF)
