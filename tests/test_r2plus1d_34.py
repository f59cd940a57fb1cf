"""The 34-layer IG-65M R(2+1)D nets against their publisher's definition (moabitcoin/ig65m-pytorch's
`models.py`, assembled from torchvision's classes in `tests/torch_reference.py`): conversion, logits at
8 and 32 frames with BN folded and not, ONNX through onnxruntime, float64 SGD steps with their
BatchNorm epsilon and momentum, `info`'s counts, and `fetch --from`'s check."""
import jax
import numpy as np
import onnxruntime
import pytest
import torch

import stres_jax
from stres_jax.convert import convert_file
from stres_jax.export.onnx_io import to_onnx
from stres_jax.netinfo import net_information
from tests.test_train_step import TOLERANCE, sgd_step_errors
from tests.torch_reference import ig65m_r2plus1d_34, relative_error, save_state_dict, torch_forward

ARCH = "r2plus1d_34_32_ig65m"
NUM_CLASSES = 359  # the converter reads it from fc.weight; nothing assumes 400


@pytest.fixture(scope="module")
def publisher_net():
    return ig65m_r2plus1d_34(NUM_CLASSES)


@pytest.fixture(scope="module")
def checkpoint(publisher_net, tmp_path_factory):
    root = tmp_path_factory.mktemp("ig65m")
    return convert_file(save_state_dict(publisher_net, root / "ig65m.pth", legacy=False), ARCH, root / "ckpt")


@pytest.mark.parametrize("frames, batch", [(8, 2), (32, 1)])
def test_logits_and_features_match_the_publishers_net(frames, batch, publisher_net, checkpoint):
    clips = np.random.default_rng(frames).standard_normal((batch, frames, 64, 64, 3)).astype(np.float32)
    ref_logits, ref_features = torch_forward(publisher_net, clips)
    for fold in (False, True):
        model, variables, meta = stres_jax.load_checkpoint(checkpoint, fold_batchnorm=fold)
        assert (meta["num_classes"], meta["clip_len"], model.bn_epsilon) == (NUM_CLASSES, 32, 1e-3)
        forward = jax.jit(lambda v, x: model.apply(v, x, return_features=True),
                          compiler_options=stres_jax.compiler_options())
        logits, features = forward(variables, clips)
        errors = {"logits": relative_error(logits, ref_logits)}
        errors.update({name: relative_error(features[name], ref) for name, ref in ref_features.items()})
        print(frames, batch, "fold" if fold else "", {k: f"{v:.1e}" for k, v in errors.items()})
        assert max(errors.values()) < 1e-5, errors


def test_onnx_export_runs_in_onnxruntime(publisher_net, checkpoint):
    _, variables, meta = stres_jax.load_checkpoint(checkpoint)
    proto = to_onnx(ARCH, variables, meta["labels"], frames=8)
    clips = np.random.default_rng(3).standard_normal((1, 8, 112, 112, 3)).astype(np.float32)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"video": clips.transpose(0, 4, 1, 2, 3)})
    assert relative_error(logits, torch_forward(publisher_net, clips)[0]) < 1e-5


def test_two_sgd_steps_equal_torch_in_float64_with_their_batchnorm():
    """eps 1e-3 always; their momentum (0.9 in PyTorch's sense) when asked (`bn_momentum`)."""
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((2, 4, 32, 32, 3)), rng.integers(0, 10, 2)) for _ in range(2)]
    errors = sgd_step_errors(ig65m_r2plus1d_34(10), "r2plus1d_34_8_ig65m", batches, num_classes=10, bn_momentum=0.9)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, (worst, errors[worst])


def test_info_counts_equal_the_reference_nets():
    """Parameters, and multiply-accumulates per 32x112x112 clip counted on the torch net (meta device)."""
    reference = ig65m_r2plus1d_34(400).to("meta")
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv3d):
            macs.append(output[0].numel() * int(np.prod(module.kernel_size)) * module.in_channels)
        elif isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)
    for module in reference.modules():
        module.register_forward_hook(count)
    reference(torch.zeros((1, 3, 32, 112, 112), device="meta"))
    info = net_information(stres_jax.create_model("r2plus1d_34_32_kinetics"), "r2plus1d_34_32_kinetics")
    assert info["total_params"] == sum(p.numel() for p in reference.parameters()) == 63_697_175
    assert info["gmacs"] == round(sum(macs) / 1e9, 3) and info["input"] == [32, 112, 112, 3]


def test_fetch_from_checks_the_published_sha256_prefix(tmp_path, empty_cache, capsys):
    from stres_jax.cli import main
    (tmp_path / "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth").write_bytes(b"not the published file")
    assert main(["fetch", "r2plus1d_34_8_kinetics", "--from",
                 str(tmp_path / "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not that of ig65m-pytorch's r2plus1d_34_clip8_ft_kinetics" in err
    assert main(["fetch", "r2plus1d_34"]) == 2  # torchvision publishes no 34-layer weights
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no published weights for r2plus1d_34" in err
    assert not (empty_cache / "checkpoints").exists()
