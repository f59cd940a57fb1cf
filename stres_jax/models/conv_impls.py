"""The registry of convolution lowerings (`conv_impl`): XLA's `nn.Conv`, the taps
(`fast_conv`), and oneDNN (`onednn`), all with `nn.Conv`'s parameters; which one "auto" picks."""
import functools

import flax.linen as nn
import jax
from jax import lax

import stres_jax.models.onednn as onednn
from stres_jax.errors import UserError
from stres_jax.models.fast_conv import TapConv, epilogue, tap_conv


class OneDNNConv(TapConv):
    """TapConv whose float32 convolutions run on oneDNN's kernels (`models.onednn`; their
    gradients too where the kernel spans time and space), and bfloat16 ones where the CPU has
    bf16 instructions. With a bias (BN folded: inference) the bias, residual and ReLU run as
    oneDNN post-ops of the conv. float64, and machines where the extension is missing, keep the
    tap lowering."""

    @classmethod
    def convolve_with_epilogue(cls, x, kernel, bias, residual, relu, strides, padding):
        fuse = bias is not None and onednn.choices().fuse_epilogue
        if kernel.shape[3] != x.shape[-1]:  # depthwise: bias and ReLU in the C++ pass
            if fuse and residual is None and onednn.runs_depthwise(x.dtype, gradient=False):
                return onednn.depthwise_conv3d_fused(x, kernel, bias, relu, strides, padding)
        elif fuse and onednn.runs_dtype(x.dtype):
            return onednn.onednn_conv3d_fused(x, kernel, bias, residual, relu, strides, padding)
        return super().convolve_with_epilogue(x, kernel, bias, residual, relu, strides, padding)

    @staticmethod
    def convolve(x, kernel, strides, padding):
        if kernel.shape[3] != x.shape[-1]:  # depthwise: one C++ pass, forward and kernel gradient
            return onednn.depthwise_conv3d(x, kernel, strides, padding)
        if onednn.runs_dtype(x.dtype):
            return onednn.onednn_conv3d(x, kernel, strides, padding)
        return tap_conv(x, kernel, strides, padding)


def TapsFor3D(features, kernel_size, **kwargs):  # noqa: N802 (a module factory)
    """TapConv for kernels that span time and space (3x3x3, 3x7x7), nn.Conv for the rest.

    The CPU default before every conv became 2-D for the CPU libraries of
    stres_jax.runtime.xla_options; kept as an explicit choice the benchmarks can compare.
    """
    spans_both = kernel_size[0] > 1 and max(kernel_size[1:]) > 1
    return (TapConv if spans_both else nn.Conv)(features, kernel_size, **kwargs)


CONV_IMPLS = {"xla": nn.Conv, "taps": TapConv, "taps3d": TapsFor3D, "onednn": OneDNNConv}


class ConvImplError(UserError, ValueError):
    """A conv lowering that cannot run here."""


def resolve_conv_impl(impl):
    """"auto" is "onednn" on the CPU when its extension is built (`models.onednn.status()`),
    else "taps" on the CPU, and "xla" elsewhere.

    Both CPU libraries (stres_jax.runtime.xla_options) run 2-D convolutions 3-4x faster than 3-D
    ones (YNNPACK takes only 2-D ones), hence "taps"; oneDNN's 3-D kernels are faster still
    (BENCHMARKS.md). An explicit "onednn" where it cannot run is a one-line error saying why.
    """
    if impl not in ("auto", "onednn"):
        return impl
    if impl == "auto":
        if jax.default_backend() != "cpu":
            return "xla"
        return "onednn" if onednn.available() else "taps"
    available, why = onednn.status()
    if not available:
        raise ConvImplError(f"conv_impl 'onednn' cannot run here: {why}; use 'auto' or 'taps'")
    return impl


def conv_factory(impl="xla", bias=False):
    """The `conv` factory for VideoResNet: which lowering, and whether convs carry a bias."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; choose one of {sorted(CONV_IMPLS)}")
    return functools.partial(CONV_IMPLS[impl], use_bias=bias)


def _xla_with_epilogue(x, kernel, bias, residual, relu, strides, padding):
    y = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                 feature_group_count=x.shape[-1] // kernel.shape[3])
    return epilogue(y, bias, residual, relu)


def _taps3d_with_epilogue(x, kernel, bias, residual, relu, strides, padding):
    spans_both = kernel.shape[0] > 1 and max(kernel.shape[1:3]) > 1  # as TapsFor3D chooses
    lowering = TapConv.convolve_with_epilogue if spans_both else _xla_with_epilogue
    return lowering(x, kernel, bias, residual, relu, strides, padding)


CONVOLUTIONS = {"xla": _xla_with_epilogue, "taps": TapConv.convolve_with_epilogue,
                "taps3d": _taps3d_with_epilogue, "onednn": OneDNNConv.convolve_with_epilogue}


def convolution(impl):
    """`(x, kernel, bias, residual, relu, strides, padding) -> conv(x) [+ bias] [+ residual] [ReLU]`
    of a lowering ("auto" resolved; padding ((t0, t1), (h0, h1), (w0, w1))): what NNX's convs call,
    the same code as the linen modules of `CONV_IMPLS`."""
    return CONVOLUTIONS[resolve_conv_impl(impl)]


def fuses_epilogue(impl):
    """Whether a lowering takes bias, residual and ReLU itself (oneDNN's post-ops, the taps' epilogue)."""
    return CONV_IMPLS[resolve_conv_impl(impl)] in (TapConv, OneDNNConv)


def block_output(conv, folded=False):
    """What a residual block does to its output under a lowering (a `conv_impl` name, or a linen
    conv factory from `conv_factory`): oneDNN's materialises it (`onednn.materialized`) unless BN
    is folded (then the output already is a oneDNN call's, with the residual and ReLU as post-ops);
    the others leave it to XLA (the exports and GPUs among them)."""
    lowering = CONV_IMPLS[resolve_conv_impl(conv)] if isinstance(conv, str) else getattr(conv, "func", conv)
    return onednn.materialized if lowering is OneDNNConv and not folded else _unchanged


def _unchanged(x):
    return x
