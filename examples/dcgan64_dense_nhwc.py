"""A mistaken port: a Dense-headed D that flattens NHWC, with its weights written by a converter
that ignores the Flatten order. D is the DCGAN-64 pair's with its last 4x4 conv replaced by a
flatten and a linear layer to one logit. PyTorch flattens the (C, H, W) activation channel
by channel; Keras's Flatten flattens (H, W, C) position by position. The team's converter
writes the Dense kernel as the Linear weight transposed and nothing more (``LAYOUTS``), so
every feature meets the wrong row: the mistake users make. (Without ``LAYOUTS`` the check
ports the kernel by its rule, which reorders the rows, and this pair passes.)

    python -m compare check examples/dcgan64_dense_nhwc.py
"""

from compare.check import surgery
from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE
HEAD = "main.11"  # the torch path of D's head: nn.Sequential(Flatten, Linear)
LAYOUTS = {"D": {f"{HEAD}.1": "transpose"}}  # the converter's plain transpose of the Linear weight


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    from torch import nn

    G, D = dcgan64.build_torch(ngf, ndf)
    D.main[11] = nn.Sequential(nn.Flatten(), nn.Linear(ndf * 8 * 4 * 4, 1))
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
