"""Keras 3 on PyTorch: Keras models are torch modules, so the step is PyTorch's own."""

from __future__ import annotations

import keras
import torch

from compare.engines.keras_common.engine import KerasEngine


def torch_step(gan, real, z, y_real, y_fake, step: bool = True, keep_d_grads: bool = False):
    """The canonical iteration on Keras models that are torch modules: backward, then the Keras
    optimizer's apply (the parity runs and the bench run it). Returns the losses, a copy of D's
    gradients from before the G step if asked (its backward adds into them), and G's."""
    G, D, loss_func = gan.G, gan.D, gan.loss
    D.zero_grad()
    errD_real = loss_func(y_real, D(real, training=True))
    errD_real.backward()
    fake = G(z, training=True)
    errD_fake = loss_func(y_fake, D(fake.detach(), training=True))
    errD_fake.backward()
    d_grads = [v.value.grad for v in D.trainable_weights]
    kept = [g.clone() for g in d_grads] if keep_d_grads else None
    if step:
        with torch.no_grad():
            gan.optimizer_D.apply(d_grads, D.trainable_weights)
    G.zero_grad()
    errG = loss_func(y_real, D(fake, training=True))
    errG.backward()
    g_grads = [v.value.grad for v in G.trainable_weights]
    if step:
        with torch.no_grad():
            gan.optimizer_G.apply(g_grads, G.trainable_weights)
    return errD_real, errD_fake, errG, kept, g_grads


class KerasTorchEngine(KerasEngine):
    id = "keras-torch"
    keras = keras
    packages = ("keras", "torch")

    def setup(self, dtype: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        super().setup(dtype, threads)

    def threads(self):
        return {"torch intra-op": torch.get_num_threads()}

    def gradient_slots(self, gan):
        # every parameter, trainable now or not: a frozen layer's slot is part of the answer
        return {spec.name: None if v.value.grad is None else v.value.grad.cpu().numpy()
                for spec, v in gan.variables if spec.kind == "param"}

    def iteration(self, gan, batch, step: bool = True):
        errD_real, errD_fake, errG, d_grads, g_grads = torch_step(gan, *self.inputs(batch), step=step,
                                                                  keep_d_grads=True)
        grads = self.grads_to_canonical(gan, "D", d_grads) | self.grads_to_canonical(gan, "G", g_grads)
        losses = {"D_real": errD_real.item(), "D_fake": errD_fake.item(), "G": errG.item()}
        return losses, grads


ENGINE = KerasTorchEngine()
