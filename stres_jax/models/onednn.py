"""oneDNN's 3-D convolutions inside jitted nets, through XLA's FFI (`conv_impl="onednn"`).

jaxlib's CPU backend has no oneDNN; torchvision's 3-D convolutions run on it. The handlers in
`stres_jax/native/onednn_conv.cc` (forward, input gradient, kernel gradient; NDHWC activations,
DHWIO kernels, float32 or bfloat16) are compiled on first use with g++ against the `onednn-cpu-gomp` wheel
(the `onednn` extra) and jaxlib's FFI headers, into the cache directory, then registered with
`jax.ffi.register_ffi_target`. Where that cannot happen, `status()` says why and
`conv_impl="auto"` keeps the tap lowering. float64 uses the tap lowering, and so does bfloat16
on CPUs without bf16 instructions (`runs_dtype`).

An FFI call has no partitioning rule: under a data-parallel mesh the caller names the mesh with
`conv_mesh(mesh)` while tracing, and each device's rows call oneDNN through `shard_map`.
"""
import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

SOURCE = Path(__file__).resolve().parents[1] / "native" / "onednn_conv.cc"
TARGETS = {"forward": "StresOnednnConvForward", "forward_reuse": "StresOnednnConvForwardReuse",
           "forward_fused": "StresOnednnConvForwardFused", "input_grad": "StresOnednnConvInputGrad",
           "kernel_grad": "StresOnednnConvKernelGrad"}
_MESH = contextvars.ContextVar("stres_jax_conv_mesh", default=None)
INFERENCE_TARGET = "forward_reuse"  # the primal's handler; benchmarks set "forward" to compare
FUSE_EPILOGUE = True  # bias/residual/ReLU as post-ops; benchmarks set False to compare
BLOCKED_KERNEL_GRADIENT = None  # None: by instruction set (blocked_kernel_gradient); benchmarks set True/False
GRADIENT_KERNELS = None  # None: by instruction set (gradient_rule); benchmarks set "spacetime" or "all"


class OneDNNUnavailable(RuntimeError):
    """The oneDNN extension could not be built or loaded here."""


def _onednn_root():
    """The prefix whose include/ and lib/ hold the oneDNN wheels' files, or None."""
    candidates = [os.environ.get("STRES_JAX_ONEDNN_ROOT"), sysconfig.get_paths()["data"], sys.prefix,
                  sys.base_prefix, site.USER_BASE]
    for root in filter(None, candidates):
        root = Path(root)
        if (root / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(root.glob("lib/libdnnl.so*")):
            return root
    return None


def cache_dir():
    """Where compiled extensions go: $STRES_JAX_CACHE/native, else beside the fetched checkpoints
    ($XDG_CACHE_HOME/stres_jax/native, by default ~/.cache/stres_jax/native)."""
    root = os.environ.get("STRES_JAX_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stres_jax"
    return Path(root) / "native"


def _build(root):
    """Compile the handlers once per source, jaxlib and oneDNN install; returns the .so path."""
    include = jax.ffi.include_dir()
    digest = hashlib.sha256(SOURCE.read_bytes() + f"{jax.__version__}|{include}|{root}".encode()).hexdigest()[:16]
    target = cache_dir() / f"onednn_conv-{digest}.so"
    if target.is_file():
        return target
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise OneDNNUnavailable("no C++ compiler (g++ or $CXX) to build it")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"stres_jax: building the oneDNN convolutions into {target.parent} (once)", file=sys.stderr, flush=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{include}", f"-I{root / 'include'}",
               str(SOURCE), f"-L{root / 'lib'}", "-ldnnl", f"-Wl,-rpath,{root / 'lib'}", "-o", str(staging)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        staging.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise OneDNNUnavailable(f"compiling {SOURCE.name} failed: {last}")
    os.replace(staging, target)  # a reader never sees a half-written library
    return target


@functools.cache
def _load():
    """Build (first time), load and register the handlers; (library, None) or (None, reason)."""
    if os.environ.get("STRES_JAX_DISABLE_ONEDNN"):
        return None, "disabled by STRES_JAX_DISABLE_ONEDNN"
    if sys.platform != "linux" or jax.default_backend() != "cpu":
        return None, f"oneDNN runs on Linux CPUs only (here: {sys.platform}, {jax.default_backend()})"
    root = _onednn_root()
    if root is None:
        return None, "the oneDNN wheels are not installed: pip install \"stres_jax[onednn]\""
    try:
        library = ctypes.CDLL(str(_build(root)))
    except (OneDNNUnavailable, OSError) as err:
        return None, str(err)
    for name, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(f"stres_onednn_conv_{name}", jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    return library, None


def status():
    """(available, why): whether the oneDNN lowering can run here, and the reason if not."""
    library, reason = _load()
    if library is None:
        return False, reason
    version = library.stres_onednn_version()
    return True, f"oneDNN {version // 10000}.{version // 100 % 100}.{version % 100} (built in {cache_dir()})"


def available():
    return _load()[0] is not None


@functools.cache
def cpu_flags():
    """The instruction-set flags of this CPU (/proc/cpuinfo), empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def gradient_rule():
    """Which float32 kernels get oneDNN's gradients: "all" on AVX-512 CPUs, "spacetime" (only
    those spanning time and space: 3x3x3, 3x7x7) on the others, where the taps' gradients of the
    1x3x3 and 3x1x1 kernels are faster. Measured (BENCHMARKS.md), training step at batch 4 against
    torchvision: AVX2 (2+1)D 1.38x with "spacetime", 0.88x with "all"; AVX-512 mc3_18 0.84x with
    "spacetime", 1.19x with "all"."""
    if GRADIENT_KERNELS is not None:
        return GRADIENT_KERNELS
    return "all" if "avx512f" in cpu_flags() else "spacetime"


def blocked_kernel_gradient(kernel_shape, strides):
    """Whether this conv's kernel gradient reorders x and dy to oneDNN's blocked layout first. On
    AVX-512 that measured 1.1-1.9x faster for spatial kernels with a stride (64 to 256 channels in)
    and for layer1's 64-channel ones, 0.42-0.95x for 1x1x1 kernels, the 3-channel stem and 128+
    channels at stride 1 (BENCHMARKS.md); AVX2 not measured, so never there.
    `BLOCKED_KERNEL_GRADIENT` (True / False) overrides for the benchmarks."""
    if BLOCKED_KERNEL_GRADIENT is not None:
        return BLOCKED_KERNEL_GRADIENT
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
    return _call(INFERENCE_TARGET, x, kernel, _out_shape(x.shape, kernel.shape, strides, padding), strides, padding)


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
        from stres_jax.models.fast_conv import tap_conv
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
                            vmap_method="sequential")(
        *operands, strides=np.asarray(strides, np.int64), padding=np.asarray(padding, np.int64).reshape(-1),
        relu=bool(relu))


def _fused_parts(x, kernel, bias, residual, strides, padding, relu):
    from stres_jax.models.fast_conv import epilogue
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
    mesh = _MESH.get()
    if mesh is not None and mesh.size > 1:
        rows = PartitionSpec(mesh.axis_names[0])
        specs = (rows, PartitionSpec(), PartitionSpec()) + (() if residual is None else (rows,))
        fn = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=rows, check_vma=False)
    return fn(*operands)


def onednn_conv3d(x, kernel, strides, padding):
    """A float32 (N, T, H, W, C) x (kt, kh, kw, in, out) convolution by oneDNN, differentiable;
    `padding` is ((t0, t1), (h0, h1), (w0, w1)). Per device under `conv_mesh`."""
    if not available():
        raise OneDNNUnavailable(status()[1])
    strides, padding = tuple(int(s) for s in strides), tuple(tuple(int(p) for p in pair) for pair in padding)

    def fn(x, kernel):
        return _conv(x, kernel, strides, padding)
    mesh = _MESH.get()
    if mesh is not None and mesh.size > 1:
        rows = PartitionSpec(mesh.axis_names[0])
        fn = jax.shard_map(fn, mesh=mesh, in_specs=(rows, PartitionSpec()), out_specs=rows, check_vma=False)
    return fn(x, kernel)
