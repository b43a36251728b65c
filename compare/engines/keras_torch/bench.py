"""Keras 3 on PyTorch in ``compare bench``: Keras models are torch modules, so the custom
step is PyTorch's own (backward, then the Keras optimizer's apply), run eagerly as users
run it (compiling it would be torch.compile, a different idiom)."""

from __future__ import annotations

from typing import Optional

import keras
import torch

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
        torch.set_num_threads(1)
        if device == "cuda":
            if not torch.cuda.is_available():
                return f"torch {torch.__version__} sees no CUDA device"
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        return None

    def sync(self, out) -> None:
        out.item()

    def custom_step(self, gan):
        G, D, loss_func = gan.G, gan.D, gan.loss
        real, z, y_real, y_fake = gan.real, gan.z, gan.y_real, gan.y_fake

        def step():
            D.zero_grad()
            loss_func(y_real, D(real, training=True)).backward()
            fake = G(z, training=True)
            loss_func(y_fake, D(fake.detach(), training=True)).backward()
            with torch.no_grad():
                gan.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
            G.zero_grad()
            errG = loss_func(y_real, D(fake, training=True))
            errG.backward()
            with torch.no_grad():
                gan.optimizer_G.apply([v.value.grad for v in G.trainable_weights], G.trainable_weights)
            return errG

        return step

    def gpu_memory(self):
        from compare.engines.torch.bench import cuda_memory

        return cuda_memory()


BENCH = KerasTorchBench()
