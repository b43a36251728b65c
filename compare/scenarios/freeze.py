"""Freezing D for the G step (the first article's Keras half): the combined model
``Sequential([G, D])`` trained with ``train_on_batch``, and where ``D.trainable`` is set.

Every Keras implementation is written as Keras GAN tutorials write it: ``compile()`` with a
new Adam, ``train_on_batch`` with D's BCE loss. The torch counterparts freeze with
``requires_grad_(False)`` and stand in for ``compile()`` with a new Adam over the
parameters that require grad at that moment.
"""

from __future__ import annotations

from compare.scenarios import KERAS_3_IDS, KERAS_IDS, Claim, Scenario, register


def moved(o, step, net, kind="params"):
    return o.moved(net, kind, step=step) != []


def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


# --- freeze.combined_no_freeze ------------------------------------------------------------

combined_no_freeze = register(Scenario(
    id="freeze.combined_no_freeze",
    question="G and D stacked as one model and trained on (z, 'real') with D never frozen "
             "(torch: one Adam over G's and D's parameters). Which tensors change?",
    sources=["article-1"],
    claims=[
        Claim("d-moves-unless-frozen", "In Keras, training G through the combined model also updates D "
              "unless D's trainable is switched off.", "article-1",
              lambda o: o.moved("D") != [], engines=KERAS_IDS),
    ],
))


@combined_no_freeze.implement(*KERAS_IDS)
def combined_no_freeze_keras(ctx):
    keras, G, D = ctx.keras, ctx.G, ctx.D
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    g_loss = combined.train_on_batch(ctx.z, ctx.y_real)
    ctx.step("combined.train_on_batch")
    ctx.record("loss", float(g_loss))


@combined_no_freeze.implement("torch")
def combined_no_freeze_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
    optimizer.zero_grad()
    loss = loss_func(combined(ctx.z), ctx.y_real)
    loss.backward()
    optimizer.step()
    ctx.step("combined step")
    ctx.record("loss", loss.item())


# --- freeze.classic_recipe ----------------------------------------------------------------

def as_compiled(o):
    """Each model trains what was trainable when it was compiled: the combined call moves G
    and not D, D's own call moves D."""
    return (moved(o, "combined.train_on_batch", "G") and not moved(o, "combined.train_on_batch", "D")
            and moved(o, "D.train_on_batch", "D"))


classic_recipe = register(Scenario(
    id="freeze.classic_recipe",
    question="The tutorial recipe: compile D; D.trainable = False; build and compile the combined model; "
             "then combined.train_on_batch(z, 'real') and D.train_on_batch(real, 'real'), D never unfrozen. "
             "Which model's tensors change in each call? (torch: D.requires_grad_(False) once, an Adam over "
             "D's parameters and one over the combined model's parameters that still require grad.) Variant "
             "'frozen-before-d-trains': D is frozen before it was ever trained, as the tutorial does; "
             "'frozen-after-d-trains': one D.train_on_batch(real, 'real') comes first, with D trainable.",
    sources=["keras-gan-lindernoren", "keras-2-compile-note", "keras-3-compile", "keras-docs-trainable"],
    variants=("frozen-before-d-trains", "frozen-after-d-trains"),
    claims=[
        Claim("combined-trains-g-only", "For the combined model only the generator is trained: the combined "
              "call moves G and leaves D's parameters.", "keras-gan-lindernoren",
              lambda o: moved(o, "combined.train_on_batch", "G")
              and not moved(o, "combined.train_on_batch", "D"), engines=KERAS_IDS),
        Claim("as-compiled-keras-2", "trainable takes effect at compile(): D, compiled while trainable, is "
              "updated by its own train_on_batch; the combined model, compiled with D frozen, leaves D.",
              "keras-2-compile-note", as_compiled, engines=("tf-keras",)),
        Claim("as-compiled-keras-3", "Trainable variables are fixed at compile(): D, compiled while trainable, "
              "is updated by its own train_on_batch; the combined model, compiled with D frozen, leaves D.",
              "keras-3-compile", as_compiled, engines=KERAS_3_IDS),
        Claim("frozen-bn-keeps-statistics", "A frozen BatchNormalization runs in inference mode: D's moving "
              "statistics do not change in the combined call.", "keras-docs-trainable",
              lambda o: not moved(o, "combined.train_on_batch", "D", "state"), engines=KERAS_IDS),
    ],
))


@classic_recipe.implement(*KERAS_IDS)
def classic_recipe_keras(ctx):
    import warnings

    keras, G, D = ctx.keras, ctx.G, ctx.D
    D.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    if ctx.variant == "frozen-after-d-trains":
        D.train_on_batch(ctx.real, ctx.y_real)
        ctx.step("D.train_on_batch (before freezing)")
    D.trainable = False  # for the combined model only G is trained
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    with ctx.attempt("combined.train_on_batch"):
        ctx.record("G loss", float(combined.train_on_batch(ctx.z, ctx.y_real)))
        ctx.step("combined.train_on_batch")
    with ctx.attempt("D.train_on_batch"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx.record("D loss", float(D.train_on_batch(ctx.real, ctx.y_real)))
        ctx.step("D.train_on_batch")
    ctx.record("D.train_on_batch warns", " | ".join(str(w.message) for w in caught if w.category is UserWarning))


@classic_recipe.implement("torch")
def classic_recipe_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    optimizer_D = torch.optim.Adam(D.parameters())
    if ctx.variant == "frozen-after-d-trains":
        optimizer_D.zero_grad()
        loss_func(D(ctx.real), ctx.y_real).backward()
        optimizer_D.step()
        ctx.step("D step (before freezing)")
    D.requires_grad_(False)  # for the combined model only G is trained
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
    with ctx.attempt("combined step"):
        optimizer.zero_grad()
        loss = loss_func(combined(ctx.z), ctx.y_real)
        loss.backward()
        optimizer.step()
        ctx.record("G loss", loss.item())
        ctx.step("combined step")
    with ctx.attempt("D step"):  # requires_grad is still False: nothing in D's loss requires grad
        optimizer_D.zero_grad()
        loss = loss_func(D(ctx.real), ctx.y_real)
        loss.backward()
        optimizer_D.step()
        ctx.record("D loss", loss.item())
        ctx.step("D step")


# --- freeze.flip_after_compile ------------------------------------------------------------

flip_after_compile = register(Scenario(
    id="freeze.flip_after_compile",
    question="The combined model is compiled with D trainable, then D.trainable = False before its first "
             "train_on_batch (torch: Adam over all parameters, then D.requires_grad_(False)). Does D move?",
    sources=["keras-2-compile-note", "keras-3-compile"],
    claims=[
        Claim("not-until-recompiled-keras-2", "A trainable change takes effect only when compile() is called "
              "again: D, trainable at compile(), is still updated.", "keras-2-compile-note",
              lambda o: moved(o, "combined.train_on_batch", "D"), engines=("tf-keras",)),
        Claim("not-until-recompiled-keras-3", "Trainable variables are fixed at compile(): D, trainable at "
              "compile(), is still updated.", "keras-3-compile",
              lambda o: moved(o, "combined.train_on_batch", "D"), engines=KERAS_3_IDS),
    ],
))


@flip_after_compile.implement(*KERAS_IDS)
def flip_after_compile_keras(ctx):
    keras, G, D = ctx.keras, ctx.G, ctx.D
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    D.trainable = False
    with ctx.attempt("combined.train_on_batch"):
        ctx.record("loss", float(combined.train_on_batch(ctx.z, ctx.y_real)))
        ctx.step("combined.train_on_batch")


@flip_after_compile.implement("torch")
def flip_after_compile_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
    D.requires_grad_(False)
    optimizer.zero_grad()
    loss = loss_func(combined(ctx.z), ctx.y_real)
    loss.backward()
    optimizer.step()  # D's .grad stays None: step() skips it
    ctx.step("combined step")
    ctx.record("loss", loss.item())


# --- freeze.flip_after_first_call and freeze.flip_and_recompile ---------------------------

flip_after_first_call = register(Scenario(
    id="freeze.flip_after_first_call",
    question="One combined train_on_batch with D trainable, then D.trainable = False without recompiling, "
             "then a second call (torch: one Adam over all parameters, D.requires_grad_(False) between the "
             "steps). Does D move in the second call?",
    sources=["keras-2-compile-note", "keras-3-compile", "keras-3-trainable"],
    claims=[
        Claim("not-until-recompiled-keras-2", "A trainable change takes effect only when compile() is called "
              "again: D is still updated by the second call.", "keras-2-compile-note",
              lambda o: moved(o, "combined.train_on_batch (2)", "D"), engines=("tf-keras",)),
        Claim("not-until-recompiled-keras-3", "Trainable variables are fixed at compile(): D is still updated "
              "by the second call.", "keras-3-compile",
              lambda o: moved(o, "combined.train_on_batch (2)", "D"), engines=KERAS_3_IDS),
        Claim("graph-not-rebuilt", "A trainable change during training needs make_train_function(force=True) "
              "to rebuild the training graph: without it the second call still updates D.",
              "keras-3-trainable", lambda o: moved(o, "combined.train_on_batch (2)", "D"), engines=KERAS_3_IDS),
    ],
))


@flip_after_first_call.implement(*KERAS_IDS)
def flip_after_first_call_keras(ctx):
    keras, G, D = ctx.keras, ctx.G, ctx.D
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    ctx.record("loss (1)", float(combined.train_on_batch(ctx.z, ctx.y_real)))
    ctx.step("combined.train_on_batch (1)")
    D.trainable = False
    with ctx.attempt("combined.train_on_batch (2)"):
        ctx.record("loss (2)", float(combined.train_on_batch(ctx.z, ctx.y_real)))
        ctx.step("combined.train_on_batch (2)")


@flip_after_first_call.implement("torch")
def flip_after_first_call_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
    for call in (1, 2):
        if call == 2:
            D.requires_grad_(False)
        optimizer.zero_grad()  # set_to_none: D's .grad is None from here on
        loss = loss_func(combined(ctx.z), ctx.y_real)
        loss.backward()
        optimizer.step()
        ctx.step(f"combined step ({call})")
        ctx.record(f"loss ({call})", loss.item())


flip_and_recompile = register(Scenario(
    id="freeze.flip_and_recompile",
    question="As freeze.flip_after_first_call, but the combined model is compiled again (with a new Adam, "
             "as the Keras fine-tuning guide does) after D.trainable = False (torch: a new Adam over the "
             "parameters that still require grad). Does D move in the second call?",
    sources=["keras-2-compile-note", "keras-3-compile"],
    claims=[
        Claim("recompile-freezes-keras-2", "After compile() is called again the change takes effect: the "
              "second call moves G and leaves D.", "keras-2-compile-note",
              lambda o: moved(o, "combined.train_on_batch (2)", "G")
              and not moved(o, "combined.train_on_batch (2)", "D"), engines=("tf-keras",)),
        Claim("recompile-freezes-keras-3", "After compile() is called again the change takes effect: the "
              "second call moves G and leaves D.", "keras-3-compile",
              lambda o: moved(o, "combined.train_on_batch (2)", "G")
              and not moved(o, "combined.train_on_batch (2)", "D"), engines=KERAS_3_IDS),
    ],
))


@flip_and_recompile.implement(*KERAS_IDS)
def flip_and_recompile_keras(ctx):
    keras, G, D = ctx.keras, ctx.G, ctx.D
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    ctx.record("loss (1)", float(combined.train_on_batch(ctx.z, ctx.y_real)))
    ctx.step("combined.train_on_batch (1)")
    D.trainable = False
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    with ctx.attempt("combined.train_on_batch (2)"):
        ctx.record("loss (2)", float(combined.train_on_batch(ctx.z, ctx.y_real)))
        ctx.step("combined.train_on_batch (2)")


@flip_and_recompile.implement("torch")
def flip_and_recompile_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    combined = torch.nn.Sequential(G, D)
    for call in (1, 2):
        if call == 2:
            D.requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
        optimizer.zero_grad()
        loss = loss_func(combined(ctx.z), ctx.y_real)
        loss.backward()
        optimizer.step()
        ctx.step(f"combined step ({call})")
        ctx.record(f"loss ({call})", loss.item())


# --- freeze.toggle_every_call -------------------------------------------------------------

ITERATIONS = 10


def record_moves(ctx, g_call: str, d_call: str) -> None:
    """Count, over the steps so far, the G calls (labels ending in ``g_call``) and D calls
    (labels containing ``d_call``) that moved each network: the values as_intended reads."""
    counts = dict.fromkeys(("D moved in D calls", "G moved in D calls", "D moved in G calls",
                            "G moved in G calls", "D state moved in G calls"), 0)
    for s in ctx.steps:
        kind = "G" if s["label"].endswith(g_call) else "D" if d_call in s["label"] else None
        if kind is None:
            continue
        counts[f"D moved in {kind} calls"] += bool(s["changed"]["D"]["params"])
        counts[f"G moved in {kind} calls"] += bool(s["changed"]["G"]["params"])
        counts["D state moved in G calls"] += kind == "G" and bool(s["changed"]["D"]["state"])
    for key, n in counts.items():
        ctx.record(key, n)


def as_intended(o):
    return (o.value("D moved in G calls") == 0 and o.value("G moved in G calls") == ITERATIONS
            and o.value("D moved in D calls") == 2 * ITERATIONS and o.value("G moved in D calls") == 0)


toggle_every_call = register(Scenario(
    id="freeze.toggle_every_call",
    question=f"{ITERATIONS} iterations of: D.trainable = True; D.train_on_batch on real ('real') and on "
             "G.predict(z) ('fake'); D.trainable = False; combined.train_on_batch(z, 'real'). Each model is "
             "compiled once (D while trainable, the combined model with D frozen), as keras-dcgan does; the "
             "flags are toggled, never recompiled. Does each model train exactly when intended? (torch: "
             "requires_grad_ toggled the same way, fake = G(z).detach() in train mode.)",
    sources=["keras-dcgan-jacobgil", "keras-2-compile-note", "keras-3-compile"],
    claims=[
        Claim("as-compiled-keras-2", "trainable takes effect at compile(): D, compiled while trainable, moves "
              "in every D call; the combined model, compiled with D frozen, moves G only.", "keras-2-compile-note",
              as_intended, engines=("tf-keras",)),
        Claim("as-compiled-keras-3", "Trainable variables are fixed at compile(): D, compiled while trainable, "
              "moves in every D call; the combined model, compiled with D frozen, moves G only.", "keras-3-compile",
              as_intended, engines=KERAS_3_IDS),
    ],
))


@toggle_every_call.implement(*KERAS_IDS)
def toggle_every_call_keras(ctx):
    keras, G, D = ctx.keras, ctx.G, ctx.D
    D.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    D.trainable = False
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=ctx.loss)
    for i in range(1, ITERATIONS + 1):
        D.trainable = True
        fake = G.predict(ctx.z, verbose=0)
        ctx.step(f"iteration {i}: G.predict")
        for x, y, what in ((ctx.real, ctx.y_real, "real"), (fake, ctx.y_fake, "fake")):
            label = f"iteration {i}: D.train_on_batch ({what})"
            with ctx.attempt(label):
                D.train_on_batch(x, y)
                ctx.step(label)
        D.trainable = False
        label = f"iteration {i}: combined.train_on_batch"
        with ctx.attempt(label):
            ctx.record(f"G loss {i}", float(combined.train_on_batch(ctx.z, ctx.y_real)))
            ctx.step(label)
    record_moves(ctx, g_call="combined.train_on_batch", d_call="D.train_on_batch")


@toggle_every_call.implement("torch")
def toggle_every_call_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    optimizer_D = torch.optim.Adam(D.parameters())
    D.requires_grad_(False)
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
    for i in range(1, ITERATIONS + 1):
        D.requires_grad_(True)
        fake = G(ctx.z).detach()  # G in train mode, as the DCGAN example
        ctx.step(f"iteration {i}: G(z).detach()")
        for x, y, what in ((ctx.real, ctx.y_real, "real"), (fake, ctx.y_fake, "fake")):
            optimizer_D.zero_grad()
            loss_func(D(x), y).backward()
            optimizer_D.step()
            ctx.step(f"iteration {i}: D step ({what})")
        D.requires_grad_(False)
        optimizer.zero_grad()
        loss = loss_func(combined(ctx.z), ctx.y_real)
        loss.backward()
        optimizer.step()
        ctx.step(f"iteration {i}: combined step")
        ctx.record(f"G loss {i}", loss.item())
    record_moves(ctx, g_call="combined step", d_call="D step")


# --- freeze.shared_optimizer --------------------------------------------------------------

shared_optimizer = register(Scenario(
    id="freeze.shared_optimizer",
    question="One Adam instance compiled into D (while trainable) and into the combined model (with D frozen). "
             "Two iterations of: D.trainable = True; D.train_on_batch on real ('real') and on G.predict(z) "
             "('fake'); D.trainable = False; combined.train_on_batch(z, 'real'). The flags are toggled as in "
             "freeze.toggle_every_call so that only the sharing differs. Does each call train its model, or "
             "does the shared optimizer refuse one of them? (torch: one Adam over G's and D's parameters, "
             "requires_grad_ toggled the same way.) Variant 'd-first': D's calls come first in each iteration, "
             "as in keras-gan; 'g-first': the combined call comes first, so G's variables reach the shared "
             "optimizer first.",
    sources=["keras-gan-lindernoren", "keras-dcgan-jacobgil"],
    variants=("d-first", "g-first"),
    claims=[
        Claim("one-optimizer-serves-both", "One optimizer instance can be passed to every compile(): D's calls "
              "train D and the combined calls train G only.", "keras-gan-lindernoren",
              lambda o: o.error is None and all(
                  moved(o, f"iteration {i}: D.train_on_batch ({w})", "D") for i in (1, 2) for w in ("real", "fake"))
              and all(moved(o, f"iteration {i}: combined.train_on_batch", "G")
                      and not moved(o, f"iteration {i}: combined.train_on_batch", "D") for i in (1, 2)),
              engines=KERAS_IDS),
    ],
))


@shared_optimizer.implement(*KERAS_IDS)
def shared_optimizer_keras(ctx):
    keras, G, D = ctx.keras, ctx.G, ctx.D
    optimizer = keras.optimizers.Adam()
    D.compile(optimizer=optimizer, loss=ctx.loss)
    D.trainable = False
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=optimizer, loss=ctx.loss)

    def train_d(i):
        D.trainable = True
        fake = G.predict(ctx.z, verbose=0)
        ctx.step(f"iteration {i}: G.predict")
        for x, y, what in ((ctx.real, ctx.y_real, "real"), (fake, ctx.y_fake, "fake")):
            label = f"iteration {i}: D.train_on_batch ({what})"
            with ctx.attempt(label):
                D.train_on_batch(x, y)
                ctx.step(label)
        D.trainable = False

    def train_g(i):
        label = f"iteration {i}: combined.train_on_batch"
        with ctx.attempt(label):
            combined.train_on_batch(ctx.z, ctx.y_real)
            ctx.step(label)

    for i in (1, 2):
        for train in ((train_d, train_g) if ctx.variant == "d-first" else (train_g, train_d)):
            train(i)


@shared_optimizer.implement("torch")
def shared_optimizer_torch(ctx):
    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam(combined.parameters())

    def train_d(i):
        D.requires_grad_(True)
        fake = G(ctx.z).detach()  # G in train mode, as the DCGAN example
        ctx.step(f"iteration {i}: G(z).detach()")
        for x, y, what in ((ctx.real, ctx.y_real, "real"), (fake, ctx.y_fake, "fake")):
            optimizer.zero_grad()  # set_to_none: G's .grad is None, step() skips G
            loss_func(D(x), y).backward()
            optimizer.step()
            ctx.step(f"iteration {i}: D step ({what})")
        D.requires_grad_(False)

    def train_g(i):
        optimizer.zero_grad()  # and D's .grad is None here
        loss_func(combined(ctx.z), ctx.y_real).backward()
        optimizer.step()
        ctx.step(f"iteration {i}: combined step")

    D.requires_grad_(False)  # D starts frozen, as in the Keras recipe
    for i in (1, 2):
        for train in ((train_d, train_g) if ctx.variant == "d-first" else (train_g, train_d)):
            train(i)


# --- freeze.frozen_bn_mode ----------------------------------------------------------------

def loss_is(o, probe, other):
    """The G step's loss is the probe's (to float32 rounding) and not the other probe's."""
    loss = o.value("loss of the G step")
    return close(loss, o.value(probe)) and not close(loss, o.value(other))


TRAIN_PROBE = "probe: loss with D in training mode"
INFER_PROBE = "probe: loss with D in inference mode"
FROZEN_PROBE = "probe: loss with D frozen, called with training=True"

frozen_bn_mode = register(Scenario(
    id="freeze.frozen_bn_mode",
    question="The G step with D frozen (variant 'frozen': D.trainable = False before the combined model is "
             "compiled; torch: D.requires_grad_(False), D left in train mode) and with D trainable (variant "
             "'trainable'). Does D's BatchNorm normalise with batch or moving statistics, does its state "
             "change, and is G's update the same in both variants? Probes, taken before the step and then "
             "undone: the loss of D's output on the same fake G(z) in training and in inference mode.",
    sources=["keras-docs-trainable", "article-1", "torch-docs-eval-mode"],
    variants=("frozen", "trainable"),
    claims=[
        Claim("frozen-bn-keeps-statistics", "A frozen BatchNormalization does not update its moving "
              "statistics: D's state does not change in the G step.", "keras-docs-trainable",
              lambda o: not moved(o, "G step", "D", "state"), engines=KERAS_IDS, variants=("frozen",)),
        Claim("frozen-bn-inference-mode", "A frozen BatchNormalization runs in inference mode: the G step's "
              "loss is D's inference-mode loss.", "keras-docs-trainable",
              lambda o: loss_is(o, INFER_PROBE, TRAIN_PROBE), engines=KERAS_IDS, variants=("frozen",)),
        Claim("requires-grad-changes-nothing", "Switching requires_grad off on D changes nothing about G's "
              "update.", "article-1",
              lambda o: o.record["digests"]["G"] == o.peer(o.record["scenario"], "trainable").record["digests"]["G"],
              engines=("torch",), variants=("frozen",)),
        Claim("train-mode-decides-bn", "BatchNorm follows train/eval mode, not requires_grad: with D in train "
              "mode its running statistics change and it normalises with batch statistics.",
              "torch-docs-eval-mode",
              lambda o: moved(o, "G step", "D", "state") and loss_is(o, TRAIN_PROBE, INFER_PROBE),
              engines=("torch",), variants=("frozen",)),
    ],
))


@frozen_bn_mode.implement(*KERAS_IDS)
def frozen_bn_mode_keras(ctx):
    keras, G, D, loss_func = ctx.keras, ctx.G, ctx.D, ctx.loss
    # probes on the fake the step will see; calls in training mode move BN statistics, so undo them
    saved = [G.get_weights(), D.get_weights()]
    fake = G(ctx.z, training=True)
    ctx.record(INFER_PROBE, float(loss_func(ctx.y_real, D(fake, training=False))))
    D.trainable = False
    ctx.record(FROZEN_PROBE, float(loss_func(ctx.y_real, D(fake, training=True))))
    D.trainable = True
    ctx.record(TRAIN_PROBE, float(loss_func(ctx.y_real, D(fake, training=True))))  # last: it moves D's statistics
    G.set_weights(saved[0])
    D.set_weights(saved[1])

    if ctx.variant == "frozen":
        D.trainable = False
    combined = keras.Sequential([G, D])
    combined.compile(optimizer=keras.optimizers.Adam(), loss=loss_func)
    ctx.record("loss of the G step", float(combined.train_on_batch(ctx.z, ctx.y_real)))
    ctx.step("G step")


@frozen_bn_mode.implement("torch")
def frozen_bn_mode_torch(ctx):
    import copy

    import torch

    G, D, loss_func = ctx.G, ctx.D, ctx.loss
    # probes on the fake the step will see; forward passes in train mode move BN statistics, so undo them
    saved = [copy.deepcopy(G.state_dict()), copy.deepcopy(D.state_dict())]
    with torch.no_grad():
        fake = G(ctx.z)
        D.eval()
        ctx.record(INFER_PROBE, loss_func(D(fake), ctx.y_real).item())
        D.train()
        ctx.record(TRAIN_PROBE, loss_func(D(fake), ctx.y_real).item())  # last: it moves D's statistics
    G.load_state_dict(saved[0])
    D.load_state_dict(saved[1])

    if ctx.variant == "frozen":
        D.requires_grad_(False)  # D stays in train mode
    combined = torch.nn.Sequential(G, D)
    optimizer = torch.optim.Adam([p for p in combined.parameters() if p.requires_grad])
    optimizer.zero_grad()
    loss = loss_func(combined(ctx.z), ctx.y_real)
    loss.backward()
    optimizer.step()
    ctx.record("loss of the G step", loss.item())
    ctx.step("G step")
