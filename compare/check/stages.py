"""What both sides of a check share: the stages, the data, and the array keys (numpy only).

Array keys are ``<stage>/<quantity>/<name>``; quantity is one of ``output`` (a net's output,
or a layer's as ``<net>.<layer>``), ``loss``, ``gradient``, ``param``, ``optimizer``
(Adam's ``<tensor>.m`` and ``<tensor>.v``), ``state`` and, on the torch side only,
``batchvar`` (the batch variances each BatchNorm normalised with: the variance rule's input).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

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


def run_stages(side, batches: List[Dict[str, np.ndarray]], iterations: int,
               progress: Callable[[str], None]) -> Dict[str, np.ndarray]:
    """Every stage once, from the loaded weights, on either side (``TorchSide``, ``KerasSide``)."""
    arrays: Dict[str, np.ndarray] = {}
    first = batches[0]
    side.reset()
    arrays.update(side.split("structure"))  # the weights as loaded: the port's round trip
    progress("forward passes")
    # inference mode first: it must leave every tensor as loaded; training mode then moves
    # only the BN statistics of the net it runs
    for stage in sorted(FORWARD_STAGES, key=lambda s: (s.endswith("train"), s)):
        net, mode = stage.split(".")[1:]
        x = first["z"] if net == "G" else first["real"]
        arrays.update({f"{stage}/output/{k}": v for k, v in side.layer_outputs(net, x, mode == "train").items()})
        arrays.update({k: v for k, v in side.split(stage, (net,)).items() if "/state/" in k})
        side.record(stage, arrays, clear=True)
    progress("gradients")
    gan = side.reset()
    losses, grads = side.step(gan, first, step=False)
    put_losses(arrays, "gradients", losses)
    arrays.update({f"gradients/gradient/{n}": g for n, g in grads.items()})
    side.record("gradients", arrays)
    progress(f"{iterations} iterations")
    gan = side.reset()
    history: Dict[str, List[float]] = {}
    for i, batch in enumerate(batches, start=1):
        losses, _ = side.step(gan, batch)
        for key, value in losses.items():
            history.setdefault(key, []).append(value)
        if i in (1, iterations):
            stage = f"iteration.{i}"
            put_losses(arrays, stage, iteration_losses(history))
            arrays.update(side.split(stage))
            arrays.update(side.optimizer_state(gan, stage))
            side.record(stage, arrays)
    return arrays
