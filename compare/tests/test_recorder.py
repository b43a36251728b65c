"""The recorder's judgements that must not depend on the machine: which tensors moved, what a
gradient slot holds, and the environment an engine starts from. No engine runs here."""

from __future__ import annotations

import numpy as np
import pytest

from compare.models.toy import ARTICLE, PARITY, rounding_tensors, specs
from compare.observe import ROUNDING_BOUND, changed_tensors, digests, gradient_kinds
from compare.runner import child_environment, removed_variables

ROUNDING = {"D.conv1.bias": "D.conv1.kernel"}


def test_rounding_tensors_are_the_biases_that_feed_a_batchnorm():
    assert rounding_tensors(ARTICLE) == {"G.deconv.bias": "G.deconv.kernel", "D.conv1.bias": "D.conv1.kernel"}
    assert rounding_tensors(PARITY) == {}  # the parity nets have no bias before BN
    assert set(rounding_tensors(ARTICLE)) <= {s.name for s in specs(ARTICLE) if s.kind == "param"}


@pytest.mark.parametrize("noise", [0.0, 1e-12, -3e-9])
def test_a_bias_gradient_that_is_rounding_noise_reads_the_same_whatever_its_value(noise):
    """Zero in exact arithmetic: 0.0 on one machine, 1e-12 on another, the same kind on both."""
    slots = {"D.conv1.kernel": np.full((2, 2), 1e-10), "D.conv1.bias": np.array([noise, 0.0]),
             "D.conv2.kernel": np.full(2, 0.5)}  # the yardstick is the network's largest gradient
    kinds, largest = gradient_kinds(slots, ROUNDING)
    assert kinds == {"D.conv1.kernel": "nonzero", "D.conv1.bias": "rounding", "D.conv2.kernel": "nonzero"}
    assert largest <= ROUNDING_BOUND


def test_a_real_bias_gradient_and_exact_slots_keep_their_kind():
    real = {"D.conv1.kernel": np.full(3, 0.01), "D.conv1.bias": np.full(3, 1e-4)}  # BN in inference mode
    assert gradient_kinds(real, ROUNDING)[0]["D.conv1.bias"] == "nonzero"
    cleared = {"D.conv1.kernel": np.zeros(3), "D.conv1.bias": np.zeros(3)}  # zero_grad(set_to_none=False)
    assert gradient_kinds(cleared, ROUNDING)[0] == {"D.conv1.kernel": "zero", "D.conv1.bias": "zero"}
    empty = {"D.conv1.kernel": None, "D.conv1.bias": None}
    assert gradient_kinds(empty, ROUNDING)[0] == {"D.conv1.kernel": "none", "D.conv1.bias": "none"}


def tensors(kernel=0.0, bias=0.0, gamma=0.0):
    return {"D.conv1.kernel": np.array([1.0 + kernel]), "D.conv1.bias": np.array([bias]),
            "D.bn.gamma": np.array([1.0 + gamma])}


TRAINABLE = {"D.conv1.kernel", "D.conv1.bias", "D.bn.gamma"}


@pytest.mark.parametrize("bias_step", [0.0, 1e-3])
def test_whether_adam_moved_a_rounding_bias_does_not_change_the_observation(bias_step):
    """Adam turns nonzero noise into a step of about lr and leaves an exact 0.0: both machines
    record the bias as stepped by rounding, never as moved or unmoved."""
    changed = changed_tensors(tensors(), tensors(kernel=1e-3, bias=bias_step, gamma=1e-3), TRAINABLE, ROUNDING)
    assert changed["D"] == {"params": ["D.conv1.kernel", "D.bn.gamma"], "state": [], "rounding": ["D.conv1.bias"]}


def test_a_frozen_layer_stays_bit_exact():
    """A bias that moves while its own kernel does not is a real move; nothing moved is nothing."""
    assert changed_tensors(tensors(), tensors(bias=1e-30), TRAINABLE, ROUNDING)["D"]["params"] == ["D.conv1.bias"]
    assert changed_tensors(tensors(), tensors(), TRAINABLE, ROUNDING)["D"] == {"params": [], "state": [],
                                                                            "rounding": []}


def test_digests_leave_out_rounding_biases_only():
    a, b = tensors(kernel=1e-3), tensors(kernel=1e-3, bias=1e-3)
    assert digests(a, TRAINABLE, ROUNDING) == digests(b, TRAINABLE, ROUNDING)
    assert digests(a, TRAINABLE, ROUNDING) != digests(tensors(kernel=2e-3), TRAINABLE, ROUNDING)


CALLER = {"KERAS_BACKEND": "torch", "JAX_ENABLE_X64": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
          "TF_ENABLE_ONEDNN_OPTS": "0", "OMP_NUM_THREADS": "7", "CUDA_VISIBLE_DEVICES": "0",
          "TORCH_NUM_THREADS": "3", "MKL_NUM_THREADS": "5"}


def test_the_callers_framework_variables_never_reach_an_engine(monkeypatch):
    for name, value in CALLER.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME_IS_KEPT", "yes")
    env = child_environment("keras-jax", "float32")
    assert env["KERAS_BACKEND"] == "jax" and "JAX_ENABLE_X64" not in env
    assert env["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    assert env["OMP_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "TF_ENABLE_ONEDNN_OPTS" not in env and "TORCH_NUM_THREADS" not in env and env["MKL_NUM_THREADS"] == "1"
    assert env["HOME_IS_KEPT"] == "yes"
    assert child_environment("keras-jax", "float64")["JAX_ENABLE_X64"] == "1"  # the runner's own, for float64
    assert child_environment("keras-tensorflow", "float32")["KERAS_BACKEND"] == "tensorflow"
    assert "KERAS_BACKEND" not in child_environment("torch", "float32")
    assert set(CALLER) <= set(removed_variables())


def test_threads_reach_every_framework_setting():
    env = child_environment("keras-jax", "float32", threads=2)
    assert env["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2"
    assert env["OMP_NUM_THREADS"] == env["COMPARE_THREADS"] == "2"
