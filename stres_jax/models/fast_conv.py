"""Faster lowerings of the nets' convolutions, with the same parameters as `nn.Conv`.

XLA's CPU backend runs a 3-D convolution at about a third of the speed it runs a 2-D one
(BENCHMARKS.md), and hands only 2-D convolutions to YNNPACK (`stres_jax.runtime.xla_options`).
`TapConv` computes a kt x kh x kw convolution as kt 2-D convolutions over time offsets,
summed (one 2-D convolution over frames when kt is 1), a kt x 1 x 1 one as a single 2-D
convolution over (time, pixels), which needs no time-offset copies, and a 1x1x1 one as a
1x1 2-D convolution of its input's strided subsample; `kernel` keeps
nn.Conv's (kt, kh, kw, in, out) layout, so a checkpoint loads into either.
"""
import functools
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class TapConv(nn.Module):
    """Drop-in for `nn.Conv` on (N, T, H, W, C) input with explicit padding or "VALID"."""
    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1, 1)
    padding: Any = "VALID"
    use_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    feature_group_count: int = 1  # `features` groups: the channel-separated (depthwise) convs of CSN

    fuses_epilogue = True  # takes a residual and ReLU after its bias (`models.layers.epilogue_plan`)

    @nn.compact
    def __call__(self, x, residual=None, relu=False):
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1] // self.feature_group_count, self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(dtype)
        padding = ((0, 0),) * 3 if self.padding == "VALID" else tuple(map(tuple, self.padding))
        return self.convolve_with_epilogue(x, kernel, bias, residual, relu, tuple(self.strides), padding)

    @classmethod
    def convolve_with_epilogue(cls, x, kernel, bias, residual, relu, strides, padding):
        """conv(x) [+ bias] [+ residual] [then ReLU], in that order."""
        return epilogue(cls.convolve(x, kernel, strides, padding), bias, residual, relu)

    @staticmethod
    def convolve(x, kernel, strides, padding):
        return tap_conv(x, kernel, strides, padding)


def epilogue(y, bias=None, residual=None, relu=False):
    """y [+ bias] [+ residual] [then ReLU]: what follows a conv whose BatchNorm was folded into it."""
    y = y if bias is None else y + bias
    y = y if residual is None else y + residual
    return nn.relu(y) if relu else y


def tap_conv(x, kernel, strides, padding):
    """The tap lowering of one convolution; `padding` is ((t0, t1), (h0, h1), (w0, w1))."""
    kt, kh, kw = kernel.shape[:3]
    (pad_t, pad_h, pad_w), (st, sh, sw) = padding, strides
    if kernel.shape[3] != x.shape[-1]:
        return depthwise_taps(x, kernel, strides, padding)
    if (kt, kh, kw) == (1, 1, 1):
        return _pointwise_conv(x, kernel, strides, padding)
    if (kh, kw, sh, sw, tuple(pad_h), tuple(pad_w)) == (1, 1, 1, 1, (0, 0), (0, 0)):
        return _temporal_conv(x, kernel, st, pad_t)
    return _sum_of_taps(x, kernel, strides, padding)


def _pointwise_conv(x, kernel, strides, padding):
    """A 1x1x1 conv (the downsample shortcut) on the strided subsample of its input.

    Sliced first, XLA computes the kernel gradient from the subsample; left to the conv's
    stride, it recomputed layer1's whole residual chain inside a transposed copy of the full
    input (0.48 s of r3d_18's 5.2 s step at batch 2). A matrix product, not a 1x1 conv: the conv's
    kernel gradient wants its input transposed, and XLA rebuilt that copy from the BN, residual
    and ReLU chain of every block before (0.47 s of ir-CSN-152's 1.95 s step at 8x112x112); the
    product's gradient reads the stored activation as it lies."""
    x = _pad(x, padding)[:, ::strides[0], ::strides[1], ::strides[2]]
    y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel.reshape(kernel.shape[3:]))
    return y.reshape(x.shape[:-1] + y.shape[-1:])


def _temporal_conv(x, kernel, stride_t, pad_t):
    """A kt x 1 x 1 conv as one 2-D conv over (time, pixels): no time-offset copies."""
    batch, frames, height, width, channels = x.shape
    y = lax.conv_general_dilated(
        x.reshape(batch, frames, height * width, channels), kernel[:, 0], (stride_t, 1),
        (pad_t, (0, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(batch, y.shape[1], height, width, y.shape[-1])


def _sum_of_taps(x, kernel, strides, padding):
    """A kt x kh x kw conv as kt 2-D convs over time offsets, summed.

    All padding is explicit (none left to the convs): XLA then materialises the padded input
    once, instead of recomputing BatchNorm, ReLU and padding inside each tap's transposed copy
    for the kernel gradient; a training step of r3d_18 runs 8-10% faster (inference the same)."""
    kt = kernel.shape[0]
    st, sh, sw = strides
    x = _pad(x, padding)
    batch, frames = x.shape[:2]
    out_frames = (frames - kt) // st + 1
    total = None
    for dt in range(kt):
        taps = x[:, dt: dt + (out_frames - 1) * st + 1: st]
        y = lax.conv_general_dilated(
            taps.reshape((batch * out_frames,) + taps.shape[2:]), kernel[dt], (sh, sw),
            "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        total = y if total is None else total + y
    return total.reshape((batch, out_frames) + total.shape[1:])


def depthwise_taps(x, kernel, strides, padding):
    """A depthwise conv (one filter per channel, kernel (kt, kh, kw, 1, C)) as kt*kh*kw shifted
    multiply-adds, which XLA fuses into one loop: 165x faster than its grouped convolution on
    a CPU (BENCHMARKS.md). Its gradient (`_depthwise_vjp`) is the same sum over the flipped
    kernel for the input, and one row-wise reduction per tap for the kernel."""
    if kernel.shape[3] != 1 or kernel.shape[4] != x.shape[-1]:
        raise ValueError(f"only depthwise grouped convs have a tap lowering: kernel {kernel.shape}, input {x.shape}")
    return _depthwise(x, kernel, tuple(strides), tuple(map(tuple, padding)))


def _tap(x, start, out, strides):
    """The strided window of `x` that kernel tap `start` (dt, dh, dw) meets for an `out`-sized output."""
    return x[:, start[0]: start[0] + (out[0] - 1) * strides[0] + 1: strides[0],
             start[1]: start[1] + (out[1] - 1) * strides[1] + 1: strides[1],
             start[2]: start[2] + (out[2] - 1) * strides[2] + 1: strides[2]]


def _taps_sum(xp, kernel, strides):
    """sum over the kernel's taps of the shifted, strided window of padded `xp` times its weight."""
    out = [(size - k) // s + 1 for size, k, s in zip(xp.shape[1:4], kernel.shape[:3], strides)]
    total = None
    for start in itertools.product(*map(range, kernel.shape[:3])):
        term = _tap(xp, start, out, strides) * kernel[start + (0,)]
        total = term if total is None else total + term
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, strides, padding):
    return _taps_sum(_pad(x, padding), kernel, strides)


def _depthwise_fwd(x, kernel, strides, padding):
    return _depthwise(x, kernel, strides, padding), (x, kernel)


def _depthwise_vjp(strides, padding, residuals, g):
    x, kernel = residuals
    return (depthwise_input_grad(g, kernel, x.shape, strides, padding),
            depthwise_kernel_grad(x, g, kernel.shape, strides, padding))


def depthwise_input_grad(g, kernel, x_shape, strides, padding):
    """The input gradient of `depthwise_taps`: `g` dilated by the stride, padded, summed over the
    flipped kernel's taps (the transposed conv)."""
    sizes = kernel.shape[:3]
    padded = [n + lo + hi for n, (lo, hi) in zip(x_shape[1:4], padding)]
    zero = jnp.zeros((), g.dtype)
    g_in = lax.pad(g, zero, [(0, 0, 0)] + [(0, 0, s - 1) for s in strides] + [(0, 0, 0)])  # dilated by the stride
    pads = tuple((k - 1, n - m) for k, n, m in zip(sizes, padded, g_in.shape[1:4]))
    dxp = _taps_sum(_pad(g_in, pads), kernel[::-1, ::-1, ::-1], (1, 1, 1))
    return dxp[:, padding[0][0]: dxp.shape[1] - padding[0][1], padding[1][0]: dxp.shape[2] - padding[1][1],
               padding[2][0]: dxp.shape[3] - padding[2][1]]


def depthwise_kernel_grad(x, g, kernel_shape, strides, padding):
    """The kernel gradient of `depthwise_taps`: per tap, the window times `g`, reduced over rows of
    W x C values (XLA's CPU reduction over every leading axis at once is 3x slower). One product
    and one reduction per tap: `onednn` has a one-pass kernel for it."""
    xp = _pad(x, padding)
    out, width = g.shape[1:4], g.shape[3] * g.shape[4]
    rows = [(_tap(xp, start, out, strides) * g).reshape(-1, width).sum(0).reshape(g.shape[3:]).sum(0)
            for start in itertools.product(*map(range, kernel_shape[:3]))]
    return jnp.stack(rows).reshape(kernel_shape)


_depthwise.defvjp(_depthwise_fwd, _depthwise_vjp)


def _pad(x, padding):
    """Zero-pad (N, T, H, W, C) by ((t0, t1), (h0, h1), (w0, w1))."""
    return jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
