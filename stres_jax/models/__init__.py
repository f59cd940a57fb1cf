"""Flax modules of the spatiotemporal ResNet family (18/34 layers, the CSN nets), importable for composition.

Names load on first use, so `stres_jax.models.preset` (read by the decoder workers) never imports jax.
"""
import importlib

_HOMES = {
    "csn": ["Bottleneck", "ChannelSeparated", "InteractionPreserved", "PooledStem"],
    "layers": ["BasicBlock", "BasicStem", "BlockRows", "Conv2Plus1D", "Conv3DNoTemporal", "Conv3DSimple",
               "ConvLayer", "LayerGroup", "Layers", "NormLayer", "PoolLayer", "R2Plus1dStem", "midplanes"],
    "norm": ["TorchBatchNorm"],
    "spec": ["ARCH_SPECS", "DEFAULT_ARCH", "STAGE_NAMES", "ArchSpec", "BlockPlan", "block_name", "canonical_arch"],
    "video_resnet": ["VideoResNet", "create_model", "mc3_18", "r2plus1d_18", "r3d_18"],
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'stres_jax.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stres_jax.models.{_HOME_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
