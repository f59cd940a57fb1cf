"""A new block type is one class: torchvision's video Bottleneck, written here as rows, builds,
converts both ways through the key table, folds and exports to ONNX, against torchvision's own net."""
import dataclasses

import numpy as np
import onnxruntime
import pytest
import torch
from torchvision.models.video import resnet as tv_resnet

from stres_jax.checkpoints.key_table import flax_to_torch, torch_to_flax
from stres_jax.models.init import abstract_variables
from stres_jax.models import (ArchSpec, BasicBlock, BasicStem, BlockRows, Conv2Plus1D, Conv3DSimple, ConvLayer,
                              LayerGroup, NormLayer, R2Plus1dStem, VideoResNet, midplanes)
from stres_jax.models.fold import fold_batchnorm
from stres_jax.export.onnx_io import to_onnx
from tests.torch_reference import randomise_batchnorm, relative_error


class Bottleneck(BasicBlock):
    """torchvision's video Bottleneck: 1x1x1 reduce, the builder, 1x1x1 expand (x4), residual."""
    expansion = 4

    @staticmethod
    def rows(builder, inplanes, features, stride, width_rule="torchvision"):
        out = features * Bottleneck.expansion
        pointwise = lambda width, s=1: ConvLayer("conv", width, (1, 1, 1), (s, s, s), (0, 0, 0))  # noqa: E731
        middle = builder.layers(features, midplanes(inplanes, features), stride)
        main = (LayerGroup(("conv1",), "conv1", (pointwise(features), NormLayer("bn", relu=True))),
                LayerGroup(("conv2",), "conv2.0", middle, sequential=len(middle) > 1),
                LayerGroup((), "conv2.1", (NormLayer("bn2", relu=True),), sequential=False),
                LayerGroup(("conv3",), "conv3", (pointwise(out), NormLayer("bn", relu=False))))
        shortcut = ()
        if stride != 1 or inplanes != out:
            shortcut = (LayerGroup((), "downsample", (
                ConvLayer("downsample_conv", out, (1, 1, 1), builder.downsample_stride(stride), (0, 0, 0)),
                NormLayer("downsample_bn", relu=False))),)
        return BlockRows(main, shortcut)


CASES = {"r3d": (BasicStem, Conv3DSimple, tv_resnet.BasicStem, tv_resnet.Conv3DSimple),
         "r2plus1d": (R2Plus1dStem, Conv2Plus1D, tv_resnet.R2Plus1dStem, tv_resnet.Conv2Plus1D)}


def torch_bottleneck_net(stem, builder):
    torch.manual_seed(0)
    net = tv_resnet.VideoResNet(tv_resnet.Bottleneck, [builder] * 4, [1, 1, 1, 1], stem, num_classes=10)
    return randomise_batchnorm(net).eval()


@pytest.mark.parametrize("case", CASES)
def test_bottleneck_block_converts_folds_and_exports(case):
    stem, builder, tv_stem, tv_builder = CASES[case]
    theirs = torch_bottleneck_net(tv_stem, tv_builder)
    spec = ArchSpec(stem, (builder,) * 4, (1, 1, 1, 1), block=Bottleneck)
    model = VideoResNet(**dataclasses.asdict(spec), num_classes=10)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    variables = torch_to_flax(state, spec, abstract_variables(model))

    clips = np.random.default_rng(0).standard_normal((2, 4, 112, 112, 3)).astype(np.float32)
    with torch.no_grad():
        reference = theirs(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).numpy()
    assert relative_error(model.apply(variables, clips), reference) < 1e-5

    back = flax_to_torch(variables, spec)
    assert set(back) == set(state)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)

    folded = model.clone(fold_batchnorm=True)
    assert relative_error(folded.apply(fold_batchnorm(variables, spec), clips), reference) < 1e-5

    proto = to_onnx(spec, variables, [str(i) for i in range(10)], frames=4)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"video": clips.transpose(0, 4, 1, 2, 3)})
    assert relative_error(onnx_logits, reference) < 1e-5
