"""An MLP GAN with BatchNorm1d, a pair no rule here was written for: G maps a latent vector
through Linear | BatchNorm1d | ReLU layers to a flat image it reshapes; D flattens the image
and ends in a Linear to one logit.

    python -m compare check examples/mlp_bn1d.py

The builders take the hidden width (the tests run a small one).
"""

HIDDEN = 128
LATENT_SHAPE = (16,)
IMAGE_SHAPE = (1, 8, 8)
PIXELS = 64


def build_torch(hidden=HIDDEN):
    from torch import nn

    G = nn.Sequential(
        nn.Linear(16, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, PIXELS), nn.Tanh(), nn.Unflatten(1, IMAGE_SHAPE),
    )
    D = nn.Sequential(
        nn.Flatten(), nn.Linear(PIXELS, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )
    return G, D


def build_keras(keras, hidden=HIDDEN):
    layers = keras.layers

    def bn():  # PyTorch's momentum 0.1 and eps 1e-5, counted the Keras way
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)

    def leaky():
        try:
            return layers.LeakyReLU(negative_slope=0.2)  # Keras 3
        except TypeError:
            return layers.LeakyReLU(alpha=0.2)  # Keras 2

    G = keras.Sequential([
        keras.Input((16,)),
        layers.Dense(hidden, use_bias=False), bn(), layers.ReLU(),
        layers.Dense(hidden, use_bias=False), bn(), layers.ReLU(),
        layers.Dense(PIXELS, activation="tanh"),
        layers.Reshape(IMAGE_SHAPE), layers.Permute((2, 3, 1)),  # torch's (C, H, W), then NHWC
    ])
    D = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Flatten(), layers.Dense(hidden), leaky(),
        layers.Dense(hidden, use_bias=False), bn(), leaky(),
        layers.Dense(1),
    ])
    return G, D
