"""VideoResNet and the three published nets: r3d_18 (3D), mc3_18 (Mixed), r2plus1d_18 ((2+1)D)."""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from stres_jax.models.conv_impls import conv_factory, resolve_conv_impl
from stres_jax.models.layers import BasicBlock, Conv, Conv2Plus1D, FoldedNorm, ModuleDef, R2Plus1dStem
from stres_jax.models.norm import TorchBatchNorm
from stres_jax.models.preset import TORCHVISION, Preset
from stres_jax.models.spec import ARCH_SPECS, DEFAULT_ARCH, STAGE_NAMES, ArchSpec, canonical_arch

BN_MOMENTUM = 0.1  # PyTorch's; Flax counts momentum the other way round


class VideoResNet(nn.Module):
    """Stem, four residual stages, global average pool over (T, H, W), linear head.

    Input `(batch, time, height, width, 3)`, normalised. Returns logits, or
    `(logits, features)` with `return_features=True`: features holds `stem`, `layer1`..
    `layer4` and `pre_logits` (the pooled 512-d vector).

    `conv` chooses the lowering (`fast_conv.TapConv` is faster on CPU, same parameters);
    `fold_batchnorm=True` is an inference-only net whose convs carry the folded BN
    (variables from `fold.fold_batchnorm`). `norm` is `TorchBatchNorm`: in training mode its
    running variance follows PyTorch's (unbiased) rule, so training matches torchvision.
    """
    stem: type = R2Plus1dStem
    builders: Sequence[type] = (Conv2Plus1D,) * 4
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    block: type = BasicBlock
    width_rule: str = "torchvision"
    bn_epsilon: float = 1e-5
    preset: Preset = TORCHVISION   # the test protocol of its weights (the checkpoint's own)
    layout: str = "torchvision"    # its source checkpoints' key names (`ArchSpec.layout`)
    bn_momentum: float = BN_MOMENTUM  # PyTorch's sense (training only)
    num_classes: int = 400
    dtype: Any = jnp.float32
    conv: ModuleDef = Conv
    norm: ModuleDef = TorchBatchNorm
    fold_batchnorm: bool = False

    @property
    def spec(self):
        return ArchSpec(self.stem, tuple(self.builders), tuple(self.stage_sizes), tuple(self.widths), self.block,
                        self.width_rule, self.bn_epsilon, self.preset, self.layout)

    @property
    def clip_len(self):
        return self.preset.clip_len

    @property
    def feature_width(self):
        """The width of `pre_logits`, the pooled features (512 for the 18- and 34-layer nets)."""
        return self.spec.blocks()[-1].rows().out_features

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        conv = functools.partial(self.conv, use_bias=self.fold_batchnorm, dtype=self.dtype)
        norm = FoldedNorm if self.fold_batchnorm else functools.partial(
            self.norm, use_running_average=not train, momentum=1 - self.bn_momentum, epsilon=self.bn_epsilon,
            dtype=self.dtype)
        x = jnp.asarray(x, self.dtype)
        features = {"stem": self.stem(conv=conv, norm=norm, name="stem")(x)}
        x = features["stem"]
        for block in self.spec.blocks():
            x = self.block(block.features, block.builder, block.stride, block.width_rule, conv=conv, norm=norm,
                           name=block.name)(x)
            features[STAGE_NAMES[block.stage - 1]] = x
        x = jnp.mean(x, axis=(1, 2, 3))
        features["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return (logits, features) if return_features else logits


def create_model(arch=DEFAULT_ARCH, num_classes=400, conv_impl="auto", **kwargs):
    """The VideoResNet for `arch`; kwargs (dtype, fold_batchnorm, a checkpoint's `preset`, ...) go to VideoResNet.

    `conv_impl` lowers the convolutions: "xla" (nn.Conv), "taps" (fast_conv.TapConv), "taps3d"
    (TapConv for 3-D kernels only) or "auto" (taps on CPU, xla elsewhere; BENCHMARKS.md).
    The parameters are the same for all of them. Jit with `stres_jax.compiler_options()`
    for the fast CPU kernels (`stres_jax.jit_forward` does).
    """
    if "conv" not in kwargs:
        kwargs["conv"] = conv_factory(resolve_conv_impl(conv_impl))
    spec = ARCH_SPECS[canonical_arch(arch)].fields()
    return VideoResNet(num_classes=num_classes, **{**spec, **kwargs})


r3d_18 = functools.partial(create_model, "r3d_18")
mc3_18 = functools.partial(create_model, "mc3_18")
r2plus1d_18 = functools.partial(create_model, "r2plus1d_18")
