"""The CSN nets against mmaction2's own ResNet3dCSN, I3DHead and test pipeline (mmaction2 1.2.0).

Random weights and randomised BN statistics, saved in mmaction2's checkpoint layout, converted by
`convert_file`; small inputs (8x64x64) so that the 152-layer nets fit a CI budget."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stres_jax.checkpoints.fetch import CSN_CHECKPOINTS
from stres_jax.checkpoints.store import load_checkpoint, read_meta
from stres_jax.convert import convert_file
from stres_jax.models.preset import CSN_IG65M, CSN_VMZ
from tests import mmaction_reference as ref

TOLERANCE = 1e-5  # relative to the largest value; measured 5e-7 to 1.7e-6


def relative(ours, theirs):
    return float(np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{arch: (mmaction2 model, our converted checkpoint)} for the two 152-layer nets."""
    ref.mmaction()
    root, nets = tmp_path_factory.mktemp("csn"), {}
    for arch in ("ir_csn_152", "ip_csn_152"):
        model = ref.csn_recognizer(arch, num_classes=10)
        ref.save_mmaction_checkpoint(model, root / f"{arch}.pth")
        nets[arch] = model, convert_file(root / f"{arch}.pth", arch, root / arch)
    return nets


@pytest.mark.parametrize("arch", ["ir_csn_152", "ip_csn_152"])
def test_logits_and_every_stage_equal_mmaction2(converted, arch):
    model, directory = converted[arch]
    clips = np.random.default_rng(0).normal(size=(1, 8, 64, 64, 3)).astype(np.float32)
    logits, stages = ref.mmaction_logits(model, clips, layers=True)
    for fold in (False, True):
        net, variables, meta = load_checkpoint(directory, fold_batchnorm=fold)
        ours, features = jax.jit(lambda v, x: net.apply(v, x, return_features=True))(variables, clips)
        assert relative(ours, logits) < TOLERANCE, (fold, relative(ours, logits))
        for name, theirs in stages.items():
            assert relative(features[name], theirs) < TOLERANCE, (fold, name, relative(features[name], theirs))
    assert meta["preset"] == CSN_IG65M.to_json() and meta["arch"] == arch


def test_onnx_export_runs_in_onnxruntime_as_mmaction2(converted, tmp_path):
    import onnxruntime
    from stres_jax.cli import main
    model, directory = converted["ip_csn_152"]
    out = tmp_path / "csn.onnx"
    assert main(["export-onnx", "--checkpoint", str(directory), "--out", str(out), "--frames", "8", "--size", "64"]) == 0
    clips = np.random.default_rng(1).normal(size=(1, 8, 64, 64, 3)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"video": clips.transpose(0, 4, 1, 2, 3)})
    assert relative(ours, ref.mmaction_logits(model, clips)) < TOLERANCE
    props = {p.key: p.value for p in __import__("onnx").load(str(out), load_external_data=False).metadata_props}
    assert json.loads(props["preset"]) == CSN_IG65M.to_json()


def test_mmengine_records_beside_the_weights_are_never_run(tmp_path):
    """A checkpoint as mmengine saves it (numpy scalars, a HistoryBuffer in `message_hub`) converts;
    a pickle that names anything else outside the allow-list is still refused."""
    import torch
    mmaction = ref.mmaction()
    del mmaction
    from mmengine.logging import HistoryBuffer
    model = ref.csn_recognizer("ir_csn_50", num_classes=5)
    buffer = HistoryBuffer()
    buffer.update(1.5)
    torch.save({"meta": {"epoch": np.int64(3), "lr": np.float64(0.1)}, "message_hub": {"loss": buffer},
                "state_dict": model.state_dict()}, tmp_path / "mm.pth")
    out = convert_file(tmp_path / "mm.pth", "ir_csn_50", tmp_path / "out")
    assert read_meta(out)["num_classes"] == 5
    torch.save({"meta": {"hook": __import__("collections").Counter()}, "state_dict": model.state_dict()},
               tmp_path / "other.pth")
    with pytest.raises(Exception, match="refused: its pickle names collections.Counter"):
        convert_file(tmp_path / "other.pth", "ir_csn_50", tmp_path / "out2")


def test_fetch_from_a_local_copy_gives_the_checkpoints_preset(tmp_path, monkeypatch):
    """`fetch NAME --from FILE` converts mmaction2's file with that checkpoint's own preset (the
    sports1m nets' VMZ mean and std), and checks the file by its published sha256 prefix."""
    import hashlib
    from stres_jax.checkpoints import fetch as published
    from stres_jax.convert import fetch
    model = ref.csn_recognizer("ir_csn_50", num_classes=400)
    ref.save_mmaction_checkpoint(model, tmp_path / "x.pth")
    digest = hashlib.sha256((tmp_path / "x.pth").read_bytes()).hexdigest()[:8]
    name = f"vmz_ircsn_test_r50-{digest}.pth"
    (tmp_path / "x.pth").rename(tmp_path / name)
    monkeypatch.setitem(published.CSN_CHECKPOINTS, "ir_csn_50_test", ("ir_csn_50", f"recognition/csn/vmz/{name}", "vmz",
                                                                       (0.0, 0.0)))
    monkeypatch.setitem(published.PUBLISHED_FILES, "ir_csn_50_test", f"recognition/csn/vmz/{name}")
    out = fetch("ir_csn_50_test", tmp_path / "net", source=tmp_path / name)
    assert read_meta(out)["preset"] == CSN_VMZ.to_json()
    net, _, _ = load_checkpoint(out)
    assert net.preset == CSN_VMZ and net.preset.mean != CSN_IG65M.mean
    assert {arch for arch, *_ in CSN_CHECKPOINTS.values()} == {"ir_csn_152", "ip_csn_152", "ir_csn_50"}


def test_hub_folder_round_trips_with_its_preset(converted, tmp_path):
    from stres_jax import nnx as stres_nnx
    _, directory = converted["ir_csn_152"]
    model = stres_nnx.from_pretrained(str(directory))
    assert model.preset == CSN_IG65M and model.clip_len == 32
    stres_nnx.save_pretrained(model, tmp_path / "hub")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["preset"] == CSN_IG65M.to_json() and config["preprocessing"]["short_side"] == 256
    again = stres_nnx.from_pretrained(str(tmp_path / "hub"))
    clips = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 32, 32, 3)), jnp.float32)
    assert again.preset == CSN_IG65M
    np.testing.assert_array_equal(np.asarray(again(clips)), np.asarray(model(clips)))
