"""The oneDNN lowering: each conv and its gradients against nn.Conv, whole nets against
torchvision (1 and 4 devices), a float32 training step against the tap lowering, and the
package without the extension."""
import os
import re
import subprocess
import sys

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stres_jax
from stres_jax.models import create_model, onednn
from stres_jax.models.conv_impls import CONV_IMPLS, resolve_conv_impl
from stres_jax.models.fast_conv import depthwise_taps, epilogue
from stres_jax.train.step import init_state, make_train_step, sgd
from tests.torch_reference import ARCHS, relative_error, torch_forward

DISABLED = bool(os.environ.get("STRES_JAX_DISABLE_ONEDNN"))
needs_onednn = pytest.mark.skipif(DISABLED, reason="STRES_JAX_DISABLE_ONEDNN is set")


def xla_conv(x, kernel, strides, pads):
    """XLA's own 3-D convolution, NDHWC x DHWIO: the reference for oneDNN's."""
    return jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def test_extension_builds_where_the_wheels_are():
    """The test extra installs the oneDNN wheels: a missing build here is a defect, not a skip."""
    available, why = onednn.status()
    assert available != DISABLED, why
    assert resolve_conv_impl("auto") == ("taps" if DISABLED else "onednn")


CONVS = [  # (input shape, kernel (kt, kh, kw, in, out), strides, padding): every kind in the nets
    ((2, 5, 9, 11, 4), (3, 3, 3, 4, 6), (1, 1, 1), (1, 1, 1)),
    ((2, 6, 10, 9, 4), (3, 3, 3, 4, 6), (2, 2, 2), (1, 1, 1)),
    ((1, 4, 13, 15, 3), (3, 7, 7, 3, 8), (1, 2, 2), (1, 3, 3)),
    ((3, 5, 9, 7, 5), (1, 3, 3, 5, 7), (1, 2, 2), (0, 1, 1)),
    ((3, 5, 8, 8, 5), (3, 1, 1, 5, 7), (2, 1, 1), (1, 0, 0)),
    ((3, 5, 8, 9, 5), (1, 1, 1, 5, 7), (2, 2, 2), (0, 0, 0)),
]


@needs_onednn
@pytest.mark.parametrize("rule, blocked", [("spacetime", False), ("all", False), ("all", True)])
@pytest.mark.parametrize("shape, kernel, strides, padding", CONVS)
def test_conv_and_its_gradients_match_nn_conv(shape, kernel, strides, padding, rule, blocked):
    """Every kernel kind of the nets, with either gradient rule (oneDNN's gradients for 3x3x3 and
    3x7x7 only, the AVX2 default, or for every kernel, the AVX-512 default) and the kernel gradient
    on NDHWC or blocked activations, on any CPU."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    pads = tuple((p, p) for p in padding)
    reference = CONV_IMPLS["xla"](kernel[-1], kernel[:3], strides=strides, padding=pads, use_bias=False)
    variables = reference.init(jax.random.key(0), x)
    y0, vjp0 = jax.vjp(lambda k, x: reference.apply({"params": {"kernel": k}}, x), variables["params"]["kernel"], x)
    y1, vjp1 = jax.vjp(lambda k, x: onednn.onednn_conv3d(x, k, strides, pads), variables["params"]["kernel"], x)
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(y0.shape), jnp.float32)
    with onednn.choosing(gradient_kernels=rule, blocked_kernel_gradient=blocked):  # read while tracing the VJP
        (dk0, dx0), (dk1, dx1) = vjp0(dy), vjp1(dy)
    assert relative_error(y1, y0) < 1e-5
    assert relative_error(dx1, dx0) < 1e-5
    assert relative_error(dk1, dk0) < 1e-5


@needs_onednn
@pytest.mark.parametrize("shape, kernel, strides, padding", CONVS[::2])
def test_fused_epilogue_and_its_gradient_match_xla(shape, kernel, strides, padding):
    """conv + bias [+ residual] [then ReLU] as one oneDNN call with post-ops (inference with BN
    folded), and its gradient (Grad-CAM on a folded net), against XLA's conv and jnp."""
    rng = np.random.default_rng(3)
    x, k = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (shape, kernel))
    bias = jnp.asarray(rng.standard_normal(kernel[-1]), jnp.float32)
    pads = tuple((p, p) for p in padding)

    def xla(x, k, bias, residual, relu):
        return epilogue(xla_conv(x, k, strides, pads), bias, residual, relu)
    residual = jnp.asarray(rng.standard_normal(xla(x, k, bias, None, False).shape), jnp.float32)
    for res, relu in ((None, False), (None, True), (residual, False), (residual, True)):
        def fused(x, k, bias):
            return onednn.onednn_conv3d_fused(x, k, bias, res, relu, strides, pads)
        expected, got = xla(x, k, bias, res, relu), jax.jit(fused)(x, k, bias)
        assert relative_error(got, expected) < 1e-5, (res is not None, relu)
        dy = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
        grads = jax.grad(lambda *a: jnp.vdot(fused(*a), dy), argnums=(0, 1, 2))(x, k, bias)
        expected_grads = jax.grad(lambda *a: jnp.vdot(xla(*a, res, relu), dy), argnums=(0, 1, 2))(x, k, bias)
        for g, e in zip(grads, expected_grads):
            assert relative_error(g, e) < 1e-5, (res is not None, relu)


@needs_onednn
def test_inference_reuses_a_reordered_kernel_only_while_its_bytes_are_the_same():
    """The forward keeps kernels in oneDNN's layout, found by their exact bytes: a kernel seen
    before, another one, then the first again and a copy with one weight changed, each against XLA."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((1, 3, 6, 7, 64)), jnp.float32)
    first = jnp.asarray(rng.standard_normal((3, 3, 3, 64, 64)), jnp.float32)
    pads = ((1, 1), (1, 1), (1, 1))
    conv = jax.jit(lambda x, k: onednn.onednn_conv3d(x, k, (1, 1, 1), pads))
    for kernel in (first, first, 2 * first, first, first.at[2, 1, 0, 5, 7].add(3.0)):
        assert relative_error(conv(x, kernel), xla_conv(x, kernel, (1, 1, 1), pads)) < 1e-5


BF16 = {"avx512_bf16", "amx_bf16"} & onednn.cpu_flags()


@needs_onednn
@pytest.mark.skipif(not BF16, reason="this CPU has no bf16 instructions: bfloat16 keeps the tap lowering")
@pytest.mark.parametrize("shape, kernel, strides, padding", CONVS)
def test_bfloat16_conv_rounds_only_its_output(shape, kernel, strides, padding):
    """oneDNN's bf16 conv equals XLA's float32 conv of the bf16-rounded operands, but for the
    rounding of its output to bf16 (2^-9 relative); gradients (the taps') within bf16's reach."""
    assert onednn.runs_dtype(jnp.bfloat16)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal(kernel) / np.sqrt(np.prod(kernel[:4])), jnp.bfloat16)
    pads = tuple((p, p) for p in padding)
    reference = CONV_IMPLS["xla"](kernel[-1], kernel[:3], strides=strides, padding=pads, use_bias=False)
    y0, vjp0 = jax.vjp(lambda k, x: reference.apply({"params": {"kernel": k}}, x), k.astype(jnp.float32),
                       x.astype(jnp.float32))
    y1, vjp1 = jax.vjp(lambda k, x: onednn.onednn_conv3d(x, k, strides, pads), k, x)
    assert y1.dtype == jnp.bfloat16 and relative_error(y1.astype(jnp.float32), y0) < 2**-8
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(y0.shape), jnp.bfloat16)
    (dk0, dx0), (dk1, dx1) = vjp0(dy.astype(jnp.float32)), vjp1(dy)
    assert relative_error(dx1.astype(jnp.float32), dx0) < 2e-2 and relative_error(dk1.astype(jnp.float32), dk0) < 2e-2


@needs_onednn
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_torchvision(arch, converted, torch_models):
    model, variables, _ = stres_jax.load_checkpoint(converted(arch), conv_impl="onednn", fold_batchnorm=True)
    rng = np.random.default_rng(2)
    for batch, frames, height, width in ((1, 16, 112, 112), (3, 7, 61, 57)):
        clips = rng.standard_normal((batch, frames, height, width, 3)).astype(np.float32)
        theirs, _ = torch_forward(torch_models(arch), clips)
        error = relative_error(stres_jax.jit_apply(model)(variables, clips), theirs)
        print(arch, batch, f"{error:.1e}")
        assert error < 1e-5


@needs_onednn
def test_four_devices_give_the_logits_of_one(converted, tmp_path):
    """Each device's rows call oneDNN through shard_map (`DataParallel` names the mesh)."""
    script = f"""
import numpy as np
import jax
from stres_jax.inference import forward_fn
from stres_jax.loader import ModelOptions, load_net
from stres_jax.runtime.mesh import DataParallel
net = load_net(ModelOptions(checkpoint={str(converted("mc3_18"))!r}, conv_impl="onednn"))
clips = np.random.default_rng(3).standard_normal((4, 8, 56, 56, 3)).astype(np.float32)
out = DataParallel(forward_fn(net.model), net.variables, 4)(clips)
np.save("probabilities.npy", out["probabilities"])
print(jax.device_count())
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "4", result.stderr[-2000:]
    net = stres_jax.load_net(stres_jax.ModelOptions(checkpoint=str(converted("mc3_18")), conv_impl="onednn"))
    clips = np.random.default_rng(3).standard_normal((4, 8, 56, 56, 3)).astype(np.float32)
    one = stres_jax.jit_forward(net.model)(net.variables, clips)["probabilities"]
    assert relative_error(np.load(tmp_path / "probabilities.npy"), one) < 1e-5


@needs_onednn
def test_float32_training_step_is_as_close_to_float64_as_xlas(converted, monkeypatch):
    """One SGD step from a checkpoint with randomised BN statistics, held to the float64 step of
    the tap lowering: every layer's update no further from it than XLA's own nn.Conv's.
    Every BN bias is raised by 10 so that no ReLU input lies near 0. Otherwise a ReLU whose input
    is within float32 rounding of 0 (2.7e-7 here) takes the other branch and moves its layer's
    gradient by ~1/sqrt(positions): measured 1.6e-2 for layer1, for nn.Conv and oneDNN alike, and
    on another machine for oneDNN alone. With the shift, all three lowerings are 5e-7 to 7e-6 from
    float64."""
    _, variables, _ = stres_jax.load_checkpoint(converted("r3d_18"))
    raised = jax.tree_util.tree_map_with_path(
        lambda path, a: a + 10.0 if path[-1].key == "bias" and "bn" in path[-2].key else a, variables["params"])
    variables = {**variables, "params": raised}
    rng = np.random.default_rng(4)
    clips = rng.standard_normal((2, 4, 32, 32, 3))
    labels = np.array([1, 7])
    relu_inputs = []
    monkeypatch.setattr(flax.linen, "relu", lambda x: relu_inputs.append(float(jnp.min(x))) or jax.nn.relu(x))
    with jax.enable_x64(True):  # the premise, in float64: every ReLU is far from its kink
        model = create_model("r3d_18", conv_impl="taps", dtype=jnp.float64)
        model.apply(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables), clips, train=True,
                    mutable=["batch_stats"])
    assert len(relu_inputs) == 17 and min(relu_inputs) > 1, relu_inputs
    monkeypatch.undo()
    optimizer = sgd(0.1)
    states, losses = {}, {}
    for impl, dtype in (("taps", jnp.float64), ("onednn", jnp.float32), ("xla", jnp.float32)):
        with jax.enable_x64(dtype == jnp.float64):
            model = create_model("r3d_18", conv_impl=impl, dtype=dtype)
            start = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
            state, metrics = jax.jit(make_train_step(model, optimizer))(
                init_state(model, start, optimizer), clips.astype(dtype), labels)
            states[impl] = jax.tree.map(lambda a: np.asarray(a, np.float64), state["params"])
            losses[impl] = float(metrics["loss"])
    assert relative_error(losses["onednn"], losses["taps"]) < 1e-5
    for name in states["taps"]:
        errors = {impl: max(relative_error(a, b) for a, b in zip(jax.tree.leaves(states[impl][name]),
                                                                   jax.tree.leaves(states["taps"][name])))
                  for impl in ("onednn", "xla")}
        print(name, {k: f"{v:.1e}" for k, v in errors.items()})
        assert errors["onednn"] < 3 * errors["xla"] + 1e-5, name


def test_without_the_extension_everything_falls_back(tmp_path):
    """Simulated missing extension: auto is taps, an explicit request is one line, info says why."""
    env = {**os.environ, "STRES_JAX_DISABLE_ONEDNN": "1"}
    script = ("from stres_jax.models.conv_impls import resolve_conv_impl; print(resolve_conv_impl('auto'))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "taps"
    info = subprocess.run(["stres-jax", "info", "--speed"], env=env, capture_output=True, text=True, check=True)
    assert "taps" in info.stdout and "STRES_JAX_DISABLE_ONEDNN" in info.stdout, info.stdout
    refused = subprocess.run(["stres-jax", "predict", "x.mp4", "--random-init", "--conv-impl", "onednn"],
                             env=env, capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "conv_impl 'onednn' cannot run here" in refused.stderr


def test_float64_keeps_the_tap_lowering():
    jax.config.update("jax_enable_x64", True)
    try:
        model = create_model("mc3_18", conv_impl="onednn" if not DISABLED else "taps", dtype=jnp.float64)
        x = jnp.ones((1, 2, 16, 16, 3), jnp.float64)
        jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(jax.eval_shape(model.init, jax.random.key(0), x)))
        targets = set(re.findall(r"target_name=(\w+)", jaxpr))
        assert targets <= {"stres_onednn_conv_materialize"} and "conv_general_dilated" in jaxpr, targets
    finally:
        jax.config.update("jax_enable_x64", False)


@needs_onednn
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_depthwise_handlers_match_xlas_grouped_convolution(dtype):
    """native/depthwise.cc's forward (with a folded BN's bias and ReLU) and kernel gradient, and the
    taps' input gradient, against XLA's grouped convolution: strides 1 and 2, uneven padding, and 80
    channels (one 64-channel block and a tail)."""
    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(0)
        tolerance = 1e-5 if dtype == jnp.float32 else 1e-12
        for shape, strides, pads in (((2, 5, 7, 6, 80), (1, 1, 1), ((1, 1), (1, 1), (1, 1))),
                                     ((1, 6, 9, 8, 24), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),
                                     ((1, 4, 7, 8, 8), (1, 2, 1), ((0, 2), (1, 0), (2, 1)))):
            x, kernel, bias = (jnp.asarray(rng.standard_normal(s), dtype) for s in (shape, (3, 3, 3, 1, shape[-1]),
                                                                                  shape[-1:]))

            def grouped(x, kernel):
                return jax.lax.conv_general_dilated(x, kernel, strides, pads, feature_group_count=shape[-1],
                                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                                    precision=jax.lax.Precision.HIGHEST)

            def reference(x, kernel, bias):
                return jax.nn.relu(grouped(x, kernel) + bias)

            def ours(x, kernel, bias):
                return onednn.depthwise_conv3d_fused(x, kernel, bias, True, strides, pads)
            assert relative_error(onednn.depthwise_conv3d(x, kernel, strides, pads), grouped(x, kernel)) < tolerance
            assert relative_error(ours(x, kernel, bias), reference(x, kernel, bias)) < tolerance
            weights = jnp.asarray(rng.standard_normal(reference(x, kernel, bias).shape), dtype)
            grads = [jax.grad(lambda *a: (f(*a) * weights).sum(), argnums=(0, 1, 2))(x, kernel, bias)
                     for f in (ours, reference)]
            for got, want in zip(*grads):
                assert relative_error(got, want) < tolerance
            jaxpr = str(jax.make_jaxpr(ours)(x, kernel, bias))
            assert "stres_onednn_conv_depthwise_forward" in jaxpr  # the C++ pass, not the taps


@needs_onednn
def test_depthwise_bfloat16_forward_is_the_float32_sum_rounded_once():
    """bfloat16 operands: the C++ forward sums in float32 exactly as the float32 forward does and
    rounds once, so it equals the float32 result (on the same bfloat16 values) cast to bfloat16,
    bit for bit; its gradient is the taps' (no bfloat16 gradient in C++)."""
    rng = np.random.default_rng(4)
    shape, strides, pads = (1, 5, 7, 6, 80), (1, 2, 1), ((1, 1), (0, 2), (1, 1))
    x, kernel, bias = (jnp.asarray(rng.standard_normal(s), jnp.bfloat16)
                       for s in (shape, (3, 3, 3, 1, shape[-1]), shape[-1:]))

    def ours(*args):
        return onednn.depthwise_conv3d_fused(*args, True, strides, pads)
    assert "stres_onednn_conv_depthwise_forward" in str(jax.make_jaxpr(ours)(x, kernel, bias))
    wide = [a.astype(jnp.float32) for a in (x, kernel, bias)]
    np.testing.assert_array_equal(np.asarray(ours(x, kernel, bias).astype(jnp.float32)),
                                  np.asarray(ours(*wide).astype(jnp.bfloat16).astype(jnp.float32)))

    def taps(x, kernel, bias):
        return epilogue(depthwise_taps(x, kernel, strides, pads), bias, None, True)
    grads, taps_grads = (jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))(x, kernel, bias)
                         for f in (ours, taps))
    for got, want in zip(grads, taps_grads):
        np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)), np.asarray(want.astype(jnp.float32)))


@needs_onednn
def test_depthwise_handlers_on_four_devices_equal_one(tmp_path):
    """Under `conv_mesh` each device runs the C++ depthwise forward on its rows, and the kernel
    gradient is each device's partial sum, summed over the mesh (psum): values and all three
    gradients equal one device's."""
    script = """
import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from stres_jax.models import onednn
rng = np.random.default_rng(0)
x, k, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 4, 6, 7, 80), (3, 3, 3, 1, 80), (80,)))
loss = lambda x, k, b: (onednn.depthwise_conv3d_fused(x, k, b, True, (1, 2, 2), ((1, 1),) * 3) ** 2).sum()
one = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(x, k, b)
mesh = Mesh(np.array(jax.devices()), ("data",))
with onednn.conv_mesh(mesh):
    step = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
    jaxpr = str(jax.make_jaxpr(step)(x, k, b))
    four = step(jax.device_put(x, NamedSharding(mesh, PartitionSpec("data"))), k, b)
errors = [float(np.abs(np.asarray(a) - np.asarray(c)).max() / np.abs(np.asarray(c)).max())
          for a, c in zip(jax.tree.leaves(four), jax.tree.leaves(one))]
print(jax.device_count(), "psum" in jaxpr, max(errors))
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    devices, summed, error = result.stdout.split()
    assert devices == "4" and summed == "True" and float(error) < 1e-5, result.stdout
