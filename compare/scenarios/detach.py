"""detach and its counterparts (the second article): what does ``fake.detach()`` do in a GAN loop?

The reference is the PyTorch DCGAN iteration: ``fake = G(z)`` once, ``D(fake.detach())`` in
the D step, the same ``fake`` in the G step. The other scenarios take the detach away and try
the alternatives the article names (``retain_graph=True``, computing ``fake`` again), leave
out ``G.zero_grad()``, and ask the Keras counterparts (``stop_gradient``, a tape asked twice)
the same questions. Where a scenario says "same parameters as the reference", it compares
the final parameter fingerprints with ``detach.reuse_with_detach`` on the same engine.
"""

from __future__ import annotations

from compare.engines.base import grad_state
from compare.scenarios import KERAS_IDS, Claim, Scenario, Unobserved, register

REFERENCE = "detach.reuse_with_detach"


def gradient_kinds(grads):
    """None, zero or nonzero for each gradient, whichever framework's array it is."""
    return [grad_state(g) for g in grads]


def global_norm(grads):
    """The norm of all gradients together, in float64 (None counts as zero)."""
    import numpy as np

    return float(np.sqrt(sum(np.sum(np.square(np.asarray(g, dtype=np.float64))) for g in grads if g is not None)))


def backward_flops(counter):
    """The part of a FlopCounterMode's total spent in backward ops."""
    return sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "backward" in str(op))


def d_step(o):
    """The step that applied D's optimizer, whatever the engine calls it."""
    for step in o.record["steps"]:
        if step["label"].startswith("optimizer_D"):
            return step
    raise Unobserved("optimizer_D step")  # an earlier call raised and the step never ran


def same_params_as_reference(o):
    return o.error is None and o.record["digests"] == o.peer(REFERENCE).record["digests"]


def backward_twice_error(o):
    return (o.error is not None and o.error["type"] == "RuntimeError"
            and "Trying to backward through the graph a second time" in o.error["message"])


# --- detach.reuse_with_detach (the reference) ---------------------------------------------

reuse_with_detach = register(Scenario(
    id="detach.reuse_with_detach",
    question="The canonical iteration: fake = G(z) once, D(fake.detach()) in the D step, the same fake "
             "in the G step. What changes, where do G's gradients come from, and how much work is it? "
             "(The reference for the other detach scenarios.)",
    sources=["pytorch-dcgan", "article-2", "inside-deep-learning"],
    claims=[
        Claim("dcgan-iteration", "The DCGAN iteration (fake.detach() in the D step, the same fake reused in "
              "the G step) runs and updates both D and G.", "pytorch-dcgan",
              lambda o: o.error is None and o.moved("D") != [] and o.moved("G") != []),
        Claim("detach-keeps-g-out", "Detached, the D step's gradient does not impact G: G does not move in "
              "the D step.", "inside-deep-learning", lambda o: d_step(o)["changed"]["G"]["params"] == []),
    ],
))


@reuse_with_detach.implement("torch")
def reuse_with_detach_torch(ctx):
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with FlopCounterMode(display=False) as flops:
        D.zero_grad()
        errD_real = loss_func(D(ctx.real), ctx.y_real)
        errD_real.backward()
        ctx.step("errD_real.backward()")
        fake = G(ctx.z)
        ctx.step("fake = G(z)")
        errD_fake = loss_func(D(fake.detach()), ctx.y_fake)
        errD_fake.backward()
        ctx.step("errD_fake.backward()")
        ctx.optimizer_D.step()
        ctx.step("optimizer_D.step()")
        G.zero_grad()
        ctx.step("G.zero_grad()")
        errG = loss_func(D(fake), ctx.y_real)
        errG.backward()
        ctx.step("errG.backward()")
        ctx.optimizer_G.step()
        ctx.step("optimizer_G.step()")
    ctx.record("G grad norm", global_norm([p.grad for p in G.parameters()]))
    ctx.record("FLOPs", flops.get_total_flops())
    ctx.record("backward FLOPs", backward_flops(flops))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@reuse_with_detach.implement("keras-tensorflow", "tf-keras")
def reuse_with_detach_tape(ctx):
    import tensorflow as tf

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    # persistent: the same recording of G's forward serves the G step
    with tf.GradientTape(persistent=True) as tape:
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        fake = G(ctx.z, training=True)
        errD_fake = loss_func(ctx.y_fake, D(tf.stop_gradient(fake), training=True))
        errD = errD_real + errD_fake
    ctx.step("D(real), fake = G(z), D(tf.stop_gradient(fake))")
    d_grads = tape.gradient(errD, D.trainable_weights)
    ctx.optimizer_D.apply_gradients(zip(d_grads, D.trainable_weights))
    ctx.step("optimizer_D.apply_gradients")
    with tape:  # resume recording: D(fake) through D's new weights, as PyTorch does
        errG = loss_func(ctx.y_real, D(fake, training=True))
    g_grads = tape.gradient(errG, G.trainable_weights)
    ctx.step("tape.gradient(errG, G.trainable_weights)")
    ctx.optimizer_G.apply_gradients(zip(g_grads, G.trainable_weights))
    ctx.step("optimizer_G.apply_gradients")
    del tape
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@reuse_with_detach.implement("keras-jax")
def reuse_with_detach_jax(ctx):
    import jax

    G, D, loss_func = ctx.G, ctx.D, ctx.loss

    def generate(g_train):
        return G.stateless_call(g_train, [v.value for v in G.non_trainable_variables], ctx.z, training=True)

    # one forward of G; g_backward carries it to the G step, like PyTorch's reused `fake`
    fake, g_backward, g_state = jax.vjp(generate, [v.value for v in G.trainable_variables], has_aux=True)
    for variable, value in zip(G.non_trainable_variables, g_state):
        variable.assign(value)
    ctx.step("fake, g_backward = jax.vjp(G)")

    def d_loss(d_train, d_state):
        out_real, d_state = D.stateless_call(d_train, d_state, ctx.real, training=True)
        # `fake` is a plain array here: no gradient can reach G (the detach is implicit)
        out_fake, d_state = D.stateless_call(d_train, d_state, fake, training=True)
        return loss_func(ctx.y_real, out_real) + loss_func(ctx.y_fake, out_fake), d_state

    (errD, d_state), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        [v.value for v in D.trainable_variables], [v.value for v in D.non_trainable_variables])
    for variable, value in zip(D.non_trainable_variables, d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(d_loss)")
    ctx.optimizer_D.apply(d_grads, D.trainable_variables)
    ctx.step("optimizer_D.apply")

    def g_loss(fake, d_state):
        out, d_state = D.stateless_call([v.value for v in D.trainable_variables], d_state, fake, training=True)
        return loss_func(ctx.y_real, out), d_state

    (errG, d_state), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(
        fake, [v.value for v in D.non_trainable_variables])
    (g_grads,) = g_backward(fake_grad)
    for variable, value in zip(D.non_trainable_variables, d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(g_loss), g_backward")
    ctx.optimizer_G.apply(g_grads, G.trainable_variables)
    ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@reuse_with_detach.implement("keras-torch")
def reuse_with_detach_keras_torch(ctx):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with FlopCounterMode(display=False) as flops:
        D.zero_grad()
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        errD_real.backward()
        ctx.step("errD_real.backward()")
        fake = G(ctx.z, training=True)
        ctx.step("fake = G(z)")
        errD_fake = loss_func(ctx.y_fake, D(fake.detach(), training=True))
        errD_fake.backward()
        ctx.step("errD_fake.backward()")
        with torch.no_grad():
            ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
        ctx.step("optimizer_D.apply")
        G.zero_grad()
        ctx.step("G.zero_grad()")
        errG = loss_func(ctx.y_real, D(fake, training=True))
        errG.backward()
        ctx.step("errG.backward()")
        g_grads = [v.value.grad for v in G.trainable_weights]
        with torch.no_grad():
            ctx.optimizer_G.apply(g_grads, G.trainable_weights)
        ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("FLOPs", flops.get_total_flops())
    ctx.record("backward FLOPs", backward_flops(flops))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


# --- detach.reuse_without_detach -----------------------------------------------------------

reuse_without_detach = register(Scenario(
    id="detach.reuse_without_detach",
    question="No detach in the D step (D(fake)), and the same fake reused in the G step. Does the G "
             "backward fail, and does the D step touch G?",
    sources=["article-2", "inside-deep-learning", "torch-docs-backward"],
    claims=[
        Claim("g-backward-fails", "Without detach, errD_fake.backward() frees the graph through G, and "
              "errG.backward() on the reused fake fails: 'Trying to backward through the graph a second "
              "time'.", "article-2", backward_twice_error),
        Claim("d-step-impacts-g", "We detach because we don't want the gradient to impact G: without "
              "detach, the D step changes G.", "inside-deep-learning",
              lambda o: d_step(o)["changed"]["G"]["params"] != []),
        Claim("optimizer-scope", "optimizerD holds only D's parameters, so even without detach the D step "
              "updates D alone.", "article-2",
              lambda o: d_step(o)["changed"]["G"]["params"] == [] and d_step(o)["changed"]["D"]["params"] != []),
    ],
    not_applicable={
        "keras-tensorflow": "a tape keeps no graph in the tensors: the Keras counterpart is "
                            "detach.keras_stop_gradient [no-stop_gradient] and detach.tape_twice",
        "keras-jax": "gradients come from function transformations, no graph is kept in the arrays: "
                     "the counterpart is detach.keras_stop_gradient [no-stop_gradient]",
        "tf-keras": "a tape keeps no graph in the tensors: the counterpart is detach.keras_stop_gradient "
                    "[no-stop_gradient] and detach.tape_twice",
    },
))


@reuse_without_detach.implement("torch")
def reuse_without_detach_torch(ctx):
    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.zero_grad()
    errD_real = loss_func(D(ctx.real), ctx.y_real)
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(D(fake), ctx.y_fake)  # no detach
    errD_fake.backward()  # frees the whole graph, G's part included
    ctx.step("errD_fake.backward()")
    ctx.optimizer_D.step()
    ctx.step("optimizer_D.step()")
    G.zero_grad()
    ctx.step("G.zero_grad()")
    errG = loss_func(D(fake), ctx.y_real)
    ctx.record("D grad norm before errG.backward()", global_norm([p.grad for p in D.parameters()]))
    with ctx.attempt("errG.backward()"):
        errG.backward()
        ctx.step("errG.backward()")
        ctx.optimizer_G.step()
        ctx.step("optimizer_G.step()")
    # what a failed backward leaves behind in the gradient slots
    ctx.record("D grad norm after errG.backward()", global_norm([p.grad for p in D.parameters()]))
    ctx.record("G grad norm after errG.backward()", global_norm([p.grad for p in G.parameters()]))


@reuse_without_detach.implement("keras-torch")
def reuse_without_detach_keras_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.zero_grad()
    errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z, training=True)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(ctx.y_fake, D(fake, training=True))  # no detach
    errD_fake.backward()
    ctx.step("errD_fake.backward()")
    with torch.no_grad():
        ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
    ctx.step("optimizer_D.apply")
    G.zero_grad()
    ctx.step("G.zero_grad()")
    errG = loss_func(ctx.y_real, D(fake, training=True))
    ctx.record("D grad norm before errG.backward()", global_norm([v.value.grad for v in D.trainable_weights]))
    with ctx.attempt("errG.backward()"):
        errG.backward()
        ctx.step("errG.backward()")
        with torch.no_grad():
            ctx.optimizer_G.apply([v.value.grad for v in G.trainable_weights], G.trainable_weights)
        ctx.step("optimizer_G.apply")
    ctx.record("D grad norm after errG.backward()", global_norm([v.value.grad for v in D.trainable_weights]))
    ctx.record("G grad norm after errG.backward()", global_norm([v.value.grad for v in G.trainable_weights]))


# --- detach.retain_graph -------------------------------------------------------------------

retain_graph = register(Scenario(
    id="detach.retain_graph",
    question="No detach, but errD_fake.backward(retain_graph=True), and the same fake in the G step. "
             "Same parameters and state as the reference? How much extra work (FLOPs)?",
    sources=["article-2", "torch-docs-backward"],
    claims=[
        Claim("retain-graph-alternative", "errD_fake.backward(retain_graph=True) is an alternative to "
              "detach: the G step can reuse fake (same result as with detach).", "article-2",
              same_params_as_reference),
        Claim("graph-kept", "With retain_graph=True the graph is not freed after backward, so a second "
              "backward through it works.", "torch-docs-backward",
              lambda o: o.error is None and o.moved("G") != []),
    ],
    not_applicable={
        "keras-tensorflow": "no retain_graph: a tape keeps its recording while it lives; persistent=True is "
                            "the counterpart (detach.tape_twice)",
        "keras-jax": "no graph to retain: jax.vjp keeps G's forward for as long as its function is held",
        "tf-keras": "no retain_graph: a tape keeps its recording while it lives; persistent=True is the "
                    "counterpart (detach.tape_twice)",
    },
))


@retain_graph.implement("torch")
def retain_graph_torch(ctx):
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with FlopCounterMode(display=False) as flops:
        D.zero_grad()
        errD_real = loss_func(D(ctx.real), ctx.y_real)
        errD_real.backward()
        ctx.step("errD_real.backward()")
        fake = G(ctx.z)
        ctx.step("fake = G(z)")
        errD_fake = loss_func(D(fake), ctx.y_fake)  # no detach
        errD_fake.backward(retain_graph=True)  # keep G's part of the graph for the G step
        ctx.step("errD_fake.backward(retain_graph=True)")
        ctx.optimizer_D.step()
        ctx.step("optimizer_D.step()")
        G.zero_grad()  # drop what errD_fake.backward() left in G's .grad
        ctx.step("G.zero_grad()")
        errG = loss_func(D(fake), ctx.y_real)
        errG.backward()
        ctx.step("errG.backward()")
        ctx.optimizer_G.step()
        ctx.step("optimizer_G.step()")
    ctx.record("G grad norm", global_norm([p.grad for p in G.parameters()]))
    ctx.record("FLOPs", flops.get_total_flops())
    ctx.record("backward FLOPs", backward_flops(flops))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@retain_graph.implement("keras-torch")
def retain_graph_keras_torch(ctx):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with FlopCounterMode(display=False) as flops:
        D.zero_grad()
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        errD_real.backward()
        ctx.step("errD_real.backward()")
        fake = G(ctx.z, training=True)
        ctx.step("fake = G(z)")
        errD_fake = loss_func(ctx.y_fake, D(fake, training=True))  # no detach
        errD_fake.backward(retain_graph=True)
        ctx.step("errD_fake.backward(retain_graph=True)")
        with torch.no_grad():
            ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
        ctx.step("optimizer_D.apply")
        G.zero_grad()
        ctx.step("G.zero_grad()")
        errG = loss_func(ctx.y_real, D(fake, training=True))
        errG.backward()
        ctx.step("errG.backward()")
        g_grads = [v.value.grad for v in G.trainable_weights]
        with torch.no_grad():
            ctx.optimizer_G.apply(g_grads, G.trainable_weights)
        ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("FLOPs", flops.get_total_flops())
    ctx.record("backward FLOPs", backward_flops(flops))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


# --- detach.recompute_fake -----------------------------------------------------------------

recompute_fake = register(Scenario(
    id="detach.recompute_fake",
    question="No detach in the D step; the G step computes fake = G(z) again instead of reusing it. "
             "Same parameters as the reference? Same state (G's BatchNorm sees two batches)? How much "
             "extra work?",
    sources=["article-2", "keras-gan-example"],
    claims=[
        Claim("recompute-alternative", "Computing fake = G(z) again for the G step, instead of reusing it, "
              "is an alternative to detach (same result as with detach).", "article-2",
              same_params_as_reference),
    ],
))


@recompute_fake.implement("torch")
def recompute_fake_torch(ctx):
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with FlopCounterMode(display=False) as flops:
        D.zero_grad()
        errD_real = loss_func(D(ctx.real), ctx.y_real)
        errD_real.backward()
        ctx.step("errD_real.backward()")
        fake = G(ctx.z)
        ctx.step("fake = G(z)")
        errD_fake = loss_func(D(fake), ctx.y_fake)  # no detach
        errD_fake.backward()
        ctx.step("errD_fake.backward()")
        ctx.optimizer_D.step()
        ctx.step("optimizer_D.step()")
        G.zero_grad()
        ctx.step("G.zero_grad()")
        fake = G(ctx.z)  # a new forward, a new graph
        ctx.step("fake = G(z) again")
        errG = loss_func(D(fake), ctx.y_real)
        errG.backward()
        ctx.step("errG.backward()")
        ctx.optimizer_G.step()
        ctx.step("optimizer_G.step()")
    ctx.record("G grad norm", global_norm([p.grad for p in G.parameters()]))
    ctx.record("FLOPs", flops.get_total_flops())
    ctx.record("backward FLOPs", backward_flops(flops))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@recompute_fake.implement("keras-tensorflow", "tf-keras")
def recompute_fake_tape(ctx):
    import tensorflow as tf

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    # one tape per step, as in the Keras DCGAN example
    with tf.GradientTape() as tape:
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        fake = G(ctx.z, training=True)
        errD_fake = loss_func(ctx.y_fake, D(fake, training=True))  # no stop_gradient
        errD = errD_real + errD_fake
    d_grads = tape.gradient(errD, D.trainable_weights)
    ctx.step("tape.gradient(errD, D.trainable_weights)")
    ctx.optimizer_D.apply_gradients(zip(d_grads, D.trainable_weights))
    ctx.step("optimizer_D.apply_gradients")
    with tf.GradientTape() as tape:
        fake = G(ctx.z, training=True)  # computed again
        errG = loss_func(ctx.y_real, D(fake, training=True))
    g_grads = tape.gradient(errG, G.trainable_weights)
    ctx.step("tape.gradient(errG, G.trainable_weights)")
    ctx.optimizer_G.apply_gradients(zip(g_grads, G.trainable_weights))
    ctx.step("optimizer_G.apply_gradients")
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@recompute_fake.implement("keras-jax")
def recompute_fake_jax(ctx):
    import jax

    G, D, loss_func = ctx.G, ctx.D, ctx.loss

    def d_loss(d_train, g_state, d_state):
        fake, g_state = G.stateless_call([v.value for v in G.trainable_variables], g_state, ctx.z, training=True)
        out_real, d_state = D.stateless_call(d_train, d_state, ctx.real, training=True)
        out_fake, d_state = D.stateless_call(d_train, d_state, fake, training=True)  # no stop_gradient
        return loss_func(ctx.y_real, out_real) + loss_func(ctx.y_fake, out_fake), (g_state, d_state)

    (errD, (g_state, d_state)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        [v.value for v in D.trainable_variables], [v.value for v in G.non_trainable_variables],
        [v.value for v in D.non_trainable_variables])
    for variable, value in zip(G.non_trainable_variables + D.non_trainable_variables, g_state + d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(d_loss)")
    ctx.optimizer_D.apply(d_grads, D.trainable_variables)
    ctx.step("optimizer_D.apply")

    def g_loss(g_train, g_state, d_state):
        fake, g_state = G.stateless_call(g_train, g_state, ctx.z, training=True)  # computed again
        out, d_state = D.stateless_call([v.value for v in D.trainable_variables], d_state, fake, training=True)
        return loss_func(ctx.y_real, out), (g_state, d_state)

    (errG, (g_state, d_state)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
        [v.value for v in G.trainable_variables], [v.value for v in G.non_trainable_variables],
        [v.value for v in D.non_trainable_variables])
    for variable, value in zip(G.non_trainable_variables + D.non_trainable_variables, g_state + d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(g_loss)")
    ctx.optimizer_G.apply(g_grads, G.trainable_variables)
    ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


@recompute_fake.implement("keras-torch")
def recompute_fake_keras_torch(ctx):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with FlopCounterMode(display=False) as flops:
        D.zero_grad()
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        errD_real.backward()
        ctx.step("errD_real.backward()")
        fake = G(ctx.z, training=True)
        ctx.step("fake = G(z)")
        errD_fake = loss_func(ctx.y_fake, D(fake, training=True))  # no detach
        errD_fake.backward()
        ctx.step("errD_fake.backward()")
        with torch.no_grad():
            ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
        ctx.step("optimizer_D.apply")
        G.zero_grad()
        ctx.step("G.zero_grad()")
        fake = G(ctx.z, training=True)  # a new forward, a new graph
        ctx.step("fake = G(z) again")
        errG = loss_func(ctx.y_real, D(fake, training=True))
        errG.backward()
        ctx.step("errG.backward()")
        g_grads = [v.value.grad for v in G.trainable_weights]
        with torch.no_grad():
            ctx.optimizer_G.apply(g_grads, G.trainable_weights)
        ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))
    ctx.record("FLOPs", flops.get_total_flops())
    ctx.record("backward FLOPs", backward_flops(flops))
    ctx.record("G.bn.moving_mean", ctx.tensor("G.bn.moving_mean"))


# --- detach.no_detach_no_g_zero_grad -------------------------------------------------------

def g_update_differs_from_reference(o):
    return o.error is None and o.record["digests"]["G"] != o.peer(REFERENCE).record["digests"]["G"]


no_detach_no_g_zero_grad = register(Scenario(
    id="detach.no_detach_no_g_zero_grad",
    question="No detach (retain_graph=True) and no G.zero_grad() before the G step: G's .grad then holds "
             "the D loss's gradient that leaked into G plus the G loss's. What does G's update become?",
    sources=["torch-docs-backward", "inside-deep-learning", "pytorch-dcgan"],
    claims=[
        Claim("backward-accumulates", "backward() accumulates gradients in the leaves (zero .grad or set it "
              "to None first): without G.zero_grad(), G's update differs from the reference's.",
              "torch-docs-backward",
              lambda o: o.value("G grad norm after the D step") > 0 and g_update_differs_from_reference(o)),
        Claim("gradient-impacts-g", "Without detach, the D loss's gradient impacts G.", "inside-deep-learning",
              g_update_differs_from_reference),
    ],
    not_applicable={
        "keras-tensorflow": "tape.gradient returns gradients, nothing accumulates on the variables: "
                            "there is no .grad to forget to zero",
        "keras-jax": "jax.grad returns gradients, nothing accumulates on the variables: there is no "
                     ".grad to forget to zero",
        "tf-keras": "tape.gradient returns gradients, nothing accumulates on the variables: there is no "
                    ".grad to forget to zero",
    },
))


@no_detach_no_g_zero_grad.implement("torch")
def no_detach_no_g_zero_grad_torch(ctx):
    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.zero_grad()
    errD_real = loss_func(D(ctx.real), ctx.y_real)
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(D(fake), ctx.y_fake)  # no detach
    errD_fake.backward(retain_graph=True)  # also fills G's .grad
    ctx.step("errD_fake.backward(retain_graph=True)")
    ctx.optimizer_D.step()
    ctx.step("optimizer_D.step()")
    ctx.record("G grad norm after the D step", global_norm([p.grad for p in G.parameters()]))
    # no G.zero_grad(): errG's gradient is added to what is there
    errG = loss_func(D(fake), ctx.y_real)
    errG.backward()
    ctx.step("errG.backward()")
    ctx.optimizer_G.step()
    ctx.step("optimizer_G.step()")
    ctx.record("G grad norm", global_norm([p.grad for p in G.parameters()]))


@no_detach_no_g_zero_grad.implement("keras-torch")
def no_detach_no_g_zero_grad_keras_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.zero_grad()
    errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z, training=True)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(ctx.y_fake, D(fake, training=True))  # no detach
    errD_fake.backward(retain_graph=True)
    ctx.step("errD_fake.backward(retain_graph=True)")
    with torch.no_grad():
        ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
    ctx.step("optimizer_D.apply")
    ctx.record("G grad norm after the D step", global_norm([v.value.grad for v in G.trainable_weights]))
    # no G.zero_grad()
    errG = loss_func(ctx.y_real, D(fake, training=True))
    errG.backward()
    ctx.step("errG.backward()")
    g_grads = [v.value.grad for v in G.trainable_weights]
    with torch.no_grad():
        ctx.optimizer_G.apply(g_grads, G.trainable_weights)
    ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))


# --- detach.g_grad_after_d_step ------------------------------------------------------------

def g_grads_after(o, label):
    return [state for name, state in o.step(label)["grads"].items() if name.startswith("G.")]


g_grad_after_d_step = register(Scenario(
    id="detach.g_grad_after_d_step",
    question="What do G's gradient slots hold after the D step, with fake.detach() and without? Does "
             "the D step move G, and what does G.zero_grad() do to them?",
    sources=["inside-deep-learning", "article-2"],
    variants=("detach", "no-detach"),
    claims=[
        Claim("detach-keeps-g-out", "With detach the D loss's gradient does not reach G.",
              "inside-deep-learning",
              lambda o: "nonzero" not in g_grads_after(o, "errD_fake.backward()"), variants=("detach",)),
        Claim("gradient-reaches-g", "Without detach the D loss's gradient reaches G (it is computed for "
              "G's weights).", "inside-deep-learning",
              lambda o: "nonzero" in g_grads_after(o, "errD_fake.backward()"), variants=("no-detach",)),
        Claim("optimizer-scope", "optimizerD holds only D's parameters: the D step leaves G as it was, "
              "detach or not.", "article-2", lambda o: d_step(o)["changed"]["G"]["params"] == []),
    ],
    not_applicable={
        "keras-tensorflow": "Keras on TensorFlow keeps no gradient on its variables; what the D loss sends "
                            "to G is in detach.keras_stop_gradient",
        "keras-jax": "Keras on JAX keeps no gradient on its variables; what the D loss sends to G is in "
                     "detach.keras_stop_gradient",
        "tf-keras": "Keras 2 keeps no gradient on its variables; what the D loss sends to G is in "
                    "detach.keras_stop_gradient",
    },
))


@g_grad_after_d_step.implement("torch")
def g_grad_after_d_step_torch(ctx):
    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.zero_grad()
    errD_real = loss_func(D(ctx.real), ctx.y_real)
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(D(fake.detach() if ctx.variant == "detach" else fake), ctx.y_fake)
    errD_fake.backward()
    ctx.step("errD_fake.backward()")
    ctx.optimizer_D.step()
    ctx.step("optimizer_D.step()")
    ctx.record("G grad norm after the D step", global_norm([p.grad for p in G.parameters()]))
    G.zero_grad()
    ctx.step("G.zero_grad()")


@g_grad_after_d_step.implement("keras-torch")
def g_grad_after_d_step_keras_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.zero_grad()
    errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z, training=True)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(ctx.y_fake, D(fake.detach() if ctx.variant == "detach" else fake, training=True))
    errD_fake.backward()
    ctx.step("errD_fake.backward()")
    with torch.no_grad():
        ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
    ctx.step("optimizer_D.apply")
    ctx.record("G grad norm after the D step", global_norm([v.value.grad for v in G.trainable_weights]))
    G.zero_grad()
    ctx.step("G.zero_grad()")


# --- detach.keras_stop_gradient ------------------------------------------------------------

def g_update_differs_from_stop_gradient(o):
    with_it = o.peer("detach.keras_stop_gradient", variant="stop_gradient")
    return o.record["digests"]["G"] != with_it.record["digests"]["G"]


keras_stop_gradient = register(Scenario(
    id="detach.keras_stop_gradient",
    question="The canonical iteration in a custom Keras step, with keras.ops.stop_gradient(fake) in the D "
             "loss (tf.stop_gradient on Keras 2) and without it. What does the D loss send back to G "
             "(None, zeros, a gradient), and does leaving stop_gradient out change anything?",
    sources=["inside-deep-learning", "article-2", "keras-gan-example"],
    variants=("stop_gradient", "no-stop_gradient"),
    claims=[
        Claim("stop-gradient-keeps-g-out", "With detach (stop_gradient) the D loss's gradient does not reach "
              "G.", "inside-deep-learning",
              lambda o: "nonzero" not in o.value("G grads from errD"), engines=KERAS_IDS,
              variants=("stop_gradient",)),
        Claim("gradient-reaches-g", "Without it the D loss's gradient reaches G.", "inside-deep-learning",
              lambda o: "nonzero" in o.value("G grads from errD"), engines=KERAS_IDS,
              variants=("no-stop_gradient",)),
        Claim("gradient-impacts-g", "We detach because we don't want the gradient to impact G: without it, "
              "G's update changes.", "inside-deep-learning", g_update_differs_from_stop_gradient,
              engines=("keras-tensorflow", "keras-jax", "tf-keras"), variants=("no-stop_gradient",)),
        Claim("g-backward-fails", "Without detach, the G step's backward through the reused fake fails: "
              "'Trying to backward through the graph a second time'.", "article-2", backward_twice_error,
              engines=("keras-torch",), variants=("no-stop_gradient",)),
    ],
    not_applicable={"torch": "keras.ops.stop_gradient is Keras; PyTorch's fake.detach() is in "
                             "detach.reuse_with_detach and detach.reuse_without_detach"},
))


@keras_stop_gradient.implement("keras-tensorflow", "tf-keras")
def keras_stop_gradient_tape(ctx):
    import tensorflow as tf

    G, D, loss_func, keras = ctx.G, ctx.D, ctx.loss, ctx.keras
    if ctx.variant == "stop_gradient":  # Keras 2 has no keras.ops
        stop_gradient = tf.stop_gradient if ctx.engine.id == "tf-keras" else keras.ops.stop_gradient
    else:
        stop_gradient = lambda x: x
    with tf.GradientTape(persistent=True) as tape:
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        fake = G(ctx.z, training=True)
        errD_fake = loss_func(ctx.y_fake, D(stop_gradient(fake), training=True))
        errD = errD_real + errD_fake
    d_grads = tape.gradient(errD, D.trainable_weights)
    ctx.record("G grads from errD", gradient_kinds(tape.gradient(errD, G.trainable_weights)))
    ctx.step("tape.gradient(errD, D.trainable_weights)")
    ctx.optimizer_D.apply_gradients(zip(d_grads, D.trainable_weights))
    ctx.step("optimizer_D.apply_gradients")
    with tape:
        errG = loss_func(ctx.y_real, D(fake, training=True))
    g_grads = tape.gradient(errG, G.trainable_weights)
    ctx.step("tape.gradient(errG, G.trainable_weights)")
    ctx.optimizer_G.apply_gradients(zip(g_grads, G.trainable_weights))
    ctx.step("optimizer_G.apply_gradients")
    del tape
    ctx.record("G grad norm", global_norm(g_grads))


@keras_stop_gradient.implement("keras-jax")
def keras_stop_gradient_jax(ctx):
    import jax

    G, D, loss_func, keras = ctx.G, ctx.D, ctx.loss, ctx.keras
    stop_gradient = keras.ops.stop_gradient if ctx.variant == "stop_gradient" else (lambda x: x)

    def generate(g_train):
        return G.stateless_call(g_train, [v.value for v in G.non_trainable_variables], ctx.z, training=True)

    fake, g_backward, g_state = jax.vjp(generate, [v.value for v in G.trainable_variables], has_aux=True)
    for variable, value in zip(G.non_trainable_variables, g_state):
        variable.assign(value)
    ctx.step("fake, g_backward = jax.vjp(G)")

    def d_loss(d_train, fake, d_state):
        out_real, d_state = D.stateless_call(d_train, d_state, ctx.real, training=True)
        out_fake, d_state = D.stateless_call(d_train, d_state, stop_gradient(fake), training=True)
        return loss_func(ctx.y_real, out_real) + loss_func(ctx.y_fake, out_fake), d_state

    # differentiated w.r.t. fake too, to see what the D loss sends back into G
    (errD, d_state), (d_grads, fake_grad) = jax.value_and_grad(d_loss, argnums=(0, 1), has_aux=True)(
        [v.value for v in D.trainable_variables], fake, [v.value for v in D.non_trainable_variables])
    ctx.record("G grads from errD", gradient_kinds(g_backward(fake_grad)[0]))
    for variable, value in zip(D.non_trainable_variables, d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(d_loss)")
    ctx.optimizer_D.apply(d_grads, D.trainable_variables)
    ctx.step("optimizer_D.apply")

    def g_loss(fake, d_state):
        out, d_state = D.stateless_call([v.value for v in D.trainable_variables], d_state, fake, training=True)
        return loss_func(ctx.y_real, out), d_state

    (errG, d_state), fake_grad = jax.value_and_grad(g_loss, has_aux=True)(
        fake, [v.value for v in D.non_trainable_variables])
    (g_grads,) = g_backward(fake_grad)
    for variable, value in zip(D.non_trainable_variables, d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(g_loss), g_backward")
    ctx.optimizer_G.apply(g_grads, G.trainable_variables)
    ctx.step("optimizer_G.apply")
    ctx.record("G grad norm", global_norm(g_grads))


@keras_stop_gradient.implement("keras-torch")
def keras_stop_gradient_keras_torch(ctx):
    import torch

    G, D, loss_func, keras = ctx.G, ctx.D, ctx.loss, ctx.keras
    stop_gradient = keras.ops.stop_gradient if ctx.variant == "stop_gradient" else (lambda x: x)
    D.zero_grad()
    errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
    errD_real.backward()
    ctx.step("errD_real.backward()")
    fake = G(ctx.z, training=True)
    ctx.step("fake = G(z)")
    errD_fake = loss_func(ctx.y_fake, D(stop_gradient(fake), training=True))
    errD_fake.backward()
    ctx.record("G grads from errD", gradient_kinds([v.value.grad for v in G.trainable_weights]))
    ctx.step("errD_fake.backward()")
    with torch.no_grad():
        ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
    ctx.step("optimizer_D.apply")
    G.zero_grad()
    ctx.step("G.zero_grad()")
    errG = loss_func(ctx.y_real, D(fake, training=True))
    with ctx.attempt("errG.backward()"):
        errG.backward()
        ctx.step("errG.backward()")
        g_grads = [v.value.grad for v in G.trainable_weights]
        with torch.no_grad():
            ctx.optimizer_G.apply(g_grads, G.trainable_weights)
        ctx.step("optimizer_G.apply")
        ctx.record("G grad norm", global_norm(g_grads))


# --- detach.tape_twice ---------------------------------------------------------------------

def tape_refused_second_call(o):
    return o.error is not None and "non-persistent GradientTape" in o.error["message"]


TAPE_VARIANTS = ("non-persistent", "persistent", "non-persistent,resumed", "persistent,resumed")

tape_twice = register(Scenario(
    id="detach.tape_twice",
    question="One GradientTape asked for D's gradients, then (after D's update) for G's: non-persistent "
             "and persistent=True; with both losses recorded up front, or with the G loss recorded by "
             "re-entering the tape after D's update ('resumed', as the reference does).",
    sources=["tf-docs-gradient-tape", "article-2"],
    variants=TAPE_VARIANTS,
    claims=[
        Claim("non-persistent-once", "A non-persistent tape can compute gradients once: asking it a second "
              "time raises.", "tf-docs-gradient-tape", tape_refused_second_call,
              variants=("non-persistent", "non-persistent,resumed")),
        Claim("persistent-several", "persistent=True allows several gradient calls on one tape.",
              "tf-docs-gradient-tape", lambda o: o.error is None and o.moved("G") != [],
              variants=("persistent", "persistent,resumed")),
    ],
    not_applicable={
        "torch": "no tape: the PyTorch counterpart is backward(retain_graph=True), detach.retain_graph",
        "keras-jax": "no tape on the JAX backend: gradients come from jax.grad / jax.vjp",
        "keras-torch": "no tape on the PyTorch backend: backward() and retain_graph, detach.retain_graph",
    },
))


@tape_twice.implement("keras-tensorflow", "tf-keras")
def tape_twice_tape(ctx):
    import tensorflow as tf

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    persistent, resumed = ctx.variant.startswith("persistent"), ctx.variant.endswith("resumed")
    with tf.GradientTape(persistent=persistent) as tape:
        errD_real = loss_func(ctx.y_real, D(ctx.real, training=True))
        fake = G(ctx.z, training=True)
        errD_fake = loss_func(ctx.y_fake, D(tf.stop_gradient(fake), training=True))
        errD = errD_real + errD_fake
        if not resumed:
            errG = loss_func(ctx.y_real, D(fake, training=True))  # through D before its update
    d_grads = tape.gradient(errD, D.trainable_weights)
    ctx.step("tape.gradient(errD, D.trainable_weights)")
    ctx.optimizer_D.apply_gradients(zip(d_grads, D.trainable_weights))
    ctx.step("optimizer_D.apply_gradients")
    with ctx.attempt("G step"):
        if resumed:
            with tape:  # record on the same tape again, through D's new weights
                errG = loss_func(ctx.y_real, D(fake, training=True))
        g_grads = tape.gradient(errG, G.trainable_weights)
        ctx.record("G grads", gradient_kinds(g_grads))
        ctx.step("tape.gradient(errG, G.trainable_weights)")
        ctx.optimizer_G.apply_gradients(zip(g_grads, G.trainable_weights))
        ctx.step("optimizer_G.apply_gradients")
        ctx.record("G grad norm", global_norm(g_grads))
