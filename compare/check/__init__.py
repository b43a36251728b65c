"""Checking a user's own PyTorch GAN against its Keras port.

``compare.check(FILE, engines=..., dtype=..., iterations=..., out=...)`` runs the check and
returns a ``CheckResult``; ``compare check FILE.py`` is the same from the command line.
Nothing here imports a framework: each side runs in an engine process of its own.
"""

import sys
import types


def check(file, engines=None, dtype="float32", iterations=10, out=None, **options):
    """Check the model pair in ``file`` (see ``compare.check.pairfile``); raises CheckError
    (a ValueError) for a usage error. Options: progress, timeout, jobs, diagnosis."""
    from compare.check.run import check as run

    return run(file, engines=engines, dtype=dtype, iterations=iterations, out=out, **options)


def __getattr__(name):
    if name in ("CheckError", "CheckResult"):
        from compare.check import run

        return getattr(run, name)
    raise AttributeError(name)


class CallableModule(types.ModuleType):
    """``compare.check`` is this package and also the function of the same name."""

    def __call__(self, *args, **kwargs):
        return check(*args, **kwargs)


sys.modules[__name__].__class__ = CallableModule
