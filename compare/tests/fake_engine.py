"""A stand-in engine for the tests of the runner and the report: it imports no framework, so
its process starts in a fraction of a second. Registered, under each id that
``COMPARE_TEST_ENGINES`` names, only where that variable is set (see ``compare.engines``).
Its numbers are deterministic placeholders, not a GAN: its parity records fail, and no
scenario has an implementation for it."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from compare.engines.base import Arrays, Engine
from compare.models.toy import Config


class Gan:
    def __init__(self, weights: Arrays, dtype: str):
        self.tensors = {name: np.array(value, dtype=dtype).astype(np.float64) for name, value in weights.items()}


class FakeEngine(Engine):
    id = "fake"

    def setup(self, dtype: str, threads: int = 1) -> None:
        self.dtype = dtype

    def versions(self) -> Dict[str, str]:
        return {"numpy": np.__version__}

    def build(self, config: Config, weights: Arrays) -> Gan:
        return Gan(weights, self.dtype)

    def export(self, gan: Gan) -> Arrays:
        return dict(gan.tensors)

    def trainable(self, gan: Gan) -> Dict[str, Tuple[int, ...]]:
        return {name: value.shape for name, value in gan.tensors.items()}

    def forward(self, gan: Gan, net: str, x: np.ndarray, training: bool) -> np.ndarray:
        return np.zeros((x.shape[0], 1))

    def iteration(self, gan: Gan, batch: Arrays, step: bool = True) -> Tuple[Dict[str, float], Arrays]:
        return {"D_real": 0.0, "D_fake": 0.0, "G": 0.0}, {name: np.zeros_like(v) for name, v in gan.tensors.items()}

    def bn_probe(self, x: np.ndarray) -> np.ndarray:
        return x.var(axis=(0, 2, 3))

    def computed_dtypes(self, gan: Gan, batch: Arrays) -> Dict[str, str]:
        return {"variables": self.dtype}


ENGINE = FakeEngine()
