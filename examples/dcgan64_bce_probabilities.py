"""A mistaken port: BCE on probabilities where D gives logits. D ends in logits on both sides;
PyTorch trains it with BCEWithLogitsLoss, and the Keras port with
``keras.losses.BinaryCrossentropy()``, whose ``from_logits`` defaults to False: Keras takes
the logits for probabilities, clips them into [1e-7, 1 - 1e-7] and takes their logs, so the
losses differ from the first step and the gradients through the clip are zero.

(Both frameworks ending D in a sigmoid with BCE on probabilities, as the PyTorch DCGAN example
does, is not this mistake: there the two agree until D saturates, where each keeps log(p)
finite its own way.)

    python -m compare check examples/dcgan64_bce_probabilities.py
"""

from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE
D_OUTPUT = {"torch": "logits", "keras": "probabilities"}  # what each side's loss takes D's output for


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_torch(ngf, ndf)


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_keras(keras, ngf, ndf)
