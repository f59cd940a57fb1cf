"""The channel-separated networks (Tran et al., ICCV 2019) as mmaction2 defines them
(`ResNet3dCSN`, `CSNBottleneck3d` in `mmaction/models/backbones/resnet3d_csn.py`).

Rows only: `VideoResNet` runs them, and the key table (mmaction2's `ConvModule` names:
`conv1.conv`, `conv1.bn`, ...), ONNX, BN folding and `info` read them as they read the
torchvision nets'. Every conv is a ConvModule: conv, BN, then ReLU where mmaction2 has one.
"""
from stres_jax.models.layers import (BasicBlock, BlockRows, ConvLayer, LayerGroup, NormLayer, PoolLayer, _Stem)

EXPANSION = 4  # Bottleneck3d.expansion


def conv_module(features, kernel, stride, padding, relu, groups=1):
    """One mmaction2 ConvModule's rows: conv without bias (`.conv`), BN (`.bn`), optional ReLU."""
    return (ConvLayer("conv", features, kernel, stride, padding, groups, torch="conv"),
            NormLayer("bn", relu, torch="bn"))


class PooledStem(_Stem):
    """ResNet3d's stem: 3x7x7 conv to 64, spatial stride 2, BN, ReLU, then a 1x3x3 max-pool, stride 2
    (`conv1` and `maxpool`; CSN's `conv1_stride_t` and `pool1_stride_t` are 1)."""
    @staticmethod
    def layers():
        return conv_module(64, (3, 7, 7), (1, 2, 2), (1, 3, 3), relu=True) + (
            PoolLayer("pool", (1, 3, 3), (1, 2, 2), (0, 1, 1)),)


class ChannelSeparated:
    """The ir (interaction-reduced) conv2: a 3x3x3 depthwise conv, BN, ReLU (`conv2.0`)."""

    @staticmethod
    def groups(planes, stride):
        return (LayerGroup(("conv2",), "conv2.0", conv_module(planes, (3, 3, 3), (stride,) * 3, (1, 1, 1),
                                                             relu=True, groups=planes)),)

    @staticmethod
    def downsample_stride(stride):
        return (stride, stride, stride)  # CSN's temporal strides equal its spatial ones (1, 2, 2, 2)


class InteractionPreserved(ChannelSeparated):
    """The ip conv2: a 1x1x1 conv and BN (no ReLU, `conv2.0`), then the depthwise 3x3x3, BN, ReLU (`conv2.1`)."""

    @staticmethod
    def groups(planes, stride):
        return (LayerGroup(("conv2_0",), "conv2.0", conv_module(planes, (1, 1, 1), (1, 1, 1), (0, 0, 0),
                                                               relu=False)),
                LayerGroup(("conv2_1",), "conv2.1", conv_module(planes, (3, 3, 3), (stride,) * 3, (1, 1, 1),
                                                               relu=True, groups=planes)))


class Bottleneck(BasicBlock):
    """mmaction2's Bottleneck3d ('pytorch' style: the stride on conv2): 1x1x1 to `features`, BN,
    ReLU; the builder's separated conv2; 1x1x1 to 4x `features`, BN; a 1x1x1 conv + BN shortcut
    when the stride or width changes; add, ReLU."""

    @staticmethod
    def rows(builder, inplanes, features, stride, width_rule="torchvision"):
        del width_rule
        main = (LayerGroup(("conv1",), "conv1", conv_module(features, (1, 1, 1), (1, 1, 1), (0, 0, 0), True)),
                *builder.groups(features, stride),
                LayerGroup(("conv3",), "conv3", conv_module(features * EXPANSION, (1, 1, 1), (1, 1, 1),
                                                            (0, 0, 0), False)))
        shortcut = ()
        if stride != 1 or inplanes != features * EXPANSION:
            shortcut = (LayerGroup(("downsample",), "downsample", conv_module(
                features * EXPANSION, (1, 1, 1), builder.downsample_stride(stride), (0, 0, 0), False)),)
        return BlockRows(main, shortcut)
