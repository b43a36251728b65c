"""The toy GAN's two networks, once per framework (the first source article's architecture):

    G: ConvTranspose 100->64, 6x6 | BatchNorm | ReLU | Conv 64->3, 3x3, pad 1 | tanh
    D: Conv 3->32, 3x3, stride 2, pad 1 | BatchNorm | ReLU | AvgPool 3 | Conv 32->1, 1x1 | [sigmoid]

The arguments are the configurations that decide whether two engines can agree (see
``compare.models.toy.config``); each builder takes BatchNorm momentum in its own framework's
convention. The defaults are the parity configuration, so the pair also stands on its own.
Frameworks are imported inside the builders: this module is imported where none is installed.
"""

from __future__ import annotations

LATENT_SHAPE = (100, 1, 1)  # PyTorch layout
IMAGE_SHAPE = (3, 6, 6)
G_FEATURES = 64
D_FEATURES = 32


def build_torch(bias_before_bn: bool = False, bn_momentum: float = 0.125, bn_eps: float = 1e-5,
                output: str = "logits"):
    """(G, D) as torch modules whose module paths give the canonical names (G.deconv.kernel, ...)."""
    from collections import OrderedDict

    from torch import nn

    latent, channels = LATENT_SHAPE[0], IMAGE_SHAPE[0]
    G = nn.Sequential(OrderedDict([
        ("deconv", nn.ConvTranspose2d(latent, G_FEATURES, 6, 1, bias=bias_before_bn)),  # 1x1 -> 6x6
        ("bn", nn.BatchNorm2d(G_FEATURES, eps=bn_eps, momentum=bn_momentum)),
        ("relu", nn.ReLU(True)),
        ("conv", nn.Conv2d(G_FEATURES, channels, 3, padding=1)),
        ("tanh", nn.Tanh()),
    ]))
    layers = [
        ("conv1", nn.Conv2d(channels, D_FEATURES, 3, 2, padding=1, bias=bias_before_bn)),  # 6x6 -> 3x3
        ("bn", nn.BatchNorm2d(D_FEATURES, eps=bn_eps, momentum=bn_momentum)),
        ("relu", nn.ReLU(True)),
        ("pool", nn.AvgPool2d(3)),  # 3x3 -> 1x1
        ("conv2", nn.Conv2d(D_FEATURES, 1, 1)),
    ]
    if output == "sigmoid":
        layers.append(("sigmoid", nn.Sigmoid()))
    D = nn.Sequential(OrderedDict(layers + [("flatten", nn.Flatten())]))  # (N, 1)
    return G, D


def build_keras(keras, bias_before_bn: bool = False, bn_momentum: float = 0.875, bn_eps: float = 1e-5,
                output: str = "logits", padding: str = "explicit"):
    """(G, D) as Keras Sequential models, for Keras 3 on any backend or Keras 2 (``keras`` is the
    module to use)."""
    layers = keras.layers
    latent, channels = LATENT_SHAPE[0], IMAGE_SHAPE[0]
    G = keras.Sequential([
        keras.Input(shape=(1, 1, latent)),
        layers.Conv2DTranspose(G_FEATURES, 6, strides=1, use_bias=bias_before_bn, name="deconv"),  # 1x1 -> 6x6
        layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_eps, name="bn"),
        layers.ReLU(),
        layers.Conv2D(channels, 3, padding="same", name="conv"),  # stride 1, odd kernel: 'same' is symmetric
        layers.Activation("tanh"),
    ], name="G")
    if padding == "explicit":
        # PyTorch's padding=1: one zero row/column on every side, then a 'valid' conv
        conv1 = [layers.ZeroPadding2D(1), layers.Conv2D(D_FEATURES, 3, strides=2, padding="valid",
                                                        use_bias=bias_before_bn, name="conv1")]
    else:
        # 'same' with stride 2 on an even size pads only bottom/right: shifted outputs
        conv1 = [layers.Conv2D(D_FEATURES, 3, strides=2, padding="same", use_bias=bias_before_bn, name="conv1")]
    tail = [layers.Activation("sigmoid")] if output == "sigmoid" else []
    D = keras.Sequential([
        keras.Input(shape=(IMAGE_SHAPE[1], IMAGE_SHAPE[2], channels)),
        *conv1,  # 6x6 -> 3x3
        layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_eps, name="bn"),
        layers.ReLU(),
        layers.AveragePooling2D(3),  # 3x3 -> 1x1
        layers.Conv2D(1, 1, name="conv2"),
        *tail,
        layers.Flatten(),
    ], name="D")
    return G, D
