"""The nets as Flax NNX modules, read from the same rows as the linen ones (`models.layers`,
`models.spec`): the same parameter and BatchNorm-statistic names, so the key table, checkpoints,
ONNX writer and BN folding serve both; the same lowerings (`models.conv_impls.convolution`) and
PyTorch's BatchNorm rule (`models.norm.torch_batch_norm`). Layout NTHWC, as linen."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stres_jax.models import layers as rows_of
from stres_jax.models.conv_impls import block_output, convolution, fuses_epilogue
from stres_jax.models.layers import ConvLayer, PoolLayer, epilogue_plan
from stres_jax.models.max_pool import max_pool
from stres_jax.models.norm import torch_batch_norm
from stres_jax.models.spec import ARCH_SPECS, DEFAULT_ARCH, STAGE_NAMES, ArchSpec, canonical_arch
from stres_jax.models.video_resnet import BN_MOMENTUM


@dataclasses.dataclass(frozen=True)
class Options:
    """How every layer of a net computes: the conv lowering, whether BN is folded into the convs
    (inference; convs get a bias), the compute dtype and BatchNorm's epsilon and momentum."""
    conv_impl: str = "auto"
    fold_batchnorm: bool = False
    dtype: object = jnp.float32
    bn_epsilon: float = 1e-5
    bn_momentum: float = BN_MOMENTUM  # PyTorch's sense


class Conv(nnx.Module):
    """A bias-free convolution (`ConvLayer` row); with BN folded it carries the BN's bias and may
    take the residual add and ReLU too (oneDNN's post-ops). `kernel` is (kt, kh, kw, in, out)."""

    def __init__(self, in_features, layer: ConvLayer, options: Options, rngs: nnx.Rngs):
        shape = (*layer.kernel, in_features // layer.groups, layer.features)
        std = np.sqrt(2.0 / (layer.features * np.prod(layer.kernel)))  # torchvision: kaiming normal, fan_out
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) * std)
        self.bias = nnx.Param(jnp.zeros((layer.features,), jnp.float32)) if options.fold_batchnorm else None
        self.strides, self.padding = tuple(layer.stride), tuple((p, p) for p in layer.padding)
        self.conv_impl, self.dtype = options.conv_impl, options.dtype

    def __call__(self, x, residual=None, relu=False):
        bias = None if self.bias is None else self.bias[...].astype(self.dtype)
        return convolution(self.conv_impl)(x.astype(self.dtype), self.kernel[...].astype(self.dtype), bias,
                                           residual, relu, self.strides, self.padding)


class BatchNorm(nnx.Module):
    """BatchNorm with PyTorch's training rule (unbiased running variance); `model.train()` /
    `model.eval()` switch `use_running_average`. Params `scale`, `bias`; statistics `mean`, `var`."""

    def __init__(self, features, options: Options):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
        self.epsilon, self.momentum, self.dtype = options.bn_epsilon, 1 - options.bn_momentum, options.dtype
        self.use_running_average = False

    def __call__(self, x):
        train = not self.use_running_average
        y, (mean, var) = torch_batch_norm(x, self.scale[...], self.bias[...], self.mean[...], self.var[...],
                                          train=train, epsilon=self.epsilon, momentum=self.momentum, dtype=self.dtype)
        if train:
            self.mean[...], self.var[...] = mean, var
        return y


def _add_rows(owner, rows, in_features, options, rngs):
    """Set one submodule per row on `owner`, named as the row (a folded BN has none); returns
    the output width."""
    width = in_features
    for layer in rows:
        if isinstance(layer, ConvLayer):
            setattr(owner, layer.name, Conv(width, layer, options, rngs))
            width = layer.features
        elif not options.fold_batchnorm and not isinstance(layer, PoolLayer):
            setattr(owner, layer.name, BatchNorm(width, options))
    return width


def _run_rows(owner, rows, x, plan, residual=None):
    for layer, (add_residual, relu) in zip(rows, plan):
        module = getattr(owner, layer.name, None)
        if isinstance(layer, ConvLayer):
            x = module(x, residual if add_residual else None, relu) if add_residual or relu else module(x)
        elif isinstance(layer, PoolLayer):
            x = max_pool(x, layer)
        else:
            x = x if module is None else module(x)
            x = jax.nn.relu(x) if relu else x
    return x


def _fuse(options):
    return options.fold_batchnorm and fuses_epilogue(options.conv_impl)


class Rows(nnx.Module):
    """`ConvLayer` / `NormLayer` rows run in order: a stem, a conv builder, or a block's group."""

    def __init__(self, rows, in_features, options: Options, rngs: nnx.Rngs):
        self.rows = tuple(rows)
        self.out_features = _add_rows(self, self.rows, in_features, options, rngs)
        self.plan = epilogue_plan(self.rows, _fuse(options))

    def __call__(self, x):
        return _run_rows(self, self.rows, x, self.plan)


def BasicStem(options=Options(), *, rngs):  # noqa: N802 (module constructors, as the linen classes)
    """3x7x7 conv to 64 channels, spatial stride 2, BN, ReLU (3D and Mixed nets)."""
    return Rows(rows_of.BasicStem.layers(), 3, options, rngs)


def R2Plus1dStem(options=Options(), *, rngs):  # noqa: N802
    """1x7x7 conv to 45 channels, BN, ReLU, 3x1x1 conv to 64, BN, ReLU ((2+1)D net)."""
    return Rows(rows_of.R2Plus1dStem.layers(), 3, options, rngs)


def Conv3DSimple(in_features, features, stride=1, options=Options(), *, rngs):  # noqa: N802
    return Rows(rows_of.Conv3DSimple.layers(features, 0, stride), in_features, options, rngs)


def Conv3DNoTemporal(in_features, features, stride=1, options=Options(), *, rngs):  # noqa: N802
    return Rows(rows_of.Conv3DNoTemporal.layers(features, 0, stride), in_features, options, rngs)


def Conv2Plus1D(in_features, features, midplanes, stride=1, options=Options(), *, rngs):  # noqa: N802
    return Rows(rows_of.Conv2Plus1D.layers(features, midplanes, stride), in_features, options, rngs)


class BasicBlock(nnx.Module):
    """A residual block from its `BlockRows` (`BlockPlan.rows()`, the linen block's): groups with a
    path are submodules (`conv1`, `conv2`), the others' rows sit on the block (`bn1`, `downsample_conv`)."""

    def __init__(self, block_rows, in_features, options: Options, rngs: nnx.Rngs):
        self.main, self.shortcut = tuple(block_rows.main), tuple(block_rows.shortcut)
        for part in ("main", "shortcut"):
            groups, width = getattr(self, part), in_features
            for group in groups:
                if group.path:
                    (name,) = group.path
                    setattr(self, name, _Group(group.layers, width, options, rngs))
                    width = getattr(self, name).out_features
                else:
                    width = _add_rows(self, group.layers, width, options, rngs)
            every_row = tuple(layer for group in groups for layer in group.layers)
            setattr(self, f"{part}_plan", epilogue_plan(every_row, _fuse(options), residual=part == "main"))
        self.conv_impl, self.folded = options.conv_impl, options.fold_batchnorm

    def _run(self, groups, plan, x, residual=None):
        start = 0
        for group in groups:
            rows, start = plan[start: start + len(group.layers)], start + len(group.layers)
            owner = getattr(self, group.path[0]) if group.path else self
            x = _run_rows(owner, group.layers, x, rows, residual)
        return x

    def __call__(self, x):
        shortcut = self._run(self.shortcut, self.shortcut_plan, x) if self.shortcut else x
        y = self._run(self.main, self.main_plan, x, shortcut)
        y = y if any(adds for adds, _ in self.main_plan) else jax.nn.relu(y + shortcut)
        return block_output(self.conv_impl, self.folded)(y)


class _Group(nnx.Module):
    """A block's group that is a submodule (its rows run under the block's epilogue plan)."""

    def __init__(self, rows, in_features, options, rngs):
        self.out_features = _add_rows(self, rows, in_features, options, rngs)


class VideoResNet(nnx.Module):
    """Stem, the residual stages, global average pool over (T, H, W), `fc` head: the `ArchSpec`'s
    net. `model(x)` takes `(batch, T, H, W, 3)` normalised clips and returns logits, or
    `(logits, features)` with `return_features=True` (`stem`, `layer1`..`layer4`, `pre_logits`)."""

    def __init__(self, spec: ArchSpec, num_classes=400, options=None, *, rngs: nnx.Rngs):
        options = options or Options(bn_epsilon=spec.bn_epsilon)
        self.spec, self.options, self.num_classes = spec, options, num_classes
        self.arch = next((name for name, known in ARCH_SPECS.items() if known == spec), None)
        self.stem = Rows(spec.stem.layers(), 3, options, rngs)
        for block in spec.blocks():
            setattr(self, block.name, BasicBlock(block.rows(), block.inplanes, options, rngs))
        width = spec.blocks()[-1].rows().out_features
        self.fc = nnx.Linear(width, num_classes, dtype=options.dtype, rngs=rngs)
        self.preset = spec.preset  # a checkpoint's own test protocol, once `from_pretrained` set it
        self.eval()

    @property
    def clip_len(self):
        return self.preset.clip_len

    def __call__(self, x, return_features=False):
        x = jnp.asarray(x, self.options.dtype)
        features = {"stem": self.stem(x)}
        x = features["stem"]
        for block in self.spec.blocks():
            x = getattr(self, block.name)(x)
            features[STAGE_NAMES[block.stage - 1]] = x
        features["pre_logits"] = x = jnp.mean(x, axis=(1, 2, 3))
        logits = self.fc(x)
        return (logits, features) if return_features else logits


def create_model(arch=DEFAULT_ARCH, num_classes=400, conv_impl="auto", dtype=jnp.float32, fold_batchnorm=False,
                 bn_momentum=BN_MOMENTUM, seed=0):
    """The NNX net of `arch` (a name or alias, or an `ArchSpec`), randomly initialised, in eval mode."""
    spec = arch if isinstance(arch, ArchSpec) else ARCH_SPECS[canonical_arch(arch)]
    options = Options(conv_impl, fold_batchnorm, jnp.dtype(dtype), spec.bn_epsilon, bn_momentum)
    return VideoResNet(spec, num_classes, options, rngs=nnx.Rngs(seed))
