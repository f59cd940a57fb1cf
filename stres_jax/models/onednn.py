"""oneDNN's 3-D convolutions inside jitted nets, through XLA's FFI (`conv_impl="onednn"`).

jaxlib's CPU backend has no oneDNN; torchvision's 3-D convolutions run on it. The handlers in
`stres_jax/native/onednn_conv.cc` (forward, input gradient, kernel gradient; NDHWC activations,
DHWIO kernels, float32 or bfloat16) are built and registered by `stres_jax.native.build`
on first use. Where that cannot happen, `status()` says why and
`conv_impl="auto"` keeps the tap lowering. float64 uses the tap lowering, and so does bfloat16
on CPUs without bf16 instructions (`runs_dtype`).

An FFI call has no partitioning rule: under a data-parallel mesh the caller names the mesh with
`conv_mesh(mesh)` while tracing, and each device's rows call oneDNN through `shard_map`.
"""
import contextlib
import contextvars
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from stres_jax.models.fast_conv import depthwise_input_grad, depthwise_taps, epilogue, tap_conv
from stres_jax.native.build import OneDNNUnavailable, available, cpu_flags, status  # noqa: F401 (this module's API)

_MESH = contextvars.ContextVar("stres_jax_conv_mesh", default=None)


@dataclasses.dataclass(frozen=True)
class Choices:
    """What the oneDNN lowering does where more than one way was measured; read while tracing.

    `inference_target`: the primal's handler ("forward_reuse" keeps kernels in oneDNN's layout,
    "forward" reorders them per call); `fuse_epilogue`: bias/residual/ReLU as post-ops;
    `gradient_kernels`: None (by instruction set, `gradient_rule`), "spacetime" or "all";
    `blocked_kernel_gradient`: None (by instruction set and shape) or True / False."""
    inference_target: str = "forward_reuse"
    fuse_epilogue: bool = True
    gradient_kernels: str = None
    blocked_kernel_gradient: bool = None


_CHOICES = contextvars.ContextVar("stres_jax_onednn_choices", default=Choices())


def choices():
    """The `Choices` in force (the defaults outside `choosing`)."""
    return _CHOICES.get()


@contextlib.contextmanager
def choosing(**overrides):
    """Trace inside with other `Choices` (the benchmarks compare them): `with choosing(fuse_epilogue=False): ...`."""
    token = _CHOICES.set(dataclasses.replace(_CHOICES.get(), **overrides))
    try:
        yield
    finally:
        _CHOICES.reset(token)


def gradient_rule():
    """Which float32 kernels get oneDNN's gradients: "all" on AVX-512 CPUs, "spacetime" (only
    those spanning time and space: 3x3x3, 3x7x7) on the others, where the taps' gradients of the
    1x3x3 and 3x1x1 kernels are faster. Measured (BENCHMARKS.md), training step at batch 4 against
    torchvision: AVX2 (2+1)D 1.38x with "spacetime", 0.88x with "all"; AVX-512 mc3_18 0.84x with
    "spacetime", 1.19x with "all"."""
    if choices().gradient_kernels is not None:
        return choices().gradient_kernels
    return "all" if "avx512f" in cpu_flags() else "spacetime"


def blocked_kernel_gradient(kernel_shape, strides):
    """Whether this conv's kernel gradient reorders x and dy to oneDNN's blocked layout first. On
    AVX-512 that measured 1.1-1.9x faster for spatial kernels with a stride (64 to 256 channels in)
    and for layer1's 64-channel ones, 0.42-0.95x for 1x1x1 kernels, the 3-channel stem and 128+
    channels at stride 1 (BENCHMARKS.md); AVX2 not measured, so never there.
    `choosing(blocked_kernel_gradient=True / False)` overrides it for the benchmarks."""
    if choices().blocked_kernel_gradient is not None:
        return choices().blocked_kernel_gradient
    in_channels, spatial = kernel_shape[3], max(kernel_shape[1:3]) > 1
    return ("avx512f" in cpu_flags() and spatial and in_channels >= 16
            and (max(strides) > 1 or in_channels <= 64))


def runs_dtype(dtype):
    """Whether oneDNN computes convolutions of `dtype` here: float32 wherever it is built;
    bfloat16 where the CPU has bf16 instructions (avx512_bf16, or AMX), where it measured
    faster than the taps (BENCHMARKS.md); on other CPUs oneDNN would emulate it, slower."""
    if not available():
        return False
    if dtype == jnp.float32:
        return True
    return dtype == jnp.bfloat16 and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@contextlib.contextmanager
def conv_mesh(mesh):
    """While tracing inside, oneDNN convolutions run per device over `mesh`'s first axis."""
    token = _MESH.set(mesh)
    try:
        yield
    finally:
        _MESH.reset(token)


def _per_device(fn, batched, summed=False):
    """`fn` over each device's rows under `conv_mesh` (an FFI call has no partitioning rule):
    operands marked in `batched` split by rows, the others whole; the output split by rows, or
    `summed` over the devices. `fn` itself without a mesh."""
    mesh = _MESH.get()
    if mesh is None or mesh.size <= 1:
        return fn
    axis = mesh.axis_names[0]
    rows, whole = PartitionSpec(axis), PartitionSpec()
    body = (lambda *operands: jax.lax.psum(fn(*operands), axis)) if summed else fn
    return jax.shard_map(body, mesh=mesh, in_specs=tuple(rows if b else whole for b in batched),
                         out_specs=whole if summed else rows, check_vma=False)


def _call(name, a, b, shape, strides, padding, **attributes):
    return jax.ffi.ffi_call(f"stres_onednn_conv_{name}", jax.ShapeDtypeStruct(shape, a.dtype),
                            vmap_method="sequential")(
        a, b, strides=np.asarray(strides, np.int64), padding=np.asarray(padding, np.int64).reshape(-1), **attributes)


def _out_shape(x_shape, kernel_shape, strides, padding):
    spatial = tuple((size + lo + hi - k) // s + 1 for size, (lo, hi), k, s
                    in zip(x_shape[1:4], padding, kernel_shape[:3], strides))
    return (x_shape[0],) + spatial + (kernel_shape[-1],)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, padding):
    """Not differentiated (inference): oneDNN keeps the kernel reordered to its layout while the
    kernel's bytes stay the same (the handler compares them), instead of reordering on each call."""
    return _call(choices().inference_target, x, kernel, _out_shape(x.shape, kernel.shape, strides, padding), strides, padding)


def _conv_fwd(x, kernel, strides, padding):
    """Differentiated (training): the kernel changes every step; it is reordered on each call."""
    y = _call("forward", x, kernel, _out_shape(x.shape, kernel.shape, strides, padding), strides, padding)
    return y, (x, kernel)


def _conv_bwd(strides, padding, residuals, dy):
    """oneDNN's gradients for the float32 kernels `gradient_rule()` names; XLA's gradients of the
    tap lowering for the rest (and for bfloat16)."""
    x, kernel = residuals
    spacetime = kernel.shape[0] > 1 and max(kernel.shape[1:3]) > 1
    if x.dtype != jnp.float32 or not (spacetime or gradient_rule() == "all"):
        return jax.vjp(lambda x, k: tap_conv(x, k, strides, padding), x, kernel)[1](dy)
    return (_call("input_grad", dy, kernel, x.shape, strides, padding),
            _call("kernel_grad", x, dy, kernel.shape, strides, padding, blocked=blocked_kernel_gradient(kernel.shape, strides)))


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused(x, kernel, bias, residual, strides, padding, relu):
    """conv + bias [+ residual] [then ReLU] in one oneDNN call (post-ops), the kernel kept in
    oneDNN's layout as by `_conv`; differentiated (Grad-CAM on a folded net) as its parts."""
    operands = (x, kernel, bias) + (() if residual is None else (residual,))
    return jax.ffi.ffi_call("stres_onednn_conv_forward_fused",
                            jax.ShapeDtypeStruct(_out_shape(x.shape, kernel.shape, strides, padding), x.dtype),
                            vmap_method="sequential",
                            input_output_aliases={} if residual is None else {3: 0})(  # summed in place
        *operands, strides=np.asarray(strides, np.int64), padding=np.asarray(padding, np.int64).reshape(-1),
        relu=bool(relu))


def _fused_parts(x, kernel, bias, residual, strides, padding, relu):
    return epilogue(_conv(x, kernel, strides, padding), bias, residual, relu)


def _fused_fwd(x, kernel, bias, residual, strides, padding, relu):
    return jax.vjp(lambda *a: _fused_parts(*a, strides, padding, relu), x, kernel, bias, residual)


def _fused_bwd(strides, padding, relu, vjp_parts, dy):
    return vjp_parts(dy)


_fused.defvjp(_fused_fwd, _fused_bwd)


def onednn_conv3d_fused(x, kernel, bias, residual, relu, strides, padding):
    """`epilogue(conv(x), bias, residual, relu)` as one oneDNN convolution with post-ops; the
    arguments as `onednn_conv3d`'s, `bias` (out,), `residual` like the output or None."""
    if not available():
        raise OneDNNUnavailable(status()[1])
    strides, padding = tuple(int(s) for s in strides), tuple(tuple(int(p) for p in pair) for pair in padding)

    def fn(x, kernel, bias, *residual):
        return _fused(x, kernel, bias, residual[0] if residual else None, strides, padding, bool(relu))
    operands = (x, kernel, bias) + (() if residual is None else (residual,))
    return _per_device(fn, (True, False, False) + (() if residual is None else (True,)))(*operands)


def onednn_conv3d(x, kernel, strides, padding):
    """A float32 (N, T, H, W, C) x (kt, kh, kw, in, out) convolution by oneDNN, differentiable;
    `padding` is ((t0, t1), (h0, h1), (w0, w1)). Per device under `conv_mesh`."""
    if not available():
        raise OneDNNUnavailable(status()[1])
    strides, padding = tuple(int(s) for s in strides), tuple(tuple(int(p) for p in pair) for pair in padding)

    def fn(x, kernel):
        return _conv(x, kernel, strides, padding)
    return _per_device(fn, (True, False))(x, kernel)


def _depthwise_forward(x, kernel, bias, relu, strides, padding):
    """bias + the depthwise conv [then ReLU] in one C++ pass (`native/depthwise.cc`), per device."""
    def fn(x, kernel, bias):
        return jax.ffi.ffi_call("stres_onednn_conv_depthwise_forward",
                                jax.ShapeDtypeStruct(_out_shape(x.shape, kernel.shape, strides, padding), x.dtype),
                                vmap_method="sequential")(
            x, kernel, bias, strides=np.asarray(strides, np.int64), padding=np.asarray(padding, np.int64).reshape(-1),
            relu=bool(relu))
    return _per_device(fn, (True, False, False))(x, kernel, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, strides, padding):
    return _depthwise_forward(x, kernel, jnp.zeros(x.shape[-1], x.dtype), False, strides, padding)


def _depthwise_fwd(x, kernel, strides, padding):
    return _depthwise(x, kernel, strides, padding), (x, kernel)


def _depthwise_bwd(strides, padding, residuals, dy):
    """The taps' input gradient; the kernel gradient in one pass (`native/depthwise.cc`) instead
    of XLA's product and reduction per tap (17x faster on ir-CSN-152's layer1, BENCHMARKS.md)."""
    x, kernel = residuals
    return depthwise_input_grad(dy, kernel, x.shape, strides, padding), _depthwise_kernel_grad(x, dy, kernel.shape,
                                                                                              strides, padding)


def _depthwise_kernel_grad(x, dy, kernel_shape, strides, padding):
    def fn(x, dy):
        return _call("depthwise_kernel_grad", x, dy, kernel_shape, strides, padding)
    return _per_device(fn, (True, True), summed=True)(x, dy)  # each device's rows, then the sum


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def runs_depthwise(dtype, gradient=True):
    """Whether the C++ depthwise handlers take `dtype` here: float32, float64; bfloat16 forward only."""
    return available() and dtype in ((jnp.float32, jnp.float64) + (() if gradient else (jnp.bfloat16,)))


def depthwise_conv3d(x, kernel, strides, padding):
    """`fast_conv.depthwise_taps` (float32 or float64) computed in one C++ pass, with the taps'
    input gradient and a one-pass C++ kernel gradient; where the extension is missing, the taps."""
    strides, padding = tuple(int(s) for s in strides), tuple(tuple(int(p) for p in pair) for pair in padding)
    if not runs_depthwise(x.dtype):
        return depthwise_taps(x, kernel, strides, padding)
    return _depthwise(x, kernel, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _depthwise_fused(x, kernel, bias, relu, strides, padding):
    return _depthwise_forward(x, kernel, bias, relu, strides, padding)


def _depthwise_fused_fwd(x, kernel, bias, relu, strides, padding):
    conv = _depthwise if runs_depthwise(x.dtype) else depthwise_taps  # bfloat16: the taps' gradient
    return jax.vjp(lambda x, k, b: epilogue(conv(x, k, strides, padding), b, None, relu), x, kernel, bias)


_depthwise_fused.defvjp(_depthwise_fused_fwd, lambda relu, strides, padding, vjp_parts, dy: vjp_parts(dy))


def depthwise_conv3d_fused(x, kernel, bias, relu, strides, padding):
    """`epilogue(depthwise_conv3d(x), bias, None, relu)` in one C++ pass (a folded BN's bias and
    the ReLU applied to each output row while it is in cache); differentiated as its parts."""
    strides, padding = tuple(int(s) for s in strides), tuple(tuple(int(p) for p in pair) for pair in padding)
    if not runs_depthwise(x.dtype, gradient=False):
        return epilogue(depthwise_taps(x, kernel, strides, padding), bias, None, relu)
    return _depthwise_fused(x, kernel, bias, bool(relu), strides, padding)


@jax.custom_vjp
def _materialized(x):
    return jax.ffi.ffi_call("stres_onednn_conv_materialize", jax.ShapeDtypeStruct(x.shape, x.dtype),
                            vmap_method="broadcast_all", input_output_aliases={0: 0})(x)


_materialized.defvjp(lambda x: (_materialized(x), None), lambda _, g: (_materialized(g),))


def materialized(x):
    """`x`, computed once into its own buffer (a copy XLA cannot fuse through, forward and
    backward; `native/materialize.cc`): a residual block's output under this lowering, so that XLA
    does not rebuild the earlier blocks inside each later fusion (ir-CSN-152's train step 1.6x
    faster). Unchanged where the extension is missing. Per device under `conv_mesh`."""
    if jax.default_backend() != "cpu" or not available():
        return x
    return _per_device(_materialized, (True,))(x)
