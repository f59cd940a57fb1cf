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

from stres_jax.models.max_pool import max_pool
from stres_jax.models.conv_impls import block_output

ModuleDef = Any
Conv = functools.partial(nn.Conv, use_bias=False)  # torchvision's convs have no bias


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One bias-free convolution: Flax name, output channels, kernel, stride, symmetric padding;
    `groups` as torch's (the channel-separated convs: one per channel); `torch` its module's
    name in the source checkpoint when that is not an index (mmaction2's `conv`)."""
    name: str
    features: int
    kernel: tuple
    stride: tuple
    padding: tuple
    groups: int = 1
    torch: str = ""


@dataclasses.dataclass(frozen=True)
class NormLayer:
    """A BatchNorm over the preceding conv's output, optionally followed by ReLU."""
    name: str
    relu: bool
    torch: str = ""


@dataclasses.dataclass(frozen=True)
class PoolLayer:
    """A max-pool (torch's MaxPool3d: padding never wins the max); no parameters."""
    name: str
    kernel: tuple
    stride: tuple
    padding: tuple


def run_layers(layers, x, conv, norm, plan=None, residual=None):
    """Apply `layers` (ConvLayer / NormLayer rows) in order; call inside a compact module.

    `plan` (from `epilogue_plan`) says, per row, whether it adds `residual` and applies ReLU:
    a conv that fuses its epilogue takes them after its bias, a norm row applies its ReLU."""
    plan = plan or epilogue_plan(layers, fused_epilogue(conv, norm))
    for layer, (add_residual, relu) in zip(layers, plan):
        if isinstance(layer, ConvLayer):
            groups = {"feature_group_count": layer.groups} if layer.groups > 1 else {}
            module = conv(layer.features, layer.kernel, strides=layer.stride,
                          padding=tuple((p, p) for p in layer.padding), name=layer.name, **groups)
            x = module(x, residual if add_residual else None, relu) if add_residual or relu else module(x)
        elif isinstance(layer, PoolLayer):
            x = max_pool(x, layer)
        else:
            x = norm(name=layer.name)(x)
            x = nn.relu(x) if relu else x
    return x


def fuses_epilogue(conv):
    """Whether the `conv` factory's modules take `(x, residual, relu)` (`fast_conv.TapConv`)."""
    while isinstance(conv, functools.partial):
        conv = conv.func
    return getattr(conv, "fuses_epilogue", False)


def fused_epilogue(conv, norm):
    """Whether convs take their epilogue: BN folded (norms are identities) and a fusing conv."""
    return norm is FoldedNorm and fuses_epilogue(conv)


def epilogue_plan(layers, fuse, residual=False):
    """Per row, (adds the residual, applies ReLU). Unfused: norms apply their ReLU, nothing adds
    the residual (the caller does, then ReLU). With `fuse` (BN folded and a conv that fuses its
    epilogue, as oneDNN's post-ops), each conv takes the ReLU of the norm after it, and the last
    conv takes `residual` and the block's ReLU. Linen and NNX modules both plan with this."""
    plan = [(False, isinstance(layer, NormLayer) and layer.relu) for layer in layers]
    if not fuse:
        return tuple(plan)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, ConvLayer)]
    for i, end in zip(convs, convs[1:] + [len(layers)]):
        relu = any(getattr(layers[j], "relu", False) for j in range(i + 1, end))
        last = i == convs[-1] and residual and not relu  # ReLU before the add cannot fuse it
        plan[i] = (last, relu or last)
        plan[i + 1: end] = [(False, False)] * (end - i - 1)
    return tuple(plan)


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


def block_midplanes(inplanes, planes, width_rule="torchvision"):
    """(conv1's, conv2's) middle width in a block: torchvision computes one from the block's input
    width; Caffe2 (the IG-65M nets) each from its conv's own input width, so the first block of
    layers 2-4 has a wider conv2 (128 -> 288, not 230; VMZ #89, vision #1265)."""
    if width_rule not in ("torchvision", "caffe2"):
        raise ValueError(f"unknown width rule {width_rule!r}: 'torchvision' or 'caffe2'")
    first = midplanes(inplanes, planes)
    return first, first if width_rule == "torchvision" else midplanes(planes, planes)


def needs_downsample(stride, inplanes, planes):
    """torchvision's rule for a 1x1x1 conv + BN on the residual path."""
    return stride != 1 or inplanes != planes


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """Rows that run in order under one Flax submodule of a block, and their torchvision module.

    `path` is the submodule's name inside the block (`()`: the block itself); `torch` the
    torchvision module under the block ("conv1.0"); `sequential` says torchvision holds the rows
    in an nn.Sequential whose ReLUs take an index too (a lone row is the module itself)."""
    path: tuple
    torch: str
    layers: tuple
    sequential: bool = True


@dataclasses.dataclass(frozen=True)
class BlockRows:
    """A residual block as data: `main` groups on the branch, `shortcut` groups on the identity
    path (none: the identity), then add and ReLU. The model, key table, ONNX writer, BN folding
    and `info` all read these rows."""
    main: tuple
    shortcut: tuple = ()

    @property
    def out_features(self):
        return [layer for group in self.main for layer in group.layers if isinstance(layer, ConvLayer)][-1].features


class Layers(nn.Module):
    """One `LayerGroup`'s rows as a submodule (e.g. a block's `conv1`)."""
    layers: tuple
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm
    plan: tuple = None

    @nn.compact
    def __call__(self, x, residual=None):
        return run_layers(self.layers, x, self.conv, self.norm, self.plan, residual)


def run_groups(groups, x, conv, norm, residual=None):
    """Apply `LayerGroup`s in order, then add `residual` and ReLU (a block's end); call inside
    a compact module (the block). The epilogue is planned over all the groups' rows at once:
    a conv's folded norm may sit in the next group (torchvision's `conv2.0` / `conv2.1`)."""
    plan = epilogue_plan(tuple(layer for group in groups for layer in group.layers), fused_epilogue(conv, norm),
                         residual is not None)
    start = 0
    for group in groups:
        rows = plan[start: start + len(group.layers)]
        start += len(group.layers)
        if group.path:
            (name,) = group.path
            x = Layers(group.layers, conv, norm, rows, name=name)(x, residual)
        else:
            x = run_layers(group.layers, x, conv, norm, rows, residual)
    if residual is not None and not any(adds for adds, _ in plan):
        x = nn.relu(x + residual)
    return x


class BasicBlock(nn.Module):
    """Two builder convs with BN, a residual (1x1x1 conv + BN when the shape changes), ReLU.

    `rows` states the block once; a new block type subclasses this and overrides `rows`."""
    features: int
    builder: type
    stride: int = 1
    width_rule: str = "torchvision"
    conv: ModuleDef = Conv
    norm: ModuleDef = nn.BatchNorm

    @staticmethod
    def rows(builder, inplanes, features, stride, width_rule="torchvision"):
        """The block's `BlockRows` (torchvision's BasicBlock: conv1/bn1/ReLU, conv2/bn2, downsample);
        `width_rule` as `block_midplanes`."""
        mids = dict(zip(("conv1", "conv2"), block_midplanes(inplanes, features, width_rule)))

        def conv(name, s):
            layers = builder.layers(features, mids[name], s)
            return LayerGroup((name,), f"{name}.0", layers, sequential=len(layers) > 1)
        main = (conv("conv1", stride), LayerGroup((), "conv1.1", (NormLayer("bn1", relu=True),), False),
                conv("conv2", 1), LayerGroup((), "conv2.1", (NormLayer("bn2", relu=False),), False))
        shortcut = ()
        if needs_downsample(stride, inplanes, features):
            shortcut = (LayerGroup((), "downsample", (
                ConvLayer("downsample_conv", features, (1, 1, 1), builder.downsample_stride(stride), (0, 0, 0)),
                NormLayer("downsample_bn", relu=False))),)
        return BlockRows(main, shortcut)

    @nn.compact
    def __call__(self, x):
        rows = self.rows(self.builder, x.shape[-1], self.features, self.stride, self.width_rule)
        shortcut = run_groups(rows.shortcut, x, self.conv, self.norm)
        output = block_output(self.conv, folded=self.norm is FoldedNorm)
        return output(run_groups(rows.main, x, self.conv, self.norm, residual=shortcut))
