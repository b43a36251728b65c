"""A mistaken port: the DCGAN-64 pair with D opening on a 3x3 stride-2 conv (padding=1 in
PyTorch), ported to Keras with padding='same'. With an odd kernel and stride 2 on an even
size, 'same' pads one row and column at the bottom and right only, where PyTorch pads one on
every side: every output of that conv is shifted. (With the example's own 4x4 kernels,
'same' pads one on every side and matches PyTorch's padding=1.)

    python -m compare check examples/dcgan64_same_padding.py
"""

import dcgan64 as faithful  # examples/dcgan64.py: the faithful port, and its widths
from compare.check import surgery

LATENT_SHAPE, IMAGE_SHAPE = faithful.LATENT_SHAPE, faithful.IMAGE_SHAPE


def build_torch():
    from torch import nn

    G, D = faithful.build_torch()
    D.main[0] = nn.Conv2d(IMAGE_SHAPE[0], faithful.NDF, 3, 2, 1, bias=False)
    return G, D


def build_keras(keras):
    G, D = faithful.build_keras(keras)
    first = next(l for l in surgery.keras_layers(D) if l.type == "Conv2D")
    return G, surgery.rebuild_layers(D, keras, {first.index: {"kernel_size": (3, 3), "padding": "same"}})
