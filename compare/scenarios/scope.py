"""Optimizer scope (the first article): which networks does a step actually move?

Every implementation computes G's loss through D (``D(G(z))`` against "real" labels),
takes gradients in the engine's own way, and applies one named optimizer to one named
set of variables.
"""

from __future__ import annotations

from compare.scenarios import KERAS_IDS, Claim, Scenario, register

# What the first article prints for D's BN after one Adam step from the constant init (4 decimals)
ARTICLE_NUMBERS = {"D.bn.gamma": 0.0110, "D.bn.beta": 0.0010}


# --- scope.g_step -------------------------------------------------------------------------

g_step = register(Scenario(
    id="scope.g_step",
    question="G's loss is computed through D and back-propagated, and only G's optimizer steps. "
             "Which tensors of G and of D change?",
    sources=["article-1", "pytorch-dcgan"],
    claims=[
        Claim("d-params-unchanged", "optimizer_G.step() updates G only: D's parameters do not change, "
              "so requires_grad need not be switched off on D.", "article-1",
              lambda o: o.moved("D") == [] and o.moved("G") != []),
    ],
))


@g_step.implement("torch")
def g_step_torch(ctx):
    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    fake_img = G(ctx.z)
    out = D(fake_img)
    loss = loss_func(out, ctx.y_real)  # trained as "real"
    D.zero_grad()
    G.zero_grad()
    loss.backward()
    ctx.step("loss.backward()")
    ctx.optimizer_G.step()
    ctx.step("optimizer_G.step()")
    ctx.record("loss", loss.item())


@g_step.implement("keras-tensorflow", "tf-keras")
def g_step_tape(ctx):
    import tensorflow as tf

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with tf.GradientTape() as tape:
        out = D(G(ctx.z, training=True), training=True)
        loss = loss_func(ctx.y_real, out)
    grads = tape.gradient(loss, G.trainable_weights)
    ctx.step("tape.gradient(loss, G.trainable_weights)")
    ctx.optimizer_G.apply_gradients(zip(grads, G.trainable_weights))
    ctx.step("optimizer_G.apply_gradients")
    ctx.record("loss", float(loss))


@g_step.implement("keras-jax")
def g_step_jax(ctx):
    import jax

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    d_train = [v.value for v in D.trainable_variables]

    def g_loss(g_train, g_state, d_state):
        fake, g_state = G.stateless_call(g_train, g_state, ctx.z, training=True)
        out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
        return loss_func(ctx.y_real, out), (g_state, d_state)

    (loss, (g_state, d_state)), grads = jax.value_and_grad(g_loss, has_aux=True)(
        [v.value for v in G.trainable_variables], [v.value for v in G.non_trainable_variables],
        [v.value for v in D.non_trainable_variables])
    for variable, value in zip(G.non_trainable_variables + D.non_trainable_variables, g_state + d_state):
        variable.assign(value)  # keep the BN statistics the forward pass produced
    ctx.step("jax.value_and_grad(g_loss) w.r.t. G's variables")
    ctx.optimizer_G.apply(grads, G.trainable_variables)
    ctx.step("optimizer_G.apply")
    ctx.record("loss", float(loss))


@g_step.implement("keras-torch")
def g_step_keras_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    G.zero_grad()
    D.zero_grad()
    loss = loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True))
    loss.backward()
    ctx.step("loss.backward()")
    with torch.no_grad():
        ctx.optimizer_G.apply([v.value.grad for v in G.trainable_weights], G.trainable_weights)
    ctx.step("optimizer_G.apply")
    ctx.record("loss", loss.item())


# --- scope.g_loss_d_optimizer and scope.d_step_leaves_g ----------------------------------

def article_values(o):
    return all(round(x, 4) == ARTICLE_NUMBERS[k] for k in ARTICLE_NUMBERS for x in o.value(k))


g_loss_d_optimizer = register(Scenario(
    id="scope.g_loss_d_optimizer",
    question="The same backward of G's loss, but D's optimizer steps. Does D move, and by how much?",
    sources=["article-1"],
    claims=[
        Claim("d-moves", "With optimizer_D.step() after the G-loss backward, D is updated.", "article-1",
              lambda o: o.moved("D") != []),
        Claim("article-numbers", "From the constant init, one Adam step leaves D's BN weight at 0.0110 and "
              "its bias at 0.0010 (printed to four decimals).", "article-1", article_values,
              inits=("constant",)),
    ],
))


@g_loss_d_optimizer.implement("torch")
def g_loss_d_optimizer_torch(ctx):
    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    fake_img = G(ctx.z)
    out = D(fake_img)
    loss = loss_func(out, ctx.y_real)
    D.zero_grad()
    G.zero_grad()
    loss.backward()
    ctx.step("loss.backward()")
    ctx.optimizer_D.step()
    ctx.step("optimizer_D.step()")
    ctx.record("D.bn.gamma", ctx.tensor("D.bn.gamma"))
    ctx.record("D.bn.beta", ctx.tensor("D.bn.beta"))


@g_loss_d_optimizer.implement("keras-tensorflow", "tf-keras")
def g_loss_d_optimizer_tape(ctx):
    import tensorflow as tf

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    with tf.GradientTape() as tape:
        out = D(G(ctx.z, training=True), training=True)
        loss = loss_func(ctx.y_real, out)
    grads = tape.gradient(loss, D.trainable_weights)
    ctx.step("tape.gradient(loss, D.trainable_weights)")
    ctx.optimizer_D.apply_gradients(zip(grads, D.trainable_weights))
    ctx.step("optimizer_D.apply_gradients")
    ctx.record("D.bn.gamma", ctx.tensor("D.bn.gamma"))
    ctx.record("D.bn.beta", ctx.tensor("D.bn.beta"))


@g_loss_d_optimizer.implement("keras-jax")
def g_loss_d_optimizer_jax(ctx):
    import jax

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    g_train = [v.value for v in G.trainable_variables]

    def g_loss(d_train, g_state, d_state):
        fake, g_state = G.stateless_call(g_train, g_state, ctx.z, training=True)
        out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
        return loss_func(ctx.y_real, out), (g_state, d_state)

    (loss, (g_state, d_state)), grads = jax.value_and_grad(g_loss, has_aux=True)(
        [v.value for v in D.trainable_variables], [v.value for v in G.non_trainable_variables],
        [v.value for v in D.non_trainable_variables])
    for variable, value in zip(G.non_trainable_variables + D.non_trainable_variables, g_state + d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(g_loss) w.r.t. D's variables")
    ctx.optimizer_D.apply(grads, D.trainable_variables)
    ctx.step("optimizer_D.apply")
    ctx.record("D.bn.gamma", ctx.tensor("D.bn.gamma"))
    ctx.record("D.bn.beta", ctx.tensor("D.bn.beta"))


@g_loss_d_optimizer.implement("keras-torch")
def g_loss_d_optimizer_keras_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    G.zero_grad()
    D.zero_grad()
    loss = loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True))
    loss.backward()
    ctx.step("loss.backward()")
    with torch.no_grad():
        ctx.optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
    ctx.step("optimizer_D.apply")
    ctx.record("D.bn.gamma", ctx.tensor("D.bn.gamma"))
    ctx.record("D.bn.beta", ctx.tensor("D.bn.beta"))


d_step_leaves_g = register(Scenario(
    id="scope.d_step_leaves_g",
    question="D's optimizer steps after the G-loss backward, which also filled G's gradients. Does G move?",
    sources=["article-1"],
    claims=[
        Claim("g-params-unchanged", "optimizer_D.step() leaves G's parameters as they were.", "article-1",
              lambda o: o.moved("G") == []),
    ],
    # the same code as scope.g_loss_d_optimizer: only the question differs
    implementations=dict(g_loss_d_optimizer.implementations),
))


# --- scope.zero_grad_then_step -----------------------------------------------------------

def d_after_clearing(o):
    """D's parameters moved by the step after clearing; None when that step raised (a claim
    about what a step does cannot hold for a step that did not run)."""
    step = o.step("step after clearing")
    return None if "error" in step else step["changed"]["D"]["params"]


# "one_none": only D's last variable (conv2's bias) loses its gradient, the others keep theirs
ZERO_GRAD_VARIANTS = tuple(
    f"{opt},{clear},{when}" for opt in ("adam", "adamw") for clear in ("set_to_none", "zeros")
    for when in ("first", "after")
) + ("adam,one_none,first", "adam,one_none,after")
CLEARED_VARIANTS = tuple(v for v in ZERO_GRAD_VARIANTS if "one_none" not in v)
NONE_VARIANTS = tuple(v for v in ZERO_GRAD_VARIANTS if "none" in v)
LAST_D = "D.conv2.bias"


def none_skipped(o):
    """The variables whose gradient was None did not move, and (where some kept a real
    gradient) every other one of D's parameters did."""
    moved = d_after_clearing(o)
    if moved is None:
        return False
    if "one_none" not in o.record["variant"]:
        return moved == []
    return LAST_D not in moved and set(moved) == set(o.record["tensors"]["D"]["params"]) - {LAST_D}

zero_grad_then_step = register(Scenario(
    id="scope.zero_grad_then_step",
    question="After the G-loss backward, D's gradients are cleared (set to None, or to zeros) and D's "
             "optimizer steps: on its first step, and after an earlier real step; with Adam, and with "
             "AdamW (weight decay 0.01); or only D's last variable loses its gradient ('one_none'). "
             "Does D move?",
    sources=["article-1", "torch-docs-zero-grad"],
    variants=ZERO_GRAD_VARIANTS,
    claims=[
        Claim("cleared-means-no-update", "With D's gradients cleared before optimizer_D.step(), D is not "
              "updated (the article's model_D.zero_grad() then param_D.step()).", "article-1",
              lambda o: d_after_clearing(o) == [], variants=CLEARED_VARIANTS),
        Claim("none-is-skipped", "A parameter whose gradient is None is skipped by the optimizer step.",
              "torch-docs-zero-grad", none_skipped, variants=NONE_VARIANTS),
        Claim("zero-is-a-step", "A zero gradient is a step like any other: Adam's moments from an earlier "
              "step, and AdamW's weight decay, still move the parameters.", "torch-docs-zero-grad",
              lambda o: bool(d_after_clearing(o)),
              variants=[v for v in ZERO_GRAD_VARIANTS if "zeros" in v and ("after" in v or "adamw" in v)]),
    ],
))


@zero_grad_then_step.implement("torch")
def zero_grad_then_step_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    kind, clear, when = ctx.variant.split(",")
    if kind == "adam":
        optimizer_D = torch.optim.Adam(D.parameters())
    else:
        optimizer_D = torch.optim.AdamW(D.parameters(), weight_decay=0.01)
    if when == "after":  # one real step first, so Adam's moments are not zero
        D.zero_grad()
        loss_func(D(G(ctx.z)), ctx.y_real).backward()
        optimizer_D.step()
        ctx.step("earlier step")
    G.zero_grad()
    D.zero_grad()
    loss = loss_func(D(G(ctx.z)), ctx.y_real)
    loss.backward()
    ctx.step("loss.backward()")
    if clear == "one_none":
        list(D.parameters())[-1].grad = None
        ctx.step("D's last parameter: grad = None")
    else:
        D.zero_grad(set_to_none=(clear == "set_to_none"))
        ctx.step("D.zero_grad()")
    optimizer_D.step()
    ctx.step("step after clearing")


@zero_grad_then_step.implement("keras-tensorflow", "tf-keras")
def zero_grad_then_step_tape(ctx):
    import warnings

    import tensorflow as tf

    G, D, loss_func, keras = ctx.G, ctx.D, ctx.loss, ctx.keras
    kind, clear, when = ctx.variant.split(",")
    if kind == "adam":
        optimizer_D = keras.optimizers.Adam()
    else:
        optimizer_D = keras.optimizers.AdamW(weight_decay=0.01)
    if when == "after":
        with tf.GradientTape() as tape:
            loss = loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True))
        optimizer_D.apply_gradients(zip(tape.gradient(loss, D.trainable_weights), D.trainable_weights))
        ctx.step("earlier step")
    with tf.GradientTape() as tape:
        loss = loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True))
    grads = tape.gradient(loss, D.trainable_weights)
    ctx.step("tape.gradient")
    # Keras keeps no gradient on the variable: "clearing" means passing None or zeros
    if clear == "one_none":
        grads[-1] = None
    else:
        grads = [None if clear == "set_to_none" else tf.zeros_like(g) for g in grads]
    ctx.step("clear gradients")
    with ctx.attempt("step after clearing"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer_D.apply_gradients(zip(grads, D.trainable_weights))
        ctx.step("step after clearing")
    ctx.record("warnings", " | ".join(str(w.message) for w in caught if w.category is UserWarning))


@zero_grad_then_step.implement("keras-jax")
def zero_grad_then_step_jax(ctx):
    import warnings

    import jax

    G, D, loss_func, keras = ctx.G, ctx.D, ctx.loss, ctx.keras
    kind, clear, when = ctx.variant.split(",")
    if kind == "adam":
        optimizer_D = keras.optimizers.Adam()
    else:
        optimizer_D = keras.optimizers.AdamW(weight_decay=0.01)
    g_train = [v.value for v in G.trainable_variables]

    def d_grads():
        def g_loss(d_train, g_state, d_state):
            fake, g_state = G.stateless_call(g_train, g_state, ctx.z, training=True)
            out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
            return loss_func(ctx.y_real, out), (g_state, d_state)

        (_, (g_state, d_state)), grads = jax.value_and_grad(g_loss, has_aux=True)(
            [v.value for v in D.trainable_variables], [v.value for v in G.non_trainable_variables],
            [v.value for v in D.non_trainable_variables])
        for variable, value in zip(G.non_trainable_variables + D.non_trainable_variables, g_state + d_state):
            variable.assign(value)
        return grads

    if when == "after":
        optimizer_D.apply(d_grads(), D.trainable_variables)
        ctx.step("earlier step")
    grads = d_grads()
    ctx.step("jax.value_and_grad")
    if clear == "one_none":
        grads[-1] = None
    else:
        grads = [None if clear == "set_to_none" else jax.numpy.zeros_like(g) for g in grads]
    ctx.step("clear gradients")
    with ctx.attempt("step after clearing"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer_D.apply(grads, D.trainable_variables)
        ctx.step("step after clearing")
    ctx.record("warnings", " | ".join(str(w.message) for w in caught if w.category is UserWarning))


@zero_grad_then_step.implement("keras-torch")
def zero_grad_then_step_keras_torch(ctx):
    import warnings

    import torch

    G, D, loss_func, keras = ctx.G, ctx.D, ctx.loss, ctx.keras
    kind, clear, when = ctx.variant.split(",")
    if kind == "adam":
        optimizer_D = keras.optimizers.Adam()
    else:
        optimizer_D = keras.optimizers.AdamW(weight_decay=0.01)
    if when == "after":
        D.zero_grad()
        loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True)).backward()
        with torch.no_grad():
            optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
        ctx.step("earlier step")
    G.zero_grad()
    D.zero_grad()
    loss = loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True))
    loss.backward()
    ctx.step("loss.backward()")
    if clear == "one_none":
        D.trainable_weights[-1].value.grad = None
        ctx.step("D's last variable: grad = None")
    else:
        D.zero_grad(set_to_none=(clear == "set_to_none"))  # Keras models are torch modules here
        ctx.step("D.zero_grad()")
    with ctx.attempt("step after clearing"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            optimizer_D.apply([v.value.grad for v in D.trainable_weights], D.trainable_weights)
        ctx.step("step after clearing")
    ctx.record("warnings", " | ".join(str(w.message) for w in caught if w.category is UserWarning))


# --- scope.requires_grad_off -------------------------------------------------------------

def same_g_update_as_g_step(o):
    return o.record["digests"]["G"] == o.peer("scope.g_step").record["digests"]["G"]


requires_grad_off = register(Scenario(
    id="scope.requires_grad_off",
    question="D is frozen during the G step (requires_grad_(False) in PyTorch; trainable = False in Keras). "
             "Is G's update identical to scope.g_step, what gradients does D hold, and what work is saved?",
    sources=["article-1", "keras-docs-trainable"],
    claims=[
        Claim("not-needed", "Switching requires_grad off on D changes nothing about G's update: it is "
              "not needed for correctness.", "article-1", same_g_update_as_g_step),
        Claim("bn-inference-when-frozen", "A BatchNormalization layer with trainable = False runs in "
              "inference mode: D's moving statistics stay as they were.", "keras-docs-trainable",
              lambda o: o.moved("D", "state") == [], engines=KERAS_IDS),
    ],
))


@requires_grad_off.implement("torch")
def requires_grad_off_torch(ctx):
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.requires_grad_(False)
    fake_img = G(ctx.z)
    out = D(fake_img)
    loss = loss_func(out, ctx.y_real)
    D.zero_grad()
    G.zero_grad()
    with FlopCounterMode(display=False) as flops:
        loss.backward()
    ctx.step("loss.backward()")
    ctx.optimizer_G.step()
    D.requires_grad_(True)
    ctx.step("optimizer_G.step()")
    ctx.record("backward FLOPs", flops.get_total_flops())
    # the same backward with D trainable, for the work it saves
    D.zero_grad()
    G.zero_grad()
    loss = loss_func(D(G(ctx.z)), ctx.y_real)
    with FlopCounterMode(display=False) as flops:
        loss.backward()
    ctx.step("the same forward and backward with D trainable (to count its FLOPs)")
    ctx.record("backward FLOPs with D trainable", flops.get_total_flops())


@requires_grad_off.implement("keras-tensorflow", "tf-keras")
def requires_grad_off_tape(ctx):
    import tensorflow as tf

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.trainable = False
    with tf.GradientTape() as tape:
        out = D(G(ctx.z, training=True), training=True)
        loss = loss_func(ctx.y_real, out)
    grads = tape.gradient(loss, G.trainable_weights)
    ctx.step("tape.gradient(loss, G.trainable_weights)")
    ctx.optimizer_G.apply_gradients(zip(grads, G.trainable_weights))
    D.trainable = True
    ctx.step("optimizer_G.apply_gradients")
    ctx.record("loss", float(loss))


@requires_grad_off.implement("keras-jax")
def requires_grad_off_jax(ctx):
    import jax

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.trainable = False  # D's weights move to non_trainable_variables
    d_train = [v.value for v in D.trainable_variables]

    def g_loss(g_train, g_state, d_state):
        fake, g_state = G.stateless_call(g_train, g_state, ctx.z, training=True)
        out, d_state = D.stateless_call(d_train, d_state, fake, training=True)
        return loss_func(ctx.y_real, out), (g_state, d_state)

    (loss, (g_state, d_state)), grads = jax.value_and_grad(g_loss, has_aux=True)(
        [v.value for v in G.trainable_variables], [v.value for v in G.non_trainable_variables],
        [v.value for v in D.non_trainable_variables])
    for variable, value in zip(G.non_trainable_variables + D.non_trainable_variables, g_state + d_state):
        variable.assign(value)
    ctx.step("jax.value_and_grad(g_loss) w.r.t. G's variables")
    ctx.optimizer_G.apply(grads, G.trainable_variables)
    D.trainable = True
    ctx.step("optimizer_G.apply")
    ctx.record("loss", float(loss))


@requires_grad_off.implement("keras-torch")
def requires_grad_off_keras_torch(ctx):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    D.trainable = False
    G.zero_grad()
    D.zero_grad()
    loss = loss_func(ctx.y_real, D(G(ctx.z, training=True), training=True))
    with FlopCounterMode(display=False) as flops:
        loss.backward()
    ctx.step("loss.backward()")
    with torch.no_grad():
        ctx.optimizer_G.apply([v.value.grad for v in G.trainable_weights], G.trainable_weights)
    D.trainable = True
    ctx.step("optimizer_G.apply")
    ctx.record("loss", loss.item())
    ctx.record("backward FLOPs", flops.get_total_flops())
