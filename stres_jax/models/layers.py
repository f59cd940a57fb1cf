"""Conv builders, stems and the residual block of torchvision's video ResNets, in Flax.

Layout is NTHWC. Each builder and stem states its layers once, as `ConvLayer` / `NormLayer`
rows (`layers(...)`); its `__call__` runs them, and the converter's key table, the ONNX
writer and BN folding read the same rows (`models.spec`). Every module takes `conv` and
`norm` factories (as flax's imagenet example does), so `use_running_average` and the conv
lowering are chosen once, by the caller. Submodule names are the rows' names.
"""
import dataclasses
import functools
from typing import Any

import flax.linen as nn

ModuleDef = Any
Conv = functools.partial(nn.Conv, use_bias=False)  # torchvision's convs have no bias


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One bias-free convolution: Flax name, output channels, kernel, stride, symmetric padding."""
    name: str
    features: int
    kernel: tuple
    stride: tuple
    padding: tuple


@dataclasses.dataclass(frozen=True)
class NormLayer:
    """A BatchNorm over the preceding conv's output, optionally followed by ReLU."""
    name: str
    relu: bool


def run_layers(layers, x, conv, norm):
    """Apply `layers` (ConvLayer / NormLayer rows) in order; call inside a compact module."""
    for layer in layers:
        if isinstance(layer, ConvLayer):
            x = conv(layer.features, layer.kernel, strides=layer.stride,
                     padding=tuple((p, p) for p in layer.padding), name=layer.name)(x)
        else:
            x = norm(name=layer.name)(x)
            x = nn.relu(x) if layer.relu else x
    return x


class _ConvBuilder(nn.Module):
    """The shared signature of the three conv builders (torchvision's `conv_builder`)."""
    features: int
    midplanes: int = 0
    stride: int = 1
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm

    @nn.compact
    def __call__(self, x):
        return run_layers(self.layers(self.features, self.midplanes, self.stride), x, self.conv, self.norm)


class Conv3DSimple(_ConvBuilder):
    """A full 3x3x3 convolution, stride `s` in time and space."""

    @staticmethod
    def layers(features, midplanes, s):
        del midplanes
        return (ConvLayer("conv", features, (3, 3, 3), (s, s, s), (1, 1, 1)),)

    @staticmethod
    def downsample_stride(stride):
        return (stride, stride, stride)


class Conv3DNoTemporal(_ConvBuilder):
    """A 1x3x3 convolution: frames are processed independently."""

    @staticmethod
    def layers(features, midplanes, s):
        del midplanes
        return (ConvLayer("conv", features, (1, 3, 3), (1, s, s), (0, 1, 1)),)

    @staticmethod
    def downsample_stride(stride):
        return (1, stride, stride)


class Conv2Plus1D(_ConvBuilder):
    """Spatial 1x3x3 conv to `midplanes`, BN, ReLU, then temporal 3x1x1 conv."""

    @staticmethod
    def layers(features, midplanes, s):
        return (ConvLayer("spatial", midplanes, (1, 3, 3), (1, s, s), (0, 1, 1)),
                NormLayer("spatial_bn", relu=True),
                ConvLayer("temporal", features, (3, 1, 1), (s, 1, 1), (1, 0, 0)))

    @staticmethod
    def downsample_stride(stride):
        return (stride, stride, stride)


class _Stem(nn.Module):
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm

    @nn.compact
    def __call__(self, x):
        return run_layers(self.layers(), x, self.conv, self.norm)


class BasicStem(_Stem):
    """3x7x7 conv to 64 channels, spatial stride 2, BN, ReLU (3D and Mixed nets)."""

    @staticmethod
    def layers():
        return (ConvLayer("conv", 64, (3, 7, 7), (1, 2, 2), (1, 3, 3)), NormLayer("bn", relu=True))


class R2Plus1dStem(_Stem):
    """1x7x7 conv to 45 channels, BN, ReLU, 3x1x1 conv to 64, BN, ReLU ((2+1)D net)."""

    @staticmethod
    def layers():
        return (ConvLayer("spatial", 45, (1, 7, 7), (1, 2, 2), (0, 3, 3)), NormLayer("spatial_bn", relu=True),
                ConvLayer("temporal", 64, (3, 1, 1), (1, 1, 1), (1, 0, 0)), NormLayer("temporal_bn", relu=True))


class FoldedNorm(nn.Module):
    """Stands where a BatchNorm was folded into the conv before it (inference only): identity."""

    @nn.compact
    def __call__(self, x):
        return x


def midplanes(inplanes, planes):
    """torchvision's (2+1)D width: computed once per block, used by both of its convs."""
    return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


def needs_downsample(stride, inplanes, planes):
    """torchvision's rule for a 1x1x1 conv + BN on the residual path."""
    return stride != 1 or inplanes != planes


class BasicBlock(nn.Module):
    """Two builder convs with BN, a residual (1x1x1 conv + BN when the shape changes), ReLU."""
    features: int
    builder: type
    stride: int = 1
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm

    @nn.compact
    def __call__(self, x):
        inplanes = x.shape[-1]
        mid = midplanes(inplanes, self.features)

        def make(stride, name):
            return self.builder(self.features, mid, stride, conv=self.conv,
                                norm=self.norm, name=name)

        y = nn.relu(self.norm(name="bn1")(make(self.stride, "conv1")(x)))
        y = self.norm(name="bn2")(make(1, "conv2")(y))
        if needs_downsample(self.stride, inplanes, self.features):
            x = self.conv(self.features, (1, 1, 1),
                          strides=self.builder.downsample_stride(self.stride),
                          padding="VALID", name="downsample_conv")(x)
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(y + x)
