"""A Dense-headed D: the DCGAN-64 pair with D's last 4x4 conv replaced by a flatten and a
linear layer to one logit. PyTorch flattens the (C, H, W) activation channel by channel;
Keras's Flatten flattens (H, W, C) position by position. Weights copied with a plain
transpose of the Dense kernel feed every feature to the wrong row: the mistake users make.
The check's weight port permutes the kernel's rows for a Dense after a Flatten, so the
check itself moves the weights correctly, and the flatten-order cause reads which order the
Keras side flattens in against the order the kernel was ported in.

    python -m compare check examples/dcgan64_dense_nhwc.py
"""

from compare.check import surgery
from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    from torch import nn

    G, D = dcgan64.build_torch(ngf, ndf)
    last = len(D.main) - 1
    D.main[last] = nn.Sequential(nn.Flatten(), nn.Linear(ndf * 8 * 4 * 4, 1))
    return G, D


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    G, D = dcgan64.build_keras(keras, ngf, ndf)
    last = [l for l in surgery.keras_layers(D) if l.type == "Conv2D"][-1]
    by_id = surgery.at_positions(D, {last.index: True})

    def head(layer, config):
        if id(layer) in by_id:  # flattens NHWC: the Keras default
            return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)], name="head")
        return None
    return G, surgery.clone_keras(D, keras, head)
