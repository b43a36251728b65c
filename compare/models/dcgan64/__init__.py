"""The PyTorch DCGAN example's pair at 64x64x3, with its Keras port: the bench's large size and
the faithful example of ``compare check``.

    G: ConvTranspose nz->8f 4x4 | (BN | ReLU | ConvTranspose stride 2) x4 | tanh   1x1 -> 64x64
    D: Conv stride 2 | LeakyReLU 0.2 | (Conv stride 2 | BN | LeakyReLU 0.2) x3 | Conv 4x4   64x64 -> 1

D ends in logits (BCE from logits), where the example ends in a sigmoid and BCE on
probabilities; ``output="sigmoid"`` builds the example's ending. The widths (``ngf``, ``ndf``)
are arguments so that tests can run a small version of the same architecture.
"""

from __future__ import annotations

NZ, NGF, NDF = 100, 64, 64  # the example's widths
LATENT_SHAPE = (NZ, 1, 1)  # PyTorch layout
IMAGE_SHAPE = (3, 64, 64)
BATCH = 64  # the example's batch size
ADAM = {"lr": 2e-4, "beta_1": 0.5, "beta_2": 0.999}  # the example's Adam


def build_torch(ngf: int = NGF, ndf: int = NDF, bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                output: str = "logits"):
    """(G, D) as the example writes them: modules with a ``main`` nn.Sequential."""
    from torch import nn

    def bn(width):
        return nn.BatchNorm2d(width, eps=bn_eps, momentum=bn_momentum)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(NZ, ngf * 8, 4, 1, 0, bias=False), bn(ngf * 8), nn.ReLU(True),  # 4x4
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), bn(ngf * 4), nn.ReLU(True),  # 8x8
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), bn(ngf * 2), nn.ReLU(True),  # 16
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), bn(ngf), nn.ReLU(True),  # 32x32
                nn.ConvTranspose2d(ngf, IMAGE_SHAPE[0], 4, 2, 1, bias=False), nn.Tanh(),  # 64x64
            )

        def forward(self, x):
            return self.main(x)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            tail = [nn.Sigmoid()] if output == "sigmoid" else []
            self.main = nn.Sequential(
                nn.Conv2d(IMAGE_SHAPE[0], ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 32x32
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), bn(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), bn(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), bn(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), *tail,  # 4x4 -> 1x1
            )

        def forward(self, x):
            return self.main(x).view(x.size(0), -1)

    return Generator(), Discriminator()


def leaky_relu(layers):
    try:
        return layers.LeakyReLU(negative_slope=0.2)  # Keras 3
    except TypeError:
        return layers.LeakyReLU(alpha=0.2)  # Keras 2


def build_keras(keras, ngf: int = NGF, ndf: int = NDF, bn_momentum: float = 0.9, bn_eps: float = 1e-5,
                output: str = "logits"):
    """(G, D) ported to Keras (Keras 3 on any backend, or Keras 2: ``keras`` is the module).

    With a 4x4 kernel and stride 2 on an even size, 'same' pads one row and column on every
    side, exactly PyTorch's padding=1, for Conv2D and Conv2DTranspose alike; BN momentum 0.9
    is PyTorch's 0.1 counted the Keras way."""
    layers = keras.layers

    def bn():
        return layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_eps)

    stack = [keras.Input(shape=(1, 1, NZ)),
             layers.Conv2DTranspose(ngf * 8, 4, strides=1, padding="valid", use_bias=False)]  # 4x4
    for width in (ngf * 4, ngf * 2, ngf):  # 8, 16, 32
        stack += [bn(), layers.ReLU(), layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False)]
    stack += [bn(), layers.ReLU(),
              layers.Conv2DTranspose(IMAGE_SHAPE[0], 4, strides=2, padding="same", use_bias=False),  # 64x64
              layers.Activation("tanh")]
    G = keras.Sequential(stack, name="G")
    stack = [keras.Input(shape=(IMAGE_SHAPE[1], IMAGE_SHAPE[2], IMAGE_SHAPE[0])),
             layers.Conv2D(ndf, 4, strides=2, padding="same", use_bias=False), leaky_relu(layers)]  # 32
    for width in (ndf * 2, ndf * 4, ndf * 8):  # 16, 8, 4
        stack += [layers.Conv2D(width, 4, strides=2, padding="same", use_bias=False), bn(), leaky_relu(layers)]
    stack += [layers.Conv2D(1, 4, strides=1, padding="valid", use_bias=False)]  # 4x4 -> 1x1
    if output == "sigmoid":
        stack.append(layers.Activation("sigmoid"))
    D = keras.Sequential(stack + [layers.Flatten()], name="D")
    return G, D
