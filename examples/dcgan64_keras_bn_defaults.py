"""A mistaken port: the DCGAN-64 pair with every Keras BatchNormalization left at Keras's
defaults. PyTorch's BatchNorm2d keeps momentum 0.1 (the weight of the new batch) and eps
1e-5; Keras counts momentum the other way (0.9 is PyTorch's 0.1) and defaults to 0.99 and
1e-3, so the normalisation and the running statistics both differ.

    python -m compare check examples/dcgan64_keras_bn_defaults.py
"""

from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    return dcgan64.build_torch(ngf, ndf)


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    defaults = keras.layers.BatchNormalization().get_config()  # what BatchNormalization() gives
    return dcgan64.build_keras(keras, ngf, ndf, bn_momentum=defaults["momentum"], bn_eps=defaults["epsilon"])
