"""A mistaken port: the DCGAN-64 pair with a bias in every conv that feeds a BatchNorm, on
both sides (bias=True in PyTorch, Keras's default use_bias=True). BN subtracts the batch
mean, so such a bias changes no output and its gradient is zero in exact arithmetic; what
each framework computes is rounding noise, and Adam turns noise into steps of about lr.

    python -m compare check examples/dcgan64_bias_before_bn.py
"""

from compare.check import surgery
from compare.models import dcgan64

LATENT_SHAPE, IMAGE_SHAPE = dcgan64.LATENT_SHAPE, dcgan64.IMAGE_SHAPE


def build_torch(ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    import torch

    nets = dcgan64.build_torch(ngf, ndf)
    for net in nets:
        layers = list(net.main)
        for conv, following in zip(layers, layers[1:]):
            if isinstance(following, torch.nn.BatchNorm2d):
                # the layer's own default bias initialisation, as bias=True gives it
                bias = torch.nn.Parameter(torch.empty(conv.weight.shape[1 if conv.transposed else 0]))
                conv.bias = bias
                conv.reset_parameters()
    return nets


def build_keras(keras, ngf=dcgan64.NGF, ndf=dcgan64.NDF):
    nets = []
    for model in dcgan64.build_keras(keras, ngf, ndf):
        layers = surgery.keras_layers(model)
        before_bn = {l.index: {"use_bias": True} for l, following in zip(layers, layers[1:])
                     if following.type == "BatchNormalization"}
        nets.append(surgery.rebuild_layers(model, keras, before_bn))
    return tuple(nets)
