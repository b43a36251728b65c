"""A mistaken port: the DCGAN-64 pair with D opening on a 3x3 stride-2 conv (padding=1 in
PyTorch), ported to Keras with padding='same'. With an odd kernel and stride 2 on an even
size, 'same' pads one row and column at the bottom and right only, where PyTorch pads one on
every side: every output of that conv is shifted. (With the example's own 4x4 kernels,
'same' pads one on every side and matches PyTorch's padding=1.)

    python -m compare check examples/dcgan64_same_padding.py
"""

from compare.check import surgery
from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    from torch import nn

    G, D = dcgan64.build_torch(ngf, ndf)
    D.main[0] = nn.Conv2d(IMAGE_SHAPE[0], ndf, 3, 2, 1, bias=False)
    return G, D


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    G, D = dcgan64.build_keras(keras, ngf, ndf)
    first = next(l for l in surgery.keras_layers(D) if l.type == "Conv2D")
    return G, surgery.rebuild_layers(D, keras, {first.index: {"kernel_size": (3, 3), "padding": "same"}})
