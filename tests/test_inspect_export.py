"""info against torchvision's modules and published metadata; ONNX through onnxruntime; pictures."""
import json

import jax
import matplotlib.image
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision.models.video as tvm
from onnx import helper

import stres_jax
from stres_jax.cli import main
from stres_jax.netinfo import net_information
from stres_jax.models import create_model
from stres_jax.export.onnx_io import OnnxImportError, from_onnx
from tests.torch_reference import ARCHS, relative_error

WEIGHTS = {"r3d_18": tvm.R3D_18_Weights, "mc3_18": tvm.MC3_18_Weights, "r2plus1d_18": tvm.R2Plus1D_18_Weights}


def relu_calls(model):
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()
             if isinstance(m, torch.nn.ReLU)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 16, 112, 112))
    for hook in hooks:
        hook.remove()
    return len(calls)


@pytest.mark.parametrize("arch", ARCHS)
def test_info_matches_torchvision(arch, torch_models):
    info = net_information(create_model(arch), arch)
    meta = WEIGHTS[arch].KINETICS400_V1.meta
    model = torch_models(arch)
    modules = list(model.modules())
    assert info["total_params"] == meta["num_params"]
    assert info["gmacs"] == pytest.approx(meta["_ops"], rel=0.02)
    types = info["layer_types"]
    assert types["convolution"] == sum(isinstance(m, torch.nn.Conv3d) for m in modules)
    assert types["batch_norm"] == sum(isinstance(m, torch.nn.BatchNorm3d) for m in modules)
    assert types["dense"] == sum(isinstance(m, torch.nn.Linear) for m in modules)
    assert types["relu"] == relu_calls(model)
    assert info["batch_norm_statistics"] == sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    theirs = [list(m.kernel_size) for m in modules if isinstance(m, torch.nn.Conv3d)]
    ours = [k for kernels in info["kernel_sizes"].values() for k in kernels]
    assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))


def test_kernel_tables_show_the_three_designs():
    tables = {a: net_information(create_model(a), a)["kernel_sizes"] for a in ARCHS}
    assert all(k == [3, 3, 3] for b, ks in tables["r3d_18"].items() if b != "stem" for k in ks if k != [1, 1, 1])
    assert tables["mc3_18"]["layer1_0"] == [[3, 3, 3], [3, 3, 3]]
    assert tables["mc3_18"]["layer3_1"] == [[1, 3, 3], [1, 3, 3]]
    assert tables["r2plus1d_18"]["layer2_1"] == [[1, 3, 3], [3, 1, 1], [1, 3, 3], [3, 1, 1]]


def test_info_cli_json_and_graphic(tmp_path, capsys, converted):
    assert main(["info", str(converted("mc3_18")), "--format", "json", "--graphic", str(tmp_path / "g.png")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "mc3_18" and info["total_params"] == 11_695_440
    assert_png(tmp_path / "g.png", min_side=300)


def assert_png(path, min_side):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) >= min_side and image.std() > 0.01


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18"])
def test_show_filters(tmp_path, converted, arch):
    assert main(["show-filters", "--checkpoint", str(converted(arch)), "--out", str(tmp_path / "f.png")]) == 0
    assert_png(tmp_path / "f.png", min_side=200)


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_matches_torchvision_and_round_trips(arch, tmp_path, converted, torch_models):
    onnx_file = tmp_path / "net.onnx"
    assert main(["export-onnx", "--checkpoint", str(converted(arch)), "--out", str(onnx_file)]) == 0
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17 and model.ir_version >= 8
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"])[0] == "abseiling" and json.loads(props["preprocessing"])["crop"] == 112
    session = onnxruntime.InferenceSession(str(onnx_file))
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 112, 112)).astype(np.float32)
        with torch.no_grad():
            reference = torch_models(arch)(torch.from_numpy(x)).numpy()
        assert relative_error(session.run(None, {"video": x})[0], reference) < 1e-4
    assert main(["import-onnx", str(onnx_file), "--out", str(tmp_path / "back")]) == 0
    original, variables, _ = stres_jax.load_checkpoint(converted(arch))
    back_model, back_variables, meta = stres_jax.load_checkpoint(tmp_path / "back")
    assert meta["labels"] == json.loads(props["labels"])
    x = np.random.default_rng(0).standard_normal((1, 16, 112, 112, 3)).astype(np.float32)
    np.testing.assert_array_equal(original.apply(variables, x), back_model.apply(back_variables, x))
    sizes = (onnx_file.stat().st_size, sum(f.stat().st_size for f in converted(arch).rglob("*") if f.is_file()))
    print(f"{arch}: onnx {sizes[0] / 1e6:.1f} MB, checkpoint {sizes[1] / 1e6:.1f} MB")


def test_import_refuses_graphs_it_cannot_map(tmp_path, converted):
    _, variables, meta = stres_jax.load_checkpoint(converted("mc3_18"))
    from stres_jax.export.onnx_io import to_onnx
    model = to_onnx("mc3_18", jax.device_get(variables), meta["labels"])
    del model.graph.node[5]
    onnx.save(model, str(tmp_path / "edited.onnx"))
    with pytest.raises(OnnxImportError, match="node 5 .*cannot be mapped"):
        from_onnx(tmp_path / "edited.onnx")
    foreign = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(OnnxImportError, match="not a stres_jax export"):
        from_onnx(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(OnnxImportError, match="not a readable ONNX file"):
        from_onnx(tmp_path / "junk.onnx")
