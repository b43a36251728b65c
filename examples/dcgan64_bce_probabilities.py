"""A mistaken port: the DCGAN-64 pair as the PyTorch example ends it, D in a sigmoid and BCE
taken on probabilities (nn.BCELoss; Keras BinaryCrossentropy()). Each framework keeps
log(p) finite its own way: PyTorch clamps the log at -100, Keras clips p away from 0 and 1,
so the losses and gradients differ once D is confident.

    python -m compare check examples/dcgan64_bce_probabilities.py
"""

import dcgan64 as faithful  # examples/dcgan64.py: the faithful port, and its widths
from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = faithful.LATENT_SHAPE, faithful.IMAGE_SHAPE


def build_torch():
    return dcgan64.build_torch(faithful.NGF, faithful.NDF, output="sigmoid")


def build_keras(keras):
    return dcgan64.build_keras(keras, faithful.NGF, faithful.NDF, output="sigmoid")
