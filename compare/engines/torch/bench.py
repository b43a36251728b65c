"""PyTorch half of ``compare bench``: the four ways to write the G step, and the FLOP and
memory counts every engine's predictions are made from.

Imported only in a bench child process (``compare.bench``), so torch is imported at the top.
Each idiom is one function, written as users write it, with its cost formula next to it
(in blocks: see ``compare.bench`` for the block names).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import nn

from compare.models import bench_batch, pair
from compare.models.dcgan64 import ADAM


class Gan:
    """Fresh G, D (a built-in pair at its builders' defaults), one Adam each and the batch."""

    def __init__(self, size: str, device: str, seed: int = 0):
        torch.manual_seed(seed)
        self.G, self.D = pair(size).build_torch()
        self.G.to(device)
        self.D.to(device)
        adam = dict(lr=ADAM["lr"], betas=(ADAM["beta_1"], ADAM["beta_2"]))
        self.optimizer_G = torch.optim.Adam(self.G.parameters(), **adam)
        self.optimizer_D = torch.optim.Adam(self.D.parameters(), **adam)
        self.loss = nn.BCEWithLogitsLoss()
        batch = bench_batch(size, seed + 1)
        n = batch["real"].shape[0]
        self.real, self.z = (torch.as_tensor(batch[k], dtype=torch.float32, device=device) for k in ("real", "z"))
        self.y_real, self.y_fake = torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)


# --- the idioms -----------------------------------------------------------------------------
# Each returns the G loss; its cost formula counts convolution FLOPs in blocks (FG: one G
# forward, BG: one G backward, FD, and D's backward producing weight gradients BDw, weight and
# input gradients BDwx, or the input gradient only BDx) and, for memory, the bytes alive at the
# peak, mostly when the G step's backward starts (PG, PD: gradients; AG, AD*: saved tensors).

def detach(gan: Gan):
    """The DCGAN example's step: one G forward; D's fake loss stops at fake.detach(). The same
    function as the parity runs' canonical iteration."""
    from compare.engines.torch.engine import canonical_iteration

    return canonical_iteration(gan, gan.real, gan.z, gan.y_real, gan.y_fake)[2]


def retain_graph(gan: Gan):
    """No detach: D's fake loss backpropagates through G too (those G gradients are thrown away
    by G.zero_grad), and retain_graph=True keeps the graph, D's part included while errD_fake
    lives, so that the G step can backpropagate through G's forward again."""
    G, D, loss = gan.G, gan.D, gan.loss
    D.zero_grad()
    loss(D(gan.real), gan.y_real).backward()
    fake = G(gan.z)
    errD_fake = loss(D(fake), gan.y_fake)
    errD_fake.backward(retain_graph=True)
    gan.optimizer_D.step()
    G.zero_grad()
    errG = loss(D(fake), gan.y_real)
    errG.backward()
    gan.optimizer_G.step()
    return errG


def recompute(gan: Gan):
    """G runs twice: without a graph for D's step, with one for G's. (G's BN then sees two
    batches per iteration instead of one.)"""
    G, D, loss = gan.G, gan.D, gan.loss
    D.zero_grad()
    loss(D(gan.real), gan.y_real).backward()
    with torch.no_grad():
        fake = G(gan.z)
    loss(D(fake), gan.y_fake).backward()
    gan.optimizer_D.step()
    G.zero_grad()
    errG = loss(D(G(gan.z)), gan.y_real)
    errG.backward()
    gan.optimizer_G.step()
    return errG


def requires_grad_off(gan: Gan):
    """As detach, with D.requires_grad_(False) around the G step: no weight gradients for D."""
    G, D, loss = gan.G, gan.D, gan.loss
    D.zero_grad()
    loss(D(gan.real), gan.y_real).backward()
    fake = G(gan.z)
    loss(D(fake.detach()), gan.y_fake).backward()
    gan.optimizer_D.step()
    G.zero_grad()
    D.requires_grad_(False)
    errG = loss(D(fake), gan.y_real)
    errG.backward()
    D.requires_grad_(True)
    gan.optimizer_G.step()
    return errG


# id -> (step, FLOP formula, memory formula); the first is the baseline
IDIOMS: Dict[str, tuple] = {
    "detach": (detach, {"FG": 1, "FD": 3, "BDw": 2, "BDwx": 1, "BG": 1},
               {"PG": 1, "PD": 1, "AG": 1, "ADwx": 1}),
    # + one backward through G (BG) and through D's first layer into G (BDwx - BDw). Memory:
    # D's fake-batch graph is still alive in the G step; or, in the D step, G's incoming
    # gradients are added to the .grad the last G step left (G.zero_grad comes later)
    "retain-graph": (retain_graph, {"FG": 1, "FD": 3, "BDw": 1, "BDwx": 2, "BG": 2},
                     [{"PG": 1, "PD": 1, "AG": 1, "ADwx": 2}, {"PG": 2, "PD": 1, "AG": 1, "ADwx": 1}]),
    # + one forward of G (FG); the first runs without a graph, so no extra saved tensors
    "recompute": (recompute, {"FG": 2, "FD": 3, "BDw": 2, "BDwx": 1, "BG": 1},
                  {"PG": 1, "PD": 1, "AG": 1, "ADwx": 1}),
    # D's backward in the G step makes the input gradient only (BDx instead of BDwx)
    "requires-grad-off": (requires_grad_off, {"FG": 1, "FD": 3, "BDw": 2, "BDx": 1, "BG": 1},
                          {"PG": 1, "PD": 1, "AG": 1, "ADx": 1}),
}


class Idiom:
    def __init__(self, idiom_id: str, size: str, device: str):
        self.id = idiom_id
        self.gan = Gan(size, device)
        self._step, self.flops, self.memory = IDIOMS[idiom_id]
        self.device = device
        self.facts: Dict[str, object] = {}

    def step(self):
        return self._step(self.gan)

    def sync(self, out) -> None:
        out.item()  # a user's loss logging; on CUDA it waits for the iteration to finish


def cuda_memory() -> tuple:
    """(reset, read) over torch's CUDA allocator: read gives (peak, at reset) bytes."""
    state = {}

    def reset():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        state["base"] = torch.cuda.memory_allocated()

    def read():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), state["base"]

    return reset, read


def setup_torch(device: str) -> Optional[str]:
    """Configure torch for ``device`` (shared with keras-torch); the reason it cannot be used,
    or None."""
    torch.set_num_threads(1)  # as the engines: one thread, the same for every framework
    if device == "cuda":
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA device"
        torch.backends.cuda.matmul.allow_tf32 = False  # parity runs: full float32
        torch.backends.cudnn.allow_tf32 = False
    return None


class TorchBench:
    idioms = tuple(IDIOMS)

    def setup(self, device: str) -> Optional[str]:
        return setup_torch(device)

    def versions(self) -> Dict[str, str]:
        return {"torch": torch.__version__}

    def build(self, idiom: str, size: str, device: str) -> Idiom:
        return Idiom(idiom, size, device)

    def gpu_memory(self) -> Optional[tuple]:
        return cuda_memory()

    def count(self, size: str, device: str) -> Dict[str, object]:
        """The model's blocks for ``size``, counted, and each idiom's whole iteration counted
        directly (a check that the formulas describe the code)."""
        return count_blocks(size, device)


# --- counting -------------------------------------------------------------------------------

def _flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _saved_bytes(fn: Callable[[], object], exclude) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn`` runs, not
    counting the parameters (they exist anyway)."""
    seen = {t.untyped_storage().data_ptr() for t in exclude}
    total = 0

    def pack(t):
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def count_blocks(size: str, device: str) -> Dict[str, object]:
    gan = Gan(size, device)
    G, D, z = gan.G, gan.D, gan.z
    params = list(G.parameters()) + list(D.parameters())
    fake = G(z).detach()
    blocks: Dict[str, int] = {}

    def d_backward(weights: bool, inputs: bool) -> int:
        D.requires_grad_(weights)
        out = D(fake.clone().requires_grad_(inputs)).sum()
        flops = _flops(out.backward)
        D.requires_grad_(True)
        return flops

    blocks["FG"] = _flops(lambda: G(z))
    blocks["FD"] = _flops(lambda: D(fake))
    blocks["BG"] = _flops(G(z).sum().backward)
    blocks["BDw"] = d_backward(True, False)
    blocks["BDwx"] = d_backward(True, True)
    blocks["BDx"] = d_backward(False, True)

    def d_saved(weights: bool, inputs: bool) -> int:
        D.requires_grad_(weights)
        n = _saved_bytes(lambda: D(fake.clone().requires_grad_(inputs)), params)
        D.requires_grad_(True)
        return n

    blocks["PG"] = sum(p.numel() * p.element_size() for p in G.parameters())
    blocks["PD"] = sum(p.numel() * p.element_size() for p in D.parameters())
    blocks["AG"] = _saved_bytes(lambda: G(z), params)
    blocks["ADw"] = d_saved(True, False)
    blocks["ADwx"] = d_saved(True, True)
    blocks["ADx"] = d_saved(False, True)
    direct = {}
    for idiom_id, (step, _, _) in IDIOMS.items():
        other = Gan(size, device)
        step(other)  # Adam's state exists from here on, as in the timed loop
        direct[idiom_id] = _flops(lambda: step(other))
    return {"blocks": blocks, "direct_flops": direct}


BENCH = TorchBench()
