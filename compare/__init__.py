"""compare: the semantics of GAN training steps in PyTorch and Keras, run and checked.

Importing this package imports no deep-learning framework: every engine runs in a
child process of its own (see ``compare.runner``).
"""

__version__ = "0.1.0"
DISTRIBUTION = "gan-step-compare"  # the name pip installs; "compare" on PyPI is another project


def __getattr__(name):
    if name == "check":  # compare.check(...): the subpackage, callable, imported on first use
        import importlib

        return importlib.import_module("compare.check")
    raise AttributeError(f"module 'compare' has no attribute {name!r}")
