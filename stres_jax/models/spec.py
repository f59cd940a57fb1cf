"""The architecture, described once: the stem's and every block's layers, names and strides.

`VideoResNet` runs this plan; the converter's key table, ONNX export and BN folding read it.
"""
import dataclasses
from typing import Sequence

from stres_jax.models.layers import (BasicStem, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple,
                                     ConvLayer, NormLayer, R2Plus1dStem, midplanes, needs_downsample)

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
STAGE_STRIDES = (1, 2, 2, 2)  # of each stage's first block; the others have stride 1


def block_name(stage, index):
    """Flax name of block `index` of stage `stage` (torchvision's `layer{stage}.{index}`)."""
    return f"layer{stage}_{index}"


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One residual block: where it sits, its builder, widths, stride and residual path."""
    stage: int
    index: int
    builder: type
    inplanes: int
    features: int
    stride: int

    @property
    def name(self):
        return block_name(self.stage, self.index)

    @property
    def torch_name(self):
        return f"{STAGE_NAMES[self.stage - 1]}.{self.index}"

    @property
    def downsample(self):
        return needs_downsample(self.stride, self.inplanes, self.features)

    def builder_layers(self, conv):
        """The rows of builder `conv` ("conv1" has the block's stride, "conv2" stride 1)."""
        stride = self.stride if conv == "conv1" else 1
        return self.builder.layers(self.features, midplanes(self.inplanes, self.features), stride)

    def downsample_layers(self):
        if not self.downsample:
            return ()
        return (ConvLayer("downsample_conv", self.features, (1, 1, 1),
                          self.builder.downsample_stride(self.stride), (0, 0, 0)),
                NormLayer("downsample_bn", relu=False))


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    stem: type
    builders: Sequence[type]
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)

    def blocks(self):
        """Every block's plan, in order."""
        plans, inplanes = [], last_conv(self.stem.layers()).features
        for stage, (builder, count, width) in enumerate(zip(self.builders, self.stage_sizes, self.widths), 1):
            for index in range(count):
                stride = STAGE_STRIDES[stage - 1] if index == 0 else 1
                plans.append(BlockPlan(stage, index, builder, inplanes, width, stride))
                inplanes = width
        return plans

    def conv_before_norm(self):
        """{BatchNorm path: path of the conv whose output it normalises}, for BN folding."""
        pairs = _pairs(("stem",), self.stem.layers())
        for block in self.blocks():
            for conv, norm in (("conv1", "bn1"), ("conv2", "bn2")):
                layers = block.builder_layers(conv)
                pairs.update(_pairs((block.name, conv), layers))
                pairs[(block.name, norm)] = (block.name, conv, last_conv(layers).name)
            pairs.update(_pairs((block.name,), block.downsample_layers()))
        return pairs


def last_conv(layers):
    return [layer for layer in layers if isinstance(layer, ConvLayer)][-1]


def _pairs(prefix, layers):
    pairs, conv = {}, None
    for layer in layers:
        if isinstance(layer, ConvLayer):
            conv = prefix + (layer.name,)
        else:
            pairs[prefix + (layer.name,)] = conv
    return pairs


ARCH_SPECS = {
    "r3d_18": ArchSpec(BasicStem, (Conv3DSimple,) * 4),
    "mc3_18": ArchSpec(BasicStem, (Conv3DSimple,) + (Conv3DNoTemporal,) * 3),
    "r2plus1d_18": ArchSpec(R2Plus1dStem, (Conv2Plus1D,) * 4),
}
ARCH_ALIASES = {
    "3d": "r3d_18", "r3d": "r3d_18",
    "mixed": "mc3_18", "mc3": "mc3_18",
    "(2+1)d": "r2plus1d_18", "2+1d": "r2plus1d_18", "r2plus1d": "r2plus1d_18",
}
DEFAULT_ARCH = "r2plus1d_18"


def canonical_arch(arch):
    """`r3d_18`, `mc3_18` or `r2plus1d_18` for a name or alias ("3D", "Mixed", "(2+1)D")."""
    key = str(arch).strip().lower()
    key = ARCH_ALIASES.get(key, key)
    if key not in ARCH_SPECS:
        known = ", ".join(list(ARCH_SPECS) + sorted(ARCH_ALIASES))
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {known}")
    return key
