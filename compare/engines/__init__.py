"""The engine registry: which engines exist, what each needs, and how to start it.

Nothing here imports a framework: availability is read from installed package
metadata, so the parent process stays light and a broken framework cannot crash it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
from typing import Dict, List, Optional, Tuple

from compare import DISTRIBUTION


def distribution_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name``, or of its CPU-only build (tensorflow-cpu
    installs the import package ``tensorflow`` under another distribution name); None if neither."""
    for dist in (name, f"{name}-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    id: str
    module: str  # imported only in the engine's child process
    imports: Tuple[str, ...]  # top-level modules that must be importable
    extras: Tuple[str, ...]  # the pip extras that install it
    env: Tuple[Tuple[str, str], ...] = ()  # set before the child imports anything
    float64_env: Tuple[Tuple[str, str], ...] = ()  # added for float64 runs
    description: str = ""
    framework: str = "keras"  # whose layer conventions (BN momentum direction) the engine follows
    relative_cost: int = 1  # how long its run takes, roughly (scheduling only: longest first)

    @property
    def install(self) -> str:
        return f"pip install '{DISTRIBUTION}[{','.join(self.extras)}]'"

    def missing(self) -> List[str]:
        return [name for name in self.imports if importlib.util.find_spec(name) is None]

    def available(self) -> bool:
        return not self.missing()

    def child_env(self, dtype: str, threads: int = 1) -> Dict[str, str]:
        """The engine's own variables; ``{threads}`` and ``{multi}`` (XLA's switch for more
        than one thread) are filled in."""
        env = dict(self.env)
        if dtype == "float64":
            env.update(self.float64_env)
        fill = {"threads": threads, "multi": "true" if threads > 1 else "false"}
        return {name: value.format(**fill) for name, value in env.items()}

    def versions(self) -> Dict[str, Optional[str]]:
        """Installed versions of the distributions behind this engine, from metadata."""
        out: Dict[str, Optional[str]] = {}
        for name in self.imports:  # each import name here is also its distribution's name
            out[name] = distribution_version(name)
        return out


ENGINES: Dict[str, EngineSpec] = {
    spec.id: spec
    for spec in [
        EngineSpec("torch", "compare.engines.torch.engine", ("torch",), ("torch",),
                   description="PyTorch", framework="torch"),
        EngineSpec("keras-tensorflow", "compare.engines.keras_tensorflow.engine", ("keras", "tensorflow"),
                   ("tensorflow",), env=(("KERAS_BACKEND", "tensorflow"),),
                   description="Keras 3, TensorFlow backend", relative_cost=4),
        EngineSpec("keras-jax", "compare.engines.keras_jax.engine", ("keras", "jax"), ("jax",),
                   env=(("KERAS_BACKEND", "jax"), ("JAX_PLATFORMS", "cpu"),
                        ("XLA_FLAGS", "--xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}")),
                   float64_env=(("JAX_ENABLE_X64", "1"),),  # without it JAX silently computes in float32
                   description="Keras 3, JAX backend", relative_cost=5),
        EngineSpec("keras-torch", "compare.engines.keras_torch.engine", ("keras", "torch"), ("torch", "keras"),
                   env=(("KERAS_BACKEND", "torch"),), description="Keras 3, PyTorch backend", relative_cost=2),
        EngineSpec("tf-keras", "compare.engines.tf_keras.engine", ("tf_keras", "tensorflow"), ("tf-keras",),
                   env=(("TF_USE_LEGACY_KERAS", "1"),), description="Keras 2 (the tf_keras package)",
                   relative_cost=3),
    ]
}

# the tests' stand-in engines, which import no framework: registered only where a test names them
TEST_ENGINES = "COMPARE_TEST_ENGINES"
for _name in filter(None, (part.strip() for part in os.environ.get(TEST_ENGINES, "").split(","))):
    ENGINES.setdefault(_name, EngineSpec(_name, "compare.tests.fake_engine", (), (),
                                         description="test stand-in (numpy)", framework="torch"))

REFERENCE = "torch"


def parse_engines(text: Optional[str]) -> List[str]:
    """'a,b' -> ['a', 'b'], in registry order; None -> all of them. Raises ValueError naming
    the valid ids (also for a text that names none, such as '' or ' , ')."""
    if text is None:
        return list(ENGINES)
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in wanted if name not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine {', '.join(unknown)}; valid engines: {', '.join(ENGINES)}")
    if not wanted:
        raise ValueError(f"no engine given; valid engines: {', '.join(ENGINES)}")
    return [name for name in ENGINES if name in wanted]
