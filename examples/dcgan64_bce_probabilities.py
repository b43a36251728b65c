"""A mistaken port: the DCGAN-64 pair as the PyTorch example ends it, D in a sigmoid and BCE
taken on probabilities (nn.BCELoss; Keras BinaryCrossentropy()). Each framework keeps
log(p) finite its own way: PyTorch clamps the log at -100, Keras clips p away from 0 and 1,
so the losses and gradients differ once D is confident.

    python -m compare check examples/dcgan64_bce_probabilities.py
"""

from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_torch(ngf, ndf, output="sigmoid")


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_keras(keras, ngf, ndf, output="sigmoid")
