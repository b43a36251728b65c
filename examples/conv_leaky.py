"""A conv GAN of another depth, with LeakyReLU in both nets, a pair no rule here was written
for: G upsamples 4x4 -> 16x16 in two transposed convolutions, D downsamples with two
stride-2 convolutions and ends in a Dense over the flattened features.

    python -m compare check examples/conv_leaky.py

The builders take the base width (the tests run a small one).
"""

WIDTH = 32
LATENT_SHAPE = (32,)
IMAGE_SHAPE = (3, 16, 16)


def build_torch(width=WIDTH):
    from torch import nn

    G = nn.Sequential(
        nn.Linear(32, width * 2 * 4 * 4), nn.LeakyReLU(0.2), nn.Unflatten(1, (width * 2, 4, 4)),
        nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),  # 8x8
        nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Tanh(),  # 16x16
    )
    D = nn.Sequential(
        nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),  # 8x8
        nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2),  # 4x4
        nn.Flatten(), nn.Linear(width * 2 * 4 * 4, 1),
    )
    return G, D


def build_keras(keras, width=WIDTH):
    layers = keras.layers

    def leaky():
        try:
            return layers.LeakyReLU(negative_slope=0.2)  # Keras 3
        except TypeError:
            return layers.LeakyReLU(alpha=0.2)  # Keras 2

    def bn():
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)

    # a 4x4 kernel with stride 2 on an even size: 'same' pads one on every side, as padding=1 does
    G = keras.Sequential([
        keras.Input((32,)),
        layers.Dense(width * 2 * 4 * 4), leaky(),
        layers.Reshape((width * 2, 4, 4)), layers.Permute((2, 3, 1)),  # torch's (C, H, W), then NHWC
        layers.Conv2DTranspose(width, 4, 2, padding="same", use_bias=False), bn(), leaky(),
        layers.Conv2DTranspose(3, 4, 2, padding="same", activation="tanh"),
    ])
    D = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(width, 4, 2, padding="same"), leaky(),
        layers.Conv2D(width * 2, 4, 2, padding="same", use_bias=False), bn(), leaky(),
        layers.Flatten(), layers.Dense(1),  # flattens NHWC: the port permutes the kernel's rows
    ])
    return G, D
