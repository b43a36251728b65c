"""The small interface every engine implements, and what all engines share.

An engine module is imported only inside its own child process, so it may import
its framework at module level. Arrays cross the interface as float64 numpy arrays in
canonical names and layouts (see ``compare.port``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from compare.models.toy import Config

Arrays = Dict[str, np.ndarray]


class Engine:
    """One framework in one process. Subclasses fill in the framework-specific parts."""

    id: str = ""
    scratch: Optional[str] = None  # a folder of this process's own, removed with its results (caches)

    def setup(self, dtype: str, threads: int = 1) -> None:
        """Configure the framework for ``dtype`` and ``threads`` before any model is built."""
        raise NotImplementedError

    def versions(self) -> Dict[str, str]:
        raise NotImplementedError

    def build(self, config: Config, weights: Arrays) -> Any:
        """G, D and one Adam optimizer each, loaded with canonical ``weights``."""
        raise NotImplementedError

    def export(self, gan: Any) -> Arrays:
        """Every tensor of G and D (parameters and state) in canonical form."""
        raise NotImplementedError

    def trainable(self, gan: Any) -> Dict[str, Tuple[int, ...]]:
        """Canonical name and shape of every trainable tensor (the rest of export() is state)."""
        raise NotImplementedError

    def value(self, gan: Any, name: str) -> np.ndarray:
        """One tensor of G or D by canonical name, as export() gives it: how scenarios read one."""
        return self.export(gan)[name]

    def forward(self, gan: Any, net: str, x: np.ndarray, training: bool) -> np.ndarray:
        """``net`` ("G" or "D") applied to canonical input ``x``; canonical output."""
        raise NotImplementedError

    def iteration(self, gan: Any, batch: Arrays, step: bool = True) -> Tuple[Dict[str, float], Arrays]:
        """The canonical GAN iteration: the PyTorch DCGAN example's order.

        Returns the losses and the gradients it computed: D's from the D loss, G's
        from the G loss. With ``step=False`` no optimizer steps, so the gradients are
        those of the loaded weights.
        """
        raise NotImplementedError

    def bn_probe(self, x: np.ndarray) -> np.ndarray:
        """Moving variance of a fresh BN layer (moving variance 1) after one training
        batch ``x`` (N, C, H, W) with the new batch weighted fully (momentum chosen so).
        Shows which variance estimator the engine's BN keeps."""
        raise NotImplementedError

    def inputs(self, batch: Arrays) -> tuple:
        """(real, z, y_real, y_fake) as the framework's tensors, in its own layout."""
        raise NotImplementedError

    def gradient_slots(self, gan: Any) -> Optional[Dict[str, Optional[np.ndarray]]]:
        """Per parameter: what its gradient slot holds (an array, or None where it is empty),
        for frameworks that keep gradients on tensors; None for those that do not."""
        return None

    def threads(self) -> Dict[str, int]:
        """The threads the framework was set to use (recorded in results.json)."""
        return {}

    def ran(self, config: Config, stage: str, mode: str) -> None:
        """Record how a parity stage ("gradients" or "iterations") of ``config`` ran: "eager",
        or the compiler it ran under (results.json and the report say so)."""
        self.__dict__.setdefault("execution", {}).setdefault(config.name, {})[stage] = mode

    def compilation_cache(self) -> Optional[Dict[str, Any]]:
        """What the engine's compilation cache did in this process (None where there is none)."""
        return None

    def precision_probes(self) -> Dict[str, Any]:
        """Op-level facts about precision: where a framework quietly leaves the chosen dtype."""
        return {}

    def computed_dtypes(self, gan: Any, batch: Arrays) -> Dict[str, str]:
        """The dtypes the framework really holds and computes in: variables, outputs, gradients."""
        raise NotImplementedError


def grad_state(grad: Any) -> str:
    """None, zero or non-zero: what a tensor's gradient slot holds."""
    if grad is None:
        return "none"
    return "zero" if not np.any(np.asarray(grad)) else "nonzero"
