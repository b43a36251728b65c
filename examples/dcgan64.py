"""The PyTorch DCGAN example's architecture at 64x64x3 (compare/models/dcgan64) with its
faithful Keras port: every Keras engine passes in float32, and in float64 within 1e-9 where
the backend really computes in float64.

    python -m compare check examples/dcgan64.py

The builders take the widths, so a small version of the same architecture can be checked too.
"""

from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_torch(ngf, ndf)


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_keras(keras, ngf, ndf)
