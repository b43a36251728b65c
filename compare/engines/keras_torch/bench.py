"""Keras 3 on PyTorch in ``compare bench``: Keras models are torch modules, so the custom
step is PyTorch's own (backward, then the Keras optimizer's apply), run eagerly as users
run it (compiling it would be torch.compile, a different idiom)."""

from __future__ import annotations

from typing import Optional

import keras

from compare.engines.keras_common.bench import KerasBench


class KerasTorchBench(KerasBench):
    keras = keras
    packages = ("keras", "torch")
    custom_wrap = "eager"
    # eager torch: D's parameters require grad, so the G step's backward through D makes
    # D's weight gradients too (BDwx), as torch's detach idiom does
    custom_flops = {"FG": 1, "FD": 3, "BDw": 2, "BDwx": 1, "BG": 1}
    custom_memory = {"PG": 1, "PD": 1, "AG": 1, "ADwx": 1}

    def setup(self, device: str) -> Optional[str]:
        from compare.engines.torch.bench import setup_torch

        return setup_torch(device)

    def sync(self, out) -> None:
        out.item()

    def custom_step(self, gan):
        from compare.engines.keras_torch.engine import torch_step

        return lambda: torch_step(gan, gan.real, gan.z, gan.y_real, gan.y_fake)[2]

    def gpu_memory(self):
        from compare.engines.torch.bench import cuda_memory

        return cuda_memory()


BENCH = KerasTorchBench()
