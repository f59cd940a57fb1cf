"""VideoResNet and the three published nets: r3d_18 (3D), mc3_18 (Mixed), r2plus1d_18 ((2+1)D)."""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from stres_jax.models.fast_conv import conv_factory, resolve_conv_impl
from stres_jax.models.layers import (BasicBlock, BasicStem, Conv, Conv2Plus1D, Conv3DNoTemporal,
                                     Conv3DSimple, FoldedNorm, ModuleDef, R2Plus1dStem)

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


def block_name(stage, index):
    """Flax name of block `index` of stage `stage` (torchvision's `layer{stage}.{index}`)."""
    return f"layer{stage}_{index}"


class VideoResNet(nn.Module):
    """Stem, four residual stages, global average pool over (T, H, W), linear head.

    Input `(batch, time, height, width, 3)` float32, normalised. Returns logits, or
    `(logits, features)` with `return_features=True`: features holds `stem`, `layer1`..
    `layer4` and `pre_logits` (the pooled 512-d vector).

    `conv` chooses the lowering (`fast_conv.TapConv` is faster on CPU, same parameters);
    `fold_batchnorm=True` is an inference-only net whose convs carry the folded BN
    (variables from `fold.fold_batchnorm`).
    """
    stem: type = R2Plus1dStem
    builders: Sequence[type] = (Conv2Plus1D,) * 4
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 400
    dtype: Any = jnp.float32
    conv: ModuleDef = Conv
    fold_batchnorm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        conv = functools.partial(self.conv, use_bias=self.fold_batchnorm, dtype=self.dtype)
        # PyTorch BN: eps 1e-5, momentum 0.1 (Flax counts momentum the other way round).
        norm = FoldedNorm if self.fold_batchnorm else functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        x = jnp.asarray(x, self.dtype)
        features = {"stem": self.stem(conv=conv, norm=norm, name="stem")(x)}
        x = features["stem"]
        for stage, (builder, blocks, width) in enumerate(
                zip(self.builders, self.stage_sizes, self.widths), start=1):
            for index in range(blocks):
                stride = 2 if stage > 1 and index == 0 else 1
                x = BasicBlock(width, builder, stride, conv=conv, norm=norm,
                               name=block_name(stage, index))(x)
            features[STAGE_NAMES[stage - 1]] = x
        x = jnp.mean(x, axis=(1, 2, 3))
        features["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return (logits, features) if return_features else logits


ARCH_SPECS = {
    "r3d_18": dict(stem=BasicStem, builders=(Conv3DSimple,) * 4),
    "mc3_18": dict(stem=BasicStem, builders=(Conv3DSimple,) + (Conv3DNoTemporal,) * 3),
    "r2plus1d_18": dict(stem=R2Plus1dStem, builders=(Conv2Plus1D,) * 4),
}
ARCH_ALIASES = {
    "3d": "r3d_18", "r3d": "r3d_18",
    "mixed": "mc3_18", "mc3": "mc3_18",
    "(2+1)d": "r2plus1d_18", "2+1d": "r2plus1d_18", "r2plus1d": "r2plus1d_18",
}
DEFAULT_ARCH = "r2plus1d_18"


def canonical_arch(arch):
    """`r3d_18`, `mc3_18` or `r2plus1d_18` for a name or alias ("3D", "Mixed", "(2+1)D")."""
    key = arch.strip().lower()
    key = ARCH_ALIASES.get(key, key)
    if key not in ARCH_SPECS:
        known = ", ".join(list(ARCH_SPECS) + sorted(ARCH_ALIASES))
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {known}")
    return key


def create_model(arch=DEFAULT_ARCH, num_classes=400, conv_impl="auto", **kwargs):
    """The VideoResNet for `arch`; kwargs (dtype, fold_batchnorm, ...) go to VideoResNet.

    `conv_impl` lowers the convolutions: "xla" (nn.Conv), "taps" (fast_conv.TapConv), "taps3d"
    (TapConv for 3-D kernels only) or "auto" (taps on CPU, xla elsewhere; BENCHMARKS.md).
    The parameters are the same for all of them. Jit with `stres_jax.compiler_options()`
    for the fast CPU kernels.
    """
    if "conv" not in kwargs:
        kwargs["conv"] = conv_factory(resolve_conv_impl(conv_impl))
    return VideoResNet(num_classes=num_classes, **ARCH_SPECS[canonical_arch(arch)], **kwargs)


r3d_18 = functools.partial(create_model, "r3d_18")
mc3_18 = functools.partial(create_model, "mc3_18")
r2plus1d_18 = functools.partial(create_model, "r2plus1d_18")
