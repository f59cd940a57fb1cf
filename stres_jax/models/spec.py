"""The architecture, described once: the stem's and every block's layers, names and strides.

`VideoResNet` runs this plan; the converter's key table, ONNX export, BN folding and `info`
read it. A new block type is a `BasicBlock` subclass with its own `rows`, named in `ArchSpec`.
"""
import dataclasses
from typing import Sequence

from stres_jax.models.layers import (BasicBlock, BasicStem, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple,
                                     ConvLayer, LayerGroup, NormLayer, R2Plus1dStem)
from stres_jax.models.csn import Bottleneck, ChannelSeparated, InteractionPreserved, PooledStem
from stres_jax.models.preset import CSN_IG65M, TORCHVISION, Preset, torchvision_preset

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
STAGE_STRIDES = (1, 2, 2, 2)  # of each stage's first block; the others have stride 1


def block_name(stage, index):
    """Flax name of block `index` of stage `stage` (torchvision's `layer{stage}.{index}`)."""
    return f"layer{stage}_{index}"


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One residual block: where it sits, its type, builder, widths and stride."""
    stage: int
    index: int
    block: type
    builder: type
    inplanes: int
    features: int
    stride: int
    width_rule: str = "torchvision"

    @property
    def name(self):
        return block_name(self.stage, self.index)

    @property
    def torch_name(self):
        return f"{STAGE_NAMES[self.stage - 1]}.{self.index}"

    def rows(self):
        """The block's `BlockRows`: its layer groups on the branch and the shortcut."""
        return self.block.rows(self.builder, self.inplanes, self.features, self.stride, self.width_rule)


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A VideoResNet: stem, block type, each stage's conv builder, block count and width.

    `width_rule` is how a (2+1)D block's middle width is computed (`layers.midplanes`):
    "torchvision" once from the block's input width for both convs, "caffe2" (the IG-65M nets)
    from each conv's own input width. `bn_epsilon` is every BatchNorm's; `preset` the test protocol
    of the published weights (a checkpoint may carry another: `Preset`)."""
    stem: type
    builders: Sequence[type]
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    block: type = BasicBlock
    width_rule: str = "torchvision"
    bn_epsilon: float = 1e-5
    preset: Preset = TORCHVISION
    layout: str = "torchvision"  # the source checkpoints' key names: "torchvision" or "mmaction2" (`key_table`)

    @property
    def clip_len(self):
        """The frames of the clips the published weights were trained on."""
        return self.preset.clip_len

    def fields(self):
        """{field: value}, shallow (what `VideoResNet` takes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def blocks(self):
        """Every block's plan, in order."""
        plans, inplanes = [], last_conv(self.stem.layers()).features
        for stage, (builder, count, width) in enumerate(zip(self.builders, self.stage_sizes, self.widths), 1):
            for index in range(count):
                stride = STAGE_STRIDES[stage - 1] if index == 0 else 1
                plan = BlockPlan(stage, index, self.block, builder, inplanes, width, stride, self.width_rule)
                plans.append(plan)
                inplanes = plan.rows().out_features
        return plans

    def conv_before_norm(self):
        """{BatchNorm path: path of the conv whose output it normalises}, for BN folding."""
        pairs = _pairs(("stem",), (LayerGroup((), "stem", self.stem.layers()),))
        for block in self.blocks():
            rows = block.rows()
            pairs.update(_pairs((block.name,), rows.main))
            pairs.update(_pairs((block.name,), rows.shortcut))
        return pairs


def last_conv(layers):
    return [layer for layer in layers if isinstance(layer, ConvLayer)][-1]


def _pairs(prefix, groups):
    """{norm path: the path of the conv before it} along `groups`, run in order."""
    pairs, conv = {}, None
    for group in groups:
        for layer in group.layers:
            path = prefix + tuple(group.path) + (layer.name,)
            if isinstance(layer, ConvLayer):
                conv = path
            elif isinstance(layer, NormLayer):
                pairs[path] = conv
    return pairs


LAYERS_34 = LAYERS_50 = (3, 4, 6, 3)
LAYERS_152 = (3, 8, 36, 3)
_R3D, _MC3 = (Conv3DSimple,) * 4, (Conv3DSimple,) + (Conv3DNoTemporal,) * 3
_R2PLUS1D = (R2Plus1dStem, (Conv2Plus1D,) * 4)
_IG65M = dict(stage_sizes=LAYERS_34, width_rule="caffe2", bn_epsilon=1e-3)  # ig65m-pytorch's models.py
ARCH_SPECS = {
    "r3d_18": ArchSpec(BasicStem, _R3D),
    "mc3_18": ArchSpec(BasicStem, _MC3),
    "r2plus1d_18": ArchSpec(*_R2PLUS1D),
    # torchvision's classes at 34 layers (torchvision publishes no builder or weights): from scratch
    "r3d_34": ArchSpec(BasicStem, _R3D, LAYERS_34),
    "mc3_34": ArchSpec(BasicStem, _MC3, LAYERS_34),
    "r2plus1d_34": ArchSpec(*_R2PLUS1D, LAYERS_34),
    # the IG-65M R(2+1)D-34 nets (Ghadiyaram et al. 2019) as moabitcoin/ig65m-pytorch defines them
    "r2plus1d_34_8_ig65m": ArchSpec(*_R2PLUS1D, **_IG65M, preset=torchvision_preset(clip_len=8)),
    "r2plus1d_34_32_ig65m": ArchSpec(*_R2PLUS1D, **_IG65M, preset=torchvision_preset(clip_len=32)),
    "r2plus1d_34_8_kinetics": ArchSpec(*_R2PLUS1D, **_IG65M, preset=torchvision_preset(clip_len=8)),
    "r2plus1d_34_32_kinetics": ArchSpec(*_R2PLUS1D, **_IG65M, preset=torchvision_preset(clip_len=32)),
}
# the channel-separated nets (Tran et al. 2019) as mmaction2's ResNet3dCSN defines them (models.csn)
_CSN = dict(block=Bottleneck, bn_epsilon=1e-3, preset=CSN_IG65M, layout="mmaction2")
ARCH_SPECS.update({
    "ir_csn_152": ArchSpec(PooledStem, (ChannelSeparated,) * 4, LAYERS_152, **_CSN),
    "ip_csn_152": ArchSpec(PooledStem, (InteractionPreserved,) * 4, LAYERS_152, **_CSN),
    "ir_csn_50": ArchSpec(PooledStem, (ChannelSeparated,) * 4, LAYERS_50, **_CSN),
})
ARCH_ALIASES = {
    "3d": "r3d_18", "r3d": "r3d_18",
    "mixed": "mc3_18", "mc3": "mc3_18",
    "(2+1)d": "r2plus1d_18", "2+1d": "r2plus1d_18", "r2plus1d": "r2plus1d_18",
    "3d-34": "r3d_34", "mixed-34": "mc3_34", "(2+1)d-34": "r2plus1d_34",
}
DEFAULT_ARCH = "r2plus1d_18"


def canonical_arch(arch):
    """The `ARCH_SPECS` name for a name or alias ("3D", "Mixed", "(2+1)D", "r2plus1d_34_32_kinetics", ...)."""
    key = str(arch).strip().lower()
    key = ARCH_ALIASES.get(key, key)
    if key not in ARCH_SPECS:
        known = ", ".join(list(ARCH_SPECS) + sorted(ARCH_ALIASES))
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {known}")
    return key
