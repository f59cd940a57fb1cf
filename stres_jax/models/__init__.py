"""Flax modules of the spatiotemporal ResNet family (18/34 layers, the CSN nets), importable for composition."""
from stres_jax.models.csn import Bottleneck, ChannelSeparated, InteractionPreserved, PooledStem
from stres_jax.models.layers import (BasicBlock, BasicStem, BlockRows, Conv2Plus1D, Conv3DNoTemporal,
                                     Conv3DSimple, ConvLayer, LayerGroup, Layers, NormLayer, R2Plus1dStem,
                                     midplanes, PoolLayer)
from stres_jax.models.norm import TorchBatchNorm
from stres_jax.models.spec import (ARCH_SPECS, DEFAULT_ARCH, STAGE_NAMES, ArchSpec, BlockPlan,
                                   block_name, canonical_arch)
from stres_jax.models.video_resnet import VideoResNet, create_model, mc3_18, r2plus1d_18, r3d_18

__all__ = ["Bottleneck", "ChannelSeparated", "InteractionPreserved", "PooledStem", "ARCH_SPECS", "DEFAULT_ARCH", "STAGE_NAMES", "ArchSpec", "BasicBlock", "BasicStem", "BlockPlan", "BlockRows", "LayerGroup", "Layers",
           "Conv2Plus1D", "Conv3DNoTemporal", "Conv3DSimple", "ConvLayer", "NormLayer", "PoolLayer", "R2Plus1dStem", "TorchBatchNorm",
           "VideoResNet", "block_name", "canonical_arch", "create_model", "mc3_18", "midplanes",
           "r2plus1d_18", "r3d_18"]
