"""Conv builders, stems and the residual block of torchvision's video ResNets, in Flax.

Layout is NTHWC. Every module takes `conv` and `norm` factories (as flax's imagenet
example does), so `use_running_average` and the conv lowering are chosen once, by the
caller. Submodule names are fixed: the converter's key table relies on them.
"""
import functools
from typing import Any

import flax.linen as nn

ModuleDef = Any
Conv = functools.partial(nn.Conv, use_bias=False)  # torchvision's convs have no bias


def _same(pad):
    return tuple((p, p) for p in pad)


class _ConvBuilder(nn.Module):
    """The shared signature of the three conv builders (torchvision's `conv_builder`)."""
    features: int
    midplanes: int = 0
    stride: int = 1
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm


class Conv3DSimple(_ConvBuilder):
    """A full 3x3x3 convolution, stride `s` in time and space."""

    @nn.compact
    def __call__(self, x):
        s = self.stride
        return self.conv(self.features, (3, 3, 3), strides=(s, s, s),
                         padding=_same((1, 1, 1)), name="conv")(x)

    @staticmethod
    def downsample_stride(stride):
        return (stride, stride, stride)


class Conv3DNoTemporal(_ConvBuilder):
    """A 1x3x3 convolution: frames are processed independently."""

    @nn.compact
    def __call__(self, x):
        s = self.stride
        return self.conv(self.features, (1, 3, 3), strides=(1, s, s),
                         padding=_same((0, 1, 1)), name="conv")(x)

    @staticmethod
    def downsample_stride(stride):
        return (1, stride, stride)


class Conv2Plus1D(_ConvBuilder):
    """Spatial 1x3x3 conv to `midplanes`, BN, ReLU, then temporal 3x1x1 conv."""

    @nn.compact
    def __call__(self, x):
        s = self.stride
        x = self.conv(self.midplanes, (1, 3, 3), strides=(1, s, s),
                      padding=_same((0, 1, 1)), name="spatial")(x)
        x = nn.relu(self.norm(name="spatial_bn")(x))
        return self.conv(self.features, (3, 1, 1), strides=(s, 1, 1),
                         padding=_same((1, 0, 0)), name="temporal")(x)

    @staticmethod
    def downsample_stride(stride):
        return (stride, stride, stride)


class BasicStem(nn.Module):
    """3x7x7 conv to 64 channels, spatial stride 2, BN, ReLU (3D and Mixed nets)."""
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm

    @nn.compact
    def __call__(self, x):
        x = self.conv(64, (3, 7, 7), strides=(1, 2, 2), padding=_same((1, 3, 3)),
                      name="conv")(x)
        return nn.relu(self.norm(name="bn")(x))


class R2Plus1dStem(nn.Module):
    """1x7x7 conv to 45 channels, BN, ReLU, 3x1x1 conv to 64, BN, ReLU ((2+1)D net)."""
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm

    @nn.compact
    def __call__(self, x):
        x = self.conv(45, (1, 7, 7), strides=(1, 2, 2), padding=_same((0, 3, 3)),
                      name="spatial")(x)
        x = nn.relu(self.norm(name="spatial_bn")(x))
        x = self.conv(64, (3, 1, 1), padding=_same((1, 0, 0)),
                      name="temporal")(x)
        return nn.relu(self.norm(name="temporal_bn")(x))


class FoldedNorm(nn.Module):
    """Stands where a BatchNorm was folded into the conv before it (inference only): identity."""

    @nn.compact
    def __call__(self, x):
        return x


def midplanes(inplanes, planes):
    """torchvision's (2+1)D width: computed once per block, used by both of its convs."""
    return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


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
        if self.stride != 1 or inplanes != self.features:
            x = self.conv(self.features, (1, 1, 1),
                          strides=self.builder.downsample_stride(self.stride),
                          padding="VALID", name="downsample_conv")(x)
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(y + x)
