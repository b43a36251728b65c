"""What both sides of a check share: the stages, the data, and the array keys (numpy only).

Array keys are ``<stage>/<quantity>/<name>``; quantity is one of ``output`` (a net's output,
or a layer's as ``<net>.<layer>``), ``loss``, ``gradient``, ``param``, ``optimizer``
(Adam's ``<tensor>.m`` and ``<tensor>.v``), ``state`` and, on the torch side only,
``batchvar`` (the batch variances each BatchNorm normalised with: the variance rule's input).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

FORWARD_STAGES = ("forward.G.eval", "forward.G.train", "forward.D.eval", "forward.D.train")
QUANTITY_ORDER = ("loss", "output", "gradient", "param", "optimizer", "state")
LOSSES = ("D_real", "D_fake", "G")


def stages(iterations: int) -> List[str]:
    """Every stage a check compares, in the order the first divergence is looked for."""
    last = [f"iteration.{iterations}"] if iterations > 1 else []
    return ["structure", *FORWARD_STAGES, "gradients", "iteration.1", *last]


def make_batches(latent_shape: Sequence[int], image_shape: Sequence[int], batch: int, count: int,
                 seed: int = 1) -> List[Dict[str, np.ndarray]]:
    """Per iteration: ``real`` images (NCHW, uniform in [-1, 1]) and latent ``z``, float64."""
    rng = np.random.default_rng(seed)
    return [{"real": rng.uniform(-1, 1, (batch, *image_shape)), "z": rng.standard_normal((batch, *latent_shape))}
            for _ in range(count)]


def channels_last(x: np.ndarray) -> np.ndarray:
    """A canonical (channels-first) batch in Keras's layout."""
    return np.moveaxis(x, 1, -1) if x.ndim >= 3 else x


def channels_first(x: np.ndarray, layer_type: str = "") -> np.ndarray:
    """A Keras activation in canonical layout: images and Conv1d outputs move their channels
    to axis 1; other 3-D activations (an Embedding's) keep theirs."""
    if x.ndim == 4 or (x.ndim == 3 and layer_type.startswith("Conv")):
        return np.moveaxis(x, -1, 1)
    return x


def put_losses(arrays: Dict[str, np.ndarray], stage: str, losses: Dict[str, float]) -> None:
    for name, value in losses.items():
        arrays[f"{stage}/loss/{name}"] = np.array([value], dtype=np.float64)


def iteration_losses(history: Dict[str, List[float]]) -> Dict[str, float]:
    """Every iteration's losses, as ``<loss>.<iteration>``."""
    return {f"{k}.{i}": x for k, v in history.items() for i, x in enumerate(v, 1)}
