"""Keras 3 on JAX: stateless calls, jax.value_and_grad for D and jax.vjp to reuse G's forward."""

from __future__ import annotations

import jax
import keras

from compare.engines.keras_common.engine import KerasEngine


class KerasJaxEngine(KerasEngine):
    id = "keras-jax"
    keras = keras
    packages = ("keras", "jax", "jaxlib")

    def iteration(self, gan, batch, step: bool = True):
        G, D, loss_func = gan.G, gan.D, gan.loss
        real, z, y_real, y_fake = self.inputs(batch)
        for optimizer, model in ((gan.optimizer_D, D), (gan.optimizer_G, G)):
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
        g_train = [v.value for v in G.trainable_variables]
        g_state = [v.value for v in G.non_trainable_variables]
        d_train = [v.value for v in D.trainable_variables]
        d_state = [v.value for v in D.non_trainable_variables]
        # --- canonical iteration: begin ---
        def generate(g_train):
            return G.stateless_call(g_train, g_state, z, training=True)

        # One forward of G; g_backward carries it to the G step, like PyTorch's reused `fake`.
        fake, g_backward, g_state = jax.vjp(generate, g_train, has_aux=True)

        def d_loss(d_train, d_state):
            out_real, d_state = D.stateless_call(d_train, d_state, real, training=True)
            errD_real = loss_func(y_real, out_real)
            # `fake` is a plain array here: no gradient can reach G (the detach is implicit)
            out_fake, d_state = D.stateless_call(d_train, d_state, fake, training=True)
            errD_fake = loss_func(y_fake, out_fake)
            return errD_real + errD_fake, (d_state, errD_real, errD_fake)

        (_, (d_state, errD_real, errD_fake)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d_train, d_state)
        if step:
            d_train, d_opt = gan.optimizer_D.stateless_apply(
                [v.value for v in gan.optimizer_D.variables], d_grads, d_train)

        def g_loss(fake, d_state):
            out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
            return loss_func(y_real, out), d_state

        (errG, d_state), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(fake, d_state)
        (g_grads,) = g_backward(fake_grad)
        if step:
            g_train, g_opt = gan.optimizer_G.stateless_apply(
                [v.value for v in gan.optimizer_G.variables], g_grads, g_train)
        # --- canonical iteration: end ---
        # Write the new values back into the Keras variables.
        updates = [(G.trainable_variables, g_train), (G.non_trainable_variables, g_state),
                   (D.trainable_variables, d_train), (D.non_trainable_variables, d_state)]
        if step:
            updates += [(gan.optimizer_D.variables, d_opt), (gan.optimizer_G.variables, g_opt)]
        for variables, values in updates:
            for variable, value in zip(variables, values):
                variable.assign(value)
        grads = self.grads_to_canonical(gan, "D", d_grads) | self.grads_to_canonical(gan, "G", g_grads)
        losses = {"D_real": float(errD_real), "D_fake": float(errD_fake), "G": float(errG)}
        return losses, grads


ENGINE = KerasJaxEngine()
